"""EgressIP assignment and parsing (pure logic)."""

from __future__ import annotations

import ipaddress
import re

import pytest

from ovnk.plugins.egressip.assignment import assign
from ovnk.plugins.egressip.models import ASSIGNABLE_LABEL
from ovnk.plugins.egressip.models import EgressIPError
from ovnk.plugins.egressip.models import EgressNode
from ovnk.plugins.egressip.models import egress_node
from ovnk.plugins.egressip.models import parse_egressip
from ovnk.plugins.egressip.models import status_items

NET = ipaddress.ip_network("172.30.0.0/24")


def node(name: str, address: str, *, labelled: bool = True, ready: bool = True, reachable: bool = True,
         network: ipaddress.IPv4Network = NET) -> EgressNode:
    return EgressNode(name=name, networks=(network,), addresses=(ipaddress.ip_address(address),),
                      labelled=labelled, ready=ready, reachable=reachable)


def eip(name: str, *ips: str, created: str = "2026-01-01T00:00:00Z", status: dict[str, str] | None = None,
        ns: dict[str, str] | None = None) -> object:
    obj = {"metadata": {"name": name, "creationTimestamp": created},
           "spec": {"egressIPs": list(ips), "namespaceSelector": {"matchLabels": ns or {"team": "a"}}}}
    if status:
        obj["status"] = {"items": [{"egressIP": ip, "node": n} for ip, n in status.items()]}
    return parse_egressip(obj)


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


def test_least_loaded_and_one_ip_of_an_object_per_node() -> None:
    nodes = [node("n1", "172.30.0.11"), node("n2", "172.30.0.12"), node("n3", "172.30.0.13")]
    result = assign([eip("a", "172.30.0.100", "172.30.0.101"), eip("b", "172.30.0.102", created="2026-02-01T00:00:00Z")],
                    nodes)
    a, b = result["a"], result["b"]
    assert len(set(a.assigned.values())) == 2, "an object's IPs go to different nodes"
    assert b.assigned[ip("172.30.0.102")] == "n3", "the least loaded node"
    assert not a.unassigned and not b.unassigned


def test_existing_assignment_is_kept_and_ineligible_nodes_lose_theirs() -> None:
    nodes = [node("n1", "172.30.0.11"), node("n2", "172.30.0.12")]
    kept = assign([eip("a", "172.30.0.100", status={"172.30.0.100": "n2"})], nodes)["a"]
    assert kept.assigned == {ip("172.30.0.100"): "n2"}
    for broken in (node("n2", "172.30.0.12", labelled=False), node("n2", "172.30.0.12", ready=False),
                   node("n2", "172.30.0.12", reachable=False)):
        moved = assign([eip("a", "172.30.0.100", status={"172.30.0.100": "n2"})], [nodes[0], broken])["a"]
        assert moved.assigned == {ip("172.30.0.100"): "n1"}, broken


def test_ip_outside_every_node_network_or_a_node_address_is_unassigned_with_a_reason() -> None:
    nodes = [node("n1", "172.30.0.11")]
    result = assign([eip("a", "10.9.9.9", "172.30.0.11")], nodes)["a"]
    assert result.assigned == {}
    assert result.unassigned[ip("10.9.9.9")] == "no node has a network containing 10.9.9.9"
    assert result.unassigned[ip("172.30.0.11")] == "172.30.0.11 is the address of a node"
    nobody = assign([eip("a", "172.30.0.100")], [node("n1", "172.30.0.11", labelled=False)])["a"]
    assert "not labelled k8s.ovn.org/egress-assignable" in nobody.unassigned[ip("172.30.0.100")]


def test_two_objects_claiming_one_ip_the_older_wins_and_keeps_it() -> None:
    nodes = [node("n1", "172.30.0.11"), node("n2", "172.30.0.12")]
    old = eip("old", "172.30.0.100", created="2026-01-01T00:00:00Z")
    new = eip("new", "172.30.0.100", created="2026-03-01T00:00:00Z")
    result = assign([new, old], nodes)
    assert ip("172.30.0.100") in result["old"].assigned
    assert result["new"].assigned == {}
    assert result["new"].conflicts == {ip("172.30.0.100"): "old"}
    # Stable: computed again from the written status, nothing moves.
    again = assign([eip("old", "172.30.0.100", created="2026-01-01T00:00:00Z",
                        status={"172.30.0.100": result["old"].assigned[ip("172.30.0.100")]}), new], nodes)
    assert again["old"].assigned == result["old"].assigned


def test_more_ips_than_eligible_nodes() -> None:
    result = assign([eip("a", "172.30.0.100", "172.30.0.101")], [node("n1", "172.30.0.11")])["a"]
    assert list(result.assigned.values()) == ["n1"]
    (reason,) = result.unassigned.values()
    assert "already holds another IP of this EgressIP" in reason


def test_dual_stack_ips_need_a_node_network_of_their_family() -> None:
    v6 = ipaddress.ip_network("fd00::/64")
    nodes = [node("n1", "172.30.0.11"), EgressNode(name="n2", networks=(NET, v6),
                                                     addresses=(ip("172.30.0.12"), ip("fd00::12")),
                                                     labelled=True, ready=True)]
    result = assign([eip("a", "172.30.0.100", "fd00::100")], nodes)["a"]
    assert result.assigned[ip("fd00::100")] == "n2"
    assert result.assigned[ip("172.30.0.100")] == "n1"


@pytest.mark.parametrize(("spec", "message"), [
    ({"egressIPs": []}, "spec.egressIPs must list at least one IP address"),
    ({"egressIPs": ["nope"], "namespaceSelector": {}}, "spec.egressIPs[0] 'nope' is not an IP address"),
    ({"egressIPs": ["1.2.3.4"]}, "spec.namespaceSelector is required"),
    ({"egressIPs": ["1.2.3.4"], "namespaceSelector": {"matchExpressions": [{"key": "a", "operator": "Is"}]}},
     "spec.namespaceSelector.matchExpressions[0].operator 'Is' is not one of"),
])
def test_bad_objects_name_the_field(spec: dict, message: str) -> None:
    with pytest.raises(EgressIPError, match=re.escape(message)):
        parse_egressip({"metadata": {"name": "x"}, "spec": spec})


def test_egress_node_from_a_node_object_and_status_items_order() -> None:
    obj = {"metadata": {"name": "n1", "labels": {ASSIGNABLE_LABEL: ""}, "annotations": {
        "k8s.ovn.org/node-primary-ifaddr": '{"ipv4":"172.30.0.11/24"}',
        "k8s.ovn.org/host-cidrs": '["172.30.0.11/24","192.168.5.2/24"]'}},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    info = egress_node(obj)
    assert info.eligible and info.networks == (NET,)
    assert info.addresses == (ip("172.30.0.11"), ip("192.168.5.2"))
    assert status_items({ip("172.30.0.101"): "b", ip("172.30.0.100"): "a"}) == [
        {"egressIP": "172.30.0.100", "node": "a"}, {"egressIP": "172.30.0.101", "node": "b"}]
