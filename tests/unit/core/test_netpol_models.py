"""NetworkPolicy parsing and match construction (pure functions, no I/O)."""

from __future__ import annotations

import ipaddress
import random
from typing import Any

import pytest

from ovnk.core.builtin.netpol import nb
from ovnk.core.builtin.netpol.models import AclLogging
from ovnk.core.builtin.netpol.models import LabelSelector
from ovnk.core.builtin.netpol.models import PolicyError
from ovnk.core.builtin.netpol.models import parse_acl_logging
from ovnk.core.builtin.netpol.models import parse_policy
from ovnk.core.builtin.netpol.models import parse_scope
from ovnk.core.builtin.netpol.models import parse_selector
from ovnk.core.builtin.netpol.models import peer_selectors_lenient
from ovnk.core.kube.selectors import Requirement

HAIRPIN = ipaddress.ip_address("169.254.0.5")


def policy(spec: dict[str, Any], name: str = "p", namespace: str = "ns") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace}, "spec": spec}


def test_selector_canonical_strings_are_order_independent() -> None:
    a = parse_selector({"matchLabels": {"b": "2", "a": "1"},
                        "matchExpressions": [{"key": "z", "operator": "In", "values": ["y", "x"]},
                                             {"key": "k", "operator": "Exists"}]}, field="s")
    b = parse_selector({"matchLabels": {"a": "1", "b": "2"},
                        "matchExpressions": [{"key": "k", "operator": "Exists"},
                                             {"key": "z", "operator": "In", "values": ["x", "y"]}]}, field="s")
    assert a.canonical() == b.canonical() == (
        "LS{ML:{a: 1,b: 2,},ME:{LSR{Key:k,Operator:Exists,Values:[],},LSR{Key:z,Operator:In,Values:[x y],}},}")
    assert LabelSelector().canonical() == "LS{}"


@pytest.mark.parametrize(("operator", "values", "labels", "matches"), [
    ("In", ("a", "b"), {"k": "a"}, True),
    ("In", ("a",), {"k": "c"}, False),
    ("In", ("a",), {}, False),
    ("NotIn", ("a",), {"k": "b"}, True),
    ("NotIn", ("a",), {}, True),
    ("NotIn", ("a",), {"k": "a"}, False),
    ("Exists", (), {"k": ""}, True),
    ("Exists", (), {}, False),
    ("DoesNotExist", (), {}, True),
    ("DoesNotExist", (), {"k": "x"}, False),
])
def test_requirements(operator: str, values: tuple[str, ...], labels: dict[str, str], matches: bool) -> None:
    assert Requirement("k", operator, values).matches(labels) is matches


def test_peer_keys_of_static_and_selected_namespaces() -> None:
    model = parse_policy(policy({"podSelector": {}, "ingress": [{"from": [
        {"podSelector": {}},
        {"namespaceSelector": {"matchLabels": {"team": "a"}}},
        {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "x"}}},
    ]}]}))
    assert [s.key for s in model.peer_selectors()] == ["ns_LS{}", "LS{ML:{team: a,},}_nil", "LS{}_LS{ML:{app: x,},}"]


def test_policy_types_explicit_and_derived() -> None:
    assert parse_policy(policy({"podSelector": {}})).policy_types == ("Ingress",)
    assert parse_policy(policy({"podSelector": {}, "egress": [{}]})).policy_types == ("Ingress", "Egress")
    assert parse_policy(policy({"podSelector": {}, "egress": []})).policy_types == ("Ingress",)
    explicit = parse_policy(policy({"podSelector": {}, "policyTypes": ["Egress"], "ingress": [{}]}))
    assert explicit.policy_types == ("Egress",) and explicit.ingress == ()
    scope = parse_scope(policy({"podSelector": {"matchLabels": {"a": "b"}}, "policyTypes": ["Egress", "Bogus"]}))
    assert (scope.ingress, scope.egress) == (False, True)


@pytest.mark.parametrize(("rule", "message"), [
    ({"from": [{"ipBlock": {"cidr": "10.0.0.0/33"}}]}, "not a valid CIDR"),
    ({"from": [{"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.1.0.0/24"]}}]}, "outside cidr"),
    ({"from": [{"ipBlock": {"cidr": "10.0.0.0/16", "except": ["fd00::/64"]}}]}, "outside cidr"),
    ({"ports": [{"protocol": "ICMP"}]}, "protocol 'ICMP'"),
    ({"ports": [{"port": 2000, "endPort": 1000}]}, "endPort 1000 is below port 2000"),
    ({"ports": [{"port": "http", "endPort": 1000}]}, "endPort needs a numeric port"),
    ({"ports": [{"port": 70000}]}, "not in 1-65535"),
    ({"ports": [{"port": "Not_A_Name"}]}, "not a valid port name"),
    ({"from": [{}]}, "needs podSelector, namespaceSelector or ipBlock"),
    ({"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]}, "cannot be combined"),
    ({"from": [{"podSelector": {"matchExpressions": [{"key": "k", "operator": "Near"}]}}]}, "operator 'Near'"),
    ({"from": [{"podSelector": {"matchExpressions": [{"key": "k", "operator": "In"}]}}]}, "needs values"),
])
def test_invalid_fields_are_named(rule: dict[str, Any], message: str) -> None:
    with pytest.raises(PolicyError, match=message.replace("(", r"\(")) as info:
        parse_policy(policy({"podSelector": {}, "ingress": [rule]}))
    assert "spec.ingress[0]" in str(info.value)


