"""The NB rows of multicast, as pure functions (ovn-kubernetes.md §6.4).

==========================  ==========================  ========  ======  =======================================
ACL (owner type, type key)  port group                  priority  action  match
==========================  ==========================  ========  ======  =======================================
``MulticastCluster``        ``clusterPortGroup``        1011      drop    ``(ip4.mcast || mldv1 || mldv2 ||
``DefaultDeny``, both                                                     <IPv6 dynamic group>)``
directions
``MulticastCluster``        ``clusterRtrPortGroup``     1012      allow   ``inport == @<pg> && <same>`` (egress),
``AllowInterNode``, both                                                  ``outport == @<pg> && <same>`` (ingress)
directions
``MulticastNS`` egress      the namespace's port group  1012      allow   ``inport == @<pg> && ip4.mcast``
``MulticastNS`` ingress     the namespace's port group  1012      allow   ``outport == @<pg> && (igmp ||
                                                                          (ip4.src == $<namespace set> &&
                                                                          ip4.mcast))``
==========================  ==========================  ========  ======  =======================================

Egress ACLs are ``from-lport`` with ``options:apply-after-lb=true``, ingress
ACLs ``to-lport``; all sit in the default tier 2 where the schema has a
``tier`` column (OVN 23.06 and later). Without tiers the priorities alone
order them above NetworkPolicy's (1000/1001), as upstream did before tiers:
multicast is decided here, not by NetworkPolicy. IPv6 uses MLD and the
dynamic groups (``ff3x::/32`` with the T bit). The default deny also drops
pods' IGMP/MLD reports, so a pod of a namespace without multicast never joins
a group. Node switches get ``other_config`` ``mcast_snoop``,
``mcast_querier`` (with the ``rtos-`` MAC and gateway IPs as query source) and
the cluster router ``options:mcast_relay=true``.
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ovnk import DbObjectIds
from ovnk import OwnerType
from ovnk import names
from ovnk.names import IPNetwork
from ovnk.plugins.multicast.models import ipv6_link_local

CLUSTER_ACL = OwnerType(name="MulticastCluster", table="ACL", keys=("type", "direction"))
NAMESPACE_ACL = OwnerType(name="MulticastNS", table="ACL", keys=("name", "direction"))
OWNER_TYPES = (CLUSTER_ACL, NAMESPACE_ACL)

DENY_PRIORITY = 1011
ALLOW_PRIORITY = 1012
DEFAULT_TIER = 2
EGRESS = "Egress"
INGRESS = "Ingress"
DIRECTIONS = (EGRESS, INGRESS)
DEFAULT_DENY = "DefaultDeny"
ALLOW_INTER_NODE = "AllowInterNode"

#: IPv6 multicast to dynamic groups has the T flag set (RFC 3307 §4.3).
IPV6_DYNAMIC_GROUP = "(ip6.dst[120..127] == 0xff && ip6.dst[116] == 1)"
#: Every multicast datagram and membership message, whatever the cluster's IP families.
MULTICAST = f"(ip4.mcast || mldv1 || mldv2 || {IPV6_DYNAMIC_GROUP})"

ROUTER_OPTIONS: Mapping[str, str] = {"mcast_relay": "true"}
#: Every ``other_config`` key of a node switch this plugin may write.
SWITCH_KEYS = ("mcast_snoop", "mcast_querier", "mcast_eth_src", "mcast_ip4_src", "mcast_ip6_src",
               "mcast_idle_timeout", "mcast_query_interval")


@dataclass(frozen=True)
class AclRow:
    """One desired ACL and the port group whose ``acls`` holds it."""

    ids: DbObjectIds
    port_group: str
    direction: str  # EGRESS or INGRESS
    priority: int
    match: str
    action: str

    def columns(self, *, tier: bool) -> dict[str, Any]:
        """Complete values of every column we own (``tier`` only where the schema has it)."""
        columns: dict[str, Any] = {
            "name": [],
            "direction": "from-lport" if self.direction == EGRESS else "to-lport",
            "priority": self.priority,
            "match": self.match,
            "action": self.action,
            "log": False,
            "severity": [],
            "meter": [],
            "options": {"apply-after-lb": "true"} if self.direction == EGRESS else {},
        }
        if tier:
            columns["tier"] = DEFAULT_TIER
        return columns


def _lport(direction: str, port_group: str) -> str:
    return f"inport == @{port_group}" if direction == EGRESS else f"outport == @{port_group}"


def _either(v4: str | None, v6: str | None) -> str:
    if v4 and v6:
        return f"({v4} || {v6})"
    result = v4 or v6
    if not result:
        raise ValueError("no IP family")
    return result


def cluster_acls(controller: str, *, cluster_port_group: str, router_port_group: str) -> list[AclRow]:
    """The default deny of every pod's multicast and the allow on the cluster router's switch ports."""
    acls = []
    for direction in DIRECTIONS:
        acls.append(AclRow(ids=CLUSTER_ACL.ids(controller, type=DEFAULT_DENY, direction=direction),
                           port_group=cluster_port_group, direction=direction, priority=DENY_PRIORITY,
                           match=MULTICAST, action="drop"))
        acls.append(AclRow(ids=CLUSTER_ACL.ids(controller, type=ALLOW_INTER_NODE, direction=direction),
                           port_group=router_port_group, direction=direction, priority=ALLOW_PRIORITY,
                           match=f"{_lport(direction, router_port_group)} && {MULTICAST}", action="allow"))
    return acls


def egress_match(families: Iterable[int]) -> str:
    """What a namespace's pods may send: any IPv4 multicast (IGMP included), MLD and IPv6 dynamic groups."""
    fams = set(families)
    return _either("ip4.mcast" if 4 in fams else None,
                   f"(mldv1 || mldv2 || {IPV6_DYNAMIC_GROUP})" if 6 in fams else None)


