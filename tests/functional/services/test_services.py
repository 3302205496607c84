"""Issue acceptance (services half): Services and EndpointSlices through the real API server into
Load_Balancer rows of a real OVN NB, checked row by row and with ovn-trace."""

from __future__ import annotations

import ipaddress
import json
import sys
import time
import uuid
from typing import Any

import pytest

from ovnk.core.kube.resources import EVENTS
from ovnk.core.kube.resources import NODES
from ovnk.core.kube.resources import SERVICES
from tests.functional.services.conftest import CONTROLLER
from tests.functional.services.conftest import attached
from tests.functional.services.conftest import create_service
from tests.functional.services.conftest import create_slice
from tests.functional.services.conftest import endpoint
from tests.functional.services.conftest import eventually
from tests.functional.services.conftest import load_balancers
from tests.functional.services.conftest import replace_slice
from tests.functional.services.conftest import service_events
from tests.functional.services.conftest import set_of
from tests.functional.topology.conftest import ClusterEnv
from tests.functional.topology.conftest import nb_value
from tests.functional.topology.conftest import node_ip

HAIRPIN = "169.254.0.5"
pytestmark = [pytest.mark.kube, pytest.mark.ovn]


def new_namespace(env: ClusterEnv) -> str:
    """A namespace of its own per test (a deleted one lingers while kube-controller-manager empties it)."""
    name = f"t-svc-{uuid.uuid4().hex[:6]}"
    env.create_namespace(name)
    return name


def two_nodes(env: ClusterEnv) -> str:
    env.create_node("node-a", 0)
    env.create_node("node-b", 1)
    return new_namespace(env)


def wait_nodes_built(env: ClusterEnv, *nodes: str) -> None:
    def built() -> bool:
        state = env.process.ctx.topology  # type: ignore[union-attr]
        return all((facts := state.node(n)) is not None and facts.gateway is not None for n in nodes)
    eventually(built, what=f"topology of {', '.join(nodes)}")


# A third-party-style plugin wrapping ``ovnk_nb_commit`` (as a tracing plugin would): it sees every
# transaction's reason and outcome from the first reconcile on.
RECORDER_PLUGIN = """
from ovnk import hookimpl

COMMITS = []

@hookimpl(wrapper=True)
def ovnk_nb_commit(txn):
    sent = txn.needs_commit()  # False: core will not even send it to the server
    outcome = yield
    COMMITS.append((txn.reason, outcome, sent))
    return outcome
"""


class Commits:
    """What the recorder plugin saw (the module is imported by the controller's plugin manager)."""

    @staticmethod
    def all() -> list[tuple[str, str, bool]]:
        return list(getattr(sys.modules.get("svc_commit_recorder"), "COMMITS", []))

    @staticmethod
    def clear() -> None:
        module = sys.modules.get("svc_commit_recorder")
        if module is not None:
            module.COMMITS.clear()

    def written(self, ns: str) -> list[str]:
        """Reasons of the transactions that wrote something for services of ``ns``."""
        return [reason for reason, outcome, _ in self.all() if f" {ns}/" in reason and outcome == "committed"]

    def sent(self, ns: str) -> list[str]:
        """Reasons of the transactions for services of ``ns`` that went to the server at all."""
        return [reason for reason, _, sent in self.all() if f" {ns}/" in reason and sent]


@pytest.fixture
def commits(fake_dists: Any) -> Commits:
    """Every NB transaction of controllers started with ``plugins.enabled=recorder``."""
    fake_dists.add("ovnk-svc-recorder", plugins={"recorder": "svc_commit_recorder"},
                   modules={"svc_commit_recorder": RECORDER_PLUGIN})
    return Commits()


def cluster_ip(service: dict[str, Any]) -> str:
    return str(service["spec"]["clusterIP"])


def node_port(service: dict[str, Any], index: int = 0) -> int:
    return int(service["spec"]["ports"][index]["nodePort"])


def lb_name(ns: str, service: str, protocol: str, scope: str) -> str:
    return f"Service_{ns}/{service}_{protocol}_{scope}"


def json_rows(listing: str) -> list[dict[str, Any]]:
    """Rows of an ``ovn-*ctl --format=json list`` as {column: value}."""
    table = json.loads(listing)
    return [dict(zip(table["headings"], row, strict=True)) for row in table["data"]]


def template_vars(env: ClusterEnv) -> dict[str, dict[str, str]]:
    """Chassis_Template_Var rows: chassis -> variables."""
    return {nb_value(r["chassis"]): nb_value(r["variables"]) for r in env.nb_rows("Chassis_Template_Var")}


def wait_vars(env: ClusterEnv, node: str, variables: dict[str, str] | None) -> None:
    """Until ``node``'s chassis has exactly ``variables`` (``None``: no row)."""
    chassis = env.chassis[node]
    eventually(lambda: template_vars(env).get(chassis) == variables, what=f"{node}'s template vars {variables}")


def set_node_addresses(env: ClusterEnv, node: str, addresses: list[str], *, primary: bool = True) -> None:
    """Give ``node`` these gateway addresses (``a.b.c.d/len``), the first also as its primary one."""
    current = env.client.get(NODES, node)
    assert current is not None
    gateway = json.loads(current["metadata"]["annotations"]["k8s.ovn.org/l3-gateway-config"])
    gateway["default"]["ip-addresses"] = addresses
    annotations = {"k8s.ovn.org/l3-gateway-config": json.dumps(gateway)}
    if primary:
        annotations["k8s.ovn.org/node-primary-ifaddr"] = json.dumps({"ipv4": addresses[0]})
    env.client.patch(NODES, node, {"metadata": {"annotations": annotations}})