def test_lenient_peers_skip_invalid_ones() -> None:
    obj = policy({"podSelector": {}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"a": "b"}}},
                                                           {"ipBlock": {"cidr": "bad"}}, {}]}]})
    assert [s.key for s in peer_selectors_lenient(obj)] == ["ns_LS{ML:{a: b,},}"]


def test_l4_matches_group_numbers_ranges_and_named_ports() -> None:
    model = parse_policy(policy({"podSelector": {}, "ingress": [{"ports": [
        {"port": 80}, {"port": 443}, {"port": 1000, "endPort": 2000}, {"protocol": "UDP"},
        {"protocol": "SCTP", "port": 9}, {"port": "http"},
    ]}]}))
    targets = [nb.NamedPortTarget("tcp", ipaddress.ip_address("10.244.1.9"), 8080),
               nb.NamedPortTarget("tcp", ipaddress.ip_address("10.244.0.3"), 8081)]
    assert nb.l4_matches(model.ingress[0], targets) == {
        "sctp": "sctp && sctp.dst == 9",
        "tcp": "tcp && (tcp.dst == {80, 443} || 1000<=tcp.dst<=2000)",
        "udp": "udp",
        "tcp-namedPort": "((ip4.dst == 10.244.0.3 && tcp.dst == 8081) || (ip4.dst == 10.244.1.9 && tcp.dst == 8080))",
    }
    only_named = parse_policy(policy({"podSelector": {}, "ingress": [{"ports": [{"port": "http"}]}]}))
    assert nb.l4_matches(only_named.ingress[0], []) == {}  # unresolved names allow nothing
    assert nb.l4_matches(parse_policy(policy({"podSelector": {}, "ingress": [{}]})).ingress[0]) == {"None": ""}


