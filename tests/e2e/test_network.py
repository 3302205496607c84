"""Pod networking end to end on a 2-node sandbox: real kubelets, containerd, runc, OVN and ovnk."""

from __future__ import annotations

import json
import signal
import time

import pytest

from ovnk_lab import paths
from ovnk_lab.kubenode import CONTAINERD_SOCK
from tests.e2e.conftest import ECHO_TCP
from tests.e2e.conftest import ECHO_UDP
from tests.e2e.conftest import Cluster
from tests.e2e.conftest import ContinuousProbe
from tests.e2e.conftest import external_echo
from tests.e2e.conftest import poll_until

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]


def test_pod_to_pod_same_node_and_across_nodes_icmp_tcp_udp(cluster: Cluster, ns: str) -> None:
    node1, node2 = cluster.nodes[0], cluster.nodes[1]
    pods = cluster.run_pods(ns, [
        {"name": "client", "node": node1},
        {"name": "local", "node": node1, "kind": "echo"},
        {"name": "remote", "node": node2, "kind": "echo"},
    ])
    for target in ("local", "remote"):
        ip = pods[target]["status"]["podIP"]
        assert cluster.ping(ns, "client", ip), f"ping {target}"
        assert cluster.probe(ns, "client", "tcp", ip, ECHO_TCP) == target, f"tcp {target}"
        assert cluster.probe(ns, "client", "udp", ip, ECHO_UDP) == target, f"udp {target}"
        assert cluster.probe(ns, "client", "tcp", ip, ECHO_TCP, "payload-123") == "payload-123"


def test_pod_to_nodes_and_to_the_outside_world_with_snat_to_the_node_ip(cluster: Cluster, ns: str) -> None:
    node1 = cluster.nodes[0]
    cluster.run_pods(ns, [{"name": "client", "node": node1}])
    node_ips = {n.name: n.ip for n in cluster.sandbox.cluster.nodes}
    for ip in node_ips.values():
        assert cluster.ping(ns, "client", ip), f"ping node {ip}"
    ext_ip = cluster.sandbox.cluster.underlay.ext_ip
    server = external_echo(cluster.sandbox, 9000)
    try:
        deadline = time.monotonic() + 10
        reply = None
        while reply is None and time.monotonic() < deadline:
            reply = cluster.probe(ns, "client", "tcp", ext_ip, 9000, "clientip")
        assert reply == node_ips[node1], "traffic to the outside leaves SNATed to the node IP"
        assert cluster.probe(ns, "client", "udp", ext_ip, 9000, "clientip") == node_ips[node1]
    finally:
        server.terminate()
        server.wait(5)


def test_deleted_pod_ip_is_reused_and_same_name_recreated_works(cluster: Cluster, ns: str) -> None:
    node1 = cluster.nodes[0]
    # Earlier modules delete their namespaces without waiting; their pods on node1 free addresses
    # of node1's subnet, below ours, while they go. Start once node1 has none of those pods left, so
    # the freed address is the lowest free one (the rest of a namespace's deletion does not matter).
    def quiet() -> bool:
        namespaces = json.loads(cluster.kubectl("get", "namespaces", "-o", "json"))["items"]
        terminating = {n["metadata"]["name"] for n in namespaces if n["status"].get("phase") == "Terminating"}
        pods = json.loads(cluster.kubectl("get", "pods", "-A", "-o", "json",
                                          f"--field-selector=spec.nodeName={node1}"))["items"]
        return not any(p["metadata"].get("deletionTimestamp") or p["metadata"]["namespace"] in terminating
                       for p in pods if not p["spec"].get("hostNetwork"))
    poll_until("earlier tests' pods on node1 gone", quiet, timeout=180, interval=1)
    pods = cluster.run_pods(ns, [{"name": "client", "node": node1}, {"name": "server", "node": node1, "kind": "echo"}])
    freed = pods["server"]["status"]["podIP"]
    cluster.kubectl("-n", ns, "delete", "pod", "server", "--wait=true")
    # The lowest free address goes to the next pod (ovn-kubernetes' contiguous allocation); another
    # test's pod may still free a lower one meanwhile, so allow a few pods before ours comes around.
    reused_by = None
    for i in range(6):
        pod = cluster.run_pods(ns, [{"name": f"other-{i}", "node": node1, "kind": "echo"}])[f"other-{i}"]
        if pod["status"]["podIP"] == freed:
            reused_by = f"other-{i}"
            break
    assert reused_by is not None, "the deleted pod's address is handed out again"
    assert cluster.probe(ns, "client", "tcp", freed, ECHO_TCP) == reused_by
    recreated = cluster.run_pods(ns, [{"name": "server", "node": node1, "kind": "echo"}])["server"]
    assert cluster.probe(ns, "client", "tcp", recreated["status"]["podIP"], ECHO_TCP) == "server"
    live = json.loads(cluster.kubectl("get", "pods", "-A", "-o", "json"))["items"]
    ips = [p["status"]["podIP"] for p in live if p["status"].get("podIP") and not p["spec"].get("hostNetwork")
           and p["status"].get("phase") == "Running"]
    assert len(ips) == len(set(ips)), "no duplicate addresses among live pods"


