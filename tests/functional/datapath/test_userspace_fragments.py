"""Fragmented UDP through an OVN load balancer on OVS's userspace (netdev) datapath, without ovnk.

Kubernetes' "Services should be able to handle large requests: udp" fails on the sandbox (issue 25):
a datagram larger than the pod MTU reaches a ClusterIP as IP fragments and gets no answer. This test
asks whether that is ovnk's doing. It builds the smallest OVN network that has a load balancer, by
hand with ``ovn-nbctl`` and no ovnk code at all: one chassis (ovs-vswitchd with ``datapath_type=netdev``
and ovn-controller in their own netns), a logical switch with a client and a server port, a logical
router as the client's gateway, and a UDP load balancer on the switch whose only backend is the server.

What it shows: unfragmented datagrams cross the load balancer, fragmented ones cross the switch to the
server's own IP, and fragmented ones to the VIP get no answer although the datapath's conntrack
reassembled them: not one fragment reaches the server. OVN sends fragments to a VIP through conntrack
(``ls_in_pre_stateful``, the ``ip.is_frag`` flow) and expects the packet coming out of ``ct()`` to be
whole, so that the load balancer's flow (``ls_in_lb``: ``ct.new && ip4.dst == VIP && udp.dst == PORT``)
matches it. The kernel datapath hands on the reassembled packet. The userspace datapath (OVS
``lib/ipf.c``) reassembles only to feed conntrack, then hands on the original fragments with the
conntrack state copied onto them; with OpenFlow's ``normal`` fragment handling none of them shows a UDP
port, so none is load-balanced (``dpctl/dump-flows``: after ``ct()`` they are committed and go nowhere:
the router has no route to the VIP). ovn-kubernetes#4208 says the same of the userspace datapath.

The last check is an expected failure (``pytest.xfail``) reached only after the two working paths are
asserted, so a broken lab fails the test rather than hiding behind the known limitation; if a newer OVS
delivers the fragments through the VIP, the test fails and tells to drop the xfail of ovnk's e2e test.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ovnk_lab import hostnet
from ovnk_lab import paths
from ovnk_lab.ovn import OvnCentral
from ovnk_lab.ovsnode import OvsNode
from ovnk_lab.procs import run
from ovnk_lab.procs import wait_for

SUBNET_GATEWAY, CLIENT_IP, SERVER_IP = "10.77.0.1", "10.77.0.2", "10.77.0.3"
VIP, PORT = "10.96.77.10", 5000
POD_MTU = 1400
ROUTER_MAC = "0a:58:0a:4d:00:01"

# A UDP echo server: answers every datagram with its payload.
ECHO_SERVER = f"""
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", {PORT}))
print("ready", flush=True)
while True:
    data, peer = s.recvfrom(65535)
    s.sendto(data, peer)
"""

# Sends one datagram of argv[2] bytes to argv[1]; prints the reply's length, or "timeout".
ECHO_CLIENT = f"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
payload = b"x" * int(sys.argv[2])
for _ in range(3):
    s.sendto(payload, (sys.argv[1], {PORT}))
    try:
        data = s.recv(65535)
    except TimeoutError:
        continue
    print(len(data))
    break
else:
    print("timeout")
"""


@dataclass
class FragmentLab:
    node: OvsNode
    central: OvnCentral
    client_netns: str
    server_netns: str

    def in_netns(self, netns: str, *argv: str) -> str:
        return run([paths.system_bin("nsenter"), f"--net={hostnet.netns_path(netns)}", "--", *argv],
                   timeout=30).stdout

    def echo(self, destination: str, size: int) -> str:
        return self.in_netns(self.client_netns, sys.executable, "-c", ECHO_CLIENT, destination, str(size)).strip()

    def reassembly_counters(self) -> dict[str, int]:
        """The server netns' IP reassembly counters (``/proc/net/snmp``): what arrived as fragments."""
        lines = [line.split() for line in self.in_netns(self.server_netns, "cat", "/proc/net/snmp").splitlines()
                 if line.startswith("Ip:")]
        counters = dict(zip(lines[0][1:], (int(v) for v in lines[1][1:]), strict=True))
        return {key: counters[key] for key in ("ReasmReqds", "ReasmOKs", "ReasmFails")}

    def datapath_fragments_completed(self) -> int:
        """Fragments the datapath's reassembly (``dpctl/ipf-get-status``) completed and sent on."""
        status = run([self.node.install.bin("ovs-appctl"), "-t", str(self.node.run_dir / "ovs-vswitchd.ctl"),
                      "dpctl/ipf-get-status"], env=self.node.env()).stdout
        return int(next(line for line in status.splitlines() if "v4 frags completed" in line).split(":")[1])


def pod_port(lab: FragmentLab, netns: str, host_end: str, ip: str, mac: str) -> None:
    """A pod's veth: eth0 in the pod netns (MTU 1400, TX checksum offload off: lab.md), the other
    end on br-int in the node netns, bound to the logical port of the same name."""
    run([paths.system_bin("ip"), "netns", "add", netns])
    lab.node.exec([paths.system_bin("ip"), "link", "add", host_end, "type", "veth", "peer", "name", "eth0",
                   "netns", str(hostnet.netns_path(netns))])
    lab.node.exec([paths.system_bin("ip"), "link", "set", host_end, "up"])
    for command in (["link", "set", "lo", "up"], ["link", "set", "eth0", "address", mac, "mtu", str(POD_MTU), "up"],
                    ["addr", "add", f"{ip}/24", "dev", "eth0"], ["route", "add", "default", "via", SUBNET_GATEWAY]):
        lab.in_netns(netns, paths.system_bin("ip"), *command)
    hostnet.tx_checksum_off("eth0", netns=netns)
    lab.node.vsctl("add-port", "br-int", host_end, "--", "set", "Interface", host_end,
                   f"external_ids:iface-id={host_end}")
    lab.central.nbctl("lsp-add", "sw", host_end, "--", "lsp-set-addresses", host_end, f"{mac} {ip}")


