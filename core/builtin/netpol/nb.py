"""NB rows of NetworkPolicy as intents: owner types, names and ACL builders (pure).

Follows ovn-kubernetes.md §5. Every ACL sits in the default tier (2, where
the schema has a ``tier`` column); ingress ACLs are ``to-lport`` and match
``outport == @<pg>``; egress ACLs are ``from-lport`` with
``options:apply-after-lb=true`` (so they see the load-balanced destination)
and match ``inport == @<pg>``.

==========================================  ========  ================
ACL                                         priority  action
==========================================  ========  ================
namespace default deny (per direction)      1000      drop
ARP/ND on the default-deny port group       1001      allow
policy rule                                 1001      allow-related
node management IP (to-lport, node switch)  1001      allow-related
hairpin (both directions, clusterPortGroup) 1001      allow-related
==========================================  ========  ================
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ovnk.core.builtin.netpol.models import DIRECTIONS
from ovnk.core.builtin.netpol.models import INGRESS
from ovnk.core.builtin.netpol.models import AclLogging
from ovnk.core.builtin.netpol.models import GressRule
from ovnk.core.builtin.netpol.models import IPBlock
from ovnk.core.builtin.netpol.models import NetworkPolicyModel
from ovnk.core.builtin.netpol.models import PeerSelector
from ovnk.core.ovn.ids import DbObjectIds
from ovnk.core.ovn.ids import OwnerType
from ovnk.core.ovn.ids import hashed_name
from ovnk.core.ovn.ids import parse_ids
from ovnk.core.topology.naming import IPAddress
from ovnk.core.topology.naming import IPNetwork

NETPOL_NAMESPACE_PG = OwnerType(name="NetpolNamespace", table="Port_Group", keys=("name", "direction"))
NETPOL_NAMESPACE_ACL = OwnerType(name="NetpolNamespace", table="ACL", keys=("name", "direction", "type"))
NETWORK_POLICY_PG = OwnerType(name="NetworkPolicy", table="Port_Group", keys=("name",))
NETWORK_POLICY_ACL = OwnerType(name="NetworkPolicy", table="ACL",
                               keys=("name", "direction", "gress-index", "ip-block-index", "port-policy-protocol"))
POD_SELECTOR_AS = OwnerType(name="PodSelector", table="Address_Set", keys=("name", "ip-family"))
NETPOL_DEFAULT_ACL = OwnerType(name="NetpolDefault", table="ACL", keys=("name", "direction"))
NETPOL_NODE_ACL = OwnerType(name="NetpolNode", table="ACL", keys=("name", "ip"))
ACL_LOGGING_METER = OwnerType(name="NetpolDefault", table="Meter", keys=("name",))
ACL_LOGGING_METER_BAND = OwnerType(name="NetpolDefault", table="Meter_Band", keys=("name",))

OWNER_TYPES = (NETPOL_NAMESPACE_PG, NETPOL_NAMESPACE_ACL, NETWORK_POLICY_PG, NETWORK_POLICY_ACL, POD_SELECTOR_AS,
               NETPOL_DEFAULT_ACL, NETPOL_NODE_ACL, ACL_LOGGING_METER, ACL_LOGGING_METER_BAND)

DEFAULT_TIER = 2
DENY_PRIORITY = 1000
ALLOW_PRIORITY = 1001
METER_NAME = "acl-logging"
METER_RATE_PPS = 20
HAIRPIN_NAME = "allow-hairpinning"
ACL_NAME_MAX = 63
IP_BLOCK_SELECTORS = -1  # ip-block-index of the selector (or allow-all) ACL of a rule
IP_BLOCK_COMBINED = -2  # ip-block-index of the one ACL holding all ipBlocks of a rule
NO_PORTS = "None"


@dataclass(frozen=True)
class AclIntent:
    """One desired ACL row."""

    ids: DbObjectIds
    direction: str  # "to-lport" or "from-lport"
    priority: int
    match: str
    action: str
    name: str | None = None
    after_lb: bool = False
    severity: str | None = None

    def columns(self, *, tier: bool) -> dict[str, Any]:
        """Complete values of every column we own (``tier`` only where the schema has it)."""
        columns: dict[str, Any] = {
            "name": self.name[:ACL_NAME_MAX] if self.name else [],
            "direction": self.direction,
            "priority": self.priority,
            "match": self.match,
            "action": self.action,
            "log": self.severity is not None,
            "severity": self.severity or [],
            "meter": METER_NAME if self.severity is not None else [],
            "options": {"apply-after-lb": "true"} if self.after_lb else {},
        }
        if tier:
            columns["tier"] = DEFAULT_TIER
        return columns


@dataclass(frozen=True)
class NamedPortTarget:
    """A named port resolved on one pod: traffic to ``ip`` on ``port`` (``protocol``) is allowed."""

    protocol: str
    ip: IPAddress
    port: int


def pipeline(direction: str) -> tuple[str, bool]:
    """(ACL direction, apply-after-lb) of a policy direction."""
    return ("to-lport", False) if direction == INGRESS else ("from-lport", True)


def _lport(direction: str, port_group: str) -> str:
    return f"outport == @{port_group}" if direction == INGRESS else f"inport == @{port_group}"


def _ip(family: int) -> str:
    return "ip4" if family == 4 else "ip6"


# -- names -------------------------------------------------------------------


def policy_port_group(controller: str, namespace: str, name: str) -> tuple[str, DbObjectIds]:
    ids = NETWORK_POLICY_PG.ids(controller, name=f"{namespace}:{name}")
    return hashed_name(ids.primary_id), ids


def default_deny_port_group(controller: str, namespace: str, direction: str) -> tuple[str, DbObjectIds]:
    ids = NETPOL_NAMESPACE_PG.ids(controller, name=namespace, direction=direction)
    return hashed_name(ids.primary_id), ids


def peer_address_set(controller: str, key: str, family: int) -> tuple[str, DbObjectIds]:
    ids = POD_SELECTOR_AS.ids(controller, name=key, ip_family=f"v{family}")
    return hashed_name(ids.primary_id), ids


# -- matches -------------------------------------------------------------------


def all_ips_match(families: Sequence[int]) -> str:
    if len(families) > 1:
        return "(" + " || ".join(_ip(f) for f in families) + ")"
    return _ip(families[0])


def selector_match(controller: str, selectors: Iterable[PeerSelector], *, direction: str,
                   families: Sequence[int], hairpin_ip: IPAddress | None) -> str:
    """``(ip4.src == {$a, $b} || (ip4.src == <hairpin> && ip4.dst == {$a, $b}))`` (ingress).

    The hairpin clause lets a selected pod reach itself through a service: the
    gateway SNATs such traffic to the hairpin masquerade IP.
    """
    peer, own = ("src", "dst") if direction == INGRESS else ("dst", "src")
    keys = sorted({s.key for s in selectors})
    clauses = []
    for family in families:
        names = ", ".join(sorted("$" + peer_address_set(controller, key, family)[0] for key in keys))
        ip = _ip(family)
        if hairpin_ip is not None and hairpin_ip.version == family:
            clauses.append(f"({ip}.{peer} == {{{names}}} || ({ip}.{peer} == {hairpin_ip} && {ip}.{own} == {{{names}}}))")
        else:
            clauses.append(f"{ip}.{peer} == {{{names}}}")
    return clauses[0] if len(clauses) == 1 else "(" + " || ".join(clauses) + ")"


def allowed_networks(blocks: Iterable[IPBlock]) -> dict[int, list[IPNetwork]]:
    """The addresses a rule's ipBlocks allow, per IP version, as the fewest disjoint prefixes.

    Each block is its ``cidr`` minus its ``except`` entries; the blocks of a rule are alternatives,
    so their results are united. Only positive prefixes come out: written as ``ip4.src !=
    {...}``, excepts make ovn-controller's flow count grow exponentially with their number
    (issue 24: 8 excepted /32s took ovn-controller past 2 GB), while N excepts cut a prefix into
    at most 32 N (128 N for IPv6) prefixes, one flow each.
    """
    ranges: dict[int, list[tuple[int, int]]] = {}
    for block in blocks:
        start, end = int(block.cidr.network_address), int(block.cidr.broadcast_address)
        holes = sorted((int(e.network_address), int(e.broadcast_address)) for e in block.excepts)
        kept = ranges.setdefault(block.cidr.version, [])
        for hole_start, hole_end in holes:
            if hole_start > start:
                kept.append((start, hole_start - 1))
            start = max(start, hole_end + 1)
        if start <= end:
            kept.append((start, end))
    networks: dict[int, list[IPNetwork]] = {}
    for version, spans in sorted(ranges.items()):
        merged: list[tuple[int, int]] = []
        for span_start, span_end in sorted(spans):
            if merged and span_start <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(merged[-1][1], span_end))
            else:
                merged.append((span_start, span_end))
        address = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
        found: list[IPNetwork] = []
        for span_start, span_end in merged:
            found.extend(ipaddress.summarize_address_range(address(span_start), address(span_end)))
        if found:
            networks[version] = found
    return networks


def ip_block_match(blocks: Iterable[IPBlock], *, direction: str) -> str | None:
    """``ip4.src == {10.0.0.0/16, 10.2.0.0/15, ...}`` for all blocks of a rule combined (see
    :func:`allowed_networks`); ``None`` when the excepts leave nothing, so the rule allows no address."""
    peer = "src" if direction == INGRESS else "dst"
    terms = []
    for version, networks in allowed_networks(blocks).items():
        ip = _ip(version)
        if len(networks) == 1:
            terms.append(f"{ip}.{peer} == {networks[0]}")
        else:
            terms.append(f"{ip}.{peer} == {{{', '.join(str(n) for n in networks)}}}")
    if not terms:
        return None
    return terms[0] if len(terms) == 1 else "(" + " || ".join(terms) + ")"


def l4_matches(rule: GressRule, targets: Sequence[NamedPortTarget] = ()) -> dict[str, str]:
    """L4 match per ``port-policy-protocol`` key; ``""`` under ``None`` when the rule has no ports.

    Numbers and ranges of one protocol share an ACL (``tcp && (tcp.dst == {80, 443} ||
    1000<=tcp.dst<=2000)``); named ports become ``(ip4.dst == <podIP> && tcp.dst == <port>)``
    terms under ``<protocol>-namedPort``. A rule whose ports are all unresolved names
    yields nothing: it allows no traffic.
    """
    if not rule.ports:
        return {NO_PORTS: ""}
    whole: set[str] = set()
    singles: dict[str, set[int]] = {}
    ranges: dict[str, set[tuple[int, int]]] = {}
    for port in rule.ports:
        if port.named:
            continue
        if port.port is None:
            whole.add(port.protocol)
        elif port.end_port is not None:
            ranges.setdefault(port.protocol, set()).add((int(port.port), port.end_port))
        else:
            singles.setdefault(port.protocol, set()).add(int(port.port))
    result: dict[str, str] = {}
    for protocol in sorted(whole | set(singles) | set(ranges)):
        if protocol in whole:
            result[protocol] = protocol
            continue
        parts = []
        numbers = sorted(singles.get(protocol, ()))
        if len(numbers) == 1:
            parts.append(f"{protocol}.dst == {numbers[0]}")
        elif numbers:
            parts.append(f"{protocol}.dst == {{{', '.join(map(str, numbers))}}}")
        parts.extend(f"{lo}<={protocol}.dst<={hi}" for lo, hi in sorted(ranges.get(protocol, ())))
        result[protocol] = f"{protocol} && {parts[0]}" if len(parts) == 1 else f"{protocol} && ({' || '.join(parts)})"
    by_protocol: dict[str, set[tuple[str, str, int]]] = {}
    for target in targets:
        by_protocol.setdefault(target.protocol, set()).add((_ip(target.ip.version), str(target.ip), target.port))
    for protocol, terms in sorted(by_protocol.items()):
        text = " || ".join(f"({ip}.dst == {addr} && {protocol}.dst == {port})" for ip, addr, port in sorted(terms))
        result[f"{protocol}-namedPort"] = f"({text})"
    return result


def _join(*parts: str) -> str:
    return " && ".join(p for p in parts if p)


# -- ACL builders ------------------------------------------------------------------


def policy_acls(model: NetworkPolicyModel, *, controller: str, port_group: str, families: Sequence[int],
                hairpin_ip: IPAddress | None, logging: AclLogging,
                named_targets: Mapping[tuple[str, int], Sequence[NamedPortTarget]] | None = None) -> list[AclIntent]:
    """The allow ACLs of one policy, one per (rule, protocol key, peer kind)."""
    acls = []
    for direction in DIRECTIONS:
        acl_direction, after_lb = pipeline(direction)
        lport = _lport(direction, port_group)
        for rule in model.rules(direction):
            name = f"NP:{model.namespace}:{model.name}:{direction}:{rule.index}"
            targets = (named_targets or {}).get((direction, rule.index), ())
            for protocol, l4 in l4_matches(rule, targets).items():
                peers: list[tuple[int, str]] = []
                blocks = ip_block_match(rule.ip_blocks, direction=direction) if rule.ip_blocks else None
                if blocks is not None:
                    peers.append((IP_BLOCK_COMBINED, blocks))
                if rule.selectors:
                    peers.append((IP_BLOCK_SELECTORS, selector_match(
                        controller, rule.selectors, direction=direction, families=families, hairpin_ip=hairpin_ip)))
                if rule.allows_all_peers:
                    peers.append((IP_BLOCK_SELECTORS, all_ips_match(families)))
                for block_index, l3 in peers:
                    ids = NETWORK_POLICY_ACL.ids(
                        controller, name=f"{model.namespace}:{model.name}", direction=direction,
                        gress_index=rule.index, ip_block_index=block_index, port_policy_protocol=protocol)
                    acls.append(AclIntent(ids=ids, direction=acl_direction, priority=ALLOW_PRIORITY,
                                          match=_join(l3, l4, lport), action="allow-related", name=name,
                                          after_lb=after_lb, severity=logging.allow))
    return acls


def default_deny_acls(controller: str, namespace: str, direction: str, port_group: str,
                      logging: AclLogging) -> list[AclIntent]:
    """Drop everything to (ingress) or from (egress) the port group, except ARP/ND."""
    acl_direction, after_lb = pipeline(direction)
    lport = _lport(direction, port_group)
    name = f"NP:{namespace}:{direction}"
    return [
        AclIntent(ids=NETPOL_NAMESPACE_ACL.ids(controller, name=namespace, direction=direction, type="defaultDeny"),
                  direction=acl_direction, priority=DENY_PRIORITY, match=lport, action="drop", name=name,
                  after_lb=after_lb, severity=logging.deny),
        AclIntent(ids=NETPOL_NAMESPACE_ACL.ids(controller, name=namespace, direction=direction, type="arpAllow"),
                  direction=acl_direction, priority=ALLOW_PRIORITY, match=f"{lport} && (arp || nd)", action="allow",
                  name=name, after_lb=after_lb),
    ]


def hairpin_acls(controller: str, hairpin_ip: IPAddress) -> list[AclIntent]:
    """Allow traffic SNATed to the hairpin masquerade IP in both directions (on clusterPortGroup)."""
    acls = []
    for direction in DIRECTIONS:
        acl_direction, after_lb = pipeline(direction)
        acls.append(AclIntent(ids=NETPOL_DEFAULT_ACL.ids(controller, name=HAIRPIN_NAME, direction=direction),
                              direction=acl_direction, priority=ALLOW_PRIORITY,
                              match=f"{_ip(hairpin_ip.version)}.src == {hairpin_ip}", action="allow-related",
                              name=HAIRPIN_NAME, after_lb=after_lb))
    return acls


def node_acls(controller: str, node: str, mgmt_ips: Iterable[IPAddress]) -> list[AclIntent]:
    """Let the node's management port (kubelet probes) through default deny, on the node switch."""
    return [AclIntent(ids=NETPOL_NODE_ACL.ids(controller, name=node, ip=str(ip)), direction="to-lport",
                      priority=ALLOW_PRIORITY, match=f"{_ip(ip.version)}.src == {ip}", action="allow-related")
            for ip in mgmt_ips]


