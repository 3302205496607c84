"""The hybrid overlay against a real API server and a real NB: subnets, DR ports, policies, ovn-trace, repair.

Nodes are API objects with the annotations a node agent publishes (no
kubelet). A foreign node is a Node labelled ``kubernetes.io/os=windows`` with an
``InternalIP``: it gets a hybrid subnet and no OVN topology. Packets are the
e2e suite's job.
"""

from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from ovnk.core.kube.resources import EVENTS
from ovnk.core.kube.resources import NODES
from ovnk.plugins.hybrid_overlay import models
from tests.functional.topology.conftest import ClusterEnv
from tests.functional.topology.conftest import nb_value

pytestmark = [pytest.mark.kube, pytest.mark.ovn]

ENABLE = ("plugins.enabled=hybrid_overlay", "hybrid_overlay.cluster-subnets=10.132.0.0/14/23")
HYBRID = "10.132.0.0/14"


def wait_for(what: str, check: Callable[[], Any], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {timeout:g}s"
        time.sleep(0.2)


def create_foreign(env: ClusterEnv, name: str, address: str, *, mac: str | None = None) -> None:
    annotations = {models.DR_MAC: mac} if mac else {}
    env.client.create(NODES, {"apiVersion": "v1", "kind": "Node", "metadata": {
        "name": name, "labels": {"kubernetes.io/os": "windows"}, "annotations": annotations}})
    env.client.patch(NODES, name, {"status": {"addresses": [{"type": "InternalIP", "address": address}]}},
                     subresource="status")


def annotations(env: ClusterEnv, name: str) -> dict[str, str]:
    node = env.client.get(NODES, name) or {}
    return dict((node.get("metadata") or {}).get("annotations") or {})


def owned(env: ClusterEnv, table: str) -> list[dict[str, Any]]:
    rows = []
    for row in env.nb_rows(table):
        if nb_value(row["external_ids"]).get("k8s.ovn.org/owner-type") == "HybridOverlay":
            rows.append({k: nb_value(v) for k, v in row.items()})
    return rows


def node_subnet(env: ClusterEnv, name: str) -> ipaddress.IPv4Network:
    raw = wait_for(f"{name} host subnet", lambda: annotations(env, name).get("k8s.ovn.org/node-subnets"))
    return ipaddress.IPv4Network(json.loads(raw)["default"][0])


def switch_other_config(env: ClusterEnv, name: str) -> dict[str, str]:
    row = next(r for r in env.nb_rows("Logical_Switch") if nb_value(r["name"]) == name)
    return dict(nb_value(row["other_config"]))


def lsp(env: ClusterEnv, name: str) -> dict[str, Any] | None:
    return next(({k: nb_value(v) for k, v in r.items()} for r in env.nb_rows("Logical_Switch_Port")
                 if nb_value(r["name"]) == name), None)


def router_mac(env: ClusterEnv, node: str) -> str:
    row = next(r for r in env.nb_rows("Logical_Router_Port") if nb_value(r["name"]) == f"rtos-{node}")
    return str(nb_value(row["mac"]))


def pod_network(env: ClusterEnv, ns: str, name: str) -> tuple[str, str]:
    def annotated() -> tuple[str, str] | None:
        for pod in env.pods(ns):
            raw = (pod["metadata"].get("annotations") or {}).get("k8s.ovn.org/pod-networks")
            if pod["metadata"]["name"] == name and raw:
                net = json.loads(raw)["default"]
                return str(net["ip_addresses"][0].split("/")[0]), str(net["mac_address"])
        return None
    return wait_for(f"pod {ns}/{name} annotated", annotated)  # type: ignore[no-any-return]


def test_foreign_subnets_dr_ports_policies_trace_and_plugin_off(env: ClusterEnv) -> None:
    env.start_controller(*ENABLE)
    env.create_node("ho-a", 0)
    env.create_node("ho-b", 1)
    create_foreign(env, "win-1", "172.30.0.51", mac="0A-58-0A-84-00-01")

    # The foreign node: a hybrid subnet, no host subnet, no switch.
    wait_for("win-1 hybrid subnet", lambda: annotations(env, "win-1").get(models.NODE_SUBNET) == "10.132.0.0/23")
    subnet_a, subnet_b = node_subnet(env, "ho-a"), node_subnet(env, "ho-b")
    env.wait_idle()
    assert "k8s.ovn.org/node-subnets" not in annotations(env, "win-1")
    assert "win-1" not in env.central.nbctl("ls-list")

    # The OVN nodes: DR IP .3 and its MAC, excluded from IPAM, the int- port, policies and routes.
    for node, subnet in (("ho-a", subnet_a), ("ho-b", subnet_b)):
        dr_ip = subnet.network_address + 3
        node_ann = annotations(env, node)
        assert node_ann[models.DR_IP] == str(dr_ip)
        assert node_ann[models.DR_MAC] == models.dr_mac_of(dr_ip)
        assert str(dr_ip) in switch_other_config(env, node)["exclude_ips"].split()
        port = lsp(env, f"int-{node}")
        assert port is not None and port["addresses"] == f"{models.dr_mac_of(dr_ip)} {dr_ip}"
    policies = {p["external_ids"]["name"]: p for p in owned(env, "Logical_Router_Policy")}
    assert set(policies) == {"hybrid-subnet-ho-a", "hybrid-subnet-ho-b", "hybrid-subnet-ho-a-gr",
                             "hybrid-subnet-ho-b-gr"}
    a = policies["hybrid-subnet-ho-a"]
    assert a["priority"] == 1002 and a["action"] == "reroute"
    assert a["match"] == f'inport == "rtos-ho-a" && ip4.dst == {HYBRID}'
    assert a["nexthops"] == str(subnet_a.network_address + 3)
    routes = {(r["ip_prefix"], r["nexthop"]) for r in owned(env, "Logical_Router_Static_Route")}
    assert (HYBRID, str(subnet_a.network_address + 3)) in routes
    assert (HYBRID, str(subnet_b.network_address + 3)) in routes

    # Pods never get the DR IP: the first pods of ho-a take .4, .5, ...
    env.create_namespace("t-ho")
    for index in range(3):
        env.create_pod("t-ho", f"p{index}", "ho-a")
    ips = {pod_network(env, "t-ho", f"p{index}")[0] for index in range(3)}
    assert str(subnet_a.network_address + 3) not in ips

    # ovn-trace: a pod on ho-a to a foreign pod leaves the cluster router through int-ho-a.
    env.central.wait_northd()
    ip, mac = pod_network(env, "t-ho", "p0")
    trace = env.central.trace("ho-a", f'inport == "t-ho_p0" && eth.src == {mac} && '
                                      f'eth.dst == {router_mac(env, "ho-a")} && ip4.src == {ip} && '
                                      f'ip4.dst == 10.132.0.5 && ip.ttl == 64 && icmp4.type == 8',
                              "--ct", "new")
    policy = trace[trace.index("lr_in_policy"):trace.index("lr_in_policy_ecmp")]
    assert "priority 1002" in policy and f"reg0 = {subnet_a.network_address + 3};" in policy, policy
    assert 'output to "int-ho-a"' in trace, trace[-3000:]
    # The plain east-west path is not touched.
    ip1, _ = pod_network(env, "t-ho", "p1")
    east_west = env.central.trace("ho-a", f'inport == "t-ho_p0" && eth.src == {mac} && '
                                          f'eth.dst == {router_mac(env, "ho-a")} && ip4.src == {ip} && '
                                          f'ip4.dst == {ip1} && ip.ttl == 64 && icmp4.type == 8', "--ct", "new")
    assert "int-ho-a" not in east_west

    # A second foreign node: the next block. A malformed subnet annotation is replaced, with an event.
    create_foreign(env, "win-2", "172.30.0.52")
    wait_for("win-2 hybrid subnet", lambda: annotations(env, "win-2").get(models.NODE_SUBNET) == "10.132.2.0/23")
    env.client.patch(NODES, "win-2", {"metadata": {"annotations": {models.NODE_SUBNET: "10.200.0.0/23"}}})
    wait_for("win-2 back in range", lambda: annotations(env, "win-2").get(models.NODE_SUBNET) == "10.132.2.0/23")
    items, _ = env.client.list(EVENTS, namespace="default")
    assert any(e["involvedObject"].get("name") == "win-2" and e["reason"] == "InvalidAnnotation" for e in items)

    env.wait_idle()
    assert env.metric("ovnk_hybrid_overlay_foreign_nodes") == 2
    assert env.metric("ovnk_hybrid_overlay_allocated_subnets") == 2
    assert env.metric("ovnk_hybrid_overlay_subnets") == 512  # /14 in /23 blocks

    # A foreign node deleted frees its block for the next one.
    env.client.delete(NODES, "win-1")
    create_foreign(env, "win-3", "172.30.0.53")
    wait_for("win-3 takes win-1's block", lambda: annotations(env, "win-3").get(models.NODE_SUBNET) == "10.132.0.0/23")

    # A restart with nothing changed writes nothing, and keeps every allocation.
    env.wait_idle()
    env.stop_controller()
    env.central.wait_northd()
    mark = env.central.nb.mark()
    before = {n: annotations(env, n) for n in ("ho-a", "ho-b", "win-2", "win-3")}
    env.start_controller(*ENABLE)
    env.wait_idle()
    assert env.central.nb.writes_since(mark) == [], "an unchanged restart must not write"
    assert {n: annotations(env, n) for n in before} == before

    # An OVN node that becomes foreign loses its DR rows; its policies go too.
    env.client.patch(NODES, "ho-b", {"metadata": {"labels": {"kubernetes.io/os": "windows"}}})
    wait_for("ho-b rows gone", lambda: not any("ho-b" in p["external_ids"]["name"]
                                                for p in owned(env, "Logical_Router_Policy")))
    wait_for("ho-b DR IP annotation gone", lambda: models.DR_IP not in annotations(env, "ho-b"))
    assert lsp(env, "int-ho-b") is None
    env.client.patch(NODES, "ho-b", {"metadata": {"labels": {"kubernetes.io/os": None}}})
    wait_for("ho-b back", lambda: lsp(env, "int-ho-b") is not None)

    # Startup repair: a node deleted while no controller ran loses its rows at the next start.
    env.wait_idle()
    env.stop_controller()
    env.client.delete(NODES, "ho-b")
    env.start_controller(*ENABLE)
    env.wait_idle()
    left = {r["external_ids"]["k8s.ovn.org/name"] for table in ("Logical_Router_Policy", "Logical_Switch_Port",
                                                                 "Logical_Router_Static_Route")
            for r in owned(env, table)}
    assert left == {"ho-a"}, left
    assert lsp(env, "int-ho-a") is not None

    # The plugin off: every row it owns and the reserved .3 go; the rest of the topology stays.
    env.stop_controller()
    env.start_controller()
    env.wait_idle()
    for table in ("Logical_Switch_Port", "Logical_Router_Policy", "Logical_Router_Static_Route"):
        assert owned(env, table) == [], f"HybridOverlay rows in {table} remain with the plugin off"
    assert str(subnet_a.network_address + 3) not in switch_other_config(env, "ho-a").get("exclude_ips", "")
    assert lsp(env, "t-ho_p0") is not None and "ovn_cluster_router" in env.central.nbctl("lr-list")


def test_bad_settings_refused(env: ClusterEnv) -> None:
    """Hybrid subnets overlapping the cluster network stop the controller at start with a clear error."""
    with pytest.raises(Exception, match=r"cluster-subnets 10\.244\.0\.0/16/24 overlaps \[default\] cluster-subnets"):
        env.start_controller("plugins.enabled=hybrid_overlay", "hybrid_overlay.cluster-subnets=10.244.0.0/16/24")


def test_without_cluster_subnets_rows_name_each_foreign_node(env: ClusterEnv) -> None:
    """Foreign subnets set by someone else (upstream's migration mode): nothing is allocated, and each OVN
    node's policies and routes name every foreign node's subnet; a foreign node that goes takes its rows along."""
    env.start_controller("plugins.enabled=hybrid_overlay")
    env.create_node("ho-a", 0)
    create_foreign(env, "win-1", "172.30.0.51", mac="0a:58:64:00:00:01")
    env.client.patch(NODES, "win-1", {"metadata": {"annotations": {models.NODE_SUBNET: "10.140.0.0/24"}}})
    create_foreign(env, "win-2", "172.30.0.52", mac="0a:58:64:00:00:02")  # no subnet: no rows for it

    def names() -> set[str]:
        return {p["external_ids"]["name"] for p in owned(env, "Logical_Router_Policy")}

    wait_for("rows for win-1", lambda: "hybrid-subnet-ho-a:win-1" in names())
    env.wait_idle()
    assert names() == {"hybrid-subnet-ho-a:win-1", "hybrid-subnet-ho-a-gr:win-1"}
    assert models.NODE_SUBNET not in annotations(env, "win-2"), "nothing is allocated without cluster-subnets"
    routes = {(r["ip_prefix"], r["external_ids"]["name"]) for r in owned(env, "Logical_Router_Static_Route")}
    assert ("10.140.0.0/24", "hybrid-subnet-ho-a:win-1") in routes

    env.client.patch(NODES, "win-2", {"metadata": {"annotations": {models.NODE_SUBNET: "10.140.1.0/24"}}})
    wait_for("rows for win-2", lambda: "hybrid-subnet-ho-a:win-2" in names())
    env.client.delete(NODES, "win-1")
    wait_for("win-1's rows gone", lambda: names() == {"hybrid-subnet-ho-a:win-2", "hybrid-subnet-ho-a-gr:win-2"})
    env.wait_idle()
    assert not any(r["ip_prefix"] == "10.140.0.0/24" for r in owned(env, "Logical_Router_Static_Route"))
