"""ovs-vswitchd dies and comes back under a running node agent (last in this folder: it restarts
node-1's datapath).

A new ovs-vswitchd recreates the bridges from its database with empty flow tables.
ovn-controller refills br-int by itself; the gateway bridge is the agent's, and without
its flows the node's own traffic (the kubelet, the API server's calls to it) stops. OVS
3.1.0's userspace datapath aborts under connection churn (lab.md), so this is not
hypothetical: the sandbox runs ovs-vswitchd under --monitor, which restarts it.
"""

from __future__ import annotations

import subprocess
import time

from ovnk.core.errors import StartupError
from ovnk.core.node.flows import RESYNC_INTERVAL
from ovnk_lab import paths
from ovnk_lab.ovsnode import NodeLab
from ovnk_lab.ovsnode import OvsNode
from ovnk_lab.procs import wait_for

from .conftest import dump_flows
from .conftest import ping
from .conftest import pod_ip
from .conftest import wired_pod


def host_ping(address: str) -> bool:
    """From the test's own netns over the underlay: the node's host path through its gateway bridge."""
    return subprocess.run([paths.system_bin("ping"), "-c", "1", "-W", "1", address],
                          capture_output=True, check=False).returncode == 0


def current_flows(node: OvsNode) -> list[str] | None:
    """breth0's flows, or None while the new ovs-vswitchd is not answering yet."""
    try:
        return sorted(dump_flows(node, "breth0", "--no-stats"))
    except StartupError:  # the lab's run() raises it when ovs-ofctl fails
        return None


def test_gateway_flows_are_rewritten_as_soon_as_vswitchd_restarts(
    lab: NodeLab, node1: OvsNode, node2: OvsNode, ns: str
) -> None:
    a, _ = wired_pod(lab, node1, ns, "a")
    _, result_b = wired_pod(lab, node2, ns, "b")
    assert ping(a, pod_ip(result_b)).returncode == 0
    assert host_ping(node1.ip)
    flows = sorted(dump_flows(node1, "breth0", "--no-stats"))
    assert flows

    vswitchd = node1.daemons["ovs-vswitchd"]
    vswitchd.kill()
    vswitchd.start()
    restarted = time.monotonic()
    # Faster than the periodic resync: the agent noticed the restart itself.
    wait_for("breth0's flows rewritten", lambda: current_flows(node1) == flows,
             timeout=RESYNC_INTERVAL - 5, interval=0.2, daemons=[vswitchd])
    print(f"\nbreth0 flows back {time.monotonic() - restarted:.1f}s after ovs-vswitchd restarted")
    assert "ovs-vswitchd restarted" in node1.agent_log.read_text()
    wait_for("node-1's own address answering again", lambda: host_ping(node1.ip), timeout=10)
    # br-int is ovn-controller's to refill; the pod network comes back too.
    wait_for("pod a reaching pod b again", lambda: ping(a, pod_ip(result_b), count=1).returncode == 0, timeout=30)
