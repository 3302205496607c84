"""EgressIP objects and the node facts assignment needs, parsed into immutable models (pure: no I/O)."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import ovnk.annotations as ann
from ovnk import LabelSelector
from ovnk import SelectorError
from ovnk import egress
from ovnk import parse_selector
from ovnk.names import IPAddress
from ovnk.names import IPNetwork

#: Nodes that may hold egress IPs carry this label (any value).
ASSIGNABLE_LABEL = "k8s.ovn.org/egress-assignable"


class EgressIPError(ValueError):
    """An EgressIP that cannot be programmed; the message names the field."""


@dataclass(frozen=True)
class EgressIPModel:
    """One EgressIP: what it asks for and what its status says it holds.

    :ivar name: the object's name (cluster-scoped).
    :ivar ips: the requested egress IPs, in spec order, duplicates dropped.
    :ivar namespace_selector: which namespaces.
    :ivar pod_selector: which pods of those namespaces (the empty selector: all).
    :ivar created: ``metadata.creationTimestamp`` (older objects win IP conflicts).
    :ivar status: ``(egressIP, node)`` pairs of ``status.items``.
    """

    name: str
    ips: tuple[IPAddress, ...]
    namespace_selector: LabelSelector
    pod_selector: LabelSelector
    created: str
    status: tuple[tuple[IPAddress, str], ...] = ()

    @property
    def order(self) -> tuple[str, str]:
        """Sort key: older first, then by name (who wins a contested IP or pod)."""
        return (self.created, self.name)

    def nodes(self) -> list[str]:
        """The nodes holding one of its IPs, in status order."""
        seen: list[str] = []
        for _ip, node in self.status:
            if node not in seen:
                seen.append(node)
        return seen

    def selects_namespace(self, namespace: Mapping[str, Any]) -> bool:
        return self.namespace_selector.matches_object(namespace)

    def selects(self, namespace: Mapping[str, Any] | None, pod: Mapping[str, Any]) -> bool:
        """Whether the pod (in that namespace) is one of this object's."""
        return namespace is not None and self.selects_namespace(namespace) and self.pod_selector.matches_object(pod)


def parse_egressip(obj: Mapping[str, Any]) -> EgressIPModel:
    """Parse an EgressIP object.

    :raises EgressIPError: naming the field (the schema rejects most of this before it gets here).
    """
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    raw_ips = spec.get("egressIPs")
    if not isinstance(raw_ips, list) or not raw_ips:
        raise EgressIPError("spec.egressIPs must list at least one IP address")
    ips: list[IPAddress] = []
    for index, raw in enumerate(raw_ips):
        try:
            ip = ipaddress.ip_address(str(raw))
        except ValueError:
            raise EgressIPError(f"spec.egressIPs[{index}] {raw!r} is not an IP address") from None
        if ip not in ips:
            ips.append(ip)
    if "namespaceSelector" not in spec:
        raise EgressIPError("spec.namespaceSelector is required")
    try:
        namespaces = parse_selector(spec.get("namespaceSelector"), field="spec.namespaceSelector")
        pods = parse_selector(spec.get("podSelector"), field="spec.podSelector")
    except SelectorError as exc:
        raise EgressIPError(str(exc)) from None
    status: list[tuple[IPAddress, str]] = []
    for item in (obj.get("status") or {}).get("items") or ():
        try:
            status.append((ipaddress.ip_address(str(item["egressIP"])), str(item["node"])))
        except (KeyError, TypeError, ValueError):
            continue  # a malformed status entry is ours to rewrite, not the user's error
    return EgressIPModel(name=str(meta.get("name", "")), ips=tuple(ips), namespace_selector=namespaces,
                         pod_selector=pods, created=str(meta.get("creationTimestamp") or ""), status=tuple(status))


def status_items(assigned: Mapping[IPAddress, str]) -> list[dict[str, str]]:
    """``status.items`` for an assignment, in a stable order (by IP)."""
    return [{"egressIP": str(ip), "node": node}
            for ip, node in sorted(assigned.items(), key=lambda item: (item[0].version, item[0]))]


# ---------------------------------------------------------------------------
# nodes


@dataclass(frozen=True)
class EgressNode:
    """What assignment needs to know about one node.

    :ivar name: the node.
    :ivar networks: the networks its primary interface is on (an egress IP must be in one).
    :ivar addresses: its host addresses (an egress IP may not be one of them).
    :ivar labelled: carries ``k8s.ovn.org/egress-assignable``.
    :ivar ready: its ``Ready`` condition is ``True``.
    :ivar reachable: the last health check answered (``True`` until a check failed).
    """

    name: str
    networks: tuple[IPNetwork, ...]
    addresses: tuple[IPAddress, ...]
    labelled: bool
    ready: bool
    reachable: bool = True

    @property
    def eligible(self) -> bool:
        return self.labelled and self.ready and self.reachable

    @property
    def why_not(self) -> str:
        """Why the node cannot hold egress IPs ("" when it can)."""
        if not self.labelled:
            return f"node {self.name} is not labelled {ASSIGNABLE_LABEL}"
        if not self.ready:
            return f"node {self.name} is not Ready"
        if not self.reachable:
            return f"node {self.name} does not answer its health check"
        return ""

    def hosts(self, ip: IPAddress) -> bool:
        """Whether ``ip`` is inside one of the node's networks."""
        return any(ip.version == net.version and ip in net for net in self.networks)


def node_is_ready(node: Mapping[str, Any]) -> bool:
    for condition in (node.get("status") or {}).get("conditions") or ():
        if condition.get("type") == "Ready":
            return bool(condition.get("status") == "True")
    return False


def egress_node(node: Mapping[str, Any], *, reachable: bool = True) -> EgressNode:
    """The :class:`EgressNode` of a Node object (primary address and host CIDRs from its annotations)."""
    labels = (node.get("metadata") or {}).get("labels") or {}
    try:
        primary = ann.primary_ifaddr(node)
    except ann.AnnotationError:
        primary = None
    # The node's own addresses are the shared node-ips definition (an egress IP must be none of them).
    networks = [primary.network] if primary is not None else []
    addresses = list(egress.node_host_addresses(node))
    return EgressNode(name=str((node.get("metadata") or {}).get("name", "")), networks=tuple(networks),
                      addresses=tuple(addresses), labelled=ASSIGNABLE_LABEL in labels,
                      ready=node_is_ready(node), reachable=reachable)