def wait_vips(env: ClusterEnv, name: str, vips: dict[str, str], timeout: float = 60) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        row = load_balancers(env).get(name)
        return row if row is not None and row["vips"] == vips else None
    try:
        return eventually(check, timeout=timeout, what=f"{name} vips {vips}")
    except AssertionError:
        raise AssertionError(f"{name}: want {vips}, have {load_balancers(env).get(name, {}).get('vips')}") from None


def test_hook_ovnk_controllers_load_balancer_rows_for_every_kind_of_service(env: ClusterEnv) -> None:
    env.start_controller()
    ns = two_nodes(env)
    multi = create_service(env, ns, "multi", ports=[
        {"name": "http", "port": 80, "protocol": "TCP", "targetPort": "web"},
        {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 5353},
        {"name": "assoc", "port": 7777, "protocol": "SCTP"},
    ])
    create_slice(env, ns, "multi-a", "multi", ports=[
        {"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "dns", "port": 5353, "protocol": "UDP"},
        {"name": "assoc", "port": 7777, "protocol": "SCTP"},
    ], endpoints=[endpoint("10.244.50.10", "node-a"), endpoint("10.244.50.11", "node-b"),
                  endpoint("10.244.50.12", "node-b", ready=False)])
    # The named target port "web" is 9090 on these pods, and a host-network endpoint on node-b's IP.
    create_slice(env, ns, "multi-b", "multi", ports=[{"name": "http", "port": 9090, "protocol": "TCP"}],
                 endpoints=[endpoint("10.244.50.20", "node-a")])
    create_slice(env, ns, "multi-c", "multi", ports=[{"name": "http", "port": 8080, "protocol": "TCP"}],
                 endpoints=[endpoint(node_ip(1), "node-b")])
    np = create_service(env, ns, "np", type="NodePort", ports=[{"port": 8000, "targetPort": 80}])
    create_slice(env, ns, "np-1", "np", ports=[{"port": 80}], endpoints=[endpoint("10.244.60.1", "node-a")])
    ext = create_service(env, ns, "ext", ports=[{"port": 443, "targetPort": 8443}], externalIPs=["192.0.2.10"])
    create_slice(env, ns, "ext-1", "ext", ports=[{"port": 8443}], endpoints=[endpoint("10.244.61.1", "node-b")])
    lb = create_service(env, ns, "lb", type="LoadBalancer", externalTrafficPolicy="Local",
                        ports=[{"port": 80, "targetPort": 80}])
    env.client.patch(SERVICES, "lb", {"status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.7"}]}}},
                     namespace=ns, subresource="status")
    create_slice(env, ns, "lb-1", "lb", ports=[{"port": 80}],
                 endpoints=[endpoint("10.244.62.1", "node-a"), endpoint("10.244.62.2", "node-b")])
    aff = create_service(env, ns, "aff", ports=[{"port": 80}], sessionAffinity="ClientIP",
                         sessionAffinityConfig={"clientIP": {"timeoutSeconds": 300}})
    aff_max = create_service(env, ns, "aff-max", ports=[{"port": 80}], sessionAffinity="ClientIP",
                             sessionAffinityConfig={"clientIP": {"timeoutSeconds": 86400}})
    aff_default = create_service(env, ns, "aff-default", ports=[{"port": 80}], sessionAffinity="ClientIP")
    empty = create_service(env, ns, "empty", ports=[{"port": 80}])
    term = create_service(env, ns, "term", ports=[{"port": 80}])
    create_slice(env, ns, "term-1", "term", ports=[{"port": 80}], endpoints=[
        endpoint("10.244.63.1", "node-a", ready=False, serving=True, terminating=True),
        endpoint("10.244.63.2", "node-a", ready=False, serving=False, terminating=True)])
    mixed = create_service(env, ns, "mixed", ports=[{"port": 80}])
    create_slice(env, ns, "mixed-1", "mixed", ports=[{"port": 80}], endpoints=[
        endpoint("10.244.64.1", "node-a"),
        endpoint("10.244.64.2", "node-b", ready=False, serving=True, terminating=True)])
    create_service(env, ns, "headless", ports=[{"port": 80}], clusterIP="None")
    create_slice(env, ns, "headless-1", "headless", ports=[{"port": 80}], endpoints=[endpoint("10.244.65.1")])
    create_service(env, ns, "extname", type="ExternalName", externalName="example.com", ports=[{"port": 80}])
    wait_nodes_built(env, "node-a", "node-b")
    env.wait_idle()

    np_vip = f"^NODEIP_IPv4_0:{node_port(np)}"
    lb_np = node_port(lb)
    multi_every = f"10.244.50.10:8080,10.244.50.11:8080,10.244.50.20:9090,{node_ip(1)}:8080"
    facts_b = env.process.ctx.topology.node("node-b")  # type: ignore[union-attr]
    assert facts_b is not None
    multi_from_b = ",".join(sorted([f"{facts_b.mgmt_ips[0]}:8080", *multi_every.split(",")[:3]],
                                   key=lambda b: ipaddress.ip_address(b.split(":")[0])))
    expected = {
        # The host-network endpoint (node-b's IP): the ClusterIP leaves the cluster LB; node-b's own
        # switch and gateway router reach that endpoint at its management port's IP.
        lb_name(ns, "multi", "TCP", "node_router+switch_node-a"): {f"{cluster_ip(multi)}:80": multi_every},
        lb_name(ns, "multi", "TCP", "node_router+switch_node-b"): {f"{cluster_ip(multi)}:80": multi_from_b},
        lb_name(ns, "multi", "UDP", "cluster"): {f"{cluster_ip(multi)}:53": "10.244.50.10:5353,10.244.50.11:5353"},
        lb_name(ns, "multi", "SCTP", "cluster"): {f"{cluster_ip(multi)}:7777": "10.244.50.10:7777,10.244.50.11:7777"},
        lb_name(ns, "np", "TCP", "cluster"): {f"{cluster_ip(np)}:8000": "10.244.60.1:80"},
        # A plain NodePort: one template LB per side, resolved on each chassis to its own node IP.
        lb_name(ns, "np", "TCP", "node_switch_template_IPv4"): {np_vip: "10.244.60.1:80"},
        lb_name(ns, "np", "TCP", "node_router_template_IPv4"): {np_vip: "10.244.60.1:80"},
        lb_name(ns, "ext", "TCP", "cluster"): {f"{cluster_ip(ext)}:443": "10.244.61.1:8443",
                                           "192.0.2.10:443": "10.244.61.1:8443"},
        # ETP=Local: external VIPs leave the cluster LB; the GR side holds only local endpoints
        # and skips SNAT, the switch side (traffic from pods) keeps every endpoint.
        lb_name(ns, "lb", "TCP", "cluster"): {f"{cluster_ip(lb)}:80": "10.244.62.1:80,10.244.62.2:80"},
        lb_name(ns, "lb", "TCP", "node_local_router_node-a"): {f"{node_ip(0)}:{lb_np}": "10.244.62.1:80",
                                                           "198.51.100.7:80": "10.244.62.1:80"},
        lb_name(ns, "lb", "TCP", "node_local_router_node-b"): {f"{node_ip(1)}:{lb_np}": "10.244.62.2:80",
                                                           "198.51.100.7:80": "10.244.62.2:80"},
        lb_name(ns, "lb", "TCP", "node_switch_node-a"): {f"{node_ip(0)}:{lb_np}": "10.244.62.1:80,10.244.62.2:80",
                                                     "198.51.100.7:80": "10.244.62.1:80,10.244.62.2:80"},
        lb_name(ns, "lb", "TCP", "node_switch_node-b"): {f"{node_ip(1)}:{lb_np}": "10.244.62.1:80,10.244.62.2:80",
                                                     "198.51.100.7:80": "10.244.62.1:80,10.244.62.2:80"},
        lb_name(ns, "aff", "TCP", "cluster"): {f"{cluster_ip(aff)}:80": ""},
        lb_name(ns, "aff-max", "TCP", "cluster"): {f"{cluster_ip(aff_max)}:80": ""},
        lb_name(ns, "aff-default", "TCP", "cluster"): {f"{cluster_ip(aff_default)}:80": ""},
        lb_name(ns, "empty", "TCP", "cluster"): {f"{cluster_ip(empty)}:80": ""},
        # No ready endpoint: the serving and terminating one; with a ready one: only that.
        lb_name(ns, "term", "TCP", "cluster"): {f"{cluster_ip(term)}:80": "10.244.63.1:80"},
        lb_name(ns, "mixed", "TCP", "cluster"): {f"{cluster_ip(mixed)}:80": "10.244.64.1:80"},
    }
    for name, vips in expected.items():
        wait_vips(env, name, vips)
    rows = {name: row for name, row in load_balancers(env).items() if name.startswith(f"Service_{ns}/")}
    assert set(rows) == set(expected), "headless and ExternalName services get nothing; no extra LB"

    for name, row in rows.items():
        ext_ids = row["external_ids"]
        owner = ext_ids["k8s.ovn.org/owner"]
        assert name.startswith(f"Service_{owner}_") and ext_ids["k8s.ovn.org/kind"] == "Service"
        protocol, scope = name[len(f"Service_{owner}_"):].split("_", 1)
        assert row["protocol"] == protocol.lower()
        assert ext_ids["k8s.ovn.org/owner-controller"] == CONTROLLER
        assert ext_ids["k8s.ovn.org/owner-type"] == "Service" and ext_ids["k8s.ovn.org/name"] == owner
        assert ext_ids["k8s.ovn.org/id"] == f"{CONTROLLER}:Service:{owner}:{protocol.lower()}:{scope}"
        options = row["options"]
        assert options["reject"] == "true" and options["hairpin_snat_ip"] == HAIRPIN, name
        assert options["neighbor_responder"] == "none"
        assert ("skip_snat" in options) == scope.startswith("node_local_router_"), name
        assert (options.get("template"), options.get("address-family")) == (
            ("true", "ipv4") if "_template_" in scope else (None, None)), name
    assert rows[lb_name(ns, "multi", "UDP", "cluster")]["protocol"] == "udp"
    assert rows[lb_name(ns, "multi", "SCTP", "cluster")]["protocol"] == "sctp"
    assert rows[lb_name(ns, "lb", "TCP", "node_local_router_node-a")]["options"]["skip_snat"] == "true"
    assert rows[lb_name(ns, "aff", "TCP", "cluster")]["options"]["affinity_timeout"] == "300"
    assert rows[lb_name(ns, "aff-default", "TCP", "cluster")]["options"]["affinity_timeout"] == "10800"
    assert "affinity_timeout" not in rows[lb_name(ns, "aff-max", "TCP", "cluster")]["options"]
    assert set_of(rows[lb_name(ns, "aff-max", "TCP", "cluster")]["selection_fields"]) == {"ip_src", "ip_dst"}
    assert rows[lb_name(ns, "empty", "TCP", "cluster")]["selection_fields"] == []

    # Attachments: cluster LBs through the group core attaches everywhere; per-node ones directly.
    assert attached(env, "Load_Balancer_Group", "clusterLBGroup", ns) == {
        n for n in expected if n.endswith("_cluster")}
    assert attached(env, "Load_Balancer_Group", "clusterSwitchLBGroup", ns) == {
        lb_name(ns, "np", "TCP", "node_switch_template_IPv4")}
    assert attached(env, "Load_Balancer_Group", "clusterRouterLBGroup", ns) == {
        lb_name(ns, "np", "TCP", "node_router_template_IPv4")}
    for index, node in enumerate(("node-a", "node-b")):
        assert attached(env, "Logical_Router", f"GR_{node}", ns) == {
            lb_name(ns, "lb", "TCP", f"node_local_router_{node}"), lb_name(ns, "multi", "TCP", f"node_router+switch_{node}")}
        assert attached(env, "Logical_Switch", node, ns) == {
            lb_name(ns, "lb", "TCP", f"node_switch_{node}"), lb_name(ns, "multi", "TCP", f"node_router+switch_{node}")}
        # Each node's chassis holds the address its template VIPs resolve to.
        assert template_vars(env)[env.chassis[node]] == {"NODEIP_IPv4_0": node_ip(index)}
    assert env.metric("ovnk_services_sync_total", {"result": "committed"}) >= 10
    assert env.metric("ovnk_services_sync_duration_seconds_count") >= 10

    # -- ovn-trace: a pod's ClusterIP connection is load-balanced ------------------------------------
    env.create_pod(ns, "client", "node-a")
    pod = eventually(lambda: next((p for p in env.pods(ns) if "k8s.ovn.org/pod-networks" in
                                   (p["metadata"].get("annotations") or {})), None), what="client pod annotated")
    env.wait_idle()
    env.central.wait_northd()
    network = json.loads(pod["metadata"]["annotations"]["k8s.ovn.org/pod-networks"])["default"]
    pod_ip = network["ip_addresses"][0].split("/")[0]
    gateway_mac = "0a:58:" + ":".join(f"{int(b):02x}" for b in network["gateway_ips"][0].split("."))
    trace = env.central.trace("node-a", (
        f'inport == "{ns}_client" && eth.src == {network["mac_address"]} && eth.dst == {gateway_mac} && '
        f"ip4.src == {pod_ip} && ip4.dst == {cluster_ip(multi)} && ip.ttl == 64 && "
        "tcp && tcp.src == 40000 && tcp.dst == 80"), "--ct", "new")
    assert (f"ct_lb_mark(backends=10.244.50.10:8080,10.244.50.11:8080,10.244.50.20:9090,{node_ip(1)}:8080"
            in trace), trace

    # -- ovn-trace: a NodePort connection from outside enters through GR_node-a -------------------------
    trace = env.central.trace("ext_node-a", (
        'inport == "breth0_node-a" && eth.src == 0a:00:00:00:00:fe && eth.dst == 0a:00:00:00:00:01 && '
        f"ip4.src == 172.30.0.200 && ip4.dst == {node_ip(0)} && ip.ttl == 64 && "
        f"tcp && tcp.src == 40000 && tcp.dst == {node_port(np)}"), "--ct", "new")
    assert 'ingress(dp="GR_node-a"' in trace, trace
    # Past the gateway router's un-SNAT stage ovn-trace goes on only with OVN < 23.06, where northd
    # let LB VIPs that are also NAT addresses skip it (priority 120 "next;"). Newer northd sends them
    # through "ct_snat;", after which ovn-trace stops on any gateway router (its ct_snat has "no
    # visible effect" there). So the DNAT flow that load-balances the NodePort is read directly.
    # The NodePort is a template: its flow names the chassis variable, which ovn-controller on
    # node-a's chassis expands from the row northd copied to the SB (ovn-trace, bound to no
    # chassis, cannot expand it, so the flow and the variable are read instead of traced).
    vip = f"ip4.dst == ^NODEIP_IPv4_0 && tcp && tcp.dst == {node_port(np)}"
    dnat = [line for line in env.central.sbctl("lflow-list", "GR_node-a").splitlines()
            if "lr_in_dnat" in line and vip in line and "ct.new" in line]
    assert any("ct_lb_mark(backends=10.244.60.1:80; force_snat)" in line for line in dnat), dnat or trace
    sb_vars = {nb_value(r["chassis"]): nb_value(r["variables"]) for r in json_rows(
        env.central.sbctl("--format=json", "list", "Chassis_Template_Var"))}
    assert sb_vars[env.chassis["node-a"]] == {"NODEIP_IPv4_0": node_ip(0)}, sb_vars


