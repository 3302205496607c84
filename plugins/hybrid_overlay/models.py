"""What the hybrid overlay reads from Node objects, parsed and checked (pure: no I/O).

Annotations and constants are ovn-kubernetes' (ovn-kubernetes.md §6.5,
``go-controller/hybrid-overlay/pkg/types``):

* ``k8s.ovn.org/hybrid-overlay-node-subnet`` on a *foreign* node (one the node
  selector picks, ``kubernetes.io/os=windows`` by default): its pod subnet,
  allocated by the controller from ``[hybrid_overlay] cluster-subnets`` (or set
  by someone else when that setting is empty).
* ``k8s.ovn.org/hybrid-overlay-distributed-router-gateway-mac``: on a foreign
  node, set by the foreign side (Windows' ``hybrid-overlay-node``): the MAC its
  VXLAN endpoint answers to. On an OVN node, set by the controller with
  ``…-gateway-ip``: the node's distributed-router port ``int-<node>`` (IP and
  MAC) that foreign nodes send this node's pods' traffic to.
* A foreign node's VXLAN endpoint is its first ``InternalIP`` address.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ovnk import LabelSelector
from ovnk import SelectorError
from ovnk import names
from ovnk import parse_selector

NODE_SUBNET = "k8s.ovn.org/hybrid-overlay-node-subnet"
DR_MAC = "k8s.ovn.org/hybrid-overlay-distributed-router-gateway-mac"
DR_IP = "k8s.ovn.org/hybrid-overlay-distributed-router-gateway-ip"
#: The VXLAN network identifier of every hybrid overlay tunnel (Windows' HNS uses it too).
VNI = 4097
#: Which address of an OVN node's subnet the distributed-router port takes when it is free.
DR_OFFSET = 3

_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")


class HybridOverlayError(ValueError):
    """Bad input: a setting or an annotation; the message names it."""


# -- cluster subnets ------------------------------------------------------------------------


@dataclass(frozen=True)
class HybridSubnet:
    """One ``CIDR/hostPrefix`` entry of ``cluster-subnets`` (``10.132.0.0/14/23``)."""

    network: ipaddress.IPv4Network
    host_prefix: int

    def __str__(self) -> str:
        return f"{self.network}/{self.host_prefix}"

    @classmethod
    def parse(cls, text: str) -> HybridSubnet:
        """``CIDR/hostPrefix``; without a host prefix, /24 (as ovn-kubernetes)."""
        parts = text.strip().split("/")
        if len(parts) not in (2, 3):
            raise HybridOverlayError(f"{text.strip()!r} is not CIDR/hostPrefix (e.g. 10.132.0.0/14/23)")
        try:
            network = ipaddress.ip_network(f"{parts[0]}/{parts[1]}")
        except ValueError as exc:
            raise HybridOverlayError(f"{text.strip()!r}: {exc}") from exc
        if not isinstance(network, ipaddress.IPv4Network):
            raise HybridOverlayError(f"{text.strip()!r}: only IPv4 hybrid overlay subnets are supported")
        try:
            host_prefix = int(parts[2]) if len(parts) == 3 else 24
        except ValueError as exc:
            raise HybridOverlayError(f"{text.strip()!r}: host prefix {parts[2]!r} is not a number") from exc
        if not network.prefixlen <= host_prefix <= 29:
            raise HybridOverlayError(f"{text.strip()!r}: the host prefix must be between /{network.prefixlen} "
                                     f"and /29 (a node subnet needs room for pods)")
        return cls(network, host_prefix)


def parse_cluster_subnets(text: str) -> tuple[HybridSubnet, ...]:
    """Comma-separated ``CIDR/hostPrefix`` entries; empty means "subnets are set by someone else"."""
    subnets = tuple(HybridSubnet.parse(part) for part in text.split(",") if part.strip())
    for index, first in enumerate(subnets):
        for second in subnets[index + 1:]:
            if first.network.overlaps(second.network):
                raise HybridOverlayError(f"cluster subnets {first} and {second} overlap")
    return subnets


# -- the node selector ----------------------------------------------------------------------


def _split_requirements(text: str) -> list[str]:
    """Split a selector string at the commas that are not inside ``( )``."""
    parts, depth, current = [], 0, ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [p.strip() for p in parts if p.strip()]


def parse_node_selector(text: str) -> LabelSelector:
    """A label selector in kubectl's string form (``kubernetes.io/os=windows``, ``a!=b``, ``a``, ``!a``,
    ``a in (x,y)``, ``a notin (x)``), as upstream's ``no-hostsubnet-nodes``.

    :raises HybridOverlayError: the message says which requirement is wrong.
    """
    labels: dict[str, str] = {}
    expressions: list[dict[str, Any]] = []
    for requirement in _split_requirements(text):
        match = re.fullmatch(r"(\S+?)\s+(in|notin)\s+\((.*)\)", requirement)
        if match:
            key, operator, values = match.group(1), match.group(2), match.group(3)
            items = [v.strip() for v in values.split(",") if v.strip()]
            expressions.append({"key": key, "operator": "In" if operator == "in" else "NotIn", "values": items})
        elif "!=" in requirement:
            key, value = (p.strip() for p in requirement.split("!=", 1))
            items = [value]
            expressions.append({"key": key, "operator": "NotIn", "values": items})
        elif "=" in requirement:
            key, value = (p.strip() for p in requirement.replace("==", "=").split("=", 1))
            items = [value]
            labels[key] = value
        elif requirement.startswith("!"):
            key, items = requirement[1:].strip(), []
            expressions.append({"key": key, "operator": "DoesNotExist"})
        else:
            key, items = requirement, []
            expressions.append({"key": key, "operator": "Exists"})
        if not _LABEL_KEY.match(key):
            raise HybridOverlayError(f"node selector {text!r}: {key!r} is not a label key")
        bad = [v for v in items if not _LABEL_VALUE.match(v)]
        if bad:
            raise HybridOverlayError(f"node selector {text!r}: {bad[0]!r} is not a label value")
    if not labels and not expressions:
        raise HybridOverlayError("the node selector is empty: it would make every node a foreign node")
    try:
        return parse_selector({"matchLabels": labels, "matchExpressions": expressions}, field="node-selector")
    except SelectorError as exc:
        raise HybridOverlayError(f"node selector {text!r}: {exc}") from exc


# -- nodes ------------------------------------------------------------------------------------


def annotations_of(node: Mapping[str, Any]) -> Mapping[str, str]:
    return (node.get("metadata") or {}).get("annotations") or {}


def parse_mac(value: str, *, what: str) -> str:
    """A MAC address in lower case with colons (``0A-58-...`` is accepted too)."""
    mac = value.strip().lower().replace("-", ":")
    if not _MAC.match(mac):
        raise HybridOverlayError(f"{what} {value!r} is not a MAC address")
    return mac


def internal_ip(node: Mapping[str, Any]) -> ipaddress.IPv4Address | None:
    """The node's first IPv4 ``InternalIP`` (its VXLAN endpoint), ``None`` when it has none."""
    for address in (node.get("status") or {}).get("addresses") or ():
        if address.get("type") != "InternalIP":
            continue
        try:
            ip = ipaddress.ip_address(str(address.get("address", "")))
        except ValueError:
            continue
        if isinstance(ip, ipaddress.IPv4Address):
            return ip
    return None


