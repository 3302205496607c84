"""EgressFirewall objects parsed and validated (pure)."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from ovnk.plugins.egressfirewall.models import MAX_RULES
from ovnk.plugins.egressfirewall.models import EgressFirewallError
from ovnk.plugins.egressfirewall.models import Port
from ovnk.plugins.egressfirewall.models import normalize_dns_name
from ovnk.plugins.egressfirewall.models import parse_acl_logging
from ovnk.plugins.egressfirewall.models import parse_egress_firewall


def firewall(*rules: dict[str, Any], name: str = "default") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "team-a", "resourceVersion": "1"},
            "spec": {"egress": list(rules)}}


def test_rules_keep_their_order_priority_and_destination() -> None:
    model = parse_egress_firewall(firewall(
        {"type": "Allow", "to": {"dnsName": "WWW.Example.com."}},
        {"type": "Allow", "to": {"cidrSelector": "1.2.3.0/24"}, "ports": [{"protocol": "UDP", "port": 55}]},
        {"type": "Deny", "to": {"nodeSelector": {"matchLabels": {"role": "infra"}}}},
        {"type": "Deny", "to": {"cidrSelector": "0.0.0.0/0"}},
    ))
    assert model.namespace == "team-a"
    assert [r.priority for r in model.rules] == [10000, 9999, 9998, 9997]
    assert model.rules[0].dns_name == "www.example.com" and model.rules[0].allows
    assert model.rules[1].cidr == ipaddress.ip_network("1.2.3.0/24") and model.rules[1].ports == (Port("udp", 55),)
    assert model.rules[2].node_selector is not None and model.rules[2].node_selector.matches({"role": "infra"})
    assert not model.rules[3].allows
    assert model.dns_names == {"www.example.com"} and model.selects_nodes


def test_every_problem_of_an_object_is_named_in_one_message() -> None:
    with pytest.raises(EgressFirewallError) as info:
        parse_egress_firewall(firewall(
            {"type": "Allow", "to": {"cidrSelector": "1.2.3.300/24"}},
            {"type": "Allow", "to": {"cidrSelector": "1.2.3.0/24", "dnsName": "a.example"}},
            {"type": "Deny", "to": {"dnsName": "*.example.com"}},
            {"type": "Maybe", "to": {"dnsName": "ok.example"}},
            {"type": "Deny", "to": {"nodeSelector": {"matchExpressions": [{"key": "a", "operator": "Near"}]}}},
            {"type": "Deny", "to": {"cidrSelector": "10.0.0.0/8"}, "ports": [{"protocol": "ICMP", "port": 1}]},
        ))
    text = str(info.value)
    assert "spec.egress[0].to.cidrSelector '1.2.3.300/24' is not a CIDR" in text
    assert "spec.egress[1].to must have exactly one of cidrSelector, dnsName, nodeSelector (has cidrSelector, dnsName)" in text
    assert "spec.egress[2].to.dnsName '*.example.com': wildcard DNS names are not supported" in text
    assert "spec.egress[3].type 'Maybe' is not Allow or Deny" in text
    assert "spec.egress[4].to.nodeSelector" in text
    assert "spec.egress[5].ports[0].protocol 'ICMP'" in text


def test_a_second_object_or_too_many_rules_is_refused() -> None:
    with pytest.raises(EgressFirewallError, match=r"named 'default'.*named 'other'"):
        parse_egress_firewall(firewall({"type": "Deny", "to": {"cidrSelector": "0.0.0.0/0"}}, name="other"))
    rule = {"type": "Deny", "to": {"cidrSelector": "10.0.0.0/8"}}
    assert len(parse_egress_firewall(firewall(*[rule] * MAX_RULES)).rules) == MAX_RULES
    with pytest.raises(EgressFirewallError, match="8001 rules; at most 8000"):
        parse_egress_firewall(firewall(*[rule] * (MAX_RULES + 1)))


def test_a_port_without_number_means_the_whole_protocol_and_names_normalise() -> None:
    model = parse_egress_firewall(firewall({"type": "Allow", "to": {"cidrSelector": "fd00::/64"},
                                            "ports": [{"protocol": "SCTP"}]}))
    assert model.rules[0].ports == (Port("sctp", None),)
    assert normalize_dns_name(" Mail.Example.ORG. ") == "mail.example.org"


def test_acl_logging_reads_known_severities_only() -> None:
    assert parse_acl_logging('{"deny": "alert", "allow": "notice"}') == parse_acl_logging(
        '{"allow": "notice", "deny": "alert"}')
    levels = parse_acl_logging('{"deny": "loud", "allow": "info"}')
    assert levels.deny is None and levels.allow == "info"
    assert parse_acl_logging("not json").allow is None and parse_acl_logging(None).deny is None