def test_changes_converge_in_one_transaction_each(env: ClusterEnv, commits: Commits) -> None:
    env.start_controller("plugins.enabled=recorder")
    ns = two_nodes(env)
    svc = create_service(env, ns, "web", type="NodePort", ports=[
        {"name": "http", "port": 80, "protocol": "TCP"}, {"name": "dns", "port": 53, "protocol": "UDP"}])
    create_slice(env, ns, "web-1", "web", ports=[{"name": "http", "port": 8080}, {"name": "dns", "port": 53,
                                                                                  "protocol": "UDP"}],
                 endpoints=[endpoint("10.244.70.1", "node-a"), endpoint("10.244.70.2", "node-b")])
    wait_nodes_built(env, "node-a", "node-b")
    cip = cluster_ip(svc)
    wait_vips(env, lb_name(ns, "web", "TCP", "cluster"), {f"{cip}:80": "10.244.70.1:8080,10.244.70.2:8080"})
    wait_vips(env, lb_name(ns, "web", "UDP", "node_switch_template_IPv4"),
              {f"^NODEIP_IPv4_0:{node_port(svc, 1)}": "10.244.70.1:53,10.244.70.2:53"})
    env.wait_idle()

    # An endpoint stops being ready: one transaction rewrites the LB rows.
    commits.clear()
    replace_slice(env, ns, "web-1", "web", ports=[{"name": "http", "port": 8080},
                                                  {"name": "dns", "port": 53, "protocol": "UDP"}],
                  endpoints=[endpoint("10.244.70.1", "node-a"), endpoint("10.244.70.2", "node-b", ready=False)])
    wait_vips(env, lb_name(ns, "web", "TCP", "cluster"), {f"{cip}:80": "10.244.70.1:8080"})
    wait_vips(env, lb_name(ns, "web", "UDP", "node_router_template_IPv4"),
              {f"^NODEIP_IPv4_0:{node_port(svc, 1)}": "10.244.70.1:53"})
    env.wait_idle()
    assert commits.written(ns) == [f"service {ns}/web"], "one transaction per service reconcile"

    # The UDP port goes and the service becomes a ClusterIP: UDP and per-node LBs are deleted together.
    current = env.client.get(SERVICES, "web", namespace=ns)
    assert current is not None
    current["spec"]["type"] = "ClusterIP"
    current["spec"]["ports"] = [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]
    env.client.replace(SERVICES, current, namespace=ns)
    eventually(lambda: {n for n in load_balancers(env) if "/web_" in n} == {lb_name(ns, "web", "TCP", "cluster")},
               what="only the TCP cluster LB left")
    assert attached(env, "Load_Balancer_Group", "clusterSwitchLBGroup", ns) == set()
    assert attached(env, "Load_Balancer_Group", "clusterRouterLBGroup", ns) == set()

    # To ExternalName: nothing left. Deleting another service removes its LBs too.
    create_service(env, ns, "other", ports=[{"port": 81}])
    eventually(lambda: lb_name(ns, "other", "TCP", "cluster") in load_balancers(env), what="other's LB")
    current = env.client.get(SERVICES, "web", namespace=ns)
    assert current is not None
    current["spec"] = {"type": "ExternalName", "externalName": "example.com", "ports": current["spec"]["ports"]}
    env.client.replace(SERVICES, current, namespace=ns)
    env.client.delete(SERVICES, "other", namespace=ns)
    eventually(lambda: not [n for n in load_balancers(env) if n.startswith(f"Service_{ns}/")], what="no LB left")
    assert attached(env, "Load_Balancer_Group", "clusterLBGroup", ns) == set()