@dataclass(frozen=True)
class ForeignNode:
    """A foreign node as far as it is known: whatever is missing is ``None``."""

    name: str
    subnet: ipaddress.IPv4Network | None
    address: ipaddress.IPv4Address | None
    dr_mac: str | None

    @property
    def complete(self) -> bool:
        """Tunnels to it can be set up: subnet, endpoint address and MAC are all known."""
        return self.subnet is not None and self.address is not None and self.dr_mac is not None


def node_subnet(node: Mapping[str, Any]) -> ipaddress.IPv4Network | None:
    """``k8s.ovn.org/hybrid-overlay-node-subnet``, ``None`` when absent.

    :raises HybridOverlayError: the annotation is not an IPv4 CIDR.
    """
    raw = annotations_of(node).get(NODE_SUBNET)
    if raw is None:
        return None
    try:
        subnet = ipaddress.ip_network(raw.strip())
    except ValueError as exc:
        raise HybridOverlayError(f"annotation {NODE_SUBNET} {raw!r} is not a CIDR: {exc}") from exc
    if not isinstance(subnet, ipaddress.IPv4Network):
        raise HybridOverlayError(f"annotation {NODE_SUBNET} {raw!r}: only IPv4 is supported")
    return subnet


def foreign_node(node: Mapping[str, Any]) -> ForeignNode:
    """The facts of a foreign node; a malformed annotation raises.

    :raises HybridOverlayError: the subnet or MAC annotation is malformed.
    """
    raw_mac = annotations_of(node).get(DR_MAC)
    return ForeignNode(
        name=node["metadata"]["name"], subnet=node_subnet(node), address=internal_ip(node),
        dr_mac=parse_mac(raw_mac, what=f"annotation {DR_MAC}") if raw_mac is not None else None,
    )


@dataclass(frozen=True)
class DistributedRouter:
    """An OVN node's distributed-router port ``int-<node>``: its IP in the node subnet and its MAC."""

    ip: ipaddress.IPv4Address
    mac: str


def distributed_router(node: Mapping[str, Any]) -> DistributedRouter | None:
    """An OVN node's DR IP and MAC from its annotations; ``None`` until both are set.

    :raises HybridOverlayError: one of them is malformed.
    """
    annotations = annotations_of(node)
    raw_ip, raw_mac = annotations.get(DR_IP), annotations.get(DR_MAC)
    if raw_ip is None or raw_mac is None:
        return None
    try:
        ip = ipaddress.ip_address(raw_ip.split(",")[0].strip())
    except ValueError as exc:
        raise HybridOverlayError(f"annotation {DR_IP} {raw_ip!r} is not an IP address") from exc
    if not isinstance(ip, ipaddress.IPv4Address):
        raise HybridOverlayError(f"annotation {DR_IP} {raw_ip!r}: only IPv4 is supported")
    return DistributedRouter(ip=ip, mac=parse_mac(raw_mac, what=f"annotation {DR_MAC}"))


def choose_dr_ip(subnet: ipaddress.IPv4Network, *,
                 free: Callable[[ipaddress.IPv4Address], bool]) -> ipaddress.IPv4Address | None:
    """The DR IP of an OVN node: the subnet's ``.3`` when ``free``, else its lowest free host address
    (upstream's order); ``None`` when none is. ``.0``, ``.1``, ``.2`` and the broadcast address are never
    chosen."""
    for offset in range(DR_OFFSET, subnet.num_addresses - 1):
        candidate = subnet.network_address + offset
        if free(candidate):
            return candidate
    return None


def dr_mac_of(ip: ipaddress.IPv4Address) -> str:
    """The DR MAC derived from its IP (``0a:58:`` + the IPv4 bytes), as upstream allocates it."""
    return names.mac_from_ip(ip)
