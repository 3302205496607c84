"""Row builders of secondary networks (pure)."""

from __future__ import annotations

import ipaddress
from typing import Any

from ovnk.plugins.secondary_networks import models
from ovnk.plugins.secondary_networks import nb


def spec(**fields: Any) -> models.NetworkSpec:
    doc = {"type": "ovn-k8s-cni-overlay", "name": "tenant-blue", "netAttachDefName": "ns1/blue", **fields}
    parsed = models.parse_config(doc, "ns1/blue")
    assert parsed is not None
    return parsed


def test_layer3_rows_are_prefixed_and_per_node() -> None:
    s = spec(topology="layer3", subnets="10.200.0.0/16/24")
    (router,) = nb.network_rows(s)
    assert (router.table, router.name) == ("Logical_Router", "tenant.blue_ovn_cluster_router")
    rows = nb.node_rows(s, "n1", [ipaddress.ip_network("10.200.5.0/24")])
    by_table = {r.table: r for r in rows}
    assert by_table["Logical_Switch"].name == "tenant.blue_n1"
    assert by_table["Logical_Switch"].columns["other_config"] == {"subnet": "10.200.5.0/24"}
    assert by_table["Logical_Router_Port"].columns["networks"] == ["10.200.5.1/24"]
    assert by_table["Logical_Switch_Port"].columns["options"] == {"router-port": by_table["Logical_Router_Port"].name}
    assert nb.role_node(by_table["Logical_Switch"].role) == "n1"


def test_localnet_port_carries_physical_network_and_tag() -> None:
    s = spec(topology="localnet", subnets="192.168.50.0/24", vlanID=20, physicalNetworkName="physnet-a")
    switch, port = nb.network_rows(s)
    assert switch.name == "tenant.blue_ovn_localnet_switch"
    assert port.columns["type"] == "localnet" and port.columns["tag_request"] == [20]
    assert port.columns["options"] == {"network_name": "physnet-a"}
    untagged = spec(topology="localnet")
    assert nb.network_rows(untagged)[1].columns["tag_request"] == []


def test_pod_port_security_and_ids() -> None:
    s = spec(topology="layer2", subnets="10.1.0.0/24")
    port = nb.PodPort(name="ns1.blue_ns1_p", switch=nb.switch_name(s), nad_key="ns1/blue", namespace="ns1", pod="p",
                      uid="u1", mac="0a:58:0a:01:00:04", ips=(ipaddress.ip_address("10.1.0.4"),), chassis="c1")
    assert port.columns()["port_security"] == ["0a:58:0a:01:00:04 10.1.0.4"]
    ids = port.external_ids(s)
    assert ids[models.NETWORK_KEY] == "tenant-blue" and ids[models.NAD_KEY] == "ns1/blue"
    assert ids[models.TOPOLOGY_KEY] == "layer2" and ids[models.ROLE_KEY] == "secondary"
