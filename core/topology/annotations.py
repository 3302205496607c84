"""The ``k8s.ovn.org/*`` annotations of nodes and pods: parse and format (ovn-kubernetes.md §2).

Parsing is strict where we write the annotation ourselves and tolerant of the
legacy forms ovn-kubernetes still accepts (a plain string instead of a list).
"""

from __future__ import annotations

import functools
import ipaddress
import json
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from ovnk.core.topology.naming import IPAddress
from ovnk.core.topology.naming import IPNetwork

NODE_SUBNETS = "k8s.ovn.org/node-subnets"
NODE_ID = "k8s.ovn.org/node-id"
NODE_CHASSIS_ID = "k8s.ovn.org/node-chassis-id"
L3_GATEWAY_CONFIG = "k8s.ovn.org/l3-gateway-config"
NODE_PRIMARY_IFADDR = "k8s.ovn.org/node-primary-ifaddr"
NODE_MGMT_PORT_MAC = "k8s.ovn.org/node-mgmt-port-mac-addresses"
HOST_CIDRS = "k8s.ovn.org/host-cidrs"
NODE_ENCAP_IPS = "k8s.ovn.org/node-encap-ips"
POD_NETWORKS = "k8s.ovn.org/pod-networks"
DEFAULT_NETWORK_SELECTION = "v1.multus-cni.io/default-network"
ACL_LOGGING = "k8s.ovn.org/acl-logging"

DEFAULT = "default"


class AnnotationError(ValueError):
    """An annotation is malformed; the message names it."""


def annotations_of(obj: Mapping[str, Any]) -> Mapping[str, str]:
    return obj.get("metadata", {}).get("annotations") or {}


def _json(obj: Mapping[str, Any], key: str) -> Any:
    raw = annotations_of(obj).get(key)
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise AnnotationError(f"annotation {key} is not valid JSON: {exc}") from None


# -- node ------------------------------------------------------------------


def node_subnets(node: Mapping[str, Any], network: str = DEFAULT) -> list[IPNetwork]:
    doc = _json(node, NODE_SUBNETS)
    if not doc or network not in doc:
        return []
    value = doc[network]
    items = [value] if isinstance(value, str) else list(value)
    try:
        return [ipaddress.ip_network(s, strict=True) for s in items]
    except ValueError as exc:
        raise AnnotationError(f"annotation {NODE_SUBNETS} has a bad subnet: {exc}") from None


def format_node_subnets(subnets: Sequence[IPNetwork], existing: str | None = None,
                        network: str = DEFAULT) -> str:
    doc: dict[str, Any] = {}
    if existing:
        try:
            doc = dict(json.loads(existing))
        except (json.JSONDecodeError, TypeError, ValueError):
            doc = {}
    doc[network] = [str(s) for s in subnets]
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


def node_id(node: Mapping[str, Any]) -> int | None:
    raw = annotations_of(node).get(NODE_ID)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise AnnotationError(f"annotation {NODE_ID} is not an integer: {raw!r}") from None


def chassis_id(node: Mapping[str, Any]) -> str | None:
    return annotations_of(node).get(NODE_CHASSIS_ID) or None


def mgmt_port_mac(node: Mapping[str, Any], network: str = DEFAULT) -> str | None:
    doc = _json(node, NODE_MGMT_PORT_MAC)
    if isinstance(doc, dict):
        value = doc.get(network)
        return str(value) if value else None
    return None


@dataclass(frozen=True)
class GatewayConfig:
    """The ``default`` entry of ``k8s.ovn.org/l3-gateway-config`` (shared gateway mode)."""

    mode: str
    bridge_id: str
    interface_id: str
    mac_address: str
    ip_addresses: tuple[IPNetwork, ...]
    host_ips: tuple[IPAddress, ...]
    next_hops: tuple[IPAddress, ...]
    node_port_enable: bool = True
    vlan_id: int = 0

    def to_json(self) -> dict[str, Any]:
        ips = [f"{ip}/{net.prefixlen}" for ip, net in zip(self.host_ips, self.ip_addresses, strict=True)]
        doc: dict[str, Any] = {
            "mode": self.mode,
            "bridge-id": self.bridge_id,
            "interface-id": self.interface_id,
            "mac-address": self.mac_address,
            "ip-addresses": ips,
            "next-hops": [str(h) for h in self.next_hops],
            "node-port-enable": "true" if self.node_port_enable else "false",
            "vlan-id": str(self.vlan_id),
        }
        if ips:
            doc["ip-address"] = ips[0]
        if self.next_hops:
            doc["next-hop"] = str(self.next_hops[0])
        return doc