def ingress_match(address_sets: Mapping[int, str]) -> str:
    """What a namespace's pods may receive: queries, and multicast sent by the namespace's own pods
    (``address_sets``: the namespace's address set name per IP family)."""
    v4 = f"(igmp || (ip4.src == ${address_sets[4]} && ip4.mcast))" if 4 in address_sets else None
    v6 = (f"(mldv1 || mldv2 || (ip6.src == ${address_sets[6]} && {IPV6_DYNAMIC_GROUP}))"
          if 6 in address_sets else None)
    return _either(v4, v6)


def namespace_acls(controller: str, namespace: str, *, port_group: str,
                   address_sets: Mapping[int, str]) -> list[AclRow]:
    """The two allow ACLs of a namespace with multicast enabled, on its port group."""
    return [
        AclRow(ids=NAMESPACE_ACL.ids(controller, name=namespace, direction=EGRESS), port_group=port_group,
               direction=EGRESS, priority=ALLOW_PRIORITY,
               match=f"{_lport(EGRESS, port_group)} && {egress_match(address_sets.keys())}", action="allow"),
        AclRow(ids=NAMESPACE_ACL.ids(controller, name=namespace, direction=INGRESS), port_group=port_group,
               direction=INGRESS, priority=ALLOW_PRIORITY,
               match=f"{_lport(INGRESS, port_group)} && {ingress_match(address_sets)}", action="allow"),
    ]


def switch_other_config(*, subnets: Sequence[IPNetwork], router_mac: str | None, idle_timeout: int = 0,
                        query_interval: int = 0) -> dict[str, str]:
    """The multicast keys of a node switch: snooping on; the querier on when the switch has a gateway
    (its queries come from the ``rtos-`` port's MAC and gateway IPs), off otherwise."""
    config = {"mcast_snoop": "true"}
    v4 = [s for s in subnets if s.version == 4]
    v6 = [s for s in subnets if s.version == 6]
    if router_mac and (v4 or v6):
        config["mcast_querier"] = "true"
        config["mcast_eth_src"] = router_mac
        if v4:
            config["mcast_ip4_src"] = str(names.gateway_ip(v4[0]))
        if v6:
            config["mcast_ip6_src"] = str(ipv6_link_local(router_mac))
    else:
        config["mcast_querier"] = "false"
    if idle_timeout:
        config["mcast_idle_timeout"] = str(idle_timeout)
    if query_interval:
        config["mcast_query_interval"] = str(query_interval)
    return config
