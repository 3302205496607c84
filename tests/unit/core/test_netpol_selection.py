"""``Selection``'s peer lookups per pod and per namespace, against a brute-force oracle (real stores, no API)."""

from __future__ import annotations

import itertools
from types import SimpleNamespace
from typing import Any

from ovnk.core.builtin.netpol.models import peer_selectors_lenient
from ovnk.core.builtin.netpol.selection import Selection
from ovnk.core.kube.cache import Store
from ovnk.core.kube.cache import index_by_namespace

NAMESPACES = {"a": {"team": "x"}, "b": {"team": "y"}, "c": {}}


def policy(namespace: str, name: str, peers: list[dict[str, Any]], version: str = "1") -> dict[str, Any]:
    return {"metadata": {"namespace": namespace, "name": name, "resourceVersion": version},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"],
                     "ingress": [{"from": peers}], "egress": [{"to": peers[:1]}]}}


PEERS = [
    {"podSelector": {"matchLabels": {"app": "web"}}},
    {"podSelector": {}},
    {"namespaceSelector": {"matchLabels": {"team": "x"}}},
    {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "db"}}},
    {"namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "DoesNotExist"}]}},
    {"ipBlock": {"cidr": "10.0.0.0/8"}},
]


class FakeInformers:
    def __init__(self, store: Store) -> None:
        self.store = store

    def informer(self, _resource: Any, *, indexers: dict[str, Any]) -> Any:
        for name, indexer in indexers.items():
            self.store.add_indexer(name, indexer)
        return SimpleNamespace(store=self.store)


def selection() -> tuple[Selection, Store, Store]:
    policies = Store({"namespace": index_by_namespace})
    namespaces = Store()
    for name, labels in NAMESPACES.items():
        namespaces.put(name, {"metadata": {"name": name, "labels": labels}})
    pods = Store({"namespace": index_by_namespace})
    caches = {"pods": pods, "namespaces": namespaces}
    ctx = SimpleNamespace(informers=FakeInformers(policies), cache=lambda r: caches[r.plural])
    return Selection(ctx), policies, namespaces  # type: ignore[arg-type]


def oracle_for_pod(policies: Store, namespaces: Store, pod: dict[str, Any]) -> list[str]:
    """Every peer of every policy, tested one by one (what the lookup must equal)."""
    ns = pod["metadata"]["namespace"]
    ns_labels = namespaces.get(ns)["metadata"]["labels"]  # type: ignore[index]
    labels = pod["metadata"].get("labels") or {}
    return sorted({s.key for obj in policies.list() for s in peer_selectors_lenient(obj)
                   if s.selects_namespace(ns, ns_labels) and s.selects_pod(labels)})


def test_peer_keys_for_pods_and_namespaces_equal_a_scan_of_every_policy() -> None:
    sel, policies, namespaces = selection()
    for index, (ns, peers) in enumerate(itertools.product(NAMESPACES, itertools.combinations(PEERS, 2))):
        obj = policy(ns, f"p{index}", list(peers))
        policies.put(f"{ns}/p{index}", obj)
    pods = [{"metadata": {"namespace": ns, "name": f"{ns}-{app}", "labels": {"app": app} if app else {}}}
            for ns in NAMESPACES for app in ("web", "db", "")]
    for pod in pods:
        assert sel.peer_keys_for_pod(pod) == oracle_for_pod(policies, namespaces, pod), pod["metadata"]
    for name in NAMESPACES:
        namespace = namespaces.get(name)
        assert namespace is not None
        expected = sorted({s.key for obj in policies.list() for s in peer_selectors_lenient(obj)
                           if s.namespace_selector is not None
                           and s.namespace_selector.matches(namespace["metadata"]["labels"])})
        assert sel.peer_keys_for_namespace(namespace) == expected and expected


def test_only_the_pods_namespace_policies_and_distinct_namespace_selectors_are_examined() -> None:
    """The per-policy peer cache follows resourceVersion, and a policy of another namespace is never
    looked at for a pod event: its namespace-selecting peers count once however many policies share
    them (the cost follows the pod's namespace and the distinct namespace selectors)."""
    sel, policies, _namespaces = selection()
    pod = {"metadata": {"namespace": "a", "name": "w", "labels": {"app": "web"}}}
    policies.put("a/p", policy("a", "p", [PEERS[0]], version="1"))
    for index in range(20):
        policies.put(f"b/q{index}", policy("b", f"q{index}", [PEERS[1]], version="1"))
    examined: list[str] = []
    read = sel.peer_selectors_of

    def spy(obj: dict[str, Any]) -> Any:
        examined.append(obj["metadata"]["name"])
        return read(obj)

    sel.peer_selectors_of = spy  # type: ignore[method-assign]
    assert sel.peer_keys_for_pod(pod) == ["a_LS{ML:{app: web,},}"]
    assert examined == ["p"]
    policies.put("a/p", policy("a", "p", [PEERS[2]], version="2"))
    assert sel.peer_keys_for_pod(pod) == ["LS{ML:{team: x,},}_nil"]
    for index in range(20):
        policies.put(f"b/q{index}", policy("b", f"q{index}", [PEERS[2]], version="2"))
    examined.clear()
    assert sel.peer_keys_for_pod(pod) == ["LS{ML:{team: x,},}_nil"]
    assert examined == ["p"]
    policies.remove("a/p")
    sel.forget("a/p")
    assert sel.peer_keys_for_pod(pod) == ["LS{ML:{team: x,},}_nil"]  # still the q policies' peer
    for index in range(20):
        policies.remove(f"b/q{index}")
    assert sel.peer_keys_for_pod(pod) == []
