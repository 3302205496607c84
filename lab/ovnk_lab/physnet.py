"""A second "physical" network for localnet tests: a Linux bridge joined to every node, plus a host on it.

::

    <prefix>-phys netns (bridge brphys)                 <prefix>-<node> netns
        <node> ─────────────────────────────────────────── phys   (no address: an OVS bridge's uplink)
        host ───┐
                └── <prefix>-physhost netns: eth0 <host_ip>/24 (untagged)

The node end ``phys`` carries no address: a node agent adds it to an OVS
bridge (``bridge-uplinks``) whose ``ovn-bridge-mappings`` entry a localnet
network names. The bridge forwards 802.1Q frames as they are (no VLAN
filtering), so frames OVS tags on a localnet port reach the host tagged; this
kernel has no 8021q module, so the host answers untagged traffic only and
tagged frames are observed with a capture (:meth:`PhysicalNetwork.capture`).
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from ovnk_lab import hostnet
from ovnk_lab import paths
from ovnk_lab.procs import run

BRIDGE = "brphys"
NODE_LINK = "phys"


@dataclass(frozen=True)
class PhysicalNetwork:
    """Names and addresses of one physical network (``create``/``delete`` make and remove it)."""

    prefix: str
    subnet: str = "192.168.77.0/24"

    @property
    def bridge_netns(self) -> str:
        return f"{self.prefix}-phys"

    @property
    def host_netns(self) -> str:
        return f"{self.prefix}-physhost"

    @property
    def host_ip(self) -> str:
        return self.subnet.rsplit(".", 1)[0] + ".254"

    @property
    def node_link(self) -> str:
        return NODE_LINK

    def create(self, node_netns: Sequence[tuple[str, str]]) -> None:
        """The bridge, the host, and a veth into each node (``(node name, node netns)`` pairs)."""
        self.delete()
        for name in (self.bridge_netns, self.host_netns):
            run([paths.system_bin("ip"), "netns", "add", name])
        commands = ["link set lo up", f"link add {BRIDGE} type bridge", f"link set {BRIDGE} up",
                    f"link add host type veth peer name eth0 netns {self.host_netns}", f"link set host master {BRIDGE} up"]
        for node, netns in node_netns:
            commands += [f"link add {node} type veth peer name {NODE_LINK} netns {netns}",
                         f"link set {node} master {BRIDGE} up"]
        hostnet._ip_batch(commands, netns=self.bridge_netns)
        prefixlen = self.subnet.rsplit("/", 1)[1]
        hostnet._ip_batch(["link set lo up", f"addr add {self.host_ip}/{prefixlen} dev eth0", "link set eth0 up"],
                          netns=self.host_netns)
        hostnet.tx_checksum_off("eth0", netns=self.host_netns)
        for _node, netns in node_netns:
            hostnet._ip_batch([f"link set {NODE_LINK} up"], netns=netns)
            hostnet.tx_checksum_off(NODE_LINK, netns=netns)

    def delete(self) -> None:
        """Remove both namespaces; the nodes' ends of the veths go with their peers."""
        for name in (self.bridge_netns, self.host_netns):
            hostnet.delete_netns(name)

    def capture(self, *, filter_: str = "", count: int = 3) -> Capture:
        """Start ``tcpdump -e`` on the host's link (link-level headers: VLAN tags are shown)."""
        argv = [paths.system_bin("nsenter"), f"--net={hostnet.netns_path(self.host_netns)}",
                paths.system_bin("tcpdump"), "-l", "-n", "-e", "-i", "eth0", "-c", str(count)]
        if filter_:
            argv += filter_.split()
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stderr is not None
        # tcpdump says "listening on eth0" once its socket is open: frames sent after that are seen.
        said: list[str] = []
        while not said or "listening on" not in said[-1]:
            line = proc.stderr.readline()
            if not line or len(said) > 5:
                proc.kill()
                proc.wait(10)
                raise RuntimeError(f"tcpdump in {self.host_netns} did not start: {' '.join(said)}")
            said.append(line.strip())
        return Capture(proc)


@dataclass
class Capture:
    """A running capture on the physical host; :meth:`lines` stops it and returns what it saw."""

    proc: subprocess.Popen[str]

    def lines(self, timeout: float = 20) -> list[str]:
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGINT)
            out, _ = self.proc.communicate(timeout=10)
        return [line for line in out.splitlines() if line.strip()]