def test_policy_acls_matches_names_and_pipelines() -> None:
    long_name = "p" * 60
    model = parse_policy(policy({"podSelector": {}, "ingress": [
        {"from": [{"podSelector": {"matchLabels": {"a": "b"}}},
                  {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16", "10.2.0.0/16"]}}],
         "ports": [{"port": 53, "protocol": "UDP"}]},
    ], "egress": [{"to": [{"ipBlock": {"cidr": "192.168.0.0/16"}}]}]}, name=long_name))
    acls = nb.policy_acls(model, controller="c", port_group="pg", families=[4], hairpin_ip=HAIRPIN,
                          logging=AclLogging(allow="notice"))
    as_name = nb.peer_address_set("c", "ns_LS{ML:{a: b,},}", 4)[0]
    by_key = {(a.ids.value("direction"), a.ids.value("ip-block-index"), a.ids.value("port-policy-protocol")): a
              for a in acls}
    assert set(by_key) == {("Ingress", "-2", "udp"), ("Ingress", "-1", "udp"), ("Egress", "-2", "None")}
    assert by_key[("Ingress", "-1", "udp")].match == (
        f"(ip4.src == {{${as_name}}} || (ip4.src == 169.254.0.5 && ip4.dst == {{${as_name}}})) "
        "&& udp && udp.dst == 53 && outport == @pg")
    assert by_key[("Ingress", "-2", "udp")].match == (
        "ip4.src == {10.0.0.0/16, 10.3.0.0/16, 10.4.0.0/14, 10.8.0.0/13, 10.16.0.0/12, 10.32.0.0/11, 10.64.0.0/10, "
        "10.128.0.0/9} && udp && udp.dst == 53 && outport == @pg")
    egress = by_key[("Egress", "-2", "None")]
    assert egress.match == "ip4.dst == 192.168.0.0/16 && inport == @pg"
    columns = egress.columns(tier=True)
    assert columns["direction"] == "from-lport" and columns["options"] == {"apply-after-lb": "true"}
    assert columns["tier"] == 2 and (columns["log"], columns["severity"], columns["meter"]) == (True, "notice", "acl-logging")
    assert columns["name"] == f"NP:ns:{long_name}:Egress:0"[:63]
    assert "tier" not in egress.columns(tier=False)


def test_selector_match_dual_stack_and_egress_direction() -> None:
    model = parse_policy(policy({"podSelector": {}, "policyTypes": ["Egress"],
                                 "egress": [{"to": [{"podSelector": {}}]}]}))
    v4, v6 = (nb.peer_address_set("c", "ns_LS{}", f)[0] for f in (4, 6))
    assert nb.selector_match("c", model.egress[0].selectors, direction="Egress", families=[4, 6],
                             hairpin_ip=HAIRPIN) == (
        f"((ip4.dst == {{${v4}}} || (ip4.dst == 169.254.0.5 && ip4.src == {{${v4}}})) || ip6.dst == {{${v6}}})")
    assert nb.all_ips_match([4, 6]) == "(ip4 || ip6)"


def test_acl_logging_annotation() -> None:
    assert parse_acl_logging(None) == AclLogging()
    assert parse_acl_logging('{"deny": "alert", "allow": "notice"}') == AclLogging(allow="notice", deny="alert")
    assert parse_acl_logging('{"deny": "alert"}') == AclLogging(deny="alert")
    with pytest.raises(PolicyError, match="not valid JSON"):
        parse_acl_logging("{x")
    with pytest.raises(PolicyError, match="'loud'"):
        parse_acl_logging('{"allow": "loud"}')


def blocks_of(*peers: dict[str, Any]) -> tuple[Any, ...]:
    model = parse_policy(policy({"podSelector": {}, "ingress": [{"from": [{"ipBlock": p} for p in peers]}]}))
    return model.ingress[0].ip_blocks


def allowed_by_spec(blocks: tuple[Any, ...], ip: Any) -> bool:
    """NetworkPolicy's own wording: in some block's cidr and in none of that block's excepts."""
    return any(ip.version == b.cidr.version and ip in b.cidr and not any(ip in e for e in b.excepts) for b in blocks)


@pytest.mark.parametrize("peers", [
    [{"cidr": "0.0.0.0/0", "except": ["10.0.0.1/32", "10.0.0.3/32", "192.168.7.7/32", "255.255.255.255/32"]}],
    [{"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16", "10.1.2.0/24", "10.255.255.0/24"]},
     {"cidr": "10.1.2.0/24"}],  # a second block gives back part of the first one's except
    [{"cidr": "10.0.0.0/24", "except": ["10.0.0.0/25"]}, {"cidr": "10.0.0.0/26"}, {"cidr": "10.0.0.64/26"}],
    [{"cidr": "fd00::/8", "except": ["fd00::1/128", "fd12::/16"]}, {"cidr": "192.0.2.0/24", "except": ["192.0.2.9/32"]}],
])
def test_allowed_networks_are_exactly_the_blocks_minus_their_excepts(peers: list[dict[str, Any]]) -> None:
    blocks = blocks_of(*peers)
    networks = nb.allowed_networks(blocks)
    flat = [n for nets in networks.values() for n in nets]
    # Disjoint and minimal: no prefix overlaps another, no two could merge into one.
    for version, nets in networks.items():
        assert all(n.version == version for n in nets)
        assert list(ipaddress.collapse_addresses(nets)) == nets  # type: ignore[arg-type]
    # Every boundary (each cidr's and except's first and last address, and their neighbours) and
    # random addresses agree with the spec's wording.
    rng = random.Random(7)
    samples = []
    for block in blocks:
        for net in (block.cidr, *block.excepts):
            for edge in (int(net.network_address), int(net.broadcast_address)):
                samples += [edge - 1, edge, edge + 1]
        lo, hi = int(block.cidr.network_address), int(block.cidr.broadcast_address)
        samples += [rng.randint(lo, hi) for _ in range(300)]
        maximum = 2 ** block.cidr.max_prefixlen - 1
        for value in samples:
            if 0 <= value <= maximum:
                ip = ipaddress.ip_address(value) if block.cidr.version == 4 else ipaddress.IPv6Address(value)
                assert any(ip in n for n in flat if n.version == ip.version) == allowed_by_spec(blocks, ip), ip
        samples.clear()


def test_ip_block_match_is_linear_in_the_excepts_and_positive_only() -> None:
    rng = random.Random(24)
    for count in (1, 8, 64, 256):
        excepts = sorted({f"{ipaddress.IPv4Address(rng.randint(1, 2**32 - 2))}/32" for _ in range(count)})
        blocks = blocks_of({"cidr": "0.0.0.0/0", "except": excepts})
        match = nb.ip_block_match(blocks, direction="Ingress")
        assert match is not None and "!=" not in match
        assert len(nb.allowed_networks(blocks)[4]) <= 32 * len(excepts)


def test_ip_block_fully_excepted_allows_nothing_and_writes_no_acl() -> None:
    model = parse_policy(policy({"podSelector": {}, "ingress": [
        {"from": [{"ipBlock": {"cidr": "10.0.0.0/24", "except": ["10.0.0.0/25", "10.0.0.128/25"]}}]},
        {"from": [{"ipBlock": {"cidr": "10.0.0.0/24", "except": ["10.0.0.0/24"]}},
                  {"podSelector": {}}]},
    ]}))
    assert nb.ip_block_match(model.ingress[0].ip_blocks, direction="Ingress") is None
    acls = nb.policy_acls(model, controller="c", port_group="pg", families=[4], hairpin_ip=None, logging=AclLogging())
    # Rule 0 allows nothing (no ACL at all); rule 1 keeps its selector ACL only.
    assert [(a.ids.value("gress-index"), a.ids.value("ip-block-index")) for a in acls] == [("1", "-1")]
