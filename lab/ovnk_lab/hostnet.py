"""The sandbox's networks: an underlay bridge, the host's leg into it, the outside world, the nodes.

::

    host netns                <prefix>-ul netns (bridge br0)           <prefix>-<node> netns
    <prefix>-host 172.30.0.1 ─── host ─┐                     ┌─ <node> ─── eth0 172.30.0.1x (default via .254)
                                        ├── br0 ─────────────┤
    <prefix>-ext netns                  │                     └─ ...
    eth0 172.30.0.254 ──────── ext ────┘

The host gets exactly one veth with one address (so the control plane in the
host namespace can bind to 172.30.0.1 and reach the kubelets); no route,
forwarding or NAT of the host is changed. ``<prefix>-ext`` plays the outside
world: it is the nodes' default gateway (IPv4 forwarding is enabled inside it
only) and can run servers and captures. Links are created with their peer
directly in the target namespace (cheaper than moving them).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ovnk.core.errors import StartupError
from ovnk_lab import paths
from ovnk_lab.procs import run

NETNS_DIR = Path("/run/netns")
UNDERLAY_BRIDGE = "br0"
MAX_IFNAME = 15


@dataclass(frozen=True)
class Underlay:
    """Names and addresses of one sandbox's underlay (nothing is created by constructing it)."""

    prefix: str
    subnet: ipaddress.IPv4Network

    @classmethod
    def plan(cls, prefix: str, subnet: str) -> Underlay:
        network = ipaddress.IPv4Network(subnet)
        if network.prefixlen > 24:
            raise StartupError(f"underlay subnet {subnet} is too small (need at least a /24)")
        if len(f"{prefix}-host") > MAX_IFNAME:
            raise StartupError(f"prefix {prefix!r} is too long (at most {MAX_IFNAME - 5} characters)")
        return cls(prefix, network)

    @property
    def ul_netns(self) -> str:
        return f"{self.prefix}-ul"

    @property
    def ext_netns(self) -> str:
        return f"{self.prefix}-ext"

    @property
    def host_link(self) -> str:
        return f"{self.prefix}-host"

    @property
    def host_ip(self) -> str:
        return str(self.subnet.network_address + 1)

    @property
    def ext_ip(self) -> str:
        return str(self.subnet.network_address + 254)

    def node_ip(self, index: int) -> str:
        """Underlay address of node ``index`` (1-based): .11, .12, ..."""
        return str(self.subnet.network_address + 10 + index)

    def cidr(self, address: str) -> str:
        return f"{address}/{self.subnet.prefixlen}"

    def node_netns(self, node: str) -> str:
        return f"{self.prefix}-{node}"


def netns_path(name: str) -> Path:
    return NETNS_DIR / name


def netns_exists(name: str) -> bool:
    return netns_path(name).exists()


def netns_with_prefix(prefix: str) -> list[str]:
    """Network namespaces named ``<prefix>-...``."""
    if not NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(f"{prefix}-"))


def _ip_batch(commands: Sequence[str], *, netns: str | None = None) -> None:
    argv = [paths.system_bin("ip")]
    if netns:
        argv += ["-n", netns]
    run([*argv, "-batch", "-"], input="\n".join(commands).encode() + b"\n")


def tx_checksum_off(dev: str, *, netns: str | None = None) -> None:
    """Turn TX checksum offload off on a veth end that sends into the underlay.

    Frames a kernel sends through a veth keep a *partial* checksum; when they
    reach a node's ``eth0`` inside an OVS userspace (netdev) bridge, the
    checksum is never completed and the receiving stack drops TCP and UDP
    (ping still works, which hides it). lab.md notes the same for pods.
    """
    argv = [paths.system_bin("ethtool"), "-K", dev, "tx", "off"]
    if netns:
        argv = [paths.system_bin("nsenter"), f"--net={netns_path(netns)}", *argv]
    run(argv)


