"""A foreign (non-OVN, "Windows") node for the hybrid overlay, made of a network namespace.

What Windows' ``hybrid-overlay-node`` and HNS do on a real foreign node, done by
hand with the kernel's vxlan and bridge devices::

    <prefix>-<name> netns                                   <prefix>-<name>-<pod> netns
    eth0 <underlay ip> ── sandbox underlay (br0)            eth0 <subnet .10+i> (default via .1)
    vxlan0 VNI 4097, UDP 4789, MAC = the announced DR MAC        │
    br0 <subnet .1> ──────────────────────────────────────────────┘ veth

* It registers a ``Node`` labelled ``kubernetes.io/os=windows`` with its
  underlay address as ``InternalIP`` and the vxlan device's MAC in
  ``k8s.ovn.org/hybrid-overlay-distributed-router-gateway-mac``. No kubelet: the
  hybrid overlay needs only the Node object and its annotations, and a kubelet
  would want a CNI plugin and a container runtime the foreign side does not
  have here (its "pods" are plain namespaces).
* It waits for the controller's ``k8s.ovn.org/hybrid-overlay-node-subnet`` and
  builds its pod bridge in that subnet.
* :meth:`ForeignNode.sync` reads the OVN nodes (their subnet, DR IP and MAC,
  ``InternalIP``) and programs a route per node subnet via its DR IP on
  ``vxlan0``, a permanent neighbour entry for the DR IP and a forwarding entry
  sending the DR MAC to the node's address: the kernel then encapsulates towards
  the right node with VNI 4097, as HNS does. Call it after OVN nodes change.

Everything lives in network namespaces named ``<prefix>-<name>...``; they and the
servers it starts are recorded in the sandbox state (``down()`` removes them) and
:meth:`leave` removes them as well as the Node.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import time
from collections.abc import Callable
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

from ovnk.core.errors import StartupError
from ovnk.core.kube.client import KubeClient
from ovnk.core.kube.resources import NODES
from ovnk_lab import paths
from ovnk_lab.hostnet import MAX_IFNAME
from ovnk_lab.hostnet import Underlay
from ovnk_lab.hostnet import create_node_network
from ovnk_lab.hostnet import delete_netns
from ovnk_lab.hostnet import netns_path
from ovnk_lab.hostnet import tx_checksum_off
from ovnk_lab.procs import Daemon
from ovnk_lab.procs import run

logger = logging.getLogger(__name__)

FOREIGN_LABEL = ("kubernetes.io/os", "windows")
NODE_SUBNET = "k8s.ovn.org/hybrid-overlay-node-subnet"
DR_MAC = "k8s.ovn.org/hybrid-overlay-distributed-router-gateway-mac"
DR_IP = "k8s.ovn.org/hybrid-overlay-distributed-router-gateway-ip"
NODE_SUBNETS = "k8s.ovn.org/node-subnets"
VNI = 4097
POD_MTU = 1400


@dataclass(frozen=True)
class OvnNodeRoute:
    """What a foreign node needs to reach one OVN node's pods."""

    node: str
    subnet: ipaddress.IPv4Network
    dr_ip: ipaddress.IPv4Address
    dr_mac: str
    address: ipaddress.IPv4Address


def _internal_ip(node: Mapping[str, Any]) -> ipaddress.IPv4Address | None:
    for address in (node.get("status") or {}).get("addresses") or ():
        if address.get("type") == "InternalIP":
            try:
                ip = ipaddress.ip_address(str(address.get("address")))
            except ValueError:
                continue
            if isinstance(ip, ipaddress.IPv4Address):
                return ip
    return None


def ovn_node_route(node: Mapping[str, Any]) -> OvnNodeRoute | None:
    """The route facts of an OVN node, ``None`` while one of them is missing (or for a foreign node)."""
    meta = node.get("metadata") or {}
    if (meta.get("labels") or {}).get(FOREIGN_LABEL[0]) == FOREIGN_LABEL[1]:
        return None
    annotations = meta.get("annotations") or {}
    address = _internal_ip(node)
    raw_subnets, raw_ip, raw_mac = annotations.get(NODE_SUBNETS), annotations.get(DR_IP), annotations.get(DR_MAC)
    if address is None or not raw_subnets or not raw_ip or not raw_mac:
        return None
    subnets = json.loads(raw_subnets).get("default")
    candidates = [subnets] if isinstance(subnets, str) else list(subnets or [])
    subnet = next((ipaddress.ip_network(s) for s in candidates if ipaddress.ip_network(s).version == 4), None)
    if not isinstance(subnet, ipaddress.IPv4Network):
        return None
    dr_ip = ipaddress.IPv4Address(raw_ip.split(",")[0].strip())
    return OvnNodeRoute(node=str(meta["name"]), subnet=subnet, dr_ip=dr_ip, dr_mac=raw_mac.lower(), address=address)