def gateway_config(node: Mapping[str, Any]) -> GatewayConfig | None:
    doc = _json(node, L3_GATEWAY_CONFIG)
    if not doc:
        return None
    entry = doc.get(DEFAULT, doc)
    try:
        raw_ips = entry.get("ip-addresses") or ([entry["ip-address"]] if entry.get("ip-address") else [])
        ifaces = [ipaddress.ip_interface(s) for s in raw_ips]
        raw_hops = entry.get("next-hops") or ([entry["next-hop"]] if entry.get("next-hop") else [])
        return GatewayConfig(
            mode=str(entry.get("mode", "shared")),
            bridge_id=str(entry["bridge-id"]),
            interface_id=str(entry["interface-id"]),
            mac_address=str(entry["mac-address"]),
            ip_addresses=tuple(i.network for i in ifaces),
            host_ips=tuple(i.ip for i in ifaces),
            next_hops=tuple(ipaddress.ip_address(h) for h in raw_hops),
            node_port_enable=str(entry.get("node-port-enable", "true")) == "true",
            vlan_id=int(entry.get("vlan-id", 0) or 0),
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise AnnotationError(f"annotation {L3_GATEWAY_CONFIG} is malformed: {exc}") from None


def format_gateway_config(config: GatewayConfig) -> str:
    return json.dumps({DEFAULT: config.to_json()}, sort_keys=True, separators=(",", ":"))


def primary_ifaddr(node: Mapping[str, Any]) -> ipaddress.IPv4Interface | None:
    doc = _json(node, NODE_PRIMARY_IFADDR)
    if isinstance(doc, dict) and doc.get("ipv4"):
        return ipaddress.IPv4Interface(doc["ipv4"])
    return None


# -- pod -------------------------------------------------------------------


@dataclass(frozen=True)
class PodRoute:
    dest: IPNetwork
    next_hop: IPAddress


@dataclass(frozen=True)
class PodNetwork:
    """One entry of ``k8s.ovn.org/pod-networks``."""

    ip_addresses: tuple[ipaddress.IPv4Interface | ipaddress.IPv6Interface, ...]
    mac_address: str
    gateway_ips: tuple[IPAddress, ...] = ()
    routes: tuple[PodRoute, ...] = ()
    role: str = "primary"
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = dict(self.extra)
        doc.update({
            "ip_addresses": [str(i) for i in self.ip_addresses],
            "mac_address": self.mac_address,
            "role": self.role,
        })
        if self.gateway_ips:
            doc["gateway_ips"] = [str(g) for g in self.gateway_ips]
        if self.routes:
            doc["routes"] = [{"dest": str(r.dest), "nextHop": str(r.next_hop)} for r in self.routes]
        # Legacy single-stack fields ovn-kubernetes still writes.
        if self.ip_addresses:
            doc["ip_address"] = str(self.ip_addresses[0])
        if self.gateway_ips:
            doc["gateway_ip"] = str(self.gateway_ips[0])
        return doc

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> PodNetwork:
        try:
            addrs = doc.get("ip_addresses") or ([doc["ip_address"]] if doc.get("ip_address") else [])
            gws = doc.get("gateway_ips") or ([doc["gateway_ip"]] if doc.get("gateway_ip") else [])
            known = {"ip_addresses", "ip_address", "mac_address", "gateway_ips", "gateway_ip", "routes", "role"}
            return cls(
                ip_addresses=tuple(ipaddress.ip_interface(a) for a in addrs),
                mac_address=str(doc["mac_address"]),
                gateway_ips=tuple(_shared_address(g) for g in gws),
                routes=tuple(_shared_route(r["dest"], r["nextHop"]) for r in doc.get("routes") or []),
                role=str(doc.get("role", "primary")),
                extra={k: v for k, v in doc.items() if k not in known},
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise AnnotationError(f"annotation {POD_NETWORKS} entry is malformed: {exc}") from None


def pod_networks_raw(pod: Mapping[str, Any]) -> dict[str, Any]:
    doc = _json(pod, POD_NETWORKS)
    return dict(doc) if isinstance(doc, dict) else {}


# Every pod of a node has the same gateway and routes: parsed once and shared (the objects are
# immutable), not once per pod and per read (a restart reads every pod's annotation).
@functools.lru_cache(maxsize=4096)
def _shared_address(text: str) -> IPAddress:
    return ipaddress.ip_address(text)


@functools.lru_cache(maxsize=4096)
def _shared_route(dest: str, next_hop: str) -> PodRoute:
    return PodRoute(ipaddress.ip_network(dest), ipaddress.ip_address(next_hop))


def pod_network(pod: Mapping[str, Any], key: str = DEFAULT) -> PodNetwork | None:
    doc = pod_networks_raw(pod).get(key)
    return PodNetwork.from_json(doc) if doc else None


def pod_ips(pod: Mapping[str, Any]) -> tuple[IPAddress, ...]:
    """The pod's default-network IPs from ``k8s.ovn.org/pod-networks`` (none if absent or malformed).

    Cheap to call for many pods per event: results are cached by annotation text.
    """
    raw = annotations_of(pod).get(POD_NETWORKS)
    if not raw:
        return ()
    cached = _IP_CACHE.get(raw)
    if cached is None:
        try:
            network = pod_network(pod)
        except AnnotationError:
            network = None
        cached = tuple(i.ip for i in network.ip_addresses) if network is not None else ()
        if len(_IP_CACHE) >= _IP_CACHE_SIZE:
            _IP_CACHE.clear()
        _IP_CACHE[raw] = cached
    return cached


# Parsed IPs by annotation text: every reconcile reads the IPs of many pods, and parsing the
# JSON and the addresses is most of its cost. Annotation text determines the result.
_IP_CACHE: dict[str, tuple[IPAddress, ...]] = {}
_IP_CACHE_SIZE = 100_000


def format_pod_networks(networks: Mapping[str, Any]) -> str:
    return json.dumps(
        {k: (v.to_json() if isinstance(v, PodNetwork) else v) for k, v in networks.items()},
        sort_keys=True, separators=(",", ":"),
    )


@dataclass(frozen=True)
class StaticRequest:
    """A static IP/MAC request for the default network (``v1.multus-cni.io/default-network`` element)."""

    ips: tuple[ipaddress.IPv4Interface | ipaddress.IPv6Interface, ...] = ()
    mac: str | None = None


def default_network_request(pod: Mapping[str, Any]) -> StaticRequest | None:
    """Parse the default-network selection's ``ips``/``mac``; a plain ``ns/name`` string requests nothing."""
    raw = annotations_of(pod).get(DEFAULT_NETWORK_SELECTION)
    if not raw:
        return None
    raw = raw.strip()
    if not raw.startswith(("[", "{")):
        return None
    try:
        doc = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise AnnotationError(f"annotation {DEFAULT_NETWORK_SELECTION} is not valid JSON: {exc}") from None
    elements = doc if isinstance(doc, list) else [doc]
    if len(elements) != 1:
        raise AnnotationError(f"annotation {DEFAULT_NETWORK_SELECTION} must select exactly one network")
    element = elements[0]
    try:
        ips = tuple(ipaddress.ip_interface(s) for s in element.get("ips") or [])
    except ValueError as exc:
        raise AnnotationError(f"annotation {DEFAULT_NETWORK_SELECTION} has a bad IP: {exc}") from None
    mac = element.get("mac")
    if mac is not None and (not isinstance(mac, str) or len(mac.split(":")) != 6):
        raise AnnotationError(f"annotation {DEFAULT_NETWORK_SELECTION} has a bad MAC: {mac!r}")
    return StaticRequest(ips=ips, mac=mac.lower() if isinstance(mac, str) else None)