def nodeport_on_node_a(env: ClusterEnv, *config: str) -> tuple[str, int]:
    """A controller started with ``config``, node-a, and a NodePort ``np`` backed by 10.244.80.1:80
    on it: (namespace, node port)."""
    env.start_controller(*config)
    env.create_node("node-a", 0)
    ns = new_namespace(env)
    svc = create_service(env, ns, "np", type="NodePort", ports=[{"port": 80}])
    create_slice(env, ns, "np-1", "np", ports=[{"port": 80}], endpoints=[endpoint("10.244.80.1", "node-a")])
    return ns, node_port(svc)


def test_node_changes_move_template_nodeport_vips_without_touching_the_service(
        env: ClusterEnv, commits: Commits) -> None:
    ns, port = nodeport_on_node_a(env, "plugins.enabled=recorder")
    switch_lb, router_lb = (lb_name(ns, "np", "TCP", f"node_{side}_template_IPv4") for side in ("switch", "router"))
    one_slot = {f"^NODEIP_IPv4_0:{port}": "10.244.80.1:80"}
    wait_vips(env, switch_lb, one_slot)
    wait_vips(env, router_lb, one_slot)
    wait_vars(env, "node-a", {"NODEIP_IPv4_0": node_ip(0)})
    env.wait_idle()
    before = {name: load_balancers(env)[name]["_uuid"] for name in (switch_lb, router_lb)}
    commits.clear()

    # A node joining gets its chassis variables; the service is neither reconciled nor rewritten.
    env.create_node("node-b", 1)
    wait_vars(env, "node-b", {"NODEIP_IPv4_0": node_ip(1)})
    wait_nodes_built(env, "node-b")
    env.wait_idle()
    assert [reason for reason, _, _ in commits.all() if reason == f"service {ns}/np"] == [], "not even reconciled"
    assert {name: load_balancers(env)[name]["_uuid"] for name in (switch_lb, router_lb)} == before
    assert load_balancers(env)[switch_lb]["vips"] == one_slot

    # Its IP changes: only its variable follows.
    set_node_addresses(env, "node-b", ["172.30.0.99/24"])
    wait_vars(env, "node-b", {"NODEIP_IPv4_0": "172.30.0.99"})
    assert load_balancers(env)[switch_lb]["vips"] == one_slot

    # A second address: every template gets a VIP for the second slot.
    set_node_addresses(env, "node-b", ["172.30.0.99/24", "172.30.1.99/24"], primary=False)
    two_slots = {**one_slot, f"^NODEIP_IPv4_1:{port}": "10.244.80.1:80"}
    wait_vars(env, "node-b", {"NODEIP_IPv4_0": "172.30.0.99", "NODEIP_IPv4_1": "172.30.1.99"})
    wait_vips(env, switch_lb, two_slots)
    wait_vips(env, router_lb, two_slots)

    # It goes away: so do its variables and the slot only it had.
    env.client.delete(NODES, "node-b")
    wait_vars(env, "node-b", None)
    wait_vips(env, switch_lb, one_slot)
    wait_vips(env, router_lb, one_slot)
    assert template_vars(env)[env.chassis["node-a"]] == {"NODEIP_IPv4_0": node_ip(0)}


