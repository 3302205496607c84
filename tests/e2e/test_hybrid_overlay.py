"""The hybrid overlay on the sandbox with real packets: OVN pods and a foreign node's pods over VXLAN.

A foreign node is the lab's stand-in for a Windows node (``ovnk_lab.foreign``):
a namespace on the underlay with a kernel vxlan device (VNI 4097, UDP 4789) and
a bridge of "pods" in the hybrid subnet the controller allocated. The module
switches the plugin on in the session sandbox and its last test switches it off
(checking that everything it made goes, and that ordinary pod traffic is fine).
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

import pytest

from ovnk_lab.foreign import ForeignNode
from ovnk_lab.images import build_echo_binary
from ovnk_lab.sandbox import Sandbox
from tests.e2e.conftest import ECHO_TCP
from tests.e2e.conftest import ECHO_UDP
from tests.e2e.conftest import Cluster
from tests.e2e.conftest import ContinuousProbe
from tests.e2e.conftest import poll_until
from tests.e2e.support import nb_rows

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]

HYBRID = "10.132.0.0/14"
SETTINGS = {"hybrid_overlay": {"cluster-subnets": f"{HYBRID}/23"}}
ECHO = build_echo_binary


@dataclass
class Hybrid:
    ns: str
    ovn_pods: dict[str, str]  # pod -> IP (one echo pod per node: on-<node>)
    win1: ForeignNode
    foreign_ip: str
    probe: ContinuousProbe
    #: Ranges of probe results a deliberate datapath outage explains (the ovs-vswitchd crash).
    outages: list[tuple[int, int]] = field(default_factory=list)


def foreign(sandbox: Sandbox, name: str, index: int) -> ForeignNode:
    underlay = sandbox.cluster.underlay
    node = ForeignNode(underlay=underlay, kubeconfig=sandbox.kubeconfig, name=name,
                       address=underlay.node_ip(40 + index), mac=f"0a:58:64:00:00:{index:02x}",
                       log_dir=sandbox.workdir / "foreign", record_netns=sandbox.cluster.add_netns,
                       record_daemon=sandbox.cluster.record)
    node.join()
    return node


def foreign_send(node: ForeignNode, pod: str, protocol: str, address: str, port: int, message: str = "clientip",
                 *, timeout: float = 2) -> str | None:
    code, out = node.exec(pod, [str(ECHO()), "send", protocol, address, str(port), message, f"{timeout:g}"])
    return out.strip() if code == 0 else None


def foreign_ping(node: ForeignNode, pod: str, address: str) -> bool:
    code, _ = node.exec(pod, ["ping", "-c", "1", "-W", "2", address])
    return code == 0


def dr_ip(cluster: Cluster, node: str) -> str:
    obj = json.loads(cluster.kubectl("get", "node", node, "-o", "json"))
    return str(obj["metadata"]["annotations"]["k8s.ovn.org/hybrid-overlay-distributed-router-gateway-ip"])


def br_ext_flows(sandbox: Sandbox, node: str) -> str:
    return sandbox.cluster.node(node).ovs_ofctl("dump-flows", "br-ext")


def reach_both_ways(cluster: Cluster, h: Hybrid, node: ForeignNode, pod: str, ip: str, *, timeout: float = 30) -> None:
    """Every OVN pod and the foreign pod reach each other with ICMP, TCP and UDP, and see each other's IP."""
    for ovn_pod, ovn_ip in h.ovn_pods.items():
        poll_until(f"{ovn_pod} pings {node.name}/{pod}", lambda p=ovn_pod: cluster.ping(h.ns, p, ip, count=1),
                   timeout=timeout)
        assert cluster.probe(h.ns, ovn_pod, "tcp", ip, ECHO_TCP, "clientip") == ovn_ip
        assert cluster.probe(h.ns, ovn_pod, "udp", ip, ECHO_UDP, "clientip") == ovn_ip
        assert foreign_ping(node, pod, ovn_ip), f"{node.name}/{pod} cannot ping {ovn_pod}"
        assert foreign_send(node, pod, "tcp", ovn_ip, ECHO_TCP) == ip
        assert foreign_send(node, pod, "udp", ovn_ip, ECHO_UDP) == ip


