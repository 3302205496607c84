"""Parse and validate what users write: NetworkAttachmentDefinition configs and network selections (pure).

A NetworkAttachmentDefinition (``k8s.cni.cncf.io/v1``) holds a CNI config
in ``spec.config``. Ours have ``"type": "ovn-k8s-cni-overlay"``; the fields
are ovn-kubernetes' (ovn-kubernetes.md §6.7): ``name`` (the network: several
NADs may name one network, with one config), ``netAttachDefName`` (must be
``<namespace>/<name>`` of the NAD), ``topology`` (``layer3``, the default,
``layer2`` or ``localnet``), ``subnets`` (layer3: ``CIDR[/hostPrefix]``, host
prefix /24 for IPv4 and /64 for IPv6 by default; layer2 and localnet: plain
CIDRs, optional: without them the network has no IPAM), ``excludeSubnets``
(layer2, localnet), ``mtu``, and for localnet ``vlanID`` and
``physicalNetworkName`` (default: the network name). Primary networks
(``role: primary``), ``ipam`` sections and persistent IPs are refused with a
message saying so.

A pod selects attachments with ``k8s.v1.cni.cncf.io/networks``: a comma
separated list (``nad``, ``ns/nad``, ``ns/nad@ifname``) or a JSON list of
objects with ``name``, ``namespace``, ``interface``, ``ips`` and ``mac``, as
Multus reads it. Element ``i`` gets interface ``net<i+1>`` unless it names
one; the n-th attachment of one NAD (n >= 1) has the annotation key
``<ns>/<nad>/<n>`` (the first is ``<ns>/<nad>``).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from ovnk import names
from ovnk.names import IPAddress
from ovnk.names import IPNetwork

OVN_CNI_TYPE = "ovn-k8s-cni-overlay"
NETWORKS_ANNOTATION = "k8s.v1.cni.cncf.io/networks"
NETWORK_STATUS_ANNOTATION = "k8s.v1.cni.cncf.io/network-status"
#: external_ids of every row of a secondary network (as upstream writes them).
NETWORK_KEY = "k8s.ovn.org/network"
TOPOLOGY_KEY = "k8s.ovn.org/topology"
ROLE_KEY = "k8s.ovn.org/role"
NAD_KEY = "k8s.ovn.org/nad"

LAYER3 = "layer3"
LAYER2 = "layer2"
LOCALNET = "localnet"
TOPOLOGIES = (LAYER3, LAYER2, LOCALNET)
SECONDARY = "secondary"
#: The config name upstream reserves for the default network.
DEFAULT_NETWORK_NAME = "default"
LOCALNET_DEFAULT_MTU = 1500
MAX_IFNAME = 15

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


class NetworkError(ValueError):
    """A NetworkAttachmentDefinition config we cannot use; the message says which field and why."""


class SelectionError(ValueError):
    """A pod's ``k8s.v1.cni.cncf.io/networks`` annotation we cannot read."""


# -- networks ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterSubnet:
    """One entry of ``subnets``: the network, and for layer3 the prefix of each node's subnet."""

    cidr: IPNetwork
    host_prefix: int | None = None

    def __str__(self) -> str:
        return f"{self.cidr}/{self.host_prefix}" if self.host_prefix is not None else str(self.cidr)