@pytest.fixture(scope="module")
def fragment_lab(lab_dir: Path) -> Iterator[FragmentLab]:
    prefix = f"frg{secrets.token_hex(3)}"
    workdir = lab_dir / f"frag-{uuid.uuid4().hex[:6]}"
    central = OvnCentral(workdir / "ovn").start()
    node_netns = f"{prefix}-node"
    run([paths.system_bin("ip"), "netns", "add", node_netns])
    node = OvsNode(name=f"{prefix}n", index=1, ip="127.0.0.1", netns=node_netns, dir=workdir / "node")
    lab = FragmentLab(node=node, central=central, client_netns=f"{prefix}-c", server_netns=f"{prefix}-s")
    server: subprocess.Popen[str] | None = None
    try:
        node.exec([paths.system_bin("ip"), "link", "set", "lo", "up"])
        node.start_ovs()
        # ovn-controller waits for these, then makes br-int with the netdev datapath.
        node.vsctl("set", "Open_vSwitch", ".", f"external_ids:system-id={uuid.uuid4()}",
                   f"external_ids:ovn-remote={central.sb_unix}", "external_ids:ovn-encap-type=geneve",
                   "external_ids:ovn-encap-ip=127.0.0.1", "external_ids:ovn-bridge-datapath-type=netdev")
        wait_for("br-int created by ovn-controller", lambda: "br-int" in node.vsctl("list-br").split(), timeout=30)
        central.nbctl("ls-add", "sw")
        central.nbctl("lr-add", "gw")
        central.nbctl("lrp-add", "gw", "gw-sw", ROUTER_MAC, f"{SUBNET_GATEWAY}/24")
        central.nbctl("lsp-add", "sw", "sw-gw", "--", "lsp-set-type", "sw-gw", "router",
                      "--", "lsp-set-addresses", "sw-gw", "router", "--", "lsp-set-options", "sw-gw",
                      "router-port=gw-sw")
        pod_port(lab, lab.client_netns, "client", CLIENT_IP, "0a:58:0a:4d:00:02")
        pod_port(lab, lab.server_netns, "server", SERVER_IP, "0a:58:0a:4d:00:03")
        central.nbctl("lb-add", "vip", f"{VIP}:{PORT}", f"{SERVER_IP}:{PORT}", "udp")
        central.nbctl("ls-lb-add", "sw", "vip")
        central.nbctl("--wait=hv", "sync")
        server = subprocess.Popen([paths.system_bin("nsenter"), f"--net={hostnet.netns_path(lab.server_netns)}",
                                   "--", sys.executable, "-c", ECHO_SERVER], stdout=subprocess.PIPE, text=True)
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        wait_for("the client port installed", lambda: node.vsctl(
            "get", "Interface", "client", "external_ids:ovn-installed").strip('"\n') == "true", timeout=30)
        yield lab
    finally:
        if server is not None:
            server.kill()
            server.wait()
        node.stop()
        central.destroy()
        for netns in (lab.client_netns, lab.server_netns, node_netns):
            hostnet.delete_netns(netns)


def test_unfragmented_udp_crosses_the_load_balancer(fragment_lab: FragmentLab) -> None:
    assert fragment_lab.echo(VIP, 1000) == "1000"


def test_fragmented_udp_crosses_the_switch_to_the_servers_own_address(fragment_lab: FragmentLab) -> None:
    before = fragment_lab.reassembly_counters()
    assert fragment_lab.echo(SERVER_IP, 3000) == "3000"
    after = fragment_lab.reassembly_counters()
    assert after["ReasmOKs"] > before["ReasmOKs"], "the request did not arrive as fragments: the test proves nothing"


def test_fragmented_udp_to_the_vip_reaches_the_server_reassembled(fragment_lab: FragmentLab) -> None:
    # The same network passes both halves of this on its own: first make sure it still does.
    assert fragment_lab.echo(VIP, 1000) == "1000"
    assert fragment_lab.echo(SERVER_IP, 3000) == "3000"
    before, completed_before = fragment_lab.reassembly_counters(), fragment_lab.datapath_fragments_completed()
    reply = fragment_lab.echo(VIP, 3000)
    time.sleep(0.5)
    after, completed_after = fragment_lab.reassembly_counters(), fragment_lab.datapath_fragments_completed()
    if reply == "timeout":
        assert completed_after > completed_before, "the datapath's reassembly never saw the fragments"
        assert after["ReasmReqds"] == before["ReasmReqds"], "some fragments reached the server: a different failure"
        pytest.xfail(f"OVS userspace datapath: its reassembly completed {completed_after - completed_before} "
                     f"fragments (every ct() pass counts) sent to the VIP, none reached the backend (server netns "
                     f"reassembly requests stayed at {after['ReasmReqds']}); see the module docstring")
    assert reply == "3000", reply
    pytest.fail("fragmented UDP now crosses an OVN load balancer on the userspace datapath: drop the xfail of "
                "tests/e2e/test_services.py::test_udp_datagrams_larger_than_the_pod_mtu_cross_a_service and of "
                "this test, and rerun Kubernetes' 'handle large requests: udp'")
