"""Rows the egress features share: the default no-reroute policies and the ``node-ips`` address set.

EgressIP (priority 100) and EgressService (101) reroute selected pods' traffic
on ``ovn_cluster_router`` to a chosen node. Traffic that must never be
rerouted is let through first by priority-102 ``allow`` policies: pod to pod
(the cluster subnets), pod to the join subnet (services through the gateway
routers), and replies of connections that came in to a pod from outside
(``pkt.mark == 42``, marked on the node switches). Each feature also keeps
its own pod to node policy (``$<its served pods> && ip4.dst == $node-ips``),
so this module only builds what both need and both write identically.

Whichever of the two features is enabled writes these rows; both claim their
owner types with ``shared=True`` (see :meth:`ovnk.core.claims.Claims.owner_type`),
so the rows stay while either is on and repair removes them when both are off.
Names, matches and priorities are ovn-kubernetes' (ovn-kubernetes.md §6.1).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING
from typing import Any

from ovnk.core.config import Config
from ovnk.core.ovn.commands import Match
from ovnk.core.ovn.commands import Parent
from ovnk.core.ovn.ids import DbObjectIds
from ovnk.core.ovn.ids import OwnerType
from ovnk.core.topology import annotations as ann
from ovnk.core.topology import naming as n
from ovnk.core.topology.naming import IPAddress

if TYPE_CHECKING:
    from ovnk.core.ovn.txn import NbTxn

#: The shared priority-102 policies on ``ovn_cluster_router``.
NO_REROUTE_POLICY = OwnerType(name="EgressNoReroute", table="Logical_Router_Policy",
                              keys=("name", "priority", "ip-family", "network"))
#: The shared ``node-ips`` address set (every node's host addresses).
NODE_IPS_SET = OwnerType(name="EgressNodeIPs", table="Address_Set", keys=("name", "network", "ip-family"))

SHARED_OWNERS = (NO_REROUTE_POLICY, NODE_IPS_SET)

POD_TO_POD = "EIP-No-Reroute-Pod-To-Pod"
POD_TO_JOIN = "EIP-No-Reroute-Pod-To-Join"
REPLY_TRAFFIC = "EIP-No-Reroute-reply-traffic"
NODE_IPS = "node-ips"
#: ``pkt.mark`` of replies from pods of connections that came in from outside (upstream's value).
REPLY_TRAFFIC_MARK = 42


def family_name(version: int) -> str:
    """``ip4`` or ``ip6``, the ``ip-family`` key value and the match prefix."""
    return "ip4" if version == 4 else "ip6"


def _set_of(networks: Iterable[Any]) -> str:
    items = [str(x) for x in networks]
    return items[0] if len(items) == 1 else "{" + ", ".join(items) + "}"


def node_ips_set(controller: str, version: int) -> tuple[str, Any]:
    """(name, ids) of the ``node-ips`` address set of one IP family."""
    oids = NODE_IPS_SET.ids(controller, name=NODE_IPS, network=n.DEFAULT_NETWORK, ip_family=family_name(version))
    return oids.hashed_name, oids


@dataclass(frozen=True)
class SharedRow:
    """One shared row: its identity, its table, its complete columns and the row it hangs from."""

    ids: DbObjectIds
    columns: Mapping[str, Any]
    parent: Parent | None = None

    @property
    def table(self) -> str:
        return self.ids.owner.table


def shared_rows(config: Config, *, controller: str,
                node_ips: Mapping[int, Iterable[IPAddress]]) -> list[SharedRow]:
    """Every shared row for the configured cluster subnets, with ``node-ips`` holding ``node_ips``.

    :param node_ips: the nodes' host addresses by IP version (4, 6).
    """
    rows: list[SharedRow] = []
    priority = n.DEFAULT_NO_REROUTE_PRIORITY
    router = Parent(Match.of("Logical_Router", name=n.CLUSTER_ROUTER), "policies")

    def policy(name: str, family: str, match: str) -> SharedRow:
        ids = NO_REROUTE_POLICY.ids(controller, name=name, priority=priority, ip_family=family,
                                    network=n.DEFAULT_NETWORK)
        return SharedRow(ids, {"priority": priority, "action": "allow", "match": match}, router)

    joins = {4: config.gateway.v4_join_subnet}
    for version in (4, 6):
        clusters = [s.network for s in config.default.cluster_subnets if s.network.version == version]
        if not clusters:
            continue
        family = family_name(version)
        within = _set_of(clusters)
        rows.append(policy(POD_TO_POD, family, f"{family}.src == {within} && {family}.dst == {within}"))
        join = joins.get(version)
        if join is not None:
            rows.append(policy(POD_TO_JOIN, family, f"{family}.src == {within} && {family}.dst == {join}"))
        _, set_ids = node_ips_set(controller, version)
        rows.append(SharedRow(set_ids, {"addresses": node_ip_addresses(node_ips.get(version, ()), version)}))
    rows.append(policy(REPLY_TRAFFIC, "ip", f"pkt.mark == {REPLY_TRAFFIC_MARK}"))
    return rows


def write_shared_rows(txn: NbTxn, rows: Iterable[SharedRow]) -> None:
    """Ensure every shared row (idempotent: both features may write the same rows)."""
    for row in rows:
        name = row.ids.hashed_name if row.table == "Address_Set" else None
        txn.ensure(row.table, name=name, ids=row.ids, columns=row.columns, parent=row.parent)


def node_ip_addresses(addresses: Iterable[IPAddress], version: int) -> list[str]:
    """The ``node-ips`` content of one family: sorted unique addresses."""
    return sorted({str(ip) for ip in addresses if ip.version == version}, key=ipaddress.ip_address)


def node_host_addresses(node: Mapping[str, Any]) -> tuple[IPAddress, ...]:
    """A Node's host addresses as ``node-ips`` holds them: its primary interface address
    (``k8s.ovn.org/node-primary-ifaddr``), its ``k8s.ovn.org/host-cidrs`` and its
    ``InternalIP``/``ExternalIP`` status addresses, first occurrence first.

    Both egress features fill the shared set from this one function, so whichever is
    enabled writes the same content and the two never rewrite each other's rows.
    """
    addresses: list[IPAddress] = []
    try:
        primary = ann.primary_ifaddr(node)
    except ann.AnnotationError:
        primary = None
    if primary is not None:
        addresses.append(primary.ip)
    raw = ann.annotations_of(node).get(ann.HOST_CIDRS)
    if raw:
        try:
            for cidr in json.loads(raw):
                ip = ipaddress.ip_interface(cidr).ip
                if ip not in addresses:
                    addresses.append(ip)
        except (ValueError, TypeError):
            pass
    for address in (node.get("status") or {}).get("addresses") or ():
        if address.get("type") in ("InternalIP", "ExternalIP"):
            try:
                ip = ipaddress.ip_address(address.get("address", ""))
            except ValueError:
                continue
            if ip not in addresses:
                addresses.append(ip)
    return tuple(addresses)


def all_node_addresses(nodes: Iterable[Mapping[str, Any]]) -> dict[int, list[IPAddress]]:
    """``node_ips`` for :func:`shared_rows`: every node's host addresses by IP version."""
    found: dict[int, list[IPAddress]] = {4: [], 6: []}
    for node in nodes:
        for ip in node_host_addresses(node):
            found[ip.version].append(ip)
    return found