@dataclass
class ForeignNode:
    """One foreign node of a sandbox (see the module docstring). Construct, then :meth:`join`."""

    underlay: Underlay
    kubeconfig: Path
    name: str
    address: str
    mac: str
    log_dir: Path
    vxlan_port: int = 4789
    subnet: ipaddress.IPv4Network | None = None
    pods: dict[str, str] = field(default_factory=dict)
    routes: dict[str, OvnNodeRoute] = field(default_factory=dict)
    #: Called with each network namespace's name before it is created (the sandbox records it).
    record_netns: Callable[[str], None] | None = None
    #: Called with each server process it starts (the sandbox records it, so ``down()`` stops it).
    record_daemon: Callable[[Daemon], None] | None = None
    _servers: list[Daemon] = field(default_factory=list)

    @property
    def netns(self) -> str:
        return self.underlay.node_netns(self.name)

    def pod_netns(self, pod: str) -> str:
        return f"{self.netns}-{pod}"

    def all_netns(self) -> list[str]:
        return [self.netns, *(self.pod_netns(p) for p in self.pods)]

    # -- life cycle ----------------------------------------------------------------------

    def create_network(self) -> None:
        """The node's namespace on the underlay (``eth0``, default route via the outside world)."""
        if self.record_netns is not None:
            self.record_netns(self.netns)
        create_node_network(self.underlay, node=self.name, address=self.address)
        self._ip(["link set lo up"])

    def register(self) -> None:
        """Create the Node object (label, DR MAC annotation) and set its ``InternalIP``."""
        body = {"apiVersion": "v1", "kind": "Node", "metadata": {
            "name": self.name, "labels": {FOREIGN_LABEL[0]: FOREIGN_LABEL[1], "kubernetes.io/hostname": self.name},
            "annotations": {DR_MAC: self.mac}}}
        with KubeClient(kubeconfig=str(self.kubeconfig)) as kube:
            if kube.get(NODES, self.name) is None:
                kube.create(NODES, body)
            kube.patch(NODES, self.name, {"status": {"addresses": [
                {"type": "InternalIP", "address": self.address}, {"type": "Hostname", "address": self.name}]}},
                subresource="status")

    def wait_subnet(self, *, timeout: float = 60) -> ipaddress.IPv4Network:
        """The hybrid subnet the controller allocated (polls the Node)."""
        deadline = time.monotonic() + timeout
        with KubeClient(kubeconfig=str(self.kubeconfig)) as kube:
            while True:
                node = kube.get(NODES, self.name) or {}
                raw = ((node.get("metadata") or {}).get("annotations") or {}).get(NODE_SUBNET)
                if raw:
                    subnet = ipaddress.ip_network(raw)
                    if not isinstance(subnet, ipaddress.IPv4Network):
                        raise StartupError(f"foreign node {self.name}: {NODE_SUBNET} {raw} is not IPv4")
                    return subnet
                if time.monotonic() > deadline:
                    raise StartupError(f"foreign node {self.name}: no {NODE_SUBNET} within {timeout:g}s "
                                       "(is the hybrid_overlay plugin on, with cluster-subnets?)")
                time.sleep(0.2)

    def build_overlay(self, subnet: ipaddress.IPv4Network) -> None:
        """``vxlan0`` (VNI 4097, the announced MAC) and the pod bridge at the subnet's ``.1``."""
        self.subnet = subnet
        gateway = subnet.network_address + 1
        self._ip([
            f"link add vxlan0 address {self.mac} mtu {POD_MTU} type vxlan id {VNI} dstport {self.vxlan_port} "
            f"local {self.address} dev eth0 nolearning",
            "link set vxlan0 up",
            "link add br0 type bridge",
            f"addr add {gateway}/{subnet.prefixlen} dev br0",
            "link set br0 up",
        ])
        self._sysctl(self.netns, "net.ipv4.ip_forward=1")
        # Packets come in on vxlan0 and go back out of it: the host must not drop them as spoofed.
        self._sysctl(self.netns, "net.ipv4.conf.all.rp_filter=0")
        self._sysctl(self.netns, "net.ipv4.conf.vxlan0.rp_filter=0")

    def join(self, *, timeout: float = 60) -> ipaddress.IPv4Network:
        """Network, Node object, hybrid subnet, overlay: the node as the cluster sees it when it joins."""
        if self.subnet is not None:
            return self.subnet
        self.create_network()
        self.register()
        subnet = self.wait_subnet(timeout=timeout)
        self.build_overlay(subnet)
        logger.info("foreign node %s: %s, VTEP %s (%s), subnet %s", self.name, self.netns, self.address, self.mac,
                    subnet)
        return subnet

    def add_pod(self, pod: str) -> str:
        """A "pod": a namespace with ``eth0`` on the node's bridge; returns its IP."""
        if self.subnet is None:
            raise StartupError(f"foreign node {self.name} has not joined yet")
        if pod in self.pods:
            return self.pods[pod]
        ip = str(self.subnet.network_address + 10 + len(self.pods))
        netns, veth = self.pod_netns(pod), f"v{pod}"
        if len(veth) > MAX_IFNAME:
            raise StartupError(f"foreign pod name {pod!r} is too long")
        self.pods[pod] = ip
        if self.record_netns is not None:
            self.record_netns(netns)
        run([paths.system_bin("ip"), "netns", "add", netns])
        self._ip([f"link add {veth} mtu {POD_MTU} type veth peer name eth0 netns {netns}",
                  f"link set {veth} master br0 up"])
        self._ip(["link set lo up", f"addr add {ip}/{self.subnet.prefixlen} dev eth0", "link set eth0 up",
                  f"route add default via {self.subnet.network_address + 1}"], netns=netns)
        tx_checksum_off("eth0", netns=netns)
        tx_checksum_off(veth, netns=self.netns)
        return ip

    def start_echo(self, pod: str, echo_binary: Path, ports: list[str]) -> Daemon:
        """An ovnk-echo server (``8080/tcp``, ``8081/udp``...) in a foreign pod; stopped by :meth:`leave`."""
        daemon = Daemon(f"{self.name}/{pod}/echo", [paths.system_bin("nsenter"), f"--net={netns_path(self.pod_netns(pod))}",
                                                    str(echo_binary), *ports],
                        log_path=self.log_dir / f"{self.name}-{pod}-echo.log").start()
        self._servers.append(daemon)
        if self.record_daemon is not None:
            self.record_daemon(daemon)
        return daemon

    def exec(self, pod: str, argv: list[str], *, check: bool = False, timeout: float = 30) -> tuple[int, str]:
        """Run a command in a foreign pod; (exit code, stdout)."""
        res = run([paths.system_bin("nsenter"), f"--net={netns_path(self.pod_netns(pod))}", *argv], check=check,
                  timeout=timeout)
        return res.returncode, res.stdout

    # -- routes to the OVN nodes -------------------------------------------------------------

    def sync(self) -> list[str]:
        """Program the routes to every OVN node that announced its DR; drop those of nodes that went.

        :returns: the OVN nodes routed to.
        """
        with KubeClient(kubeconfig=str(self.kubeconfig)) as kube:
            nodes, _ = kube.list(NODES)
        wanted = {r.node: r for r in (ovn_node_route(n) for n in nodes) if r is not None}
        for name, old in sorted(self.routes.items()):
            if wanted.get(name) != old:
                self._ip([f"route del {old.subnet}", f"neigh del {old.dr_ip} dev vxlan0"], check=False)
                self._bridge(["fdb", "del", old.dr_mac, "dev", "vxlan0", "dst", str(old.address)], check=False)
                del self.routes[name]
        for name, route in sorted(wanted.items()):
            if name in self.routes:
                continue
            self._bridge(["fdb", "append", route.dr_mac, "dev", "vxlan0", "dst", str(route.address), "self",
                          "permanent"])
            self._ip([f"neigh replace {route.dr_ip} lladdr {route.dr_mac} dev vxlan0 nud permanent",
                      f"route replace {route.subnet} via {route.dr_ip} dev vxlan0 onlink"])
            self.routes[name] = route
        return sorted(self.routes)

    def leave(self) -> None:
        """Delete the Node object, stop the servers and remove the namespaces."""
        for daemon in self._servers:
            daemon.stop()
        self._servers.clear()
        with KubeClient(kubeconfig=str(self.kubeconfig)) as kube:
            kube.delete(NODES, self.name)
        for netns in reversed(self.all_netns()):
            delete_netns(netns)
        self.pods.clear()
        self.routes.clear()
        self.subnet = None

    # -- helpers -----------------------------------------------------------------------------

    def _ip(self, commands: list[str], *, netns: str | None = None, check: bool = True) -> None:
        force = [] if check else ["-force"]  # go on past commands that fail (deleting what is gone)
        run([paths.system_bin("ip"), "-n", netns or self.netns, *force, "-batch", "-"],
            input="\n".join(commands).encode() + b"\n", check=check)

    def _bridge(self, args: list[str], *, check: bool = True) -> None:
        run([paths.system_bin("nsenter"), f"--net={netns_path(self.netns)}", paths.system_bin("bridge"), *args],
            check=check)

    @staticmethod
    def _sysctl(netns: str, assignment: str) -> None:
        run([paths.system_bin("nsenter"), f"--net={netns_path(netns)}", paths.system_bin("sysctl"), "-qw", assignment])