def test_container_restart_keeps_the_pod_network(cluster: Cluster, ns: str) -> None:
    node1, node2 = cluster.nodes[0], cluster.nodes[1]
    pods = cluster.run_pods(ns, [{"name": "client", "node": node1}, {"name": "server", "node": node2, "kind": "echo"}])
    ip = pods["server"]["status"]["podIP"]
    before = pods["server"]["status"]["containerStatuses"][0]["restartCount"]
    cluster.exec(ns, "server", "kill", "1", check=False)
    deadline = time.monotonic() + 60
    while True:
        status = cluster.pod(ns, "server")["status"]
        restarted = status["containerStatuses"][0]["restartCount"] > before and status["containerStatuses"][0]["ready"]
        if restarted:
            break
        assert time.monotonic() < deadline, "container did not restart"
        time.sleep(0.5)
    assert cluster.pod_ip(ns, "server") == ip
    assert cluster.probe(ns, "client", "tcp", ip, ECHO_TCP) == "server"


@pytest.mark.parametrize("component", ["node-agent", "controller", "kubelet", "containerd"])
def test_restarts_never_break_existing_pods_and_new_pods_still_come_up(cluster: Cluster, ns: str, component: str) -> None:
    node1, node2 = cluster.nodes[0], cluster.nodes[1]
    # The probe streams through `kubectl exec`, which node2's kubelet and containerd serve; the
    # restarted components are node1's, where the server runs.
    pods = cluster.run_pods(ns, [{"name": "client", "node": node2}, {"name": "server", "node": node1, "kind": "echo"}])
    probe = ContinuousProbe(cluster, ns, "client", pods["server"]["status"]["podIP"])
    try:
        probe.wait_for(5)
        box = cluster.sandbox
        restarted = [time.strftime("%H:%M:%S")]
        if component == "node-agent":
            box.restart_agent(node1)
            box.restart_agent(node2)
        elif component == "controller":
            box.restart_controller(0)
        elif component == "kubelet":
            box.restart_kubelet(node1)
        else:
            box.restart_containerd(node1)
        restarted.append(time.strftime("%H:%M:%S"))
        # Keep probing well past the restart.
        probe.wait_for(len(probe.results) + 25, timeout=60)
    finally:
        ok, failed = probe.stop()
    assert ok > 25 and failed == 0, (
        f"{failed} failed probes during the {component} restart ({restarted[0]}-{restarted[-1]}): {probe.failures()}")
    fresh = cluster.run_pods(ns, [{"name": "after", "node": node1, "kind": "echo"}], timeout=180)["after"]
    assert cluster.probe(ns, "client", "tcp", fresh["status"]["podIP"], ECHO_TCP) == "after"


def pod_ports(cluster: Cluster, node: str, iface_id: str) -> list[str]:
    """Names of the OVS interfaces on ``node`` carrying ``iface_id``."""
    out = cluster.sandbox.cluster.node(node).ovs_vsctl("--bare", "--columns=name", "find", "Interface",
                                                       f"external_ids:iface-id={iface_id}")
    return sorted(out.split())


