"""EgressService on the sandbox with real packets: the outside host sees the service's ingress IP.

There is no MetalLB here: the test plays the load-balancer controller. It
writes the Service's ``status.loadBalancer.ingress`` and announces the ingress
IP the way MetalLB's BGP mode would, with a /32 route in the outside host's
namespace via the node carrying the ``egress-service.k8s.ovn.org/<ns>-<svc>``
label (moved when that label moves). The outside host runs ovnk-echo, which
answers ``clientip`` with the source address it saw. The module switches the
plugin on in the session sandbox; its last test switches it off again and
checks that everything it made is gone.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from ovnk.core.kube.client import KubeClient
from ovnk.core.kube.resources import SERVICES
from ovnk_lab import paths
from ovnk_lab.hostnet import netns_path
from ovnk_lab.sandbox import Sandbox
from tests.e2e.conftest import Cluster
from tests.e2e.conftest import external_echo
from tests.e2e.conftest import external_send
from tests.e2e.conftest import poll_until

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]

PORT = 9446
HOST_SELECTOR = "e2e-egress-host"
EIP_LABEL = "k8s.ovn.org/egress-assignable"


def in_netns(netns: str, *argv: str, check: bool = True) -> str:
    return subprocess.run([paths.system_bin("nsenter"), f"--net={netns_path(netns)}", *argv],
                          capture_output=True, text=True, check=check).stdout


class LoadBalancerStandIn:
    """What MetalLB would do: the ingress IP in the Service's status, and a route to it via the host."""

    def __init__(self, sandbox: Sandbox, cluster: Cluster) -> None:
        self.sandbox = sandbox
        self.cluster = cluster
        self.client = KubeClient(kubeconfig=cluster.kubeconfig)
        self.ext = sandbox.cluster.underlay.ext_netns
        self.node_ips = {n.name: n.ip for n in sandbox.cluster.nodes}
        self.announced: set[str] = set()

    def set_ingress(self, ns: str, name: str, ip: str) -> None:
        self.client.patch(SERVICES, name, {"status": {"loadBalancer": {"ingress": [{"ip": ip}]}}}, namespace=ns,
                          subresource="status")

    def announce(self, ip: str, node: str) -> None:
        in_netns(self.ext, "ip", "route", "replace", f"{ip}/32", "via", self.node_ips[node])
        self.announced.add(ip)

    def withdraw_all(self) -> None:
        for ip in self.announced:
            in_netns(self.ext, "ip", "route", "del", f"{ip}/32", check=False)
        self.announced.clear()


@pytest.fixture(scope="module")
def lb(sandbox: Sandbox, cluster: Cluster) -> Iterator[LoadBalancerStandIn]:
    sandbox.set_plugins(["egressservice"])
    server = external_echo(sandbox, PORT)
    stand_in = LoadBalancerStandIn(sandbox, cluster)
    try:
        yield stand_in
    finally:
        server.terminate()
        server.wait(10)
        stand_in.withdraw_all()
        cluster.kubectl("delete", "egressservices", "--all-namespaces", "--all", check=False)
        cluster.kubectl("delete", "egressips", "--all", check=False)
        for node in cluster.nodes:
            cluster.kubectl("label", "node", node, f"{HOST_SELECTOR}-", f"{EIP_LABEL}-", check=False)


def egress_ip(sandbox: Sandbox, offset: int) -> str:
    return str(ipaddress.ip_network(sandbox.cluster.underlay.subnet).network_address + offset)


def outside(sandbox: Sandbox) -> str:
    return str(sandbox.cluster.underlay.ext_ip)


def load_balancer(cluster: Cluster, ns: str, name: str, selector: dict[str, str]) -> None:
    cluster.apply({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
                   "spec": {"type": "LoadBalancer", "selector": selector,
                            "ports": [{"name": "echo", "port": 8080, "targetPort": 8080, "protocol": "TCP"}]}})


