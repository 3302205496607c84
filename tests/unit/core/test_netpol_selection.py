"""``Selection``'s peer lookups per pod and per namespace, against a brute-force oracle (real stores, no API)."""

from __future__ import annotations

import itertools
import json
from types import SimpleNamespace
from typing import Any

from ovnk.core.builtin.netpol.models import peer_selectors_lenient
from ovnk.core.builtin.netpol.selection import PeerShare
from ovnk.core.builtin.netpol.selection import Selection
from ovnk.core.builtin.netpol.selection import share_changes
from ovnk.core.kube.cache import Store
from ovnk.core.kube.cache import index_by_namespace
from ovnk.core.topology.annotations import pod_ips

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


# -- peer addresses: each namespace's share is reused while its pods are unchanged ----------------


def netpod(namespace: str, name: str, ip: str, labels: dict[str, str], *, node: str = "n1") -> dict[str, Any]:
    network = {"default": {"ip_addresses": [f"{ip}/24"], "mac_address": "0a:58:0a:00:00:01"}}
    return {"metadata": {"namespace": namespace, "name": name, "labels": labels,
                         "annotations": {"k8s.ovn.org/pod-networks": json.dumps(network)}},
            "spec": {"nodeName": node}}


def scanned_addresses(sel: Selection, selector: Any) -> set[str]:
    """What the address set must hold: the IPs of every cached pod the selector takes, found by
    testing each pod of the cluster (the oracle; it does not go through pods_with_ips)."""
    namespaces = set(sel.namespaces_of(selector))
    return {str(ip) for pod in sel.pods.list() if pod["metadata"]["namespace"] in namespaces
            and selector.selects_pod(pod["metadata"].get("labels") or {}) for ip in pod_ips(pod)}


def test_peer_addresses_equal_a_scan_and_only_changed_namespaces_are_evaluated_again() -> None:
    sel, _policies, namespaces = selection()
    pods = sel.pods
    selector = next(s for s in peer_selectors_lenient(policy("a", "p", [PEERS[3]])) if s.namespace_selector)
    for index, ns in enumerate(NAMESPACES):
        for number in range(5):
            app = "db" if number % 2 == 0 else "web"
            pod = netpod(ns, f"{ns}{number}", f"10.{index}.0.{number + 10}", {"app": app})
            pods.put(f"{ns}/{ns}{number}", pod)
    evaluated: list[str] = []
    real = sel.pods_with_ips

    def spy(namespace: str) -> Any:
        evaluated.append(namespace)
        return real(namespace)

    sel.pods_with_ips = spy  # type: ignore[method-assign]
    assert sel.peer_addresses(selector, (4,))[4] == scanned_addresses(sel, selector) != set()
    assert sorted(evaluated) == ["a", "b", "c"]
    evaluated.clear()
    assert sel.peer_addresses(selector, (4,))[4] == scanned_addresses(sel, selector)
    assert evaluated == [], "nothing changed: every namespace's share is reused"
    # A pod joins b, one leaves the selection in c (relabelled), one is deleted in a.
    pods.put("b/new", netpod("b", "new", "10.1.0.99", {"app": "db"}))
    pods.put("c/c0", netpod("c", "c0", "10.2.0.10", {"app": "web"}))
    pods.remove("a/a2")
    evaluated.clear()
    found = sel.peer_addresses(selector, (4,))[4]
    assert sorted(evaluated) == ["a", "b", "c"]
    assert "10.1.0.99" in found and "10.2.0.10" not in found and "10.0.0.12" not in found
    assert found == scanned_addresses(sel, selector)
    evaluated.clear()
    pods.put("b/new2", netpod("b", "new2", "10.1.0.98", {"app": "web"}))  # not selected, but b changed
    assert sel.peer_addresses(selector, (4,))[4] == found
    assert evaluated == ["b"]
    # A namespace that stops matching the namespace selector drops out at once (its pods unchanged).
    narrow = next(s for s in peer_selectors_lenient(policy("a", "p", [{"namespaceSelector": {
        "matchLabels": {"team": "x"}}, "podSelector": {"matchLabels": {"app": "db"}}}]))
                  if s.namespace_selector)
    before = sel.peer_addresses(narrow, (4,))[4]
    assert before == scanned_addresses(sel, narrow) and before and all(ip.startswith("10.0.") for ip in before)
    namespaces.put("a", {"metadata": {"name": "a", "labels": {"team": "z"}}})
    assert sel.peer_addresses(narrow, (4,))[4] == set() == scanned_addresses(sel, narrow)
    sel.forget_peer(selector.key)
    evaluated.clear()
    sel.peer_addresses(selector, (4,))
    assert sorted(evaluated) == ["a", "b", "c"], "a forgotten peer starts over"