def host_ipv4_addresses() -> list[tuple[str, ipaddress.IPv4Address]]:
    """(link name, address) of every IPv4 address of the host namespace."""
    out = run([paths.system_bin("ip"), "-j", "-4", "addr", "show"]).stdout
    return [(link["ifname"], ipaddress.IPv4Address(addr["local"]))
            for link in json.loads(out or "[]") for addr in link.get("addr_info", [])]


def free_underlay_subnet(candidates: Sequence[str]) -> str:
    """The first of ``candidates``, in the caller's order, that holds no address of the host.

    A sandbox of the same test run (the e2e suite's stays up for the whole session) may already
    own one of them; picking blindly collided with it once in CI.
    """
    used = [address for _, address in host_ipv4_addresses()]
    for subnet in candidates:
        network = ipaddress.IPv4Network(subnet)
        if not any(address in network for address in used):
            return subnet
    raise StartupError(f"every candidate underlay subnet is in use on the host ({len(candidates)} tried)")


def check_host_free(underlay: Underlay) -> None:
    """Refuse when the host already has an address in the underlay subnet (another sandbox?)."""
    for ifname, address in host_ipv4_addresses():
        if address in underlay.subnet:
            raise StartupError(
                f"the host already has {address} on {ifname}, inside the sandbox underlay "
                f"{underlay.subnet}; another sandbox is probably running (choose another subnet/prefix)")


def create_underlay(underlay: Underlay) -> None:
    """The bridge namespace, the host's veth into it and the external namespace."""
    ul, ext = underlay.ul_netns, underlay.ext_netns
    for name in (ul, ext):
        run([paths.system_bin("ip"), "netns", "add", name])
    _ip_batch([
        "link set lo up",
        f"link add {UNDERLAY_BRIDGE} type bridge",
        f"link set {UNDERLAY_BRIDGE} up",
        f"link add ext type veth peer name eth0 netns {ext}",
        f"link set ext master {UNDERLAY_BRIDGE} up",
    ], netns=ul)
    _ip_batch([
        f"link add {underlay.host_link} type veth peer name host netns {ul}",
        f"addr add {underlay.cidr(underlay.host_ip)} dev {underlay.host_link}",
        f"link set {underlay.host_link} up",
    ])
    _ip_batch([f"link set host master {UNDERLAY_BRIDGE} up"], netns=ul)
    _ip_batch([
        "link set lo up",
        f"addr add {underlay.cidr(underlay.ext_ip)} dev eth0",
        "link set eth0 up",
    ], netns=ext)
    tx_checksum_off(underlay.host_link)
    tx_checksum_off("eth0", netns=ext)
    # The outside world routes between whatever it hosts and the nodes; only inside its own netns.
    run([paths.system_bin("nsenter"), f"--net={netns_path(ext)}", paths.system_bin("sysctl"), "-qw",
         "net.ipv4.ip_forward=1"])


def create_node_network(underlay: Underlay, *, node: str, address: str) -> str:
    """Node netns with ``eth0`` on the underlay and a default route via the external netns."""
    if len(node) > MAX_IFNAME:
        raise StartupError(f"node name {node!r} is longer than {MAX_IFNAME} characters")
    netns = underlay.node_netns(node)
    run([paths.system_bin("ip"), "netns", "add", netns])
    _ip_batch([
        f"link add {node} type veth peer name eth0 netns {netns}",
        f"link set {node} master {UNDERLAY_BRIDGE} up",
    ], netns=underlay.ul_netns)
    _ip_batch([
        "link set lo up",
        f"addr add {underlay.cidr(address)} dev eth0",
        "link set eth0 up",
        f"route add default via {underlay.ext_ip}",
    ], netns=netns)
    tx_checksum_off("eth0", netns=netns)
    return netns


def delete_netns(name: str) -> None:
    if netns_exists(name):
        run([paths.system_bin("ip"), "netns", "delete", name], check=False)


def delete_host_link(name: str) -> None:
    if Path(f"/sys/class/net/{name}").exists():
        run([paths.system_bin("ip"), "link", "delete", name], check=False)
