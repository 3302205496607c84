"""Restarting the node agent with pods wired: connectivity stays, nothing is rewired."""

from __future__ import annotations

import re
import subprocess
import time

import pytest

from ovnk_lab import paths
from ovnk_lab.ovsnode import NodeLab
from ovnk_lab.ovsnode import OvsNode
from ovnk_lab.ovsnode import netconf

from .conftest import add_ok
from .conftest import host_links
from .conftest import iface_rows
from .conftest import pod_ip
from .conftest import restart_agent
from .conftest import shim_status
from .conftest import wired_pod

pytestmark = [pytest.mark.node, pytest.mark.kube, pytest.mark.ovn, pytest.mark.slow]

PODS = 20
PROBE_SECONDS = 8.0
PING_INTERVAL = 0.1

TCP_PROBER = """
import socket, sys, time
server, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
conn = socket.create_connection((server, port), timeout=2)
conn.settimeout(1.0)
sent = failed = 0
deadline = time.monotonic() + seconds
while time.monotonic() < deadline:
    message = f"probe {sent}\\n".encode()
    try:
        conn.sendall(message)
        got = b""
        while len(got) < len(message):
            got += conn.recv(len(message) - len(got))
        if got != message:
            failed += 1
    except OSError as exc:
        failed += 1
        print(f"error at {sent}: {exc}", flush=True)
    sent += 1
    time.sleep(0.05)
print(f"sent={sent} failed={failed}", flush=True)
"""

ECHO_SERVER = """
import socketserver, sys
class Echo(socketserver.StreamRequestHandler):
    def handle(self):
        for line in self.rfile:
            self.wfile.write(line)
socketserver.ThreadingTCPServer.allow_reuse_address = True
with socketserver.ThreadingTCPServer(("0.0.0.0", int(sys.argv[1])), Echo) as server:
    print("listening", flush=True)
    server.serve_forever()
"""


def test_restart_with_20_pods_keeps_connectivity(lab: NodeLab, node1: OvsNode, node2: OvsNode, ns: str) -> None:
    target, target_result = wired_pod(lab, node2, ns, "target")
    target_ip = pod_ip(target_result)
    wired = [wired_pod(lab, node1, ns, f"p{i}") for i in range(PODS)]
    pods = [pod for pod, _ in wired]
    hosts = [p.container_id[:15] for p in pods]
    rows_before = iface_rows(node1, *hosts, "ovn-k8s-mp0")
    links_before = {name: index for name, index in host_links(node1).items() if name in hosts}
    assert len(links_before) == PODS

    target.exec(["ip", "link", "set", "lo", "up"])
    nsenter = paths.system_bin("nsenter")
    server = subprocess.Popen([nsenter, f"--net={target.netns_path}", "--", "python3", "-c", ECHO_SERVER, "9000"],
                              stdout=subprocess.PIPE, text=True)
    probes: list[subprocess.Popen[str]] = []
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "listening"
        count = int(PROBE_SECONDS / PING_INTERVAL)
        for pod in pods:
            probes.append(subprocess.Popen(
                [nsenter, f"--net={pod.netns_path}", "--", "ping", "-q", "-c", str(count), "-i", str(PING_INTERVAL),
                 "-W", "2", target_ip], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        tcp = subprocess.Popen([nsenter, f"--net={pods[0].netns_path}", "--", "python3", "-c", TCP_PROBER,
                                target_ip, "9000", str(PROBE_SECONDS - 2)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(1.0)
        restart_seconds = restart_agent(lab, node1)
        assert shim_status(node1).returncode == 0
        assert all(p.poll() is None for p in probes), "the probes ended before the agent was back"
        for probe in probes:
            out, _ = probe.communicate(timeout=PROBE_SECONDS + 30)
            match = re.search(r"(\d+) packets transmitted, (\d+) received", out)
            assert match, out
            assert match.group(1) == match.group(2) == str(count), f"lost pings during the restart: {out}"
        tcp_out, _ = tcp.communicate(timeout=PROBE_SECONDS + 30)
        assert tcp_out.strip().endswith("failed=0"), tcp_out
    finally:
        for proc in [*probes, server]:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    print(f"agent back after {restart_seconds:.1f}s")

    # Nothing was rewired: same Interface rows and ofports, same veths.
    assert iface_rows(node1, *hosts, "ovn-k8s-mp0") == rows_before
    assert {name: index for name, index in host_links(node1).items() if name in hosts} == links_before
    # The restarted agent serves the pods it did not wire itself: CHECK passes, a repeated ADD
    # returns the same result and changes nothing.
    pod, result = wired[1]
    assert lab.cni(pod, "CHECK", config=netconf(prevResult=result)).returncode == 0
    assert add_ok(lab, pod) == result
    assert iface_rows(node1, hosts[1]) == {hosts[1]: rows_before[hosts[1]]}
