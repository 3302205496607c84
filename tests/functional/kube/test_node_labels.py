"""Owned node labels against a real API server: set, record, refuse, release (ovnk.core.kube.node_labels)."""

from __future__ import annotations

import json

import pytest

from ovnk.core.kube.client import KubeClient
from ovnk.core.kube.node_labels import LEDGER
from ovnk.core.kube.node_labels import NodeLabels
from ovnk.core.kube.resources import NODES
from ovnk.core.node.owners import OwnershipError

pytestmark = [pytest.mark.kube]


def test_owned_labels_are_recorded_refused_to_others_and_released_when_the_owner_goes(kube_cp: object) -> None:
    client = KubeClient(kubeconfig=str(kube_cp.kubeconfig))  # type: ignore[attr-defined]
    client.create(NODES, {"apiVersion": "v1", "kind": "Node",
                          "metadata": {"name": "labels-1", "labels": {"user": "mine"}}})
    try:
        def node() -> dict[str, object]:
            obj = client.get(NODES, "labels-1")
            assert obj is not None
            return obj

        def labels() -> dict[str, str]:
            return dict(node()["metadata"].get("labels") or {})  # type: ignore[union-attr]

        def ledger() -> dict[str, list[str]]:
            raw = (node()["metadata"].get("annotations") or {}).get(LEDGER)  # type: ignore[union-attr]
            return json.loads(raw) if raw else {}

        both = NodeLabels(client, lambda _name: None, ("core", "a", "b"))
        assert both.set("a", "labels-1", {"a.example/x": "", "a.example/y": "1"})
        assert not both.set("a", "labels-1", {"a.example/x": ""}), "nothing changed: nothing written"
        assert both.set("b", "labels-1", {"b.example/z": ""})
        assert ledger() == {"a": ["a.example/x", "a.example/y"], "b": ["b.example/z"]}
        with pytest.raises(OwnershipError, match="owned by 'a'"):
            both.set("b", "labels-1", {"a.example/x": None})
        with pytest.raises(OwnershipError, match="neither core nor an enabled plugin"):
            both.set("c", "labels-1", {"c.example/q": ""})
        assert both.set("a", "labels-1", {"a.example/y": None})
        assert labels() == {"user": "mine", "a.example/x": "", "b.example/z": ""}

        # "b" switched off: its labels and its record go; "a"'s and the user's stay. A dry run first.
        only_a = NodeLabels(client, lambda _name: None, ("core", "a"))
        assert only_a.release([node()], apply=False) == [("labels-1", "b", "b.example/z")]
        assert "b.example/z" in labels()
        assert only_a.release([node()]) == [("labels-1", "b", "b.example/z")]
        assert labels() == {"user": "mine", "a.example/x": ""} and ledger() == {"a": ["a.example/x"]}
        assert only_a.release([node()]) == []
        # The last owned label removed: the record goes too, the node's other labels stay.
        assert NodeLabels(client, lambda _name: None, ("core",)).release([node()]) == [("labels-1", "a", "a.example/x")]
        assert labels() == {"user": "mine"} and LEDGER not in (node()["metadata"].get("annotations") or {})  # type: ignore[union-attr]
    finally:
        client.delete(NODES, "labels-1")