def egress_service(cluster: Cluster, ns: str, name: str, spec: dict[str, Any]) -> None:
    cluster.apply({"apiVersion": "k8s.ovn.org/v1", "kind": "EgressService",
                   "metadata": {"name": name, "namespace": ns}, "spec": spec})


def host_of(cluster: Cluster, ns: str, name: str) -> str:
    raw = cluster.kubectl("-n", ns, "get", "egressservice", name, "-o", "json", check=False)
    return str(((json.loads(raw).get("status") or {}) if raw else {}).get("host") or "")


def labelled(cluster: Cluster, label: str) -> list[str]:
    out = cluster.kubectl("get", "nodes", "-l", label, "-o", "name")
    return sorted(line.split("/", 1)[1] for line in out.split())


def source_seen(cluster: Cluster, ns: str, pod: str, target: str) -> str | None:
    return cluster.probe(ns, pod, "udp", target, PORT, "clientip", timeout=2)


def wait_source(cluster: Cluster, ns: str, pod: str, target: str, expected: str, *, timeout: float = 30) -> float:
    started = time.monotonic()
    poll_until(f"{ns}/{pod} seen from outside as {expected}",
               lambda: source_seen(cluster, ns, pod, target) == expected, timeout=timeout, interval=0.2)
    return time.monotonic() - started


def test_endpoints_leave_with_the_ingress_ip_others_do_not_inbound_works_and_failover(
        cluster: Cluster, sandbox: Sandbox, lb: LoadBalancerStandIn) -> None:
    n1, n2 = cluster.nodes
    ext = outside(sandbox)
    ingress = egress_ip(sandbox, 200)
    ns = cluster.namespace()
    cluster.run_pods(ns, [{"name": "ep1", "node": n1, "kind": "echo", "labels": {"app": "web"}},
                          {"name": "ep2", "node": n2, "kind": "echo", "labels": {"app": "web"}},
                          {"name": "other", "node": n2, "kind": "echo", "labels": {"app": "other"}}])
    for node in (n1, n2):
        cluster.kubectl("label", "node", node, f"{HOST_SELECTOR}=yes", "--overwrite")
    load_balancer(cluster, ns, "web", {"app": "web"})
    egress_service(cluster, ns, "web", {"sourceIPBy": "LoadBalancerIP",
                                        "nodeSelector": {"matchLabels": {HOST_SELECTOR: "yes"}}})
    # No ingress IP yet: reported, nothing programmed; the IP arriving later makes it work.
    poll_until("NoIngressIP reported", lambda: "NoIngressIP" in cluster.kubectl(
        "-n", ns, "get", "events", "--field-selector", "involvedObject.name=web,involvedObject.kind=EgressService"))
    assert host_of(cluster, ns, "web") == ""
    lb.set_ingress(ns, "web", ingress)
    poll_until("a host", lambda: host_of(cluster, ns, "web") in (n1, n2))
    host = host_of(cluster, ns, "web")
    label = f"egress-service.k8s.ovn.org/{ns}-web"
    poll_until("the host carries the label", lambda: labelled(cluster, label) == [host])
    lb.announce(ingress, host)

    for pod in ("ep1", "ep2"):
        wait_source(cluster, ns, pod, ext, ingress)
    assert source_seen(cluster, ns, "other", ext) == lb.node_ips[n2], "a pod that is no endpoint keeps its node IP"
    assert cluster.probe(ns, "ep2", "tcp", ext, PORT, "clientip") == ingress, "TCP too, replies come back"
    # East-west is untouched, and the service still answers from outside through its ingress IP.
    assert cluster.probe(ns, "ep2", "udp", cluster.pod_ip(ns, "ep1"), 8081, "clientip") == cluster.pod_ip(ns, "ep2")
    poll_until("inbound to the ingress IP reaches an endpoint",
               lambda: external_send(sandbox, "tcp", ingress, 8080, "hostname").reply in ("ep1", "ep2"))

    # Failover: the host loses the selector's label; the other node takes over, the label follows.
    other_node = n2 if host == n1 else n1
    cluster.kubectl("label", "node", host, f"{HOST_SELECTOR}-")
    poll_until("moved", lambda: host_of(cluster, ns, "web") == other_node)
    poll_until("the label moved", lambda: labelled(cluster, label) == [other_node])
    lb.announce(ingress, other_node)
    for pod in ("ep1", "ep2"):
        wait_source(cluster, ns, pod, ext, ingress)
    # The components that own the feature restart (killed): the host stays, the path comes back.
    sandbox.restart_agent(other_node)
    sandbox.restart_controller(0)
    wait_source(cluster, ns, "ep1", ext, ingress)
    assert host_of(cluster, ns, "web") == other_node and labelled(cluster, label) == [other_node]
    # A new endpoint is served at once; one that stops being an endpoint is not any more.
    cluster.kubectl("-n", ns, "label", "pod", "other", "app=web", "--overwrite")
    wait_source(cluster, ns, "other", ext, ingress)
    cluster.kubectl("-n", ns, "label", "pod", "ep2", "app=gone", "--overwrite")
    wait_source(cluster, ns, "ep2", ext, lb.node_ips[n2])
    out = subprocess.run([*cluster.sandbox_ovnk(), "egressservice", "status"], capture_output=True, text=True,
                         check=True).stdout
    assert f"{ns}/web  {ingress}" in out and f"host {other_node}" in out, out
    cluster.kubectl("-n", ns, "delete", "egressservice", "web")
    poll_until("label removed with the object", lambda: labelled(cluster, label) == [])
    wait_source(cluster, ns, "ep1", ext, lb.node_ips[n1])
    cluster.kubectl("delete", "namespace", ns, "--wait=false")


