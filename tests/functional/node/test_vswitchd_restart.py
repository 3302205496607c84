"""ovs-vswitchd dies and comes back under a running node agent (last in this folder: it restarts
node-1's datapath).

A new ovs-vswitchd recreates the bridges from its database with empty flow tables.
ovn-controller refills br-int by itself; the gateway bridge is the agent's, and without
its flows the node's own traffic (the kubelet, the API server's calls to it) stops. OVS
3.1.0's userspace datapath aborts under connection churn (lab.md), so this is not
hypothetical: the sandbox runs ovs-vswitchd under --monitor, which restarts it. The
flow manager restores every managed bridge, also one a plugin created: node-1's agent
runs here with a plugin that has a bridge of its own.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ovnk.core.errors import StartupError
from ovnk.core.node.flows import RESYNC_INTERVAL
from ovnk.core.node.gateway import RELEASED_MARKER
from ovnk_lab import paths
from ovnk_lab.ovsnode import NodeLab
from ovnk_lab.ovsnode import OvsNode
from ovnk_lab.procs import wait_for

from .conftest import dump_flows
from .conftest import install_plugin
from .conftest import ping
from .conftest import pod_ip
from .conftest import restart_agent
from .conftest import wired_pod

PLUGIN = "testbridge"
BRIDGE = "br-plug"
PLUGIN_SOURCE = f'''
"""A plugin with a bridge of its own, created and managed in ovnk_node_setup."""

from ovnk import hookimpl


@hookimpl
def ovnk_node_setup(ctx):
    ctx.ovs.ensure_bridge("{BRIDGE}", datapath_type=ctx.config.ovs.datapath_type, fail_mode="secure")
    ctx.flows.manage("{BRIDGE}")
    ctx.flows.set_flows("{BRIDGE}", "{PLUGIN}", ["table=0,priority=30,arp actions=drop",
                                                 "table=0,priority=20,ip actions=drop"])
'''


def host_ping(address: str) -> bool:
    """From the test's own netns over the underlay: the node's host path through its gateway bridge."""
    return subprocess.run([paths.system_bin("ping"), "-c", "1", "-W", "1", address],
                          capture_output=True, check=False).returncode == 0


def current_flows(node: OvsNode, bridge: str = "breth0") -> list[str] | None:
    """A bridge's flows, or None while the new ovs-vswitchd is not answering yet."""
    try:
        return sorted(dump_flows(node, bridge, "--no-stats"))
    except StartupError:  # the lab's run() raises it when ovs-ofctl fails
        return None


@pytest.fixture
def bridged(lab: NodeLab, node1: OvsNode, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OvsNode]:
    """node-1's agent with the plugin that has a bridge of its own."""
    site = tmp_path_factory.mktemp("testbridge-site")
    install_plugin(site, name=PLUGIN, source=PLUGIN_SOURCE)
    restart_agent(lab, node1, plugins=(PLUGIN,), env={"PYTHONPATH": str(site)})
    try:
        yield node1
    finally:
        restart_agent(lab, node1)
        shutil.rmtree(site, ignore_errors=True)


def test_managed_bridges_are_rewritten_as_soon_as_vswitchd_restarts(
    lab: NodeLab, bridged: OvsNode, node2: OvsNode, ns: str
) -> None:
    node1 = bridged
    a, _ = wired_pod(lab, node1, ns, "a")
    _, result_b = wired_pod(lab, node2, ns, "b")
    assert ping(a, pod_ip(result_b)).returncode == 0
    assert host_ping(node1.ip)
    flows = sorted(dump_flows(node1, "breth0", "--no-stats"))
    assert flows
    plugin_flows = current_flows(node1, BRIDGE)
    assert plugin_flows is not None and len(plugin_flows) == 2

    vswitchd = node1.daemons["ovs-vswitchd"]
    vswitchd.kill()
    vswitchd.start()
    restarted = time.monotonic()
    # Faster than the periodic resync: the agent noticed the restart itself.
    wait_for("breth0's and br-plug's flows rewritten",
             lambda: current_flows(node1) == flows and current_flows(node1, BRIDGE) == plugin_flows,
             timeout=RESYNC_INTERVAL - 5, interval=0.1, daemons=[vswitchd])
    print(f"\nbreth0 and br-plug flows back {time.monotonic() - restarted:.1f}s after ovs-vswitchd restarted")
    assert "ovs-vswitchd restarted" in node1.agent_log.read_text()
    wait_for("node-1's own address answering again", lambda: host_ping(node1.ip), timeout=10)
    # br-int is ovn-controller's to refill; the pod network comes back too.
    wait_for("pod a reaching pod b again", lambda: ping(a, pod_ip(result_b), count=1).returncode == 0, timeout=30)