def test_an_outside_endpoint_is_host_network_only_while_a_node_has_its_address(
        env: ClusterEnv, commits: Commits) -> None:
    """An endpoint outside the cluster subnets load-balances like a pod until a node has its address:
    then it is that node's host-network endpoint and the service's LBs become per node."""
    env.start_controller("plugins.enabled=recorder")
    env.create_node("node-a", 0)
    ns = new_namespace(env)
    svc = create_service(env, ns, "np", type="NodePort", ports=[{"port": 80}])
    create_slice(env, ns, "np-1", "np", ports=[{"port": 8080}], endpoints=[endpoint(node_ip(1), "node-b")])
    port, cip, backend = node_port(svc), cluster_ip(svc), f"{node_ip(1)}:8080"
    ours = lambda: {n for n in load_balancers(env) if n.startswith(f"Service_{ns}/")}  # noqa: E731
    wait_vips(env, lb_name(ns, "np", "TCP", "cluster"), {f"{cip}:80": backend})
    wait_vips(env, lb_name(ns, "np", "TCP", "node_switch_template_IPv4"), {f"^NODEIP_IPv4_0:{port}": backend})
    env.wait_idle()
    assert ours() == {lb_name(ns, "np", "TCP", scope) for scope in (
        "cluster", "node_switch_template_IPv4", "node_router_template_IPv4")}

    # A node with other addresses joins: the service is not even reconciled.
    commits.clear()
    env.create_node("node-c", 2)
    wait_nodes_built(env, "node-c")
    env.wait_idle()
    assert [reason for reason, _, _ in commits.all() if reason == f"service {ns}/np"] == []

    # The node whose address it is joins: per-node LBs, node-b's reaching it at its management port.
    env.create_node("node-b", 1)
    wait_nodes_built(env, "node-b")
    facts_b = env.process.ctx.topology.node("node-b")  # type: ignore[union-attr]
    assert facts_b is not None
    wait_vips(env, lb_name(ns, "np", "TCP", "node_router+switch_node-a"),
              {f"{cip}:80": backend, f"{node_ip(0)}:{port}": backend})
    wait_vips(env, lb_name(ns, "np", "TCP", "node_router+switch_node-c"),
              {f"{cip}:80": backend, f"{node_ip(2)}:{port}": backend})
    wait_vips(env, lb_name(ns, "np", "TCP", "node_router+switch_node-b"),
              {f"{cip}:80": f"{facts_b.mgmt_ips[0]}:8080", f"{node_ip(1)}:{port}": f"{facts_b.mgmt_ips[0]}:8080"})
    eventually(lambda: ours() == {lb_name(ns, "np", "TCP", f"node_router+switch_{node}")
                                  for node in ("node-a", "node-b", "node-c")}, what="only per-node LBs")

    # It leaves: the address is outside again, and the templates are back.
    env.client.delete(NODES, "node-b")
    eventually(lambda: ours() == {lb_name(ns, "np", "TCP", scope) for scope in (
        "cluster", "node_switch_template_IPv4", "node_router_template_IPv4")}, what="templates again")
    wait_vips(env, lb_name(ns, "np", "TCP", "cluster"), {f"{cip}:80": backend})