def test_network_mode_rules_on_the_nodes_of_local_endpoints(cluster: Cluster, sandbox: Sandbox,
                                                             lb: LoadBalancerStandIn) -> None:
    n1, n2 = cluster.nodes
    ns = cluster.namespace()
    pods = cluster.run_pods(ns, [{"name": "db", "node": n1, "kind": "echo", "labels": {"app": "db"}}])
    db_ip = pods["db"]["status"]["podIP"]
    load_balancer(cluster, ns, "db", {"app": "db"})
    egress_service(cluster, ns, "db", {"sourceIPBy": "Network", "network": "1234"})
    poll_until("host ALL", lambda: host_of(cluster, ns, "db") == "ALL")

    def rules(node: str) -> list[tuple[int, str, str]]:
        raw = in_netns(sandbox.cluster.node(node).netns, "ip", "-j", "rule", "show")
        return [(r.get("priority"), r.get("src"), str(r.get("table"))) for r in json.loads(raw or "[]")]

    poll_until("rule on the endpoint's node", lambda: (5000, db_ip, "1234") in rules(n1))
    assert not any(r[0] == 5000 for r in rules(n2)), "no local endpoint, no rule"
    cluster.kubectl("-n", ns, "delete", "egressservice", "db")
    poll_until("rule removed with the object", lambda: (5000, db_ip, "1234") not in rules(n1))
    cluster.kubectl("delete", "namespace", ns, "--wait=false")


