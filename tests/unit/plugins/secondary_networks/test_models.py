"""NAD configs, network grouping and pod selections (pure)."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import pytest

from ovnk.plugins.secondary_networks import models
from ovnk.plugins.secondary_networks.models import NadInfo
from ovnk.plugins.secondary_networks.models import NetworkError
from ovnk.plugins.secondary_networks.models import SelectionError


def config(**fields: Any) -> dict[str, Any]:
    doc = {"cniVersion": "1.0.0", "type": "ovn-k8s-cni-overlay", "name": "blue", "netAttachDefName": "ns1/blue"}
    doc.update(fields)
    return {k: v for k, v in doc.items() if v is not None}


def test_layer3_default_host_prefix_and_explicit_one() -> None:
    spec = models.parse_config(config(topology="layer3", subnets="10.200.0.0/16,fd00:200::/48/64"), "ns1/blue")
    assert spec is not None
    assert [str(s) for s in spec.subnets] == ["10.200.0.0/16/24", "fd00:200::/48/64"]
    assert spec.prefix == "blue_"
    assert spec.ipam and not spec.static_ips


def test_layer2_without_subnets_has_no_ipam_and_localnet_defaults() -> None:
    l2 = models.parse_config(config(topology="layer2"), "ns1/blue")
    assert l2 is not None and not l2.ipam
    ln = models.parse_config(config(topology="localnet", subnets="192.168.50.0/24", vlanID=10), "ns1/blue")
    assert ln is not None and ln.physical_network == "blue" and ln.vlan_id == 10
    assert ln.interface_mtu(1400) == models.LOCALNET_DEFAULT_MTU
    assert l2.interface_mtu(1400) == 1400


def test_other_cni_types_are_not_ours() -> None:
    assert models.parse_config({"type": "macvlan", "name": "x"}, "ns1/x") is None


@pytest.mark.parametrize(("fields", "message"), [
    ({"netAttachDefName": "ns1/other"}, "netAttachDefName"),
    ({"topology": "layer3"}, "needs 'subnets'"),
    ({"topology": "ring"}, "is not one of"),
    ({"role": "primary", "topology": "layer2"}, "primary"),
    ({"topology": "layer2", "subnets": "10.1.0.0/24", "excludeSubnets": "10.2.0.0/28"}, "not inside"),
    ({"topology": "layer2", "vlanID": 5}, "localnet networks only"),
    ({"topology": "localnet", "vlanID": 5000}, "between 1 and 4094"),
    ({"topology": "layer2", "mtu": 100}, "mtu"),
    ({"topology": "layer2", "subnets": "10.1.0.0/24,10.2.0.0/24"}, "one subnet per IP family"),
    ({"topology": "layer2", "ipam": {"type": "static"}}, "ipam"),
    ({"name": "default", "topology": "layer2"}, "default network"),
    ({"topology": "localnet", "physicalNetworkName": "physnet"}, "gateway bridge"),
])
def test_bad_configs_say_which_field(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(NetworkError, match=message):
        models.parse_config(config(**fields), "ns1/blue")


def test_nad_config_accepts_string_and_rejects_garbage() -> None:
    nad = {"spec": {"config": json.dumps(config(topology="layer2"))}}
    assert models.nad_config(nad)["topology"] == "layer2"
    with pytest.raises(NetworkError, match="not JSON"):
        models.nad_config({"spec": {"config": "{nope"}})


def _info(key: str, created: str, **fields: Any) -> NadInfo:
    spec = models.parse_config(config(netAttachDefName=key, **fields), key)
    return NadInfo(key=key, created=created, spec=spec)


def test_oldest_nad_defines_the_network_and_the_other_config_is_a_conflict() -> None:
    first = _info("a/blue", "2026-01-01T00:00:00Z", topology="layer2", subnets="10.1.0.0/24")
    same = _info("b/blue", "2026-01-02T00:00:00Z", topology="layer2", subnets="10.1.0.0/24")
    other = _info("c/blue", "2026-01-03T00:00:00Z", topology="layer2", subnets="10.9.0.0/24")
    result = models.resolve_networks([other, same, first])
    spec, keys = result.networks["blue"]
    assert keys == ("a/blue", "b/blue") and spec == first.spec
    assert "c/blue" in result.conflicts and "10.1.0.0/24" in result.conflicts["c/blue"]


def test_pinned_config_wins_over_an_older_nad() -> None:
    running = _info("a/blue", "2026-01-05T00:00:00Z", topology="layer2", subnets="10.1.0.0/24")
    older = _info("z/blue", "2025-01-01T00:00:00Z", topology="layer2", subnets="10.9.0.0/24")
    assert running.spec is not None
    result = models.resolve_networks([running, older], pinned={"blue": running.spec})
    assert result.networks["blue"][1] == ("a/blue",) and "z/blue" in result.conflicts


def pod(annotation: str, namespace: str = "ns1") -> dict[str, Any]:
    return {"metadata": {"name": "p", "namespace": namespace, "uid": "u1",
                         "annotations": {models.NETWORKS_ANNOTATION: annotation}}}


def test_plain_list_names_interfaces_and_counts_repeats() -> None:
    selections = models.parse_selections(pod("blue, other/red@eth7, blue"))
    assert [(s.nad_name, s.ifname, s.nad_key) for s in selections] == [
        ("ns1/blue", "net1", "ns1/blue"), ("other/red", "eth7", "other/red"), ("ns1/blue", "net3", "ns1/blue/1")]


def test_json_selection_with_static_ip_and_mac() -> None:
    text = json.dumps([{"name": "blue", "interface": "data0", "ips": ["10.1.0.9/24"], "mac": "0A:58:0A:01:00:09"}])
    (selection,) = models.parse_selections(pod(text))
    assert selection.ifname == "data0" and selection.mac == "0a:58:0a:01:00:09"
    assert selection.ips == (ipaddress.ip_interface("10.1.0.9/24"),)


@pytest.mark.parametrize(("text", "message"), [
    ("[{", "not valid JSON"),
    ("blue,,red", "empty element"),
    ('[{"name": "blue", "ips": ["10.1.0.9"]}]', "prefix length"),
    ('[{"name": "blue", "mac": "01:00:00:00:00:01"}]', "multicast"),
    ("blue@eth0", "default network"),
    ("blue@x,red@x", "requested twice"),
])
def test_bad_selections(text: str, message: str) -> None:
    with pytest.raises(SelectionError, match=message):
        models.parse_selections(pod(text))


def test_names_fit_linux_and_ovn() -> None:
    assert models.port_name("ns1/blue", "ns1", "p") == "ns1.blue_ns1_p"
    name = models.host_ifname("0123456789abcdef0123", "net1")
    assert len(name) <= 15 and name.endswith("_net1")
    long_if = models.host_ifname("0123456789abcdef0123", "averylongifname")
    assert len(long_if) == 15 and long_if != models.host_ifname("0123456789abcdef0123", "averylongifnamf")


def test_pod_network_entry_layer3_routes_via_the_node_gateway() -> None:
    spec = models.parse_config(config(topology="layer3", subnets="10.200.0.0/16/24"), "ns1/blue")
    assert spec is not None
    entry = models.pod_network_entry(spec, ips=[ipaddress.ip_interface("10.200.3.5/24")], mac="0a:58:0a:c8:03:05",
                                     node_subnets=[ipaddress.ip_network("10.200.3.0/24")])
    assert entry["routes"] == [{"dest": "10.200.0.0/16", "nextHop": "10.200.3.1"}]
    assert "gateway_ips" not in entry and entry["role"] == "secondary"
    repeat = models.pod_network_entry(spec, ips=[ipaddress.ip_interface("10.200.3.6/24")], mac="0a:58:0a:c8:03:06",
                                      node_subnets=[ipaddress.ip_network("10.200.3.0/24")], routes=False)
    assert "routes" not in repeat, "a repeat of the same network leaves the routes to the first attachment"


def test_network_status_is_multus_shaped() -> None:
    text = models.format_network_status([
        models.InterfaceStatus("ovn-kubernetes", "eth0", (ipaddress.ip_address("10.244.0.5"),), "0a:58:0a:f4:00:05",
                               default=True, gateways=(ipaddress.ip_address("10.244.0.1"),)),
        models.InterfaceStatus("ns1/blue", "net1", (ipaddress.ip_address("10.1.0.4"),), "0a:58:0a:01:00:04")])
    doc = models.parse_network_status(text)
    assert doc[0]["default"] is True and doc[0]["gateway"] == ["10.244.0.1"]
    assert doc[1] == {"name": "ns1/blue", "interface": "net1", "ips": ["10.1.0.4"], "mac": "0a:58:0a:01:00:04",
                      "dns": {}}