def addresses_of(node: OvsNode, link: str) -> list[str]:
    out = node.exec(["ip", "-j", "-4", "addr", "show", "dev", link], check=False)
    if out.returncode != 0:
        return []
    return [f"{a['local']}/{a['prefixlen']}" for entry in json.loads(out.stdout) for a in entry["addr_info"]]


def release_uplink(node: OvsNode, marker_dir: Path) -> subprocess.CompletedProcess[str]:
    """``ovnk release-uplink`` in the node's netns, as the chart's preStop of ovs-vswitchd runs it."""
    return node.exec([str(Path(sys.executable).with_name("ovnk")), "--set", f"ovs.address={node.ovs_address}",
                      "release-uplink", "--marker-dir", str(marker_dir)])


def test_release_uplink_keeps_the_host_reachable_while_ovs_is_down_and_a_restart_sets_the_gateway_up_again(
    lab: NodeLab, node1: OvsNode, node2: OvsNode, ns: str, tmp_path: Path
) -> None:
    a, _ = wired_pod(lab, node1, ns, "a")
    _, result_b = wired_pod(lab, node2, ns, "b")
    assert ping(a, pod_ip(result_b)).returncode == 0
    [address] = addresses_of(node1, "breth0")
    assert addresses_of(node1, "eth0") == []
    routes = json.loads(node1.exec(["ip", "-j", "-4", "route", "show", "default"]).stdout)
    assert agent_health(node1) == 200

    done = release_uplink(node1, tmp_path)
    assert "released eth0 from breth0" in done.stdout
    assert (tmp_path / RELEASED_MARKER).read_text() == "released\n"
    assert addresses_of(node1, "eth0") == [address]
    assert "breth0" not in node1.vsctl("list-br").split()
    assert node1.exec(["ip", "link", "show", "breth0"], check=False).returncode != 0
    assert [r["dev"] for r in json.loads(node1.exec(["ip", "-j", "-4", "route", "show", "default"]).stdout)] == \
        ["eth0" for _ in routes]
    # The agent is not alive without its bridge: under the chart the kubelet restarts it.
    wait_for("node-1's agent reporting itself not alive", lambda: agent_health(node1) == 503, timeout=10)
    # Nothing left to release: the second run changes nothing.
    again = release_uplink(node1, tmp_path)
    assert "nothing to release" in again.stdout
    assert addresses_of(node1, "eth0") == [address]

    # OVS stopped for good: the host keeps its address and is reachable through the plain uplink.
    vswitchd = node1.daemons["ovs-vswitchd"]
    vswitchd.stop()
    try:
        assert host_ping(node1.ip)
    finally:
        vswitchd.start()
    restart_agent(lab, node1)
    assert addresses_of(node1, "breth0") == [address] and addresses_of(node1, "eth0") == []
    assert agent_health(node1) == 200
    wait_for("node-1's own address answering again", lambda: host_ping(node1.ip), timeout=10)
    wait_for("pod a reaching pod b again", lambda: ping(a, pod_ip(result_b), count=1).returncode == 0, timeout=30)


def agent_health(node: OvsNode) -> int:
    script = ("import urllib.request, urllib.error\n"
              "try:\n"
              "    print(urllib.request.urlopen('http://127.0.0.1:9410/healthz', timeout=5).status)\n"
              "except urllib.error.HTTPError as e:\n"
              "    print(e.code)\n")
    return int(node.exec(["python3", "-c", script]).stdout.strip())
