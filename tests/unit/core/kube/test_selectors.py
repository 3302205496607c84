"""Label selectors and the cache's selector lookup (pure logic, a real Store)."""

from __future__ import annotations

import pytest

from ovnk.core.kube.cache import Store
from ovnk.core.kube.cache import default_indexers
from ovnk.core.kube.resources import NODES
from ovnk.core.kube.resources import PODS
from ovnk.core.kube.selectors import SelectorError
from ovnk.core.kube.selectors import parse_selector


def pod(ns: str, name: str, **labels: str) -> dict:
    return {"metadata": {"namespace": ns, "name": name, "labels": labels}}


@pytest.fixture
def pods() -> Store:
    store = Store(default_indexers(PODS))
    for obj in (pod("a", "web1", app="web", tier="front"), pod("a", "web2", app="web"), pod("a", "db", app="db"),
                pod("b", "web3", app="web", tier="front"), pod("b", "bare")):
        store.put(f"{obj['metadata']['namespace']}/{obj['metadata']['name']}", obj)
    return store


def keys(objs: list[dict]) -> list[str]:
    return [f"{o['metadata']['namespace']}/{o['metadata']['name']}" for o in objs]


def test_select_by_labels_expressions_and_namespace(pods: Store) -> None:
    assert keys(pods.select(parse_selector({"matchLabels": {"app": "web"}}, field="s"))) == ["a/web1", "a/web2", "b/web3"]
    assert keys(pods.select(parse_selector({"matchLabels": {"app": "web"}}, field="s"), namespace="a")) == ["a/web1", "a/web2"]
    front = parse_selector({"matchExpressions": [{"key": "tier", "operator": "Exists"}]}, field="s")
    assert keys(pods.select(front)) == ["a/web1", "b/web3"]
    not_web = parse_selector({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["web"]}]}, field="s")
    assert keys(pods.select(not_web)) == ["a/db", "b/bare"]
    assert keys(pods.select(parse_selector({}, field="s"), namespace="b")) == ["b/bare", "b/web3"]
    assert pods.select(parse_selector({"matchLabels": {"app": "nope"}}, field="s")) == []


def test_select_follows_label_changes_and_deletions(pods: Store) -> None:
    web = parse_selector({"matchLabels": {"app": "web"}}, field="s")
    pods.put("a/db", pod("a", "db", app="web"))
    pods.remove("a/web1")
    assert keys(pods.select(web)) == ["a/db", "a/web2", "b/web3"]


def test_select_on_cluster_scoped_objects() -> None:
    nodes = Store(default_indexers(NODES))
    nodes.put("n1", {"metadata": {"name": "n1", "labels": {"k8s.ovn.org/egress-assignable": ""}}})
    nodes.put("n2", {"metadata": {"name": "n2"}})
    assignable = parse_selector({"matchExpressions": [{"key": "k8s.ovn.org/egress-assignable",
                                                      "operator": "Exists"}]}, field="s")
    assert [n["metadata"]["name"] for n in nodes.select(assignable)] == ["n1"]


@pytest.mark.parametrize(("raw", "message"), [
    ("x", "spec.s must be an object"),
    ({"matchLabels": {"a": 1}}, "matchLabels must map label keys to strings"),
    ({"matchExpressions": [{"key": "a", "operator": "Like"}]}, "operator 'Like' is not one of"),
    ({"matchExpressions": [{"key": "a", "operator": "In"}]}, "operator In needs values"),
    ({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}, "takes no values"),
])
def test_bad_selectors_name_the_field(raw: object, message: str) -> None:
    with pytest.raises(SelectorError, match=message):
        parse_selector(raw, field="spec.s")
