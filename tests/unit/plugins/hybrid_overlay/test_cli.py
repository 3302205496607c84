"""``ovnk hybrid-overlay status``'s rows (pure): what each node has and what it still lacks."""

from __future__ import annotations

from typing import Any

from ovnk.plugins.hybrid_overlay import models
from ovnk.plugins.hybrid_overlay.cli import node_rows


def obj(name: str, labels: dict[str, str], annotations: dict[str, str], address: str | None = None) -> dict[str, Any]:
    node: dict[str, Any] = {"metadata": {"name": name, "labels": labels, "annotations": annotations}}
    if address:
        node["status"] = {"addresses": [{"type": "InternalIP", "address": address}]}
    return node


def test_rows_name_roles_facts_and_what_is_missing() -> None:
    windows = {"kubernetes.io/os": "windows"}
    nodes = [
        obj("win-ok", windows, {models.NODE_SUBNET: "10.132.0.0/23", models.DR_MAC: "0a:58:64:00:00:01"}, "172.30.0.51"),
        obj("win-new", windows, {}),
        obj("win-bad", windows, {models.DR_MAC: "zz"}),
        obj("linux", {}, {"k8s.ovn.org/node-subnets": '{"default":["10.244.0.0/24"]}', models.DR_IP: "10.244.0.3",
                          models.DR_MAC: "0a:58:0a:f4:00:03"}),
        obj("linux-new", {}, {}),
    ]
    rows = {r["node"]: r for r in node_rows(nodes, selector="kubernetes.io/os=windows")}
    assert rows["win-ok"] == {"node": "win-ok", "role": "foreign", "subnet": "10.132.0.0/23", "address": "172.30.0.51",
                              "mac": "0a:58:64:00:00:01", "missing": []}
    assert len(rows["win-new"]["missing"]) == 3
    assert "is not a MAC address" in rows["win-bad"]["missing"][0]
    assert rows["linux"] == {"node": "linux", "role": "ovn", "subnet": "10.244.0.0/24", "address": "10.244.0.3",
                             "mac": "0a:58:0a:f4:00:03", "missing": []}
    assert "is the plugin on in the controller?" in rows["linux-new"]["missing"][0]