def meter_band_ids(controller: str) -> DbObjectIds:
    return ACL_LOGGING_METER_BAND.ids(controller, name=METER_NAME)


def meter_ids(controller: str) -> DbObjectIds:
    return ACL_LOGGING_METER.ids(controller, name=METER_NAME)


METER_BAND_COLUMNS: Mapping[str, Any] = {"action": "drop", "rate": METER_RATE_PPS}
METER_COLUMNS: Mapping[str, Any] = {"unit": "pktps", "fair": [True]}


# -- naming rows back (ovnk trace) ----------------------------------------------------


def explain_acl(external_ids: Mapping[str, str]) -> str | None:
    """A NetworkPolicy ACL in Kubernetes terms (``ovnk_trace_explain``); ``None`` for other rows."""
    policy = parse_ids(NETWORK_POLICY_ACL, external_ids)
    if policy is not None:
        namespace, _, name = policy.value("name").partition(":")
        direction = policy.value("direction").lower()
        peers = {str(IP_BLOCK_COMBINED): "ipBlock peers", str(IP_BLOCK_SELECTORS): "selector peers"}.get(
            policy.value("ip-block-index"), f"ipBlock {policy.value('ip-block-index')}")
        protocol = policy.value("port-policy-protocol")
        ports = "any port" if protocol == NO_PORTS else f"ports {protocol}"
        return f"NetworkPolicy {namespace}/{name}, {direction} rule {policy.value('gress-index')} ({peers}, {ports})"
    namespace_acl = parse_ids(NETPOL_NAMESPACE_ACL, external_ids)
    if namespace_acl is not None:
        direction = namespace_acl.value("direction").lower()
        namespace = namespace_acl.value("name")
        if namespace_acl.value("type") == "defaultDeny":
            return (f"the {direction} default deny of namespace {namespace} (a NetworkPolicy with {direction} "
                    f"rules selects the pod and none of its rules allows this)")
        return f"ARP/ND let through the {direction} default deny of namespace {namespace}"
    default = parse_ids(NETPOL_DEFAULT_ACL, external_ids)
    if default is not None:
        return "the hairpin allow (a pod reaching itself through a service is never blocked by NetworkPolicy)"
    node = parse_ids(NETPOL_NODE_ACL, external_ids)
    if node is not None:
        return f"the management port allow of node {node.value('name')} (kubelet probes pass NetworkPolicy)"
    return None