def test_sandbox_recreated_after_containerd_lost_the_old_one_takes_over_its_port(cluster: Cluster, ns: str) -> None:
    """containerd restarted without the record of a pod's running sandbox (its metadata gone): nothing
    will ever DEL that sandbox, and the kubelet re-creates it under a new container id, whose ADD finds
    the old port of the same pod on br-int. The agent evicts it, with its veth, and wires the pod
    (issue 24 D4; before the fix that ADD failed with CNI error 5 on every retry)."""
    node1, node2 = cluster.nodes[0], cluster.nodes[1]
    box = cluster.sandbox
    target = box.cluster.node(node1)
    peer_ip = cluster.run_pods(ns, [{"name": "peer", "node": node2, "kind": "echo"}])["peer"]["status"]["podIP"]
    cluster.run_pods(ns, [{"name": "phoenix", "node": node1}])
    iface_id = f"{ns}_phoenix"
    (first,) = pod_ports(cluster, node1, iface_id)
    pod_filter = f'labels."io.kubernetes.pod.namespace"=={ns},labels."io.kubernetes.pod.name"==phoenix'
    (sandbox_id,) = target.ctr("containers", "ls", "-q", pod_filter + ',labels."io.cri-containerd.kind"==sandbox').split()
    assert sandbox_id.startswith(first)  # the port is named after the sandbox
    # containerd loses every record of the pod (its app container too: a kubelet meeting a container
    # of an unknown sandbox refuses to start). The kubelet stays away meanwhile: it would stop the
    # sandbox (and DEL it) once its task is gone.
    box.kill(f"{node1}/kubelet", sig=signal.SIGTERM)
    try:
        ctr = [paths.system_bin("ctr"), "-a", CONTAINERD_SOCK, "-n", "k8s.io"]
        records = target.ctr("containers", "ls", "-q", pod_filter).split()
        for record in sorted(records, key=lambda r: r == sandbox_id):  # the sandbox last
            target.exec([*ctr, "tasks", "kill", "--signal", "SIGKILL", record], check=False)

            def stopped(record: str = record) -> bool:
                line = next((x for x in target.ctr("tasks", "ls").splitlines() if x.startswith(record)), "")
                return "RUNNING" not in line

            poll_until(f"task {record[:12]} stopped", stopped, timeout=30)
            # containerd's CRI plugin may have deleted the exited task itself already.
            target.exec([*ctr, "tasks", "delete", record], check=False)
            target.ctr("containers", "delete", record)
        box.kill(f"{node1}/containerd", sig=signal.SIGKILL)
        target.start_containerd()
        poll_until(f"containerd of {node1}", target.containerd_ready, timeout=60)
    finally:
        assert box.cluster.control_plane is not None
        target.start_kubelet(box.cluster.control_plane)
    # The kubelet's new sandbox: its ADD replaces the old port.
    poll_until("a new sandbox's port replacing the old one",
               lambda: (ports := pod_ports(cluster, node1, iface_id)) != [] and first not in ports, timeout=180)
    cluster.kubectl("-n", ns, "wait", "--for=condition=Ready", "pod/phoenix", "--timeout=120s", timeout=150)
    ports = pod_ports(cluster, node1, iface_id)
    assert len(ports) == 1 and ports[0] != first, ports
    assert f"removed stale OVS port {first}" in (target.log_dir / "ovnk-node.log").read_text()
    assert first not in target.exec(["ip", "-o", "link", "show"]).stdout  # its veth went with it
    assert cluster.ping(ns, "phoenix", peer_ip)


def lsps_holding(cluster: Cluster, ip: str) -> list[str]:
    """Names of the NB logical switch ports whose addresses carry ``ip``."""
    rows = json.loads(cluster.sandbox.central.nbctl("--format=json", "--columns=name,addresses", "list",
                                                    "Logical_Switch_Port"))
    holders = []
    for name, addresses in rows["data"]:
        values = addresses[1] if isinstance(addresses, list) and addresses[0] == "set" else [addresses]
        if any(ip in str(value).split() for value in values):
            holders.append(name)
    return holders


def test_a_hand_written_annotation_never_takes_a_pods_ip_across_a_controller_restart(cluster: Cluster, ns: str) -> None:
    """Issue 24 D1 on the sandbox: a pod whose ``pod-networks`` annotation claims another pod's IP and MAC
    is refused, and a kill -9 of the controller does not hand it the victim's addresses on restore."""
    node1, node2 = cluster.nodes[0], cluster.nodes[1]
    pods = cluster.run_pods(ns, [{"name": "dup-1", "node": node1, "kind": "echo"}, {"name": "peer", "node": node2}])
    victim_ip = pods["dup-1"]["status"]["podIP"]
    forged = pods["dup-1"]["metadata"]["annotations"]["k8s.ovn.org/pod-networks"]
    # Sorted before dup-1: restore used to walk pods in list order and let the forger win.
    cluster.apply({"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": "bad-otherpod", "namespace": ns,
                                "annotations": {"k8s.ovn.org/pod-networks": forged}},
                   "spec": {"nodeName": node1, "terminationGracePeriodSeconds": 1,
                            "containers": [{"name": "client", "image": "busybox", "imagePullPolicy": "Never",
                                            "command": ["sleep", "100000"]}]}})

    def refused() -> bool:
        out = cluster.kubectl("get", "events", "-n", ns, "--field-selector", "involvedObject.name=bad-otherpod",
                              "-o", "json")
        return any(e["reason"] == "ErrorAllocatingIP" for e in json.loads(out)["items"])

    poll_until("bad-otherpod refused with an ErrorAllocatingIP event", refused, timeout=60)
    assert lsps_holding(cluster, victim_ip) == [f"{ns}_dup-1"]

    cluster.sandbox.restart_controller(0)
    # A pod created after the restart is wired: the controller has restored and is serving again.
    cluster.run_pods(ns, [{"name": "after", "node": node1}], timeout=180)
    assert lsps_holding(cluster, victim_ip) == [f"{ns}_dup-1"], "the victim keeps its IP, nobody else holds it"
    assert cluster.pod(ns, "bad-otherpod")["status"].get("podIP") != victim_ip
    for _ in range(3):  # cross-node traffic to the victim still reaches the victim
        assert cluster.probe(ns, "peer", "tcp", victim_ip, ECHO_TCP) == "dup-1"