def test_with_egressip_the_service_wins_for_its_endpoints(cluster: Cluster, sandbox: Sandbox,
                                                          lb: LoadBalancerStandIn) -> None:
    n1, n2 = cluster.nodes
    ext = outside(sandbox)
    ingress, eip = egress_ip(sandbox, 201), egress_ip(sandbox, 102)
    sandbox.set_plugins(["egressip", "egressservice"])
    ns = cluster.namespace(labels={"es": "both"})
    cluster.run_pods(ns, [{"name": "ep", "node": n2, "kind": "echo", "labels": {"app": "web"}},
                          {"name": "plain", "node": n2, "kind": "echo"}])
    cluster.kubectl("label", "node", n1, f"{EIP_LABEL}=", f"{HOST_SELECTOR}=yes", "--overwrite")
    cluster.kubectl("label", "node", n2, f"{HOST_SELECTOR}-")
    cluster.apply({"apiVersion": "k8s.ovn.org/v1", "kind": "EgressIP", "metadata": {"name": "e2e-es-eip"},
                   "spec": {"egressIPs": [eip], "namespaceSelector": {"matchLabels": {"es": "both"}}}})
    load_balancer(cluster, ns, "web", {"app": "web"})
    lb.set_ingress(ns, "web", ingress)
    egress_service(cluster, ns, "web", {"sourceIPBy": "LoadBalancerIP",
                                        "nodeSelector": {"matchLabels": {HOST_SELECTOR: "yes"}}})
    poll_until("host n1", lambda: host_of(cluster, ns, "web") == n1)
    lb.announce(ingress, n1)
    wait_source(cluster, ns, "plain", ext, eip)
    wait_source(cluster, ns, "ep", ext, ingress)  # selected by both: 101 beats 100
    cluster.kubectl("-n", ns, "delete", "egressservice", "web")
    wait_source(cluster, ns, "ep", ext, eip)  # EgressIP takes it back
    cluster.kubectl("delete", "egressip", "e2e-es-eip")
    cluster.kubectl("delete", "namespace", ns, "--wait=false")


def test_plugin_off_removes_policies_set_nftables_rules_and_labels(cluster: Cluster, sandbox: Sandbox,
                                                                   lb: LoadBalancerStandIn) -> None:
    n1, n2 = cluster.nodes
    ext = outside(sandbox)
    ingress = egress_ip(sandbox, 202)
    sandbox.set_plugins(["egressservice"])
    ns = cluster.namespace()
    cluster.run_pods(ns, [{"name": "ep", "node": n2, "kind": "echo", "labels": {"app": "web"}}])
    cluster.kubectl("label", "node", n1, f"{HOST_SELECTOR}=yes", "--overwrite")
    cluster.kubectl("label", "node", n2, f"{HOST_SELECTOR}-")
    load_balancer(cluster, ns, "web", {"app": "web"})
    lb.set_ingress(ns, "web", ingress)
    egress_service(cluster, ns, "web", {"sourceIPBy": "LoadBalancerIP", "network": "1234",
                                        "nodeSelector": {"matchLabels": {HOST_SELECTOR: "yes"}}})
    poll_until("host n1", lambda: host_of(cluster, ns, "web") == n1)
    lb.announce(ingress, n1)
    wait_source(cluster, ns, "ep", ext, ingress)
    label = f"egress-service.k8s.ovn.org/{ns}-web"
    assert labelled(cluster, label) == [n1]
    n1_netns = sandbox.cluster.node(n1).netns
    assert "ovnk-egressservice" in in_netns(n1_netns, "nft", "list", "tables")

    sandbox.set_plugins([])
    wait_source(cluster, ns, "ep", ext, lb.node_ips[n2], timeout=60)
    assert sandbox.central is not None
    for table in ("Logical_Router_Policy", "Address_Set"):
        rows = sandbox.central.nbctl("--format=json", "--columns=external_ids", "list", table)
        for owner in ('"EgressService"', '"EgressNoReroute"', '"EgressNodeIPs"'):
            assert owner not in rows, f"{owner} rows remain in {table}"
    for node in (n1, n2):
        netns = sandbox.cluster.node(node).netns
        assert "ovnk-egressservice" not in in_netns(netns, "nft", "list", "tables")
        assert "lookup 1234" not in in_netns(netns, "ip", "rule", "show")
    poll_until("the host label is removed", lambda: labelled(cluster, label) == [])
    cluster.kubectl("delete", "namespace", ns, "--wait=false")