@pytest.fixture(scope="module")
def hybrid(sandbox: Sandbox, cluster: Cluster) -> Iterator[Hybrid]:
    ns = cluster.namespace()
    pods = cluster.run_pods(ns, [{"name": f"on-{n}", "node": n, "kind": "echo"} for n in cluster.nodes])
    # Ordinary pod traffic across nodes, probed every 200 ms from before the plugin is on until after it is off.
    # The client is on the node whose ovs-vswitchd stays up (its kubelet serves the probe's exec stream).
    probe = ContinuousProbe(cluster, ns, f"on-{cluster.nodes[1]}", pods[f"on-{cluster.nodes[0]}"]["status"]["podIP"])
    win1: ForeignNode | None = None
    try:
        probe.wait_for(3)
        sandbox.set_plugins(["hybrid_overlay"], settings=SETTINGS)
        win1 = foreign(sandbox, "win-1", 1)
        ip = win1.add_pod("fa")
        win1.start_echo("fa", ECHO(), [f"{ECHO_TCP}/tcp", f"{ECHO_UDP}/udp"])
        poll_until("win-1 routes to every OVN node", lambda: win1 is not None and win1.sync() == sorted(cluster.nodes),
                   timeout=60)
        yield Hybrid(ns=ns, ovn_pods={name: p["status"]["podIP"] for name, p in pods.items()}, win1=win1,
                     foreign_ip=ip, probe=probe)
    finally:
        probe.stop()
        if win1 is not None:
            win1.leave()
        cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def test_ovn_pods_and_foreign_pods_reach_each_other(cluster: Cluster, sandbox: Sandbox, hybrid: Hybrid) -> None:
    win1 = hybrid.win1
    assert win1.subnet == ipaddress.ip_network("10.132.0.0/23")
    node = json.loads(cluster.kubectl("get", "node", "win-1", "-o", "json"))
    assert "k8s.ovn.org/node-subnets" not in node["metadata"].get("annotations", {}), "a foreign node gets no host subnet"
    reach_both_ways(cluster, hybrid, win1, "fa", hybrid.foreign_ip)
    status = subprocess.run([*cluster.sandbox_ovnk(), "hybrid-overlay", "status", "--json"], capture_output=True,
                            text=True, check=True, timeout=60).stdout
    rows = {r["node"]: r for r in json.loads(status)}
    assert rows["win-1"]["role"] == "foreign" and rows["win-1"]["missing"] == [], rows
    assert rows["win-1"]["subnet"] == "10.132.0.0/23" and rows["win-1"]["address"] == win1.address
    # The DR address is .3 of the node subnet unless a pod held .3 before the plugin came (these pods did).
    assert all(rows[n]["role"] == "ovn" and rows[n]["address"] == dr_ip(cluster, n) for n in cluster.nodes), rows
    # Each OVN node tunnels straight to the foreign node (VNI 4097), and the host reaches it through OVN.
    for name in cluster.nodes:
        flows = br_ext_flows(sandbox, name)
        assert f"set_field:{win1.address}->tun_dst" in flows and "0x1001->" in flows, flows
        routes = sandbox.cluster.node(name).exec(["ip", "-4", "route", "show", HYBRID]).stdout
        assert "ovn-k8s-mp0" in routes, routes
        assert sandbox.cluster.node(name).exec(["ping", "-c", "1", "-W", "2", hybrid.foreign_ip], check=False).returncode == 0


def test_second_foreign_node_comes_and_goes(cluster: Cluster, sandbox: Sandbox, hybrid: Hybrid) -> None:
    win2 = foreign(sandbox, "win-2", 2)
    try:
        assert win2.subnet == ipaddress.ip_network("10.132.2.0/23")
        ip = win2.add_pod("fb")
        win2.start_echo("fb", ECHO(), [f"{ECHO_TCP}/tcp", f"{ECHO_UDP}/udp"])
        poll_until("win-2 routes to every OVN node", lambda: win2.sync() == sorted(cluster.nodes), timeout=60)
        reach_both_ways(cluster, hybrid, win2, "fb", ip)
    finally:
        win2.leave()
    for name in cluster.nodes:
        poll_until(f"win-2's flows gone on {name}", lambda n=name: win2.address not in br_ext_flows(sandbox, n))
        assert hybrid.win1.address in br_ext_flows(sandbox, name), "win-1's flows stay"
    reach_both_ways(cluster, hybrid, hybrid.win1, "fa", hybrid.foreign_ip)