@dataclass(frozen=True)
class NetworkSpec:
    """A secondary network as its NADs define it (equal specs: the same network config)."""

    name: str
    topology: str
    subnets: tuple[ClusterSubnet, ...] = ()
    exclude_subnets: tuple[IPNetwork, ...] = ()
    mtu: int | None = None
    vlan_id: int = 0
    physical_network: str = ""

    @property
    def prefix(self) -> str:
        return network_prefix(self.name)

    @property
    def ipam(self) -> bool:
        """Whether pods get addresses (layer2 and localnet without ``subnets`` have none)."""
        return bool(self.subnets)

    @property
    def static_ips(self) -> bool:
        """Static IPs in a selection (``ips``) are honoured on layer2 and localnet only, as upstream."""
        return self.topology in (LAYER2, LOCALNET) and self.ipam

    def interface_mtu(self, default_mtu: int) -> int:
        if self.mtu:
            return self.mtu
        return LOCALNET_DEFAULT_MTU if self.topology == LOCALNET else default_mtu

    def describe(self) -> str:
        parts = [self.topology]
        if self.subnets:
            parts.append("subnets " + ",".join(map(str, self.subnets)))
        if self.exclude_subnets:
            parts.append("excluding " + ",".join(map(str, self.exclude_subnets)))
        if self.mtu:
            parts.append(f"mtu {self.mtu}")
        if self.topology == LOCALNET:
            parts.append(f"physical network {self.physical_network}")
            if self.vlan_id:
                parts.append(f"vlan {self.vlan_id}")
        return ", ".join(parts)


def network_prefix(name: str) -> str:
    """Prefix of a network's row names: ``tenant-blue`` -> ``tenant.blue_`` (upstream's scheme)."""
    return name.replace("-", ".").replace("/", ".") + "_"


def _string(config: Mapping[str, Any], key: str) -> str:
    value = config.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise NetworkError(f"field {key!r} must be a string, not {value!r}")
    return value.strip()


def _layer3_subnet(text: str) -> ClusterSubnet:
    parts = text.split("/")
    if len(parts) == 3:
        cidr_text, host = "/".join(parts[:2]), parts[2]
        if not host.isdigit():
            raise NetworkError(f"subnet {text!r}: host prefix {host!r} is not a number")
        host_prefix: int | None = int(host)
    elif len(parts) == 2:
        cidr_text, host_prefix = text, None
    else:
        raise NetworkError(f"subnet {text!r} is not CIDR or CIDR/hostPrefix")
    try:
        cidr = ipaddress.ip_network(cidr_text, strict=True)
    except ValueError as exc:
        raise NetworkError(f"subnet {text!r}: {exc}") from None
    if host_prefix is None:
        host_prefix = 24 if cidr.version == 4 else 64
    if not cidr.prefixlen <= host_prefix <= cidr.max_prefixlen - 2:
        raise NetworkError(f"subnet {text!r}: host prefix /{host_prefix} must be between /{cidr.prefixlen} and "
                           f"/{cidr.max_prefixlen - 2}")
    return ClusterSubnet(cidr, host_prefix)


def _plain_subnet(text: str) -> ClusterSubnet:
    try:
        cidr = ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        raise NetworkError(f"subnet {text!r}: {exc}") from None
    if cidr.num_addresses < 4:
        raise NetworkError(f"subnet {text!r} is too small for pods")
    return ClusterSubnet(cidr)


