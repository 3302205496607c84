"""EgressIP on the sandbox with real packets: the outside host sees the egress IP, or the node IP.

The outside host is the sandbox's external namespace (the nodes' default
gateway) running an ovnk-echo server that answers ``clientip`` with the source
address it saw. The module switches the plugin on in the session sandbox and
its last test switches it off again (checking that everything it made goes).
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from ovnk_lab import paths
from ovnk_lab.hostnet import netns_path
from ovnk_lab.images import ECHO_IN_IMAGE
from ovnk_lab.sandbox import Sandbox
from tests.e2e.conftest import Cluster
from tests.e2e.conftest import external_echo
from tests.e2e.conftest import poll_until

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]

PORT = 9444
LABEL = "k8s.ovn.org/egress-assignable"


@pytest.fixture(scope="module")
def egress(sandbox: Sandbox, cluster: Cluster) -> Iterator[dict[str, Any]]:
    sandbox.set_plugins(["egressip"])
    server = external_echo(sandbox, PORT)
    subnet = ipaddress.ip_network(sandbox.cluster.underlay.subnet)
    nodes = cluster.nodes
    node_ips = {n.name: n.ip for n in sandbox.cluster.nodes}
    try:
        yield {"eip1": str(subnet.network_address + 100), "eip2": str(subnet.network_address + 101),
               "node_ips": node_ips, "nodes": nodes, "ext": sandbox.cluster.underlay.ext_netns}
    finally:
        server.terminate()
        server.wait(10)
        cluster.kubectl("delete", "egressips", "--all", check=False)
        for node in nodes:
            cluster.kubectl("label", "node", node, f"{LABEL}-", check=False)


@pytest.fixture(autouse=True)
def clean_slate(cluster: Cluster) -> Iterator[None]:
    """Every test starts without EgressIPs or egress nodes, also after a failed one."""
    yield
    cluster.kubectl("delete", "egressips", "--all", check=False)
    for node in cluster.nodes:
        cluster.kubectl("label", "node", node, f"{LABEL}-", check=False)


def reroute_nexthops(sandbox: Sandbox, pod_ip: str) -> list[str]:
    """The nexthops of the EgressIP reroute policy of ``pod_ip``."""
    out = sandbox.central.nbctl("--format=json", "--columns=nexthops", "find", "Logical_Router_Policy",
                                f'match="ip4.src == {pod_ip}"', "priority=100")
    rows = json.loads(out)["data"]
    if not rows:
        return []
    value = rows[0][0]
    return sorted(value[1] if isinstance(value, list) and value[0] == "set" else [value])


def label(cluster: Cluster, node: str, on: bool) -> None:
    cluster.kubectl("label", "node", node, f"{LABEL}=" if on else f"{LABEL}-", "--overwrite")


def create_eip(cluster: Cluster, name: str, ips: list[str], ns_labels: dict[str, str],
               pod_labels: dict[str, str] | None = None) -> None:
    spec: dict[str, Any] = {"egressIPs": ips, "namespaceSelector": {"matchLabels": ns_labels}}
    if pod_labels:
        spec["podSelector"] = {"matchLabels": pod_labels}
    cluster.apply({"apiVersion": "k8s.ovn.org/v1", "kind": "EgressIP", "metadata": {"name": name}, "spec": spec})


def status(cluster: Cluster, name: str) -> dict[str, str]:
    raw = cluster.kubectl("get", "egressip", name, "-o", "json", check=False)
    if not raw:
        return {}
    return {i["egressIP"]: i["node"] for i in (json.loads(raw).get("status") or {}).get("items") or []}


def source_seen(cluster: Cluster, ns: str, pod: str, target: str) -> str | None:
    """The source address the outside host saw for a UDP datagram from ``pod`` (None: no answer)."""
    return cluster.probe(ns, pod, "udp", target, PORT, "clientip", timeout=2)


def sources_of_fresh_flows(cluster: Cluster, ns: str, pod: str, protocol: str, target: str, *,
                           count: int = 16) -> Counter[str]:
    """How often the outside host saw each source address over ``count`` new connections (UDP: new
    sockets) from ``pod``, each from a new ephemeral source port, in one ``kubectl exec``; "-" counts
    the ones nothing answered."""
    script = (f"for i in $(seq {count}); do {ECHO_IN_IMAGE} send {protocol} {target} {PORT} clientip 2 "
              "|| echo -; done")
    return Counter(cluster.exec(ns, pod, "sh", "-c", script, check=False, timeout=3 * count + 60).split())


def wait_spread_over(cluster: Cluster, ns: str, pod: str, target: str, expected: set[str], *,
                     timeout: float = 30) -> Counter[str]:
    """Batches of new TCP connections from ``pod`` until one batch is answered from exactly the
    ``expected`` sources, every one of them seen (the ECMP spread); fails with the last batch."""
    deadline = time.monotonic() + timeout
    while True:
        seen = sources_of_fresh_flows(cluster, ns, pod, "tcp", target)
        if set(seen) == expected:
            return seen
        assert time.monotonic() < deadline, (
            f"{ns}/{pod}: new TCP connections were seen from outside as {dict(seen)}; expected every one of "
            f"{sorted(expected)} and nothing else")
        time.sleep(0.5)


def wait_source(cluster: Cluster, ns: str, pod: str, target: str, expected: str, *, timeout: float = 30) -> float:
    started = time.monotonic()
    poll_until(f"{ns}/{pod} seen from outside as {expected}",
               lambda: source_seen(cluster, ns, pod, target) == expected, timeout=timeout, interval=0.2)
    return time.monotonic() - started


def ext_neighbor_mac(egress: dict[str, Any], ip: str) -> str:
    out = subprocess.run([paths.system_bin("nsenter"), f"--net={netns_path(egress['ext'])}", "ip", "-j", "neigh",
                          "show", ip], capture_output=True, text=True, check=True).stdout
    entries = json.loads(out or "[]")
    return str(entries[0].get("lladdr", "")) if entries else ""


def node_mac(cluster: Cluster, node: str) -> str:
    obj = json.loads(cluster.kubectl("get", "node", node, "-o", "json"))
    gateway = json.loads(obj["metadata"]["annotations"]["k8s.ovn.org/l3-gateway-config"])["default"]
    return str(gateway["mac-address"])


def test_selected_pods_leave_with_the_egress_ip_others_with_their_node_ip(cluster: Cluster, egress: dict[str, Any]) -> None:
    n1, n2 = egress["nodes"]
    ext = f"{ipaddress.ip_network(cluster.sandbox.cluster.underlay.subnet).network_address + 254}"
    ns = cluster.namespace(labels={"eip": "on"})
    other = cluster.namespace(labels={"eip": "off"})
    pods = cluster.run_pods(ns, [{"name": "sel-1", "node": n1, "kind": "echo", "labels": {"app": "web"}},
                                 {"name": "sel-2", "node": n2, "kind": "echo", "labels": {"app": "web"}},
                                 {"name": "db", "node": n2, "kind": "echo", "labels": {"app": "db"}}])
    cluster.run_pods(other, [{"name": "free", "node": n2, "kind": "echo"}])
    label(cluster, n1, True)
    create_eip(cluster, "e2e-eip", [egress["eip1"]], {"eip": "on"}, {"app": "web"})
    poll_until("e2e-eip assigned", lambda: status(cluster, "e2e-eip") == {egress["eip1"]: n1})
    for pod in ("sel-1", "sel-2"):
        wait_source(cluster, ns, pod, ext, egress["eip1"])
    assert source_seen(cluster, ns, "db", ext) == egress["node_ips"][n2], "an unselected pod keeps its node IP"
    assert source_seen(cluster, other, "free", ext) == egress["node_ips"][n2]
    # East-west traffic is untouched: the peer sees the pod IP, on the same and on the other node.
    sel_1_ip, sel_2_ip = pods["sel-1"]["status"]["podIP"], pods["sel-2"]["status"]["podIP"]
    assert cluster.probe(ns, "sel-2", "udp", sel_1_ip, 8081, "clientip") == sel_2_ip
    assert cluster.probe(ns, "sel-2", "tcp", pods["db"]["status"]["podIP"], 8080, "clientip") == sel_2_ip
    # TCP too, and the reply comes back through the egress node.
    assert cluster.probe(ns, "sel-2", "tcp", ext, PORT, "clientip") == egress["eip1"]
    # The outside host reaches the egress IP through the egress node (its ARP was answered there).
    assert ext_neighbor_mac(egress, egress["eip1"]) == node_mac(cluster, n1)

    # Pods joining and leaving: a new selected pod is served, a relabelled one is not any more.
    cluster.run_pods(ns, [{"name": "late", "node": n2, "kind": "echo", "labels": {"app": "web"}}])
    wait_source(cluster, ns, "late", ext, egress["eip1"])
    cluster.kubectl("-n", ns, "label", "pod", "sel-2", "app=other", "--overwrite")
    wait_source(cluster, ns, "sel-2", ext, egress["node_ips"][n2])
    assert source_seen(cluster, ns, "sel-1", ext) == egress["eip1"], "the others are undisturbed"
    # podSelector changed: now app=db instead of app=web.
    create_eip(cluster, "e2e-eip", [egress["eip1"]], {"eip": "on"}, {"app": "db"})
    wait_source(cluster, ns, "db", ext, egress["eip1"])
    wait_source(cluster, ns, "sel-1", ext, egress["node_ips"][n1])
    cluster.kubectl("delete", "egressip", "e2e-eip")
    wait_source(cluster, ns, "db", ext, egress["node_ips"][n2])
    cluster.kubectl("delete", "namespace", ns, other, "--wait=false")


def test_two_ips_two_nodes_failover_by_label_and_by_a_killed_agent(cluster: Cluster, sandbox: Sandbox,
                                                                     egress: dict[str, Any]) -> None:
    n1, n2 = egress["nodes"]
    ext = f"{ipaddress.ip_network(sandbox.cluster.underlay.subnet).network_address + 254}"
    ns = cluster.namespace(labels={"eip": "two"})
    cluster.run_pods(ns, [{"name": "p", "node": n2, "kind": "echo"}, {"name": "q", "node": n1, "kind": "echo"}])
    label(cluster, n1, True)
    label(cluster, n2, True)
    both = {egress["eip1"], egress["eip2"]}
    create_eip(cluster, "e2e-two", sorted(both), {"eip": "two"})
    poll_until("one IP on each node", lambda: set(status(cluster, "e2e-two").values()) == {n1, n2})
    # Both IPs used: one reroute policy per pod with both gateway routers as ECMP nexthops, each egress
    # node SNATs to the IP it holds. OVN's select() hashes each flow (OVS dp_hash, symmetric L4); on
    # the userspace datapath that hash leaves UDP ports out, so all UDP from one pod to one outside
    # address takes one nexthop, while each new TCP connection (new source port) is hashed on its own
    # (docs/plugins/egressip.md, "Several egress IPs"). So, like upstream's e2e (curl from each pod
    # until every egress IP has been seen), each pod opens fresh TCP connections and both IPs must
    # answer: 16 connections all on one nexthop by chance has a probability of 2 * 2^-16.
    for pod in ("p", "q"):
        pod_ip = cluster.pod_ip(ns, pod)
        poll_until(f"{pod}'s reroute over both egress nodes", lambda ip=pod_ip: len(reroute_nexthops(sandbox, ip)) == 2)
        wait_spread_over(cluster, ns, pod, ext, both)
    # UDP is rerouted and SNATed the same way (which of the two IPs it gets is the hash's choice).
    udp = sources_of_fresh_flows(cluster, ns, "p", "udp", ext, count=4)
    assert sum(udp.values()) == 4 and set(udp) <= both, f"UDP datagrams seen from outside as {dict(udp)}"

    # Failover by label: n1 loses its label, its IP moves to n2 (the only egress node left).
    held_by_n1 = next(ip for ip, node in status(cluster, "e2e-two").items() if node == n1)
    label(cluster, n1, False)
    poll_until("n1's IP unassigned (one IP per node and object)", lambda: n1 not in status(cluster, "e2e-two").values())
    create_eip(cluster, "e2e-one", [held_by_n1], {"eip": "two"})  # a single-IP object can take it over on n2
    cluster.kubectl("delete", "egressip", "e2e-two")
    poll_until("moved to n2", lambda: status(cluster, "e2e-one") == {held_by_n1: n2})
    wait_source(cluster, ns, "p", ext, held_by_n1)
    poll_until("the outside host's neighbour entry follows (gratuitous ARP)",
               lambda: ext_neighbor_mac(egress, held_by_n1) == node_mac(cluster, n2), timeout=30)

    # Failover by a dead agent: n2's agent is killed; n1 (labelled again) takes the IP over.
    label(cluster, n1, True)
    sandbox.kill(f"{n2}/ovnk-node")
    try:
        poll_until("the IP leaves the node whose agent died", lambda: status(cluster, "e2e-one") == {held_by_n1: n1},
                   timeout=30)
        wait_source(cluster, ns, "p", ext, held_by_n1)
    finally:
        sandbox.start_agent(n2)
    cluster.kubectl("delete", "egressip", "e2e-one")
    cluster.kubectl("delete", "namespace", ns, "--wait=false")


def test_conflicts_and_unhostable_ips_are_reported_and_change_nothing(cluster: Cluster, egress: dict[str, Any]) -> None:
    n1, _ = egress["nodes"]
    label(cluster, n1, True)
    create_eip(cluster, "e2e-first", [egress["eip1"]], {"eip": "conflict"})
    poll_until("first assigned", lambda: status(cluster, "e2e-first") == {egress["eip1"]: n1})
    create_eip(cluster, "e2e-second", [egress["eip1"]], {"eip": "conflict-too"})
    create_eip(cluster, "e2e-nowhere", ["10.123.0.1"], {"eip": "conflict"})

    def reasons(name: str) -> set[str]:
        out = cluster.kubectl("get", "events", "-n", "default", "--field-selector",
                              f"involvedObject.name={name}", "-o", "json")
        return {e["reason"] for e in json.loads(out)["items"]}

    poll_until("conflict event", lambda: "EgressIPConflict" in reasons("e2e-second"))
    poll_until("no node event", lambda: "NoMatchingNodeFound" in reasons("e2e-nowhere"))
    assert status(cluster, "e2e-second") == {} and status(cluster, "e2e-nowhere") == {}
    assert status(cluster, "e2e-first") == {egress["eip1"]: n1}
    out = subprocess.run([*cluster.sandbox_ovnk(), "egressip", "status"], capture_output=True, text=True, check=True)
    assert "e2e-nowhere  10.123.0.1       unassigned: egress IP 10.123.0.1 is not assigned: no node has a network" in out.stdout
    cluster.kubectl("delete", "egressip", "e2e-first", "e2e-second", "e2e-nowhere")


def test_plugin_off_removes_rows_and_flows_and_pods_leave_with_node_ips(cluster: Cluster, sandbox: Sandbox,
                                                                        egress: dict[str, Any]) -> None:
    n1, n2 = egress["nodes"]
    ext = f"{ipaddress.ip_network(sandbox.cluster.underlay.subnet).network_address + 254}"
    ns = cluster.namespace(labels={"eip": "off"})
    cluster.run_pods(ns, [{"name": "p", "node": n2, "kind": "echo"}])
    label(cluster, n1, True)
    create_eip(cluster, "e2e-off", [egress["eip1"]], {"eip": "off"})
    wait_source(cluster, ns, "p", ext, egress["eip1"])
    sandbox.set_plugins([])
    wait_source(cluster, ns, "p", ext, egress["node_ips"][n2], timeout=60)
    assert sandbox.central is not None
    for table in ("Logical_Router_Policy", "NAT", "Address_Set"):
        rows = sandbox.central.nbctl("--format=json", "--columns=external_ids", "list", table)
        assert '"EgressIP"' not in rows and '"EgressNoReroute"' not in rows and '"EgressNodeIPs"' not in rows
    for node in (n1, n2):
        flows = sandbox.cluster.node(node).ovs_ofctl("dump-flows", "breth0")
        assert f"arp_tpa={egress['eip1']}" not in flows
    cluster.kubectl("delete", "egressip", "e2e-off")
    cluster.kubectl("delete", "namespace", ns, "--wait=false")
