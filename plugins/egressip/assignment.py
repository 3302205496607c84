"""Which node holds which egress IP: the assignment, as a pure function of the objects and nodes.

The rules are ovn-kubernetes' cluster-manager's (ovn-kubernetes.md §6.1):

* a node may hold egress IPs when it is labelled ``k8s.ovn.org/egress-assignable``,
  ``Ready`` and answering its health check;
* an IP must lie inside one of the node's networks and must not be any node's
  own address;
* one object never puts two of its IPs on one node (so its IPs spread over nodes);
* an IP requested by two objects belongs to the older one; the other gets no
  status entry for it (and an event);
* an assignment that is still valid is kept (no flapping when a node joins);
  the rest go to the eligible node holding the fewest egress IPs so far.

Objects are assigned oldest first, so the result does not depend on the order
events arrived in: the controller can recompute everything on every change.
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field

from ovnk.names import IPAddress
from ovnk.plugins.egressip.models import EgressIPModel
from ovnk.plugins.egressip.models import EgressNode


@dataclass(frozen=True)
class Assignment:
    """The outcome for one EgressIP.

    :ivar assigned: egress IP -> node.
    :ivar unassigned: egress IP -> why no node holds it (for status, events and the CLI).
    :ivar conflicts: egress IP -> the older object that holds it.
    """

    assigned: Mapping[IPAddress, str] = field(default_factory=dict)
    unassigned: Mapping[IPAddress, str] = field(default_factory=dict)
    conflicts: Mapping[IPAddress, str] = field(default_factory=dict)


def assign(objects: Iterable[EgressIPModel], nodes: Iterable[EgressNode]) -> dict[str, Assignment]:
    """Assign every requested IP of every object (see the module docstring); keyed by object name."""
    by_name = {node.name: node for node in nodes}
    node_addresses = {ip for node in by_name.values() for ip in node.addresses}
    load = dict.fromkeys(by_name, 0)
    owner_of: dict[IPAddress, str] = {}
    results: dict[str, Assignment] = {}
    ordered = sorted(objects, key=lambda o: o.order)

    def usable(node: EgressNode | None, ip: IPAddress) -> bool:
        return node is not None and node.eligible and node.hosts(ip)

    # First pass: every object keeps what is still valid, oldest first.
    kept: dict[str, dict[IPAddress, str]] = {}
    for obj in ordered:
        mine: dict[IPAddress, str] = {}
        for ip, node_name in obj.status:
            if (ip in obj.ips and ip not in owner_of and ip not in node_addresses
                    and node_name not in mine.values() and usable(by_name.get(node_name), ip)):
                mine[ip] = node_name
                owner_of[ip] = obj.name
                load[node_name] += 1
        kept[obj.name] = mine
    # Second pass: the rest, to the least loaded eligible node that can host it.
    for obj in ordered:
        assigned = dict(kept[obj.name])
        unassigned: dict[IPAddress, str] = {}
        conflicts: dict[IPAddress, str] = {}
        for ip in obj.ips:
            if ip in assigned:
                continue
            holder = owner_of.get(ip)
            if holder is not None and holder != obj.name:
                conflicts[ip] = holder
                unassigned[ip] = f"{ip} is already used by EgressIP {holder}"
                continue
            if ip in node_addresses:
                unassigned[ip] = f"{ip} is the address of a node"
                continue
            candidates = [n for n in by_name.values()
                          if n.name not in assigned.values() and usable(n, ip)]
            if not candidates:
                unassigned[ip] = _why_unplaceable(ip, by_name.values(), taken=set(assigned.values()))
                continue
            node = min(candidates, key=lambda n: (load[n.name], n.name))
            assigned[ip] = node.name
            owner_of[ip] = obj.name
            load[node.name] += 1
        results[obj.name] = Assignment(assigned=assigned, unassigned=unassigned, conflicts=conflicts)
    return results


def _why_unplaceable(ip: IPAddress, nodes: Iterable[EgressNode], *, taken: set[str]) -> str:
    nodes = list(nodes)
    hosting = [n for n in nodes if n.hosts(ip)]
    if not hosting:
        return f"no node has a network containing {ip}"
    eligible = [n for n in hosting if n.eligible]
    if not eligible:
        reasons = "; ".join(n.why_not for n in hosting[:3])
        return f"no eligible node can host {ip} ({reasons})"
    return f"every eligible node for {ip} already holds another IP of this EgressIP ({', '.join(sorted(taken))})"