def _split(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def parse_config(config: Mapping[str, Any], nad_key: str) -> NetworkSpec | None:
    """The network a NAD config defines; ``None`` when the config is not ours (another CNI type).

    :param config: the parsed ``spec.config``.
    :param nad_key: ``<namespace>/<name>`` of the NAD (``netAttachDefName`` must equal it).
    :raises NetworkError: the config is ours but unusable.
    """
    if config.get("type") != OVN_CNI_TYPE:
        return None
    name = _string(config, "name")
    if not name:
        raise NetworkError("field 'name' (the network name) is missing")
    if name == DEFAULT_NETWORK_NAME:
        raise NetworkError(f"network name {name!r} is the default network's; a NAD cannot define it here")
    if len(name) > 200 or any(c.isspace() for c in name):
        raise NetworkError(f"network name {name!r} must be at most 200 characters without spaces")
    nad_name = _string(config, "netAttachDefName")
    if nad_name != nad_key:
        raise NetworkError(f"field 'netAttachDefName' is {nad_name!r}; it must be {nad_key!r} (<namespace>/<name> "
                           f"of this NetworkAttachmentDefinition)")
    topology = _string(config, "topology").lower() or LAYER3
    if topology not in TOPOLOGIES:
        raise NetworkError(f"topology {topology!r} is not one of {', '.join(TOPOLOGIES)}")
    role = _string(config, "role").lower()
    if role == "primary":
        raise NetworkError("role 'primary' (a primary user-defined network) is not supported; use a secondary network")
    if role not in ("", SECONDARY):
        raise NetworkError(f"role {role!r} is not 'secondary'")
    ipam = config.get("ipam")
    if ipam:
        raise NetworkError("an 'ipam' section is not supported: addresses come from the 'subnets' field")
    if config.get("allowPersistentIPs"):
        raise NetworkError("allowPersistentIPs (IPAMClaims) is not supported")
    subnets_text = _string(config, "subnets")
    if topology == LAYER3:
        if not subnets_text:
            raise NetworkError("a layer3 network needs 'subnets' (CIDR/hostPrefix, comma separated)")
        subnets = tuple(_layer3_subnet(item) for item in _split(subnets_text))
    else:
        subnets = tuple(_plain_subnet(item) for item in _split(subnets_text))
    families = [s.cidr.version for s in subnets]
    if len(families) != len(set(families)):
        raise NetworkError("'subnets' may hold at most one subnet per IP family")
    for first in range(len(subnets)):
        for second in range(first + 1, len(subnets)):
            if subnets[first].cidr.overlaps(subnets[second].cidr):
                raise NetworkError(f"subnets {subnets[first]} and {subnets[second]} overlap")
    excludes_text = _string(config, "excludeSubnets")
    excludes: list[IPNetwork] = []
    if excludes_text:
        if topology == LAYER3:
            raise NetworkError("'excludeSubnets' applies to layer2 and localnet networks only")
        for item in _split(excludes_text):
            try:
                exclude = ipaddress.ip_network(item, strict=False)
            except ValueError as exc:
                raise NetworkError(f"excludeSubnets entry {item!r}: {exc}") from None
            if not any(s.cidr.version == exclude.version and exclude.subnet_of(s.cidr)  # type: ignore[arg-type]
                       for s in subnets):
                raise NetworkError(f"excludeSubnets entry {item} is not inside any of 'subnets'")
            excludes.append(exclude)
    mtu = config.get("mtu")
    if mtu is not None and mtu != "":
        if isinstance(mtu, bool) or not isinstance(mtu, int) or not 576 <= mtu <= 65535:
            raise NetworkError(f"mtu {mtu!r} must be a number between 576 and 65535")
    vlan = config.get("vlanID")
    if vlan not in (None, "", 0):
        if topology != LOCALNET:
            raise NetworkError("'vlanID' applies to localnet networks only")
        if isinstance(vlan, bool) or not isinstance(vlan, int) or not 1 <= vlan <= 4094:
            raise NetworkError(f"vlanID {vlan!r} must be a number between 1 and 4094")
    physnet = _string(config, "physicalNetworkName")
    if physnet and topology != LOCALNET:
        raise NetworkError("'physicalNetworkName' applies to localnet networks only")
    if physnet == names.PHYSNET:
        raise NetworkError(f"physicalNetworkName {physnet!r} is the default network's gateway bridge mapping")
    return NetworkSpec(
        name=name, topology=topology, subnets=subnets, exclude_subnets=tuple(excludes),
        mtu=int(mtu) if mtu else None, vlan_id=int(vlan or 0),
        physical_network=(physnet or name) if topology == LOCALNET else "",
    )


def nad_config(nad: Mapping[str, Any]) -> dict[str, Any]:
    """The parsed ``spec.config`` of a NAD; raises :class:`NetworkError` when it is not a JSON object."""
    raw = (nad.get("spec") or {}).get("config")
    if not raw:
        raise NetworkError("spec.config is empty")
    if isinstance(raw, dict):
        return dict(raw)
    try:
        config = json.loads(raw)
    except (TypeError, ValueError) as exc:
        raise NetworkError(f"spec.config is not JSON: {exc}") from None
    if not isinstance(config, dict):
        raise NetworkError("spec.config is not a JSON object")
    return config


def nad_key_of(nad: Mapping[str, Any]) -> str:
    meta = nad.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


# -- which NADs define which network -------------------------------------------------------


@dataclass(frozen=True)
class NadInfo:
    """One NetworkAttachmentDefinition of ours: its key, age and what it defines (or why it cannot)."""

    key: str
    created: str
    spec: NetworkSpec | None = None
    error: str = ""


@dataclass
class Resolution:
    """What the NADs of the cluster define: network -> (config, NAD keys), and the NADs left out."""

    networks: dict[str, tuple[NetworkSpec, tuple[str, ...]]] = field(default_factory=dict)
    #: NAD key -> why it is ignored (another config of an existing network)
    conflicts: dict[str, str] = field(default_factory=dict)
    #: NAD key -> why its config is unusable
    invalid: dict[str, str] = field(default_factory=dict)


def resolve_networks(nads: Iterable[NadInfo], pinned: Mapping[str, NetworkSpec] | None = None) -> Resolution:
    """Group the NADs into networks.

    A network's config is the one of its oldest NAD (then by key), unless
    ``pinned`` holds it (a network pods are attached to keeps its config); NADs
    naming the same network with another config are conflicts.
    """
    result = Resolution()
    by_network: dict[str, list[NadInfo]] = {}
    for info in nads:
        if info.spec is None:
            if info.error:
                result.invalid[info.key] = info.error
            continue
        by_network.setdefault(info.spec.name, []).append(info)
    for network, members in sorted(by_network.items()):
        members.sort(key=lambda i: (i.created, i.key))
        defining = (pinned or {}).get(network)
        origin = "the network's running config (pods are attached to it)"
        if defining is None:
            defining, origin = members[0].spec, f"NetworkAttachmentDefinition {members[0].key}"
        assert defining is not None
        keys = []
        for info in members:
            if info.spec == defining:
                keys.append(info.key)
            else:
                result.conflicts[info.key] = (f"network {network!r} is already defined by {origin} as "
                                              f"{defining.describe()}; this one says {info.spec.describe()}; "  # type: ignore[union-attr]
                                              f"ignored")
        if keys:
            result.networks[network] = (defining, tuple(keys))
    return result


# -- pod selections ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Selection:
    """One element of a pod's ``k8s.v1.cni.cncf.io/networks``."""

    namespace: str
    name: str
    index: int
    occurrence: int = 0
    interface: str = ""
    ips: tuple[IPInterface, ...] = ()
    mac: str = ""

    @property
    def nad_name(self) -> str:
        """``<namespace>/<name>`` of the NAD."""
        return f"{self.namespace}/{self.name}"

    @property
    def nad_key(self) -> str:
        """The ``k8s.ovn.org/pod-networks`` key: ``<ns>/<nad>``, ``<ns>/<nad>/<n>`` for the n-th repeat."""
        return indexed_nad_key(self.nad_name, self.occurrence)

    @property
    def ifname(self) -> str:
        return self.interface or f"net{self.index + 1}"


def indexed_nad_key(nad_name: str, occurrence: int) -> str:
    return nad_name if occurrence == 0 else f"{nad_name}/{occurrence}"


def nad_name_of(nad_key: str) -> str:
    """The NAD of an annotation key: ``ns/nad/2`` -> ``ns/nad``."""
    parts = nad_key.split("/")
    return "/".join(parts[:2])


def _check_name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip() or any(c.isspace() or c in "/@," for c in value.strip()):
        raise SelectionError(f"{what} {value!r} is not a name")
    return value.strip()


def _check_ifname(value: Any) -> str:
    if value in (None, ""):
        return ""
    if not isinstance(value, str) or len(value) > MAX_IFNAME or any(c in "/: " for c in value) or value in (".", ".."):
        raise SelectionError(f"interface {value!r} is not an interface name (at most {MAX_IFNAME} characters)")
    return value


def _check_mac(value: Any) -> str:
    if value in (None, ""):
        return ""
    parts = value.split(":") if isinstance(value, str) else []
    if len(parts) != 6 or not all(len(p) == 2 and all(c in "0123456789abcdefABCDEF" for c in p) for p in parts):
        raise SelectionError(f"mac {value!r} is not a MAC address")
    if int(parts[0], 16) & 1:
        raise SelectionError(f"mac {value!r} is a multicast address")
    return str(value).lower()


def _element(raw: Mapping[str, Any], pod_namespace: str, index: int) -> Selection:
    name = _check_name(raw.get("name"), "network name")
    namespace = _check_name(raw.get("namespace") or pod_namespace, "namespace")
    ips_raw = raw.get("ips") or []
    if not isinstance(ips_raw, list):
        raise SelectionError(f"{namespace}/{name}: 'ips' must be a list")
    ips: list[IPInterface] = []
    for item in ips_raw:
        try:
            if not isinstance(item, str) or "/" not in item:
                raise ValueError("an address with its prefix length is expected (10.1.1.5/24)")
            ips.append(ipaddress.ip_interface(item))
        except ValueError as exc:
            raise SelectionError(f"{namespace}/{name}: ip {item!r}: {exc}") from None
    return Selection(namespace=namespace, name=name, index=index, interface=_check_ifname(raw.get("interface")),
                     ips=tuple(ips), mac=_check_mac(raw.get("mac")))


def parse_selections(pod: Mapping[str, Any]) -> list[Selection]:
    """The pod's network selections, in order, with interface names and repeat counts filled in.

    :raises SelectionError: the annotation cannot be read.
    """
    meta = pod.get("metadata") or {}
    text = ((meta.get("annotations") or {}).get(NETWORKS_ANNOTATION) or "").strip()
    if not text:
        return []
    namespace = str(meta.get("namespace") or "default")
    elements: list[Selection] = []
    if text.startswith("["):
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise SelectionError(f"{NETWORKS_ANNOTATION} is not valid JSON: {exc}") from None
        if not isinstance(doc, list) or not all(isinstance(e, dict) for e in doc):
            raise SelectionError(f"{NETWORKS_ANNOTATION} must be a JSON list of objects")
        elements = [_element(e, namespace, i) for i, e in enumerate(doc)]
    else:
        for index, item in enumerate(part.strip() for part in text.split(",")):
            if not item:
                raise SelectionError(f"{NETWORKS_ANNOTATION} has an empty element")
            ref, _, interface = item.partition("@")
            ns, sep, name = ref.partition("/")
            raw = {"namespace": ns, "name": name} if sep else {"name": ns}
            raw["interface"] = interface
            elements.append(_element(raw, namespace, index))
    seen: dict[str, int] = {}
    ifnames: set[str] = set()
    result = []
    for element in elements:
        occurrence = seen.get(element.nad_name, 0)
        seen[element.nad_name] = occurrence + 1
        element = Selection(namespace=element.namespace, name=element.name, index=element.index,
                            occurrence=occurrence, interface=element.interface, ips=element.ips, mac=element.mac)
        if element.ifname in ifnames or element.ifname == "eth0":
            raise SelectionError(f"interface {element.ifname} is requested twice (or is the default network's)")
        ifnames.add(element.ifname)
        result.append(element)
    return result


def pod_wants_network(pod: Mapping[str, Any]) -> bool:
    """Scheduled, not host-network, not finished (as core's pods controller decides)."""
    spec = pod.get("spec") or {}
    phase = (pod.get("status") or {}).get("phase")
    return bool(spec.get("nodeName")) and not spec.get("hostNetwork") and phase not in ("Succeeded", "Failed")


def pod_key(pod: Mapping[str, Any]) -> str:
    meta = pod.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


def attachment_holder(pod: Mapping[str, Any], nad_key: str) -> str:
    """Who holds an attachment's addresses: the pod instance (UID) and the annotation key."""
    meta = pod.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}/{meta.get('uid', '')}#{nad_key}"