def test_share_changes_turn_the_old_union_into_the_new_one_looking_only_at_changed_shares() -> None:
    def share(stamp: int, *addresses: str) -> PeerShare:
        return (stamp, {4: frozenset(addresses)})

    unchanged = share(1, "10.0.0.1", "10.0.0.2")
    old = {"a": unchanged, "b": share(1, "10.1.0.1", "10.1.0.2"), "c": share(1, "10.2.0.1")}
    new = {"a": unchanged, "b": share(2, "10.1.0.2", "10.1.0.3"), "d": share(1, "10.3.0.1")}
    assert share_changes(old, new, 4) == ({"10.1.0.3", "10.3.0.1"}, {"10.1.0.1", "10.2.0.1"})
    union = set().union(*(s[1][4] for s in old.values()))
    add, remove = share_changes(old, new, 4)
    assert (union | add) - remove == set().union(*(s[1][4] for s in new.values()))
    # The same shares: nothing. An equal share that is a new object is compared, and yields nothing.
    assert share_changes(old, dict(old), 4) == (set(), set())
    assert share_changes(old, {**old, "a": share(2, "10.0.0.1", "10.0.0.2")}, 4) == (set(), set())
    # An unchanged share is trusted as it is: only a different object is looked into.
    assert share_changes({"a": unchanged}, {"a": unchanged}, 4) == (set(), set())
    # An IP handed from a pod in b to a pod in c in one step is neither added nor removed.
    moved_old = {"b": share(1, "10.9.0.9"), "c": share(1)}
    moved_new = {"b": share(2), "c": share(2, "10.9.0.9")}
    assert share_changes(moved_old, moved_new, 4) == (set(), set())
    # Everything from nothing, and back.
    assert share_changes({}, new, 4) == (set().union(*(s[1][4] for s in new.values())), set())
    assert share_changes(new, {}, 4) == (set(), set().union(*(s[1][4] for s in new.values())))


def test_peer_shares_returns_an_unchanged_namespaces_share_as_the_same_object() -> None:
    sel, _policies, _namespaces = selection()
    selector = next(s for s in peer_selectors_lenient(policy("a", "p", [PEERS[3]])) if s.namespace_selector)
    for index, ns in enumerate(NAMESPACES):
        sel.pods.put(f"{ns}/{ns}0", netpod(ns, f"{ns}0", f"10.{index}.0.10", {"app": "db"}))
    first = sel.peer_shares(selector, (4,))
    sel.pods.put("b/b1", netpod("b", "b1", "10.1.0.11", {"app": "db"}))
    second = sel.peer_shares(selector, (4,))
    assert second["a"] is first["a"] and second["c"] is first["c"] and second["b"] is not first["b"]
    assert share_changes(first, second, 4) == ({"10.1.0.11"}, set())


def test_a_stores_changed_at_stamp_moves_with_every_write_under_the_value() -> None:
    store = Store({"namespace": index_by_namespace})
    first = store.changed_at("namespace", "a")
    store.put("a/x", {"metadata": {"namespace": "a", "name": "x"}})
    after_put = store.changed_at("namespace", "a")
    assert after_put != first
    other = store.changed_at("namespace", "b")
    store.put("a/y", {"metadata": {"namespace": "a", "name": "y"}})
    assert store.changed_at("namespace", "b") == other, "a write in a leaves b's stamp alone"
    stamp = store.changed_at("namespace", "a")
    store.put("a/y", {"metadata": {"namespace": "a", "name": "y", "labels": {"v": "2"}}})
    assert store.changed_at("namespace", "a") != stamp, "a replaced object counts"
    # Emptied: no stamp is kept for the value, and the one it answers is new (no ABA with an old one).
    seen = {store.changed_at("namespace", "a")}
    store.remove("a/x")
    seen.add(store.changed_at("namespace", "a"))
    store.remove("a/y")
    assert store.changed_at("namespace", "a") not in seen
    seen.add(store.changed_at("namespace", "a"))
    store.replace({"a/z": {"metadata": {"namespace": "a", "name": "z"}}})
    assert store.changed_at("namespace", "a") not in seen
    assert store.changed_at("namespace", "b") != other, "a replace counts for every value"