def test_vswitchd_restart_brings_hybrid_traffic_back(cluster: Cluster, sandbox: Sandbox, hybrid: Hybrid) -> None:
    name = cluster.nodes[0]
    node = sandbox.cluster.node(name)
    pidfile = node.ovs_dir / "run" / "ovs-vswitchd.pid"
    old = int(pidfile.read_text().strip())
    parent = Path(f"/proc/{old}/status").read_text().split("PPid:")[1].split()[0]
    monitored = Path(f"/proc/{parent}/comm").read_text().strip() == "ovs-vswitchd"
    outage_from = len(hybrid.probe.results)
    os.kill(old, signal.SIGABRT)  # a crash
    killed = time.monotonic()
    if not monitored:
        # The sandbox runs a current OVS without --monitor (a crash there is a finding): start it again
        # as a supervisor would; with the old OVS its --monitor process does.
        poll_until("the crashed ovs-vswitchd gone", lambda: not Path(f"/proc/{old}/cmdline").exists()
                   or not Path(f"/proc/{old}/cmdline").read_bytes(), timeout=30, interval=0.05)
        node.start_vswitchd()

    def restarted() -> bool:
        try:
            pid = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            return False
        return pid != old and os.path.exists(f"/proc/{pid}")

    poll_until("ovs-vswitchd restarted", restarted, timeout=60, interval=0.05)
    up = time.monotonic()

    def tunnel_flows() -> bool:
        try:
            return f"set_field:{hybrid.win1.address}->tun_dst" in br_ext_flows(sandbox, name)
        except Exception:  # the bridge's management socket is not back yet
            return False

    poll_until("br-ext's flows rewritten", tunnel_flows, timeout=60, interval=0.05)
    flows_back = time.monotonic()
    ovn_pod = f"on-{name}"
    # Short probes (0.3 s): the time traffic is back, not the time a probe sent into the outage gave up.
    poll_until("hybrid traffic back", lambda: foreign_send(hybrid.win1, "fa", "udp", hybrid.ovn_pods[ovn_pod],
                                                            ECHO_UDP, timeout=0.3) == hybrid.foreign_ip,
               timeout=60, interval=0.05)
    back = time.monotonic()
    print(f"\nbr-ext flows back {flows_back - up:.2f}s and hybrid traffic back {back - up:.1f}s after ovs-vswitchd "
          f"restarted ({back - killed:.1f}s after the crash)")
    assert f"set_field:{hybrid.win1.address}->tun_dst" in br_ext_flows(sandbox, name)
    # The crash stops every pod of the node for a moment, the ordinary probe's too.
    hybrid.probe.wait_for(len(hybrid.probe.results) + 3)
    hybrid.outages.append((outage_from, len(hybrid.probe.results)))
    reach_both_ways(cluster, hybrid, hybrid.win1, "fa", hybrid.foreign_ip)


def test_agent_restart_keeps_hybrid_traffic(cluster: Cluster, sandbox: Sandbox, hybrid: Hybrid) -> None:
    """The agent is killed and restarted: br-ext, its ports and flows stay in OVS meanwhile, and the new
    agent converges to the very same flows."""
    name = cluster.nodes[1]
    node = sandbox.cluster.node(name)

    def flows() -> list[str]:
        return sorted(node.ovs_ofctl("dump-flows", "br-ext", "--no-stats").splitlines())

    before = flows()
    log = node.log_dir / "ovnk-node.log"
    mark = log.stat().st_size
    sandbox.restart_agent(name)
    assert foreign_send(hybrid.win1, "fa", "udp", hybrid.ovn_pods[f"on-{name}"], ECHO_UDP) == hybrid.foreign_ip
    poll_until(f"the agent of {name} ready again", lambda: " ready in " in log.read_bytes()[mark:].decode(errors="replace"),
               timeout=120)
    reach_both_ways(cluster, hybrid, hybrid.win1, "fa", hybrid.foreign_ip)
    assert flows() == before


def test_plugin_off_removes_everything_and_pod_traffic_stays(cluster: Cluster, sandbox: Sandbox, hybrid: Hybrid) -> None:
    n1, n2 = cluster.nodes[:2]
    hybrid.win1.leave()  # a foreign node would become an ordinary node with the plugin off
    reserved = {dr_ip(cluster, name) for name in cluster.nodes}
    sandbox.set_plugins([])
    assert sandbox.central is not None
    for table in ("Logical_Switch_Port", "Logical_Router_Policy", "Logical_Router_Static_Route"):
        rows = sandbox.central.nbctl("--format=json", "--columns=external_ids", "list", table)
        assert '"HybridOverlay"' not in rows, f"HybridOverlay rows left in {table}"
    for row in nb_rows(sandbox, "Logical_Switch"):
        excluded = str(row["other_config"].get("exclude_ips", ""))
        assert not reserved & set(excluded.split()), f"{row['name']}: {excluded}"
    for name in cluster.nodes:
        node = sandbox.cluster.node(name)
        assert node.ovs_vsctl("list-ports", "br-int").split().count("int") == 0
        assert "br-ext" not in node.ovs_vsctl("list-br").split()
        routes = node.exec(["ip", "-4", "route", "show", HYBRID]).stdout
        assert routes.strip() == "", routes
    # Ordinary pod traffic across nodes was never interrupted: plugin on, foreign nodes, restart, plugin off.
    ip2 = hybrid.ovn_pods[f"on-{n2}"]
    assert cluster.probe(hybrid.ns, f"on-{n1}", "tcp", ip2, ECHO_TCP, "clientip") == hybrid.ovn_pods[f"on-{n1}"]
    hybrid.probe.wait_for(len(hybrid.probe.results) + 5)
    ok, _ = hybrid.probe.stop()
    failed = [line for index, line in enumerate(hybrid.probe.results) if line.startswith("FAIL")
              and not any(start <= index < end for start, end in hybrid.outages)]
    assert ok > 20 and not failed, f"{len(failed)} failed pod-to-pod probes: {failed}"
