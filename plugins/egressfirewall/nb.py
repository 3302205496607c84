"""The NB rows of EgressFirewall, as pure functions of a namespace's rules (ovn-kubernetes.md §6.3).

==================  ===================================================================
row                 what
==================  ===================================================================
ACL per rule        owner ``EgressFirewall`` (``k8s.ovn.org/name`` = namespace,
                    ``rule-index``), name ``EF:<ns>:<index>``, ``to-lport``, priority
                    ``10000 - index``, ``allow`` or ``drop``, in the ``acls`` of the
                    namespace's port group; match ``(<destination>) && inport == @<pg>``
                    and, with ports, ``&& ((tcp && ( tcp.dst == 80 )))``
DNS address set     owner ``EgressFirewallDNS`` (``k8s.ovn.org/name`` = the DNS name,
                    ``ip-family``), one per name and IP family, shared by every
                    namespace whose rules name it; the rule matches ``ip4.dst == $<set>``
==================  ===================================================================

How the rules compose with NetworkPolicy. Upstream puts both in ACL tier 2
(where the schema has ``tier``, so do we); OVN 23.03 has no tiers, and there the
same placement gives the same result, because:

* NetworkPolicy *egress* ACLs are ``from-lport`` (applied after load balancing,
  priorities 1000/1001): another stage of the pipeline. A packet leaving a pod
  must pass both stages, so a NetworkPolicy allow cannot undo an egress
  firewall drop, and an egress firewall allow cannot undo a NetworkPolicy
  default deny.
* In the ``to-lport`` stage, where egress firewall ACLs sit, NetworkPolicy's
  ingress ACLs (1000/1001), the node and hairpin allows (1001) and multicast
  (1011/1012) are all below 2001, the lowest egress firewall priority: a
  firewall rule that matches is always the one that decides.

A CIDR that overlaps a cluster subnet gets ``ip4.dst != <cluster subnet>``
exclusions, and DNS sets never hold cluster addresses, so pod-to-pod and
pod-to-service traffic (load-balanced to pod IPs before ACLs run) is never
affected.
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ovnk import DbObjectIds
from ovnk import OwnerType
from ovnk.names import IPAddress
from ovnk.names import IPNetwork
from ovnk.plugins.egressfirewall.models import AclLogging
from ovnk.plugins.egressfirewall.models import Port
from ovnk.plugins.egressfirewall.models import Rule

ACL = OwnerType(name="EgressFirewall", table="ACL", keys=("name", "rule-index"))
DNS_SET = OwnerType(name="EgressFirewallDNS", table="Address_Set", keys=("name", "ip-family"))
OWNER_TYPES = (ACL, DNS_SET)

DEFAULT_TIER = 2
ACL_NAME_MAX = 63
METER_NAME = "acl-logging"  # core's NetworkPolicy keeps this meter
#: L4 protocols in the order upstream writes them in a match.
L4_ORDER = ("udp", "tcp", "sctp")


@dataclass(frozen=True)
class AclRow:
    """One rule's desired ACL."""

    ids: DbObjectIds
    name: str
    priority: int
    match: str
    action: str
    severity: str | None = None

    def columns(self, *, tier: bool) -> dict[str, Any]:
        """Complete values of every column we own (``tier`` only where the schema has it)."""
        columns: dict[str, Any] = {
            "name": self.name[:ACL_NAME_MAX],
            "direction": "to-lport",
            "priority": self.priority,
            "match": self.match,
            "action": self.action,
            "log": self.severity is not None,
            "severity": self.severity or [],
            "meter": METER_NAME if self.severity is not None else [],
            "options": {},
        }
        if tier:
            columns["tier"] = DEFAULT_TIER
        return columns


def family_name(version: int) -> str:
    return f"v{version}"


def _ip(version: int) -> str:
    return f"ip{version}"


def acl_ids(controller: str, namespace: str, index: int) -> DbObjectIds:
    return ACL.ids(controller, name=namespace, rule_index=index)


def dns_address_set(controller: str, dns_name: str, version: int) -> tuple[str, DbObjectIds]:
    """(name, ids) of the address set of ``dns_name``'s addresses of one IP family."""
    ids = DNS_SET.ids(controller, name=dns_name, ip_family=family_name(version))
    return ids.hashed_name, ids


def l4_match(ports: Sequence[Port]) -> str:
    """``((tcp && ( tcp.dst == 80 || tcp.dst == 443 )) || (udp))``: per protocol, the listed ports,
    or the whole protocol when a port of it has no number (upstream's shape)."""
    whole: set[str] = set()
    numbers: dict[str, list[int]] = {}
    for port in ports:
        if port.port is None:
            whole.add(port.protocol)
        elif port.port not in numbers.setdefault(port.protocol, []):
            numbers[port.protocol].append(port.port)
    terms = []
    for protocol in L4_ORDER:
        if protocol in whole:
            terms.append(f"({protocol})")
        elif numbers.get(protocol):
            listed = " || ".join(f"{protocol}.dst == {number}" for number in numbers[protocol])
            terms.append(f"({protocol} && ( {listed} ))")
    return f"({' || '.join(terms)})"


def cidr_term(cidr: IPNetwork, cluster_subnets: Sequence[IPNetwork]) -> str:
    """``ip4.dst == <cidr>``, excluding the cluster subnets of its family when it overlaps one."""
    ip = _ip(cidr.version)
    same = [s for s in cluster_subnets if s.version == cidr.version]
    term = f"{ip}.dst == {cidr}"
    if any(cidr.overlaps(s) for s in same):
        term += "".join(f" && {ip}.dst != {s}" for s in same)
    return term


def rule_acl(rule: Rule, *, controller: str, namespace: str, port_group: str,
             cluster_subnets: Sequence[IPNetwork], dns_sets: Mapping[int, str],
             node_ips: Iterable[IPAddress], logging: AclLogging) -> AclRow | None:
    """The ACL of one rule; ``None`` when its destination is empty now (a node selector that
    selects no node with addresses), in which case the rule has no ACL, as upstream.

    :param dns_sets: the address set name per IP family of the rule's DNS name.
    :param node_ips: the host addresses of the nodes the rule's selector matches.
    """
    if rule.cidr is not None:
        terms = [cidr_term(rule.cidr, cluster_subnets)]
    elif rule.dns_name is not None:
        terms = [f"{_ip(version)}.dst == ${name}" for version, name in sorted(dns_sets.items())]
    else:
        ordered = sorted(set(node_ips), key=lambda ip: (ip.version, ip))
        terms = [f"{_ip(ip.version)}.dst == {ip}" for ip in ordered]
    if not terms:
        return None
    match = f"({' || '.join(terms)}) && inport == @{port_group}"
    if rule.ports:
        match += f" && {l4_match(rule.ports)}"
    return AclRow(ids=acl_ids(controller, namespace, rule.index), name=f"EF:{namespace}:{rule.index}",
                  priority=rule.priority, match=match, action="allow" if rule.allows else "drop",
                  severity=logging.allow if rule.allows else logging.deny)


def dns_addresses(addresses: Iterable[IPAddress], *, version: int,
                  cluster_subnets: Sequence[IPNetwork]) -> list[str]:
    """The content of a DNS set of one family: the answer's addresses outside every cluster subnet
    (a name that resolves into the cluster must not open or close pod-to-pod traffic)."""
    kept = {ip for ip in addresses if ip.version == version
            and not any(ip.version == s.version and ip in s for s in cluster_subnets)}
    return [str(ip) for ip in sorted(kept)]