# -- names of a pod's attachment -------------------------------------------------------------------


def port_name(nad_key: str, namespace: str, pod: str) -> str:
    """The logical switch port and OVS ``iface-id`` of an attachment: ``<nad key prefix><ns>_<pod>``."""
    return network_prefix(nad_key) + names.pod_port(namespace, pod)


def host_ifname(container_id: str, ifname: str) -> str:
    """The host end of a secondary attachment's veth: ``<containerID[:n]>_<suffix>``, 15 characters.

    Upstream suffixes the pod side's ifindex, known only after the pair exists;
    the pod-side name serves the same purpose (unique per container) and is
    known before, so ADD creates the pair in one request and DEL needs no pod.
    """
    suffix = ifname if len(ifname) <= 5 and ifname.isalnum() else hashlib.sha256(ifname.encode()).hexdigest()[:5]
    return f"{container_id[:MAX_IFNAME - len(suffix) - 1]}_{suffix}"


def derived_mac(holder: str) -> str:
    """A stable locally administered MAC for an attachment without addresses (IPAM-less networks)."""
    digest = hashlib.sha256(holder.encode()).digest()
    return "0a:58:" + ":".join(f"{b:02x}" for b in digest[:4])


# -- annotations ---------------------------------------------------------------------------------


def pod_network_entry(spec: NetworkSpec, *, ips: Sequence[IPInterface], mac: str,
                      node_subnets: Sequence[IPNetwork] = (), routes: bool = True) -> dict[str, Any]:
    """An entry of ``k8s.ovn.org/pod-networks`` for one attachment (upstream's fields for secondary networks).

    layer3: a route to each of the network's subnets via the node subnet's gateway (``.1``), unless
    ``routes`` is false (a repeat of a NAD the pod is attached to already: one network's routes in one
    pod can lead through one interface only, and the first attachment keeps them); layer2 and
    localnet: addresses only (the subnet is on the link). No default gateway: secondary interfaces
    never take the default route.
    """
    entry: dict[str, Any] = {"ip_addresses": [str(ip) for ip in ips], "mac_address": mac, "role": SECONDARY}
    if ips:
        entry["ip_address"] = str(ips[0])
    if spec.topology == LAYER3 and routes:
        route_list = []
        for ip in ips:
            subnet = next((s for s in node_subnets if s.version == ip.version), None)
            if subnet is None:
                continue
            gateway = names.gateway_ip(subnet)
            route_list += [{"dest": str(c.cidr), "nextHop": str(gateway)} for c in spec.subnets
                           if c.cidr.version == ip.version]
        if route_list:
            entry["routes"] = route_list
    return entry