def test_a_foreign_template_var_row_of_a_nodes_chassis_is_left_alone_and_reported(env: ClusterEnv) -> None:
    """OVN allows one Chassis_Template_Var row per chassis: another owner's (ovn-kubernetes', a hand-made
    one) stays as it is, the node is built without ours, and a Warning event says so."""
    env.start_controller()
    chassis = env.chassis.setdefault("node-a", str(uuid.uuid4()))
    env.central.nbctl("create", "Chassis_Template_Var", f"chassis={chassis}", 'variables:NODEIP_IPv4_0="192.0.2.99"',
                      'external_ids:"k8s.ovn.org/owner-controller"=someone-else')
    env.create_node("node-a", 0)
    wait_nodes_built(env, "node-a")

    def conflict_events() -> list[dict[str, Any]]:
        items, _ = env.client.list(EVENTS, namespace="default")
        return [e for e in items if e.get("involvedObject", {}).get("name") == "node-a"
                and e.get("reason") == "ForeignChassisTemplateVar"]

    event = eventually(conflict_events, what="a Warning event on node-a")[0]
    assert event["type"] == "Warning" and chassis in event["message"] and "someone-else" in event["message"]
    env.wait_idle()
    assert template_vars(env)[chassis] == {"NODEIP_IPv4_0": "192.0.2.99"}, "the foreign row is untouched"
    assert len([r for r in env.nb_rows("Chassis_Template_Var") if nb_value(r["chassis"]) == chassis]) == 1
    assert "GR_node-a" in {nb_value(r["name"]) for r in env.nb_rows("Logical_Router")}, "the node is built"

    # Once that row is gone, the node's next change writes ours.
    _, foreign = nb_value(next(r for r in env.nb_rows("Chassis_Template_Var") if nb_value(r["chassis"]) == chassis)["_uuid"])
    env.central.nbctl("destroy", "Chassis_Template_Var", foreign)
    set_node_addresses(env, "node-a", ["172.30.0.98/24"])
    wait_vars(env, "node-a", {"NODEIP_IPv4_0": "172.30.0.98"})


