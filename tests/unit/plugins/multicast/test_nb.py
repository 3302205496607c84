"""Multicast's rows and the values they are built from (pure builders and parsers)."""

from __future__ import annotations

import ipaddress

import pytest

from ovnk.plugins.multicast import nb
from ovnk.plugins.multicast.models import annotation_problem
from ovnk.plugins.multicast.models import ipv6_link_local
from ovnk.plugins.multicast.models import multicast_enabled
from ovnk.plugins.multicast.settings import MulticastSettings

CTL = "default-network-controller"
DYNAMIC = "(ip6.dst[120..127] == 0xff && ip6.dst[116] == 1)"


def ns(value: str | None) -> dict[str, object]:
    return {"metadata": {"name": "n", "annotations": {} if value is None else {"k8s.ovn.org/multicast-enabled": value}}}


@pytest.mark.parametrize(("value", "enabled", "reported"), [
    ("true", True, False), ("false", False, False), (None, False, False),
    ("True", False, True), ("yes", False, True), ("", False, True),
])
def test_only_true_enables_and_other_values_are_reported(value: str | None, enabled: bool, reported: bool) -> None:
    assert multicast_enabled(ns(value)) is enabled
    assert (annotation_problem(ns(value)) is not None) is reported
    assert multicast_enabled({"metadata": {"name": "bare"}}) is False


def test_ipv6_link_local_is_eui64_of_the_mac() -> None:
    assert ipv6_link_local("0a:58:0a:f4:00:01") == ipaddress.IPv6Address("fe80::858:aff:fef4:1")
    assert ipv6_link_local("00:00:00:00:00:00") == ipaddress.IPv6Address("fe80::200:ff:fe00:0")
    with pytest.raises(ValueError, match="not a MAC"):
        ipv6_link_local("0a:58:0a")


def test_cluster_acls_deny_every_pod_and_allow_the_router_ports() -> None:
    acls = {(a.ids.value("type"), a.direction): a for a in nb.cluster_acls(CTL, cluster_port_group="aPods",
                                                                           router_port_group="aRtr")}
    assert set(acls) == {("DefaultDeny", "Egress"), ("DefaultDeny", "Ingress"),
                         ("AllowInterNode", "Egress"), ("AllowInterNode", "Ingress")}
    deny = acls[("DefaultDeny", "Egress")]
    assert (deny.port_group, deny.priority, deny.action, deny.match) == ("aPods", 1011, "drop", nb.MULTICAST)
    assert deny.ids.primary_id == f"{CTL}:MulticastCluster:DefaultDeny:Egress"
    assert deny.ids.external_ids()["type"] == "DefaultDeny" and deny.ids.external_ids()["direction"] == "Egress"
    allow_in = acls[("AllowInterNode", "Ingress")]
    assert (allow_in.port_group, allow_in.priority, allow_in.action) == ("aRtr", 1012, "allow")
    assert allow_in.match == f"outport == @aRtr && {nb.MULTICAST}"
    assert acls[("AllowInterNode", "Egress")].match == f"inport == @aRtr && {nb.MULTICAST}"


def test_acl_columns_by_direction_and_tier() -> None:
    egress, ingress = nb.namespace_acls(CTL, "team", port_group="aPG", address_sets={4: "aAS"})
    assert egress.columns(tier=False) == {
        "name": [], "direction": "from-lport", "priority": 1012, "match": "inport == @aPG && ip4.mcast",
        "action": "allow", "log": False, "severity": [], "meter": [], "options": {"apply-after-lb": "true"}}
    columns = ingress.columns(tier=True)
    assert (columns["direction"], columns["options"], columns["tier"]) == ("to-lport", {}, 2)
    assert columns["match"] == "outport == @aPG && (igmp || (ip4.src == $aAS && ip4.mcast))"
    assert egress.ids.primary_id == f"{CTL}:MulticastNS:team:Egress"
    assert egress.ids.external_ids()["k8s.ovn.org/name"] == "team"


def test_namespace_matches_per_ip_family() -> None:
    v6 = nb.namespace_acls(CTL, "team", port_group="aPG", address_sets={6: "aAS6"})
    assert v6[0].match == f"inport == @aPG && (mldv1 || mldv2 || {DYNAMIC})"
    assert v6[1].match == f"outport == @aPG && (mldv1 || mldv2 || (ip6.src == $aAS6 && {DYNAMIC}))"
    dual = nb.namespace_acls(CTL, "team", port_group="aPG", address_sets={4: "aAS4", 6: "aAS6"})
    assert dual[0].match == f"inport == @aPG && (ip4.mcast || (mldv1 || mldv2 || {DYNAMIC}))"
    assert dual[1].match == ("outport == @aPG && ((igmp || (ip4.src == $aAS4 && ip4.mcast)) || "
                             f"(mldv1 || mldv2 || (ip6.src == $aAS6 && {DYNAMIC})))")
    with pytest.raises(ValueError, match="no IP family"):
        nb.namespace_acls(CTL, "team", port_group="aPG", address_sets={})


def test_switch_options_snoop_and_query_from_the_router_port() -> None:
    v4 = ipaddress.ip_network("10.244.1.0/24")
    v6 = ipaddress.ip_network("fd00:10:244:1::/64")
    assert nb.switch_other_config(subnets=[v4], router_mac="0a:58:0a:f4:01:01") == {
        "mcast_snoop": "true", "mcast_querier": "true", "mcast_eth_src": "0a:58:0a:f4:01:01",
        "mcast_ip4_src": "10.244.1.1"}
    dual = nb.switch_other_config(subnets=[v4, v6], router_mac="0a:58:0a:f4:01:01", idle_timeout=120,
                                  query_interval=30)
    assert dual["mcast_ip6_src"] == "fe80::858:aff:fef4:101"
    assert (dual["mcast_idle_timeout"], dual["mcast_query_interval"]) == ("120", "30")
    # No gateway to query from: snooping only.
    assert nb.switch_other_config(subnets=[], router_mac=None) == {"mcast_snoop": "true", "mcast_querier": "false"}
    assert set(dual) <= set(nb.SWITCH_KEYS)


def test_settings_validate_the_timers() -> None:
    MulticastSettings(idle_timeout=60, query_interval=20).validate()
    MulticastSettings(query_interval=100).validate()  # OVN's idle timeout is 300
    with pytest.raises(ValueError, match="must be shorter than the idle timeout"):
        MulticastSettings(idle_timeout=60, query_interval=60).validate()
