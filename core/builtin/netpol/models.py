"""NetworkPolicy objects parsed into immutable models (pure: no I/O).

:func:`parse_policy` validates everything the NB rows are built from and
raises :class:`PolicyError` naming the offending field (a bad CIDR, an
``except`` outside its ``cidr``, an unknown protocol, ``endPort`` below
``port``...). The reconcile works on these models only, so a test can feed a
model carrying fields the API server would prune (``endPort`` on Kubernetes
1.20).

:func:`parse_scope` reads only what decides *which pods are isolated*
(``podSelector`` and the policy types). It is lenient about everything else:
a policy whose rules are invalid still isolates the pods it selects (fail
closed), while its allow rules are not programmed.

Peer selectors have canonical keys (:attr:`PeerSelector.key`), the
``k8s.ovn.org/name`` of the shared address set holding their pods' IPs:
``<namespace or namespace-selector>_<pod-selector>`` where a selector is
written ``LS{ML:{k: v,},ME:{LSR{Key:k,Operator:In,Values:[a b],}},}`` with
labels, expressions and values sorted, ``LS{}`` when empty and ``nil`` when
absent, as ovn-kubernetes writes them.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterator
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ovnk.core.kube import selectors
from ovnk.core.kube.selectors import LabelSelector
from ovnk.core.topology.naming import IPNetwork

INGRESS = "Ingress"
EGRESS = "Egress"
DIRECTIONS = (INGRESS, EGRESS)
PROTOCOLS = ("TCP", "UDP", "SCTP")
SEVERITIES = ("alert", "warning", "notice", "info", "debug")

# IANA service name, as Kubernetes validates named ports.
_PORT_NAME = re.compile(r"^(?=.*[a-z])[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$")


class PolicyError(ValueError):
    """A NetworkPolicy (or an ACL-logging annotation) that cannot be programmed; the message names the field."""


# ---------------------------------------------------------------------------
# label selectors


def parse_selector(raw: Any, *, field: str) -> LabelSelector:
    """:func:`ovnk.core.kube.selectors.parse_selector` raising :class:`PolicyError`."""
    try:
        return selectors.parse_selector(raw, field=field)
    except selectors.SelectorError as exc:
        raise PolicyError(str(exc)) from exc


def selector_key(selector: LabelSelector | None) -> str:
    return "nil" if selector is None else selector.canonical()


# ---------------------------------------------------------------------------
# peers and ports


@dataclass(frozen=True)
class PeerSelector:
    """Pods a selector peer allows.

    ``namespace`` is set (the policy's own namespace) when the peer has no
    namespace selector; ``pod_selector`` is ``None`` for "every pod of the
    selected namespaces".
    """

    namespace: str | None
    namespace_selector: LabelSelector | None
    pod_selector: LabelSelector | None

    @property
    def key(self) -> str:
        namespace_part = self.namespace if self.namespace_selector is None else self.namespace_selector.canonical()
        return f"{namespace_part}_{selector_key(self.pod_selector)}"

    def selects_namespace(self, name: str, labels: Mapping[str, str]) -> bool:
        if self.namespace_selector is None:
            return name == self.namespace
        return self.namespace_selector.matches(labels)

    def selects_pod(self, labels: Mapping[str, str]) -> bool:
        return self.pod_selector is None or self.pod_selector.matches(labels)


@dataclass(frozen=True)
class IPBlock:
    cidr: IPNetwork
    excepts: tuple[IPNetwork, ...] = ()


@dataclass(frozen=True)
class PolicyPort:
    """One ``ports`` entry. ``port`` is a number, a container port name, or ``None`` (all ports)."""

    protocol: str  # lower case: tcp, udp, sctp
    port: int | str | None = None
    end_port: int | None = None

    @property
    def named(self) -> bool:
        return isinstance(self.port, str)


@dataclass(frozen=True)
class GressRule:
    """One ingress or egress rule; no peers at all means every source/destination."""

    index: int
    ports: tuple[PolicyPort, ...] = ()
    selectors: tuple[PeerSelector, ...] = ()
    ip_blocks: tuple[IPBlock, ...] = ()

    @property
    def allows_all_peers(self) -> bool:
        return not self.selectors and not self.ip_blocks

    @property
    def named_ports(self) -> tuple[PolicyPort, ...]:
        return tuple(p for p in self.ports if p.named)


@dataclass(frozen=True)
class PolicyScope:
    """Which pods a policy isolates, in which directions."""

    namespace: str
    name: str
    pod_selector: LabelSelector
    ingress: bool
    egress: bool

    def isolates(self, direction: str) -> bool:
        return self.ingress if direction == INGRESS else self.egress


@dataclass(frozen=True)
class NetworkPolicyModel:
    namespace: str
    name: str
    pod_selector: LabelSelector
    policy_types: tuple[str, ...]
    ingress: tuple[GressRule, ...] = ()
    egress: tuple[GressRule, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def scope(self) -> PolicyScope:
        return PolicyScope(namespace=self.namespace, name=self.name, pod_selector=self.pod_selector,
                           ingress=INGRESS in self.policy_types, egress=EGRESS in self.policy_types)

    def rules(self, direction: str) -> tuple[GressRule, ...]:
        return self.ingress if direction == INGRESS else self.egress

    def peer_selectors(self) -> Iterator[PeerSelector]:
        for direction in DIRECTIONS:
            for rule in self.rules(direction):
                yield from rule.selectors

    @property
    def has_egress_named_ports(self) -> bool:
        return any(rule.named_ports for rule in self.egress)


# ---------------------------------------------------------------------------
# parsing


def _meta(obj: Mapping[str, Any]) -> tuple[str, str]:
    metadata = obj.get("metadata") or {}
    return str(metadata.get("namespace") or ""), str(metadata.get("name") or "")


def _policy_types(spec: Mapping[str, Any], *, strict: bool) -> tuple[str, ...]:
    raw = spec.get("policyTypes")
    if not raw:
        return (INGRESS, EGRESS) if spec.get("egress") else (INGRESS,)
    types = []
    for value in raw:
        if value not in DIRECTIONS:
            if strict:
                raise PolicyError(f"spec.policyTypes has {value!r}; allowed: Ingress, Egress")
            continue
        if value not in types:
            types.append(value)
    return tuple(t for t in DIRECTIONS if t in types)


def parse_scope(obj: Mapping[str, Any]) -> PolicyScope:
    """The pods a policy isolates (podSelector and policy types only)."""
    namespace, name = _meta(obj)
    spec = obj.get("spec") or {}
    types = _policy_types(spec, strict=False)
    return PolicyScope(namespace=namespace, name=name,
                       pod_selector=parse_selector(spec.get("podSelector"), field="spec.podSelector"),
                       ingress=INGRESS in types, egress=EGRESS in types)


def _parse_port(raw: Any, *, field: str) -> PolicyPort:
    if not isinstance(raw, Mapping):
        raise PolicyError(f"{field} must be an object")
    protocol = raw.get("protocol") or "TCP"
    if protocol not in PROTOCOLS:
        raise PolicyError(f"{field}.protocol {protocol!r} is not one of {', '.join(PROTOCOLS)}")
    port = raw.get("port")
    end_port = raw.get("endPort")
    if isinstance(port, str) and port.isdigit():
        port = int(port)
    if isinstance(port, bool) or not (port is None or isinstance(port, (int, str))):
        raise PolicyError(f"{field}.port {port!r} must be a number or a port name")
    if isinstance(port, int) and not 1 <= port <= 65535:
        raise PolicyError(f"{field}.port {port} is not in 1-65535")
    if isinstance(port, str) and not _PORT_NAME.match(port):
        raise PolicyError(f"{field}.port {port!r} is not a valid port name")
    if end_port is not None:
        if not isinstance(port, int):
            raise PolicyError(f"{field}.endPort needs a numeric port")
        if isinstance(end_port, bool) or not isinstance(end_port, int) or not 1 <= end_port <= 65535:
            raise PolicyError(f"{field}.endPort {end_port!r} is not in 1-65535")
        if end_port < port:
            raise PolicyError(f"{field}.endPort {end_port} is below port {port}")
        if end_port == port:
            end_port = None
    return PolicyPort(protocol=protocol.lower(), port=port, end_port=end_port)


def _parse_ip_block(raw: Any, *, field: str) -> IPBlock:
    if not isinstance(raw, Mapping) or not isinstance(raw.get("cidr"), str):
        raise PolicyError(f"{field}.cidr is required")
    try:
        cidr = ipaddress.ip_network(raw["cidr"], strict=False)
    except ValueError:
        raise PolicyError(f"{field}.cidr {raw['cidr']!r} is not a valid CIDR") from None
    excepts = []
    for index, text in enumerate(raw.get("except") or []):
        try:
            network = ipaddress.ip_network(str(text), strict=False)
        except ValueError:
            raise PolicyError(f"{field}.except[{index}] {text!r} is not a valid CIDR") from None
        if network.version != cidr.version or not network.subnet_of(cidr):  # type: ignore[arg-type]
            raise PolicyError(f"{field}.except[{index}] {network} is outside cidr {cidr}")
        excepts.append(network)
    return IPBlock(cidr=cidr, excepts=tuple(excepts))


def _parse_rule(raw: Any, *, namespace: str, direction: str, index: int) -> GressRule:
    field = f"spec.{direction.lower()}[{index}]"
    if not isinstance(raw, Mapping):
        raise PolicyError(f"{field} must be an object")
    ports = tuple(_parse_port(p, field=f"{field}.ports[{i}]") for i, p in enumerate(raw.get("ports") or []))
    selectors: list[PeerSelector] = []
    blocks: list[IPBlock] = []
    peers_field = "from" if direction == INGRESS else "to"
    for peer_index, peer in enumerate(raw.get(peers_field) or []):
        selector, block = _parse_peer(peer, namespace=namespace, field=f"{field}.{peers_field}[{peer_index}]")
        if selector is not None and selector not in selectors:
            selectors.append(selector)
        if block is not None:
            blocks.append(block)
    return GressRule(index=index, ports=ports, selectors=tuple(selectors), ip_blocks=tuple(blocks))


def _parse_peer(peer: Any, *, namespace: str, field: str) -> tuple[PeerSelector | None, IPBlock | None]:
    if not isinstance(peer, Mapping):
        raise PolicyError(f"{field} must be an object")
    has_selectors = peer.get("podSelector") is not None or peer.get("namespaceSelector") is not None
    if peer.get("ipBlock") is not None:
        if has_selectors:
            raise PolicyError(f"{field}: ipBlock cannot be combined with selectors")
        return None, _parse_ip_block(peer["ipBlock"], field=f"{field}.ipBlock")
    if not has_selectors:
        raise PolicyError(f"{field} needs podSelector, namespaceSelector or ipBlock")
    ns_raw, pod_raw = peer.get("namespaceSelector"), peer.get("podSelector")
    namespace_selector = None if ns_raw is None else parse_selector(ns_raw, field=f"{field}.namespaceSelector")
    pod_selector = None if pod_raw is None else parse_selector(pod_raw, field=f"{field}.podSelector")
    return PeerSelector(namespace=namespace if namespace_selector is None else None,
                        namespace_selector=namespace_selector, pod_selector=pod_selector), None


def parse_policy(obj: Mapping[str, Any]) -> NetworkPolicyModel:
    """Validate a NetworkPolicy object into a model; :class:`PolicyError` names the bad field."""
    namespace, name = _meta(obj)
    if not namespace or not name:
        raise PolicyError("metadata.namespace and metadata.name are required")
    spec = obj.get("spec")
    if not isinstance(spec, Mapping):
        raise PolicyError("spec is required")
    types = _policy_types(spec, strict=True)
    pod_selector = parse_selector(spec.get("podSelector"), field="spec.podSelector")
    gress: dict[str, tuple[GressRule, ...]] = {}
    for direction in DIRECTIONS:
        raw_rules = spec.get(direction.lower()) or []
        if not isinstance(raw_rules, list):
            raise PolicyError(f"spec.{direction.lower()} must be a list")
        rules = tuple(_parse_rule(r, namespace=namespace, direction=direction, index=i) for i, r in enumerate(raw_rules))
        # Rules of a direction the policy does not declare are ignored, as Kubernetes says.
        gress[direction] = rules if direction in types else ()
    return NetworkPolicyModel(namespace=namespace, name=name, pod_selector=pod_selector, policy_types=types,
                              ingress=gress[INGRESS], egress=gress[EGRESS])


def peer_selectors_lenient(obj: Mapping[str, Any]) -> list[PeerSelector]:
    """Selector peers of the declared directions, skipping peers that do not parse.

    Used to index policies by the address sets they reference even when some
    other field of the policy is invalid.
    """
    namespace, _ = _meta(obj)
    spec = obj.get("spec") or {}
    found: list[PeerSelector] = []
    for direction in _policy_types(spec, strict=False):
        peers_field = "from" if direction == INGRESS else "to"
        for rule in spec.get(direction.lower()) or []:
            if not isinstance(rule, Mapping):
                continue
            for peer in rule.get(peers_field) or []:
                try:
                    selector, _block = _parse_peer(peer, namespace=namespace, field="peer")
                except PolicyError:
                    continue
                if selector is not None and selector not in found:
                    found.append(selector)
    return found


# ---------------------------------------------------------------------------
# ACL logging (namespace annotation k8s.ovn.org/acl-logging)


@dataclass(frozen=True)
class AclLogging:
    """Severity for allowed and denied traffic; ``None`` means not logged."""

    allow: str | None = None
    deny: str | None = None


NO_LOGGING = AclLogging()


def parse_acl_logging(raw: str | None) -> AclLogging:
    """Parse ``{"deny": "alert", "allow": "notice"}``; missing or empty means off."""
    if not raw:
        return NO_LOGGING
    try:
        doc = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise PolicyError(f"annotation k8s.ovn.org/acl-logging is not valid JSON: {exc}") from None
    if not isinstance(doc, Mapping):
        raise PolicyError("annotation k8s.ovn.org/acl-logging must be a JSON object")
    levels: dict[str, str | None] = {}
    for action in ("allow", "deny"):
        value = doc.get(action)
        if value in (None, ""):
            levels[action] = None
        elif value in SEVERITIES:
            levels[action] = str(value)
        else:
            raise PolicyError(f"annotation k8s.ovn.org/acl-logging: {action} level {value!r} is not one of "
                              f"{', '.join(SEVERITIES)}")
    return AclLogging(allow=levels["allow"], deny=levels["deny"])
