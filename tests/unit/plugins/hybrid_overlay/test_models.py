"""The hybrid overlay's pure logic: settings parsing, node facts, subnet allocation, DR IP choice, NB rows."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

import pytest

from ovnk.plugins.hybrid_overlay import models
from ovnk.plugins.hybrid_overlay import nb
from ovnk.plugins.hybrid_overlay.allocation import AllocationError
from ovnk.plugins.hybrid_overlay.allocation import SubnetAllocator
from ovnk.plugins.hybrid_overlay.models import HybridOverlayError


def node(name: str, *, labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None,
         address: str | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {"metadata": {"name": name, "labels": labels or {}, "annotations": annotations or {}}}
    if address:
        obj["status"] = {"addresses": [{"type": "Hostname", "address": name},
                                       {"type": "InternalIP", "address": "fd00::1"},
                                       {"type": "InternalIP", "address": address}]}
    return obj


def test_cluster_subnets_parse_with_and_without_host_prefix() -> None:
    parsed = models.parse_cluster_subnets("10.132.0.0/14/23, 10.200.0.0/16")
    assert [str(s) for s in parsed] == ["10.132.0.0/14/23", "10.200.0.0/16/24"]
    assert models.parse_cluster_subnets("") == ()


@pytest.mark.parametrize(("text", "message"), [
    ("10.132.0.0", "is not CIDR/hostPrefix"),
    ("10.132.0.0/33/24", "10.132.0.0/33/24"),
    ("fd00::/48/64", "only IPv4"),
    ("10.132.0.0/14/12", "host prefix must be between /14 and /29"),
    ("10.132.0.0/14/30", "between /14 and /29"),
    ("10.132.0.0/14/x", "is not a number"),
    ("10.132.0.0/14/23,10.133.0.0/16/24", "overlap"),
])
def test_cluster_subnets_refuse_bad_input(text: str, message: str) -> None:
    with pytest.raises(HybridOverlayError, match=re.escape(message)):
        models.parse_cluster_subnets(text)


def test_node_selector_forms() -> None:
    windows = node("w", labels={"kubernetes.io/os": "windows"})
    linux = node("l", labels={"kubernetes.io/os": "linux"})
    assert models.parse_node_selector("kubernetes.io/os=windows").matches_object(windows)
    assert not models.parse_node_selector("kubernetes.io/os=windows").matches_object(linux)
    assert models.parse_node_selector("kubernetes.io/os!=linux").matches_object(windows)
    assert models.parse_node_selector("kubernetes.io/os in (windows, other)").matches_object(windows)
    assert models.parse_node_selector("kubernetes.io/os notin (windows)").matches_object(linux)
    assert models.parse_node_selector("kubernetes.io/os,!hybrid").matches_object(linux)
    assert not models.parse_node_selector("!kubernetes.io/os").matches_object(linux)
    for bad, message in (("", "empty"), ("bad key!=x", "not a label key"), ("a=b c", "not a label value")):
        with pytest.raises(HybridOverlayError, match=message):
            models.parse_node_selector(bad)


def test_foreign_node_facts() -> None:
    full = node("w", annotations={models.NODE_SUBNET: "10.132.0.0/23", models.DR_MAC: "0A-58-0A-84-00-01"},
                address="172.30.0.50")
    found = models.foreign_node(full)
    assert found == models.ForeignNode("w", ipaddress.IPv4Network("10.132.0.0/23"),
                                       ipaddress.IPv4Address("172.30.0.50"), "0a:58:0a:84:00:01")
    assert found.complete
    assert not models.foreign_node(node("w")).complete
    with pytest.raises(HybridOverlayError, match="is not a MAC address"):
        models.foreign_node(node("w", annotations={models.DR_MAC: "nope"}))
    with pytest.raises(HybridOverlayError, match="is not a CIDR"):
        models.node_subnet(node("w", annotations={models.NODE_SUBNET: "10.132.0.0/33"}))
    with pytest.raises(HybridOverlayError, match="only IPv4"):
        models.node_subnet(node("w", annotations={models.NODE_SUBNET: "fd00::/64"}))


def test_distributed_router_needs_both_annotations() -> None:
    assert models.distributed_router(node("l", annotations={models.DR_IP: "10.244.0.3"})) is None
    router = models.distributed_router(node("l", annotations={models.DR_IP: "10.244.0.3",
                                                              models.DR_MAC: "0a:58:0a:f4:00:03"}))
    assert router == models.DistributedRouter(ipaddress.IPv4Address("10.244.0.3"), "0a:58:0a:f4:00:03")
    with pytest.raises(HybridOverlayError, match="is not an IP address"):
        models.distributed_router(node("l", annotations={models.DR_IP: "x", models.DR_MAC: "0a:58:0a:f4:00:03"}))


def test_dr_ip_is_dot_three_unless_taken() -> None:
    subnet = ipaddress.IPv4Network("10.244.1.0/24")
    assert models.choose_dr_ip(subnet, free=lambda ip: True) == ipaddress.IPv4Address("10.244.1.3")
    taken = {ipaddress.IPv4Address("10.244.1.3"), ipaddress.IPv4Address("10.244.1.4")}
    assert models.choose_dr_ip(subnet, free=lambda ip: ip not in taken) == ipaddress.IPv4Address("10.244.1.5")
    assert models.choose_dr_ip(ipaddress.IPv4Network("10.0.0.0/30"), free=lambda ip: True) is None
    assert models.dr_mac_of(ipaddress.IPv4Address("10.244.1.3")) == "0a:58:0a:f4:01:03"


def test_allocator_hands_out_lowest_free_blocks_and_keeps_them() -> None:
    allocator = SubnetAllocator(models.parse_cluster_subnets("10.132.0.0/22/23,10.140.0.0/24/24"))
    assert allocator.capacity == 3
    assert str(allocator.allocate("a")) == "10.132.0.0/23"
    assert str(allocator.allocate("b")) == "10.132.2.0/23"
    assert str(allocator.allocate("a")) == "10.132.0.0/23", "a node keeps its block"
    assert str(allocator.allocate("c")) == "10.140.0.0/24"
    with pytest.raises(AllocationError, match="every hybrid overlay subnet is in use"):
        allocator.allocate("d")
    assert str(allocator.release("a")) == "10.132.0.0/23"
    assert str(allocator.allocate("d")) == "10.132.0.0/23"
    assert allocator.release("gone") is None


def test_allocator_reserve_checks_ranges_and_holders() -> None:
    allocator = SubnetAllocator(models.parse_cluster_subnets("10.132.0.0/14/23"))
    allocator.reserve("a", ipaddress.IPv4Network("10.132.4.0/23"))
    assert str(allocator.allocate("b")) == "10.132.0.0/23"
    assert str(allocator.allocate("a")) == "10.132.4.0/23"
    with pytest.raises(AllocationError, match="already held by node a"):
        allocator.reserve("c", ipaddress.IPv4Network("10.132.4.0/23"))
    with pytest.raises(AllocationError, match="is not a block"):
        allocator.reserve("c", ipaddress.IPv4Network("10.132.4.0/24"))
    with pytest.raises(AllocationError, match="is not a block"):
        allocator.reserve("c", ipaddress.IPv4Network("10.200.0.0/23"))
    allocator.reserve("a", ipaddress.IPv4Network("10.132.6.0/23"))  # moved: the old block is free again
    assert str(allocator.allocate("c")) == "10.132.2.0/23"
    assert str(allocator.allocate("d")) == "10.132.4.0/23"


def test_node_rows_follow_upstream_names_and_priorities() -> None:
    rows = nb.node_rows(node="n1", dr_ip=ipaddress.IPv4Address("10.244.0.3"), dr_mac="0a:58:0a:f4:00:03",
                        targets=[nb.Target(ipaddress.IPv4Network("10.132.0.0/14"))],
                        gr_join_ip=ipaddress.IPv4Address("100.64.0.2"),
                        cluster_router_join_ip=ipaddress.IPv4Address("100.64.0.1"))
    assert len(rows) == 5
    port = rows[0]
    assert port.columns == {"addresses": ["0a:58:0a:f4:00:03 10.244.0.3"]}
    policies = [r for r in rows if r.table == "Logical_Router_Policy"]
    assert [p.columns["match"] for p in policies] == ['inport == "rtos-n1" && ip4.dst == 10.132.0.0/14',
                                                       "ip4.src == 100.64.0.2 && ip4.dst == 10.132.0.0/14"]
    assert all(p.columns["priority"] == 1002 and p.columns["nexthops"] == ["10.244.0.3"] for p in policies)
    assert [p.external_ids["name"] for p in policies] == ["hybrid-subnet-n1", "hybrid-subnet-n1-gr"]
    routes = [(r.columns["ip_prefix"], r.columns["nexthop"]) for r in rows if r.table == "Logical_Router_Static_Route"]
    assert routes == [("10.132.0.0/14", "10.244.0.3"), ("10.132.0.0/14", "100.64.0.1")]


def test_node_rows_per_foreign_node_without_cluster_subnets_and_without_gateway_router() -> None:
    rows = nb.node_rows(node="n1", dr_ip=ipaddress.IPv4Address("10.244.0.3"), dr_mac="0a:58:0a:f4:00:03",
                        targets=[nb.Target(ipaddress.IPv4Network("10.132.2.0/23"), foreign="w2"),
                                 nb.Target(ipaddress.IPv4Network("10.132.0.0/23"), foreign="w1")],
                        gr_join_ip=None, cluster_router_join_ip=ipaddress.IPv4Address("100.64.0.1"))
    names = [r.external_ids["name"] for r in rows if r.table == "Logical_Router_Policy"]
    assert names == ["hybrid-subnet-n1:w1", "hybrid-subnet-n1:w2"]
    assert not any("-gr" in r.external_ids.get("name", "") for r in rows)
