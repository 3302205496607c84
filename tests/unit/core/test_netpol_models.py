"""NetworkPolicy parsing and match construction (pure functions, no I/O)."""

from __future__ import annotations

import ipaddress
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
        "(ip4.src == 10.0.0.0/8 && ip4.src != {10.1.0.0/16, 10.2.0.0/16}) && udp && udp.dst == 53 && outport == @pg")
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