def test_without_templates_node_changes_move_per_node_nodeport_vips(env: ClusterEnv) -> None:
    ns, port = nodeport_on_node_a(env, "gateway.nodeport-templates=false")
    wait_vips(env, lb_name(ns, "np", "TCP", "node_router+switch_node-a"), {f"{node_ip(0)}:{port}": "10.244.80.1:80"})
    # A node joining later gets its per-node LB as soon as its topology exists.
    env.create_node("node-b", 1)
    wait_vips(env, lb_name(ns, "np", "TCP", "node_router+switch_node-b"), {f"{node_ip(1)}:{port}": "10.244.80.1:80"})
    assert attached(env, "Logical_Router", "GR_node-b", ns) == {lb_name(ns, "np", "TCP", "node_router+switch_node-b")}
    # Its IP changes: the VIP follows.
    set_node_addresses(env, "node-b", ["172.30.0.99/24"])
    wait_vips(env, lb_name(ns, "np", "TCP", "node_router+switch_node-b"), {f"172.30.0.99:{port}": "10.244.80.1:80"})
    # It goes away: so do its LBs.
    env.client.delete(NODES, "node-b")
    eventually(lambda: lb_name(ns, "np", "TCP", "node_router+switch_node-b") not in load_balancers(env),
               what="node-b's LB deleted")
    assert lb_name(ns, "np", "TCP", "node_router+switch_node-a") in load_balancers(env)
    assert not [n for n in load_balancers(env) if n.startswith(f"Service_{ns}/") and "_template_" in n]
    assert env.chassis["node-a"] not in template_vars(env), "no template, no chassis variables"


def test_internal_traffic_policy_local_uses_per_node_switch_lbs(env: ClusterEnv) -> None:
    """``internalTrafficPolicy`` exists from Kubernetes 1.21; the 1.20 test server drops the field, so the
    test puts the Service as a 1.21+ server would return it into the controller's cache and queues it."""
    env.start_controller()
    ns = two_nodes(env)
    svc = create_service(env, ns, "itp", ports=[{"port": 80}])
    create_slice(env, ns, "itp-1", "itp", ports=[{"port": 80}],
                 endpoints=[endpoint("10.244.90.1", "node-a"), endpoint("10.244.90.2", "node-a"),
                            endpoint("10.244.90.3", "node-b", ready=False, serving=True, terminating=True)])
    wait_nodes_built(env, "node-a", "node-b")
    wait_vips(env, lb_name(ns, "itp", "TCP", "cluster"), {f"{cluster_ip(svc)}:80": "10.244.90.1:80,10.244.90.2:80"})
    env.wait_idle()
    process = env.process
    assert process is not None and process.ctx is not None and process.runner is not None
    store = process.ctx.cache(SERVICES)
    cached = store.get(f"{ns}/itp")
    assert "internalTrafficPolicy" not in cached["spec"], "the 1.20 server dropped the field"
    store.put(f"{ns}/itp", {**cached, "spec": {**cached["spec"], "internalTrafficPolicy": "Local"}})
    process.runner.runner("services").queue.add(f"{ns}/itp")

    vip = f"{cluster_ip(svc)}:80"
    # Per node, only local endpoints (node-b: its serving+terminating one, as it has no ready one).
    wait_vips(env, lb_name(ns, "itp", "TCP", "node_router+switch_node-a"), {vip: "10.244.90.1:80,10.244.90.2:80"})
    wait_vips(env, lb_name(ns, "itp", "TCP", "node_router+switch_node-b"), {vip: "10.244.90.3:80"})
    assert lb_name(ns, "itp", "TCP", "cluster") not in load_balancers(env), "the ClusterIP left the cluster LB"
    assert attached(env, "Logical_Switch", "node-b", ns) == {lb_name(ns, "itp", "TCP", "node_router+switch_node-b")}


@pytest.mark.parametrize("label", ["service.kubernetes.io/service-proxy-name", "service.kubernetes.io/headless"])
def test_a_service_labelled_for_another_proxy_is_left_alone(env: ClusterEnv, label: str) -> None:
    """kube-proxy's contract: such a service belongs to another proxy (or to none); ovnk's LBs come and go with the label."""
    env.start_controller()
    ns = new_namespace(env)
    svc = create_service(env, ns, "other", ports=[{"port": 80, "protocol": "UDP"}])
    create_slice(env, ns, "other-1", "other", ports=[{"port": 80, "protocol": "UDP"}],
                 endpoints=[endpoint("10.244.96.1")])
    name, vips = lb_name(ns, "other", "UDP", "cluster"), {f"{cluster_ip(svc)}:80": "10.244.96.1:80"}
    wait_vips(env, name, vips)
    env.client.patch(SERVICES, "other", {"metadata": {"labels": {label: "someone-else"}}}, namespace=ns)
    eventually(lambda: name not in load_balancers(env), what=f"{name} removed once the service is labelled {label}")
    env.client.patch(SERVICES, "other", {"metadata": {"labels": {label: None}}}, namespace=ns)
    wait_vips(env, name, vips)


