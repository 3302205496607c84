"""EgressFirewall's NB rows (pure builders): upstream's names, priorities and match strings."""

from __future__ import annotations

import ipaddress
from typing import Any

from ovnk.plugins.egressfirewall import nb
from ovnk.plugins.egressfirewall.models import AclLogging
from ovnk.plugins.egressfirewall.models import Port
from ovnk.plugins.egressfirewall.models import parse_egress_firewall

CTL = "default-network-controller"
CLUSTER = [ipaddress.ip_network("10.244.0.0/16")]
PG = "a123"


def rules(*raw: dict[str, Any]) -> Any:
    return parse_egress_firewall({"metadata": {"name": "default", "namespace": "ns1"},
                                  "spec": {"egress": list(raw)}}).rules


def acl(rule: Any, **kw: Any) -> nb.AclRow | None:
    args: dict[str, Any] = {"controller": CTL, "namespace": "ns1", "port_group": PG, "cluster_subnets": CLUSTER,
                            "dns_sets": {}, "node_ips": [], "logging": AclLogging()}
    args.update(kw)
    return nb.rule_acl(rule, **args)


def test_cidr_rule_acl_has_upstreams_identity_priority_and_match() -> None:
    (rule,) = rules({"type": "Allow", "to": {"cidrSelector": "1.2.3.0/24"}})
    row = acl(rule)
    assert row is not None
    assert row.name == "EF:ns1:0" and row.priority == 10000 and row.action == "allow"
    assert row.match == "(ip4.dst == 1.2.3.0/24) && inport == @a123"
    ids = row.ids.external_ids()
    assert ids["k8s.ovn.org/owner-type"] == "EgressFirewall" and ids["k8s.ovn.org/name"] == "ns1"
    assert ids["rule-index"] == "0" and ids["k8s.ovn.org/id"] == f"{CTL}:EgressFirewall:ns1:0"
    columns = row.columns(tier=True)
    assert columns["direction"] == "to-lport" and columns["tier"] == 2 and columns["log"] is False
    assert "tier" not in row.columns(tier=False)


def test_a_cidr_overlapping_the_cluster_subnet_excludes_it() -> None:
    deny_all, inside = rules({"type": "Deny", "to": {"cidrSelector": "0.0.0.0/0"}},
                             {"type": "Deny", "to": {"cidrSelector": "10.244.3.0/24"}})
    row = acl(deny_all)
    assert row is not None and row.action == "drop" and row.priority == 10000
    assert row.match == "(ip4.dst == 0.0.0.0/0 && ip4.dst != 10.244.0.0/16) && inport == @a123"
    row = acl(inside)
    assert row is not None and row.match == "(ip4.dst == 10.244.3.0/24 && ip4.dst != 10.244.0.0/16) && inport == @a123"
    (v6,) = rules({"type": "Deny", "to": {"cidrSelector": "::/0"}})
    row = acl(v6)
    assert row is not None and row.match == "(ip6.dst == ::/0) && inport == @a123"


def test_ports_are_grouped_per_protocol_in_upstreams_order() -> None:
    assert nb.l4_match([Port("tcp", 80), Port("udp", 53), Port("tcp", 443), Port("tcp", 80)]) == \
        "((udp && ( udp.dst == 53 )) || (tcp && ( tcp.dst == 80 || tcp.dst == 443 )))"
    assert nb.l4_match([Port("tcp", 80), Port("tcp", None), Port("sctp", 9)]) == "((tcp) || (sctp && ( sctp.dst == 9 )))"
    (rule,) = rules({"type": "Allow", "to": {"cidrSelector": "1.2.3.4/32"}, "ports": [{"protocol": "TCP", "port": 8080}]})
    row = acl(rule)
    assert row is not None and row.match == "(ip4.dst == 1.2.3.4/32) && inport == @a123 && ((tcp && ( tcp.dst == 8080 )))"


def test_dns_rules_match_their_sets_and_node_rules_their_node_addresses() -> None:
    dns_rule, node_rule = rules({"type": "Allow", "to": {"dnsName": "www.example.com"}},
                                {"type": "Deny", "to": {"nodeSelector": {}}})
    v4, ids = nb.dns_address_set(CTL, "www.example.com", 4)
    assert ids.external_ids()["k8s.ovn.org/owner-type"] == "EgressFirewallDNS"
    assert ids.external_ids()["ip-family"] == "v4" and v4 == ids.hashed_name
    v6, _ = nb.dns_address_set(CTL, "www.example.com", 6)
    row = acl(dns_rule, dns_sets={6: v6, 4: v4})
    assert row is not None and row.match == f"(ip4.dst == ${v4} || ip6.dst == ${v6}) && inport == @a123"
    ips = [ipaddress.ip_address(a) for a in ("172.30.0.12", "172.30.0.11", "172.30.0.11")]
    row = acl(node_rule, node_ips=ips)
    assert row is not None and row.priority == 9999
    assert row.match == "(ip4.dst == 172.30.0.11 || ip4.dst == 172.30.0.12) && inport == @a123"
    assert acl(node_rule, node_ips=[]) is None, "a selector without nodes has no ACL (as upstream)"


def test_logging_follows_the_rule_action() -> None:
    allow, deny = rules({"type": "Allow", "to": {"cidrSelector": "1.0.0.0/8"}},
                        {"type": "Deny", "to": {"cidrSelector": "2.0.0.0/8"}})
    levels = AclLogging(allow="notice", deny="alert")
    allowed, denied = acl(allow, logging=levels), acl(deny, logging=levels)
    assert allowed is not None and denied is not None
    assert allowed.columns(tier=False)["severity"] == "notice" and denied.columns(tier=False)["severity"] == "alert"
    assert denied.columns(tier=False)["meter"] == "acl-logging" and denied.columns(tier=False)["log"] is True


def test_dns_set_content_leaves_cluster_addresses_and_other_families_out() -> None:
    answer = [ipaddress.ip_address(a) for a in ("198.18.0.2", "10.244.1.9", "198.18.0.1", "2001:db8::1")]
    assert nb.dns_addresses(answer, version=4, cluster_subnets=CLUSTER) == ["198.18.0.1", "198.18.0.2"]
    assert nb.dns_addresses(answer, version=6, cluster_subnets=CLUSTER) == ["2001:db8::1"]