def entry_addresses(entry: Mapping[str, Any]) -> tuple[tuple[IPInterface, ...], str]:
    """(IPs, MAC) of a ``k8s.ovn.org/pod-networks`` entry; raises ``ValueError`` when it is malformed."""
    ips = tuple(ipaddress.ip_interface(str(ip)) for ip in entry.get("ip_addresses") or ())
    mac = entry.get("mac_address")
    if not isinstance(mac, str) or not mac:
        raise ValueError("entry has no mac_address")
    return ips, mac.lower()


@dataclass(frozen=True)
class InterfaceStatus:
    """One interface of ``k8s.v1.cni.cncf.io/network-status`` (Multus' NetworkStatus)."""

    name: str
    interface: str
    ips: tuple[IPAddress, ...]
    mac: str
    default: bool = False
    gateways: tuple[IPAddress, ...] = ()

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"name": self.name, "interface": self.interface,
                               "ips": [str(ip) for ip in self.ips], "mac": self.mac}
        if self.default:
            doc["default"] = True
        doc["dns"] = {}
        if self.gateways:
            doc["gateway"] = [str(g) for g in self.gateways]
        return doc


def format_network_status(interfaces: Sequence[InterfaceStatus]) -> str:
    """The annotation's value: a JSON list, the default network first, as Multus writes it."""
    return json.dumps([i.to_json() for i in interfaces], indent=None, separators=(",", ":"))


def parse_network_status(text: str) -> list[dict[str, Any]]:
    doc = json.loads(text or "[]")
    if not isinstance(doc, list):
        raise ValueError("network-status is not a JSON list")
    return doc