def test_invalid_input_warns_on_the_service_and_others_keep_flowing(env: ClusterEnv) -> None:
    env.start_controller()
    ns = new_namespace(env)
    # The 1.20 API accepts an IPv6 external IP on this IPv4-only cluster; OVN cannot serve it here.
    bad = create_service(env, ns, "bad", ports=[{"port": 80}], externalIPs=["fd00::10", "192.0.2.20"])
    create_slice(env, ns, "bad-1", "bad", ports=[{"port": 80}], endpoints=[endpoint("10.244.95.1")])
    good = create_service(env, ns, "good", ports=[{"port": 80}])
    create_slice(env, ns, "good-1", "good", ports=[{"port": 80}], endpoints=[endpoint("10.244.95.2")])
    wait_vips(env, lb_name(ns, "good", "TCP", "cluster"), {f"{cluster_ip(good)}:80": "10.244.95.2:80"})
    # What can be served is, the rest is reported once.
    wait_vips(env, lb_name(ns, "bad", "TCP", "cluster"), {f"{cluster_ip(bad)}:80": "10.244.95.1:80",
                                                      "192.0.2.20:80": "10.244.95.1:80"})
    events = eventually(lambda: service_events(env, ns, "bad"), what="a Warning event on the service")
    assert events[0]["type"] == "Warning" and events[0]["reason"] == "UnsupportedIPFamily"
    assert "fd00::10" in events[0]["message"]
    assert not service_events(env, ns, "good")
    # Later changes of the bad service are still applied.
    replace_slice(env, ns, "bad-1", "bad", ports=[{"port": 80}], endpoints=[endpoint("10.244.95.3")])
    wait_vips(env, lb_name(ns, "bad", "TCP", "cluster"), {f"{cluster_ip(bad)}:80": "10.244.95.3:80",
                                                      "192.0.2.20:80": "10.244.95.3:80"})
    env.wait_idle()
    time.sleep(0.5)
    assert sum(int(e.get("count", 1)) for e in service_events(env, ns, "bad")) == 1, "not repeated per reconcile"


def test_hook_ovnk_repair_removes_stale_load_balancers_and_an_unchanged_restart_writes_nothing(
        env: ClusterEnv, commits: Commits, caplog: pytest.LogCaptureFixture) -> None:
    env.start_controller("plugins.enabled=recorder")
    ns = two_nodes(env)
    keep = create_service(env, ns, "keep", type="NodePort", ports=[{"port": 80}],
                          sessionAffinity="ClientIP")
    create_slice(env, ns, "keep-1", "keep", ports=[{"port": 80}], endpoints=[endpoint("10.244.99.1", "node-a")])
    create_service(env, ns, "gone", ports=[{"name": "http", "port": 80}, {"name": "dns", "port": 53, "protocol": "UDP"}])
    wait_nodes_built(env, "node-a", "node-b")
    wait_vips(env, lb_name(ns, "keep", "TCP", "node_router+switch_node-b"),
              {f"{node_ip(1)}:{node_port(keep)}": "10.244.99.1:80"})
    eventually(lambda: lb_name(ns, "gone", "UDP", "cluster") in load_balancers(env), what="gone's LBs")
    env.wait_idle()
    before = {name: row for name, row in load_balancers(env).items() if name.startswith(f"Service_{ns}/")}
    assert len(before) == 5
    env.stop_controller()

    # Nothing changed: the restart reconciles every service and writes nothing.
    commits.clear()
    env.start_controller("plugins.enabled=recorder")
    env.wait_idle()
    eventually(lambda: env.metric("ovnk_services_sync_total", {"result": "unchanged"}) >= 2, what="reconciles")
    env.wait_idle()
    assert commits.written(ns) == []
    assert commits.sent(ns) == [], "an unchanged reconcile does not even send a transaction"
    assert len([r for r, _, _ in commits.all() if f" {ns}/" in r]) >= 2
    assert {n: r for n, r in load_balancers(env).items() if n.startswith(f"Service_{ns}/")} == before
    env.stop_controller()

    # While the controller is down a service and a node go away; rows that are not ours stay.
    env.client.delete(SERVICES, "gone", namespace=ns)
    env.client.delete(NODES, "node-b")
    env.central.nbctl("create", "Load_Balancer", "name=foreign_lb", 'vips:"10.0.0.1:80"="10.0.0.2:80"',
                      'external_ids:"k8s.ovn.org/kind"=Service', f'external_ids:"k8s.ovn.org/owner"={ns}/gone')
    caplog.set_level("INFO", logger="ovnk.core.ovn.sync")
    env.start_controller("plugins.enabled=recorder")
    env.wait_idle()
    repaired = {r.getMessage() for r in caplog.records if r.getMessage().startswith("repair: deleted Load_Balancer")}
    assert repaired >= {
        f"repair: deleted Load_Balancer {lb_name(ns, 'gone', 'TCP', 'cluster')} (service {ns}/gone no longer exists)",
        f"repair: deleted Load_Balancer {lb_name(ns, 'gone', 'UDP', 'cluster')} (service {ns}/gone no longer exists)",
        f"repair: deleted Load_Balancer {lb_name(ns, 'keep', 'TCP', 'node_router+switch_node-b')} "
        f"(node node-b of service {ns}/keep no longer exists)",
    }, repaired
    after = load_balancers(env)
    assert "foreign_lb" in after
    assert {n for n in after if n.startswith(f"Service_{ns}/")} == {
        lb_name(ns, "keep", "TCP", "cluster"), lb_name(ns, "keep", "TCP", "node_router+switch_node-a")}
    for name in (lb_name(ns, "keep", "TCP", "cluster"), lb_name(ns, "keep", "TCP", "node_router+switch_node-a")):
        assert after[name] == before[name], "the live service's rows were not rewritten"
