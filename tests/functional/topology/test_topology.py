"""Issue acceptance: nodes and pods through the real API server into a real OVN NB, checked with ovn-trace."""

from __future__ import annotations

import ipaddress
import json
import random
import time
from typing import Any

import pytest

from ovnk.core.kube.resources import NODES
from tests.functional.topology.conftest import ClusterEnv
from tests.functional.topology.conftest import nb_value
from tests.functional.topology.conftest import node_ip

CONTROLLER = "default-network-controller"


def names_by_uuid(env: ClusterEnv, *tables: str) -> dict[str, str]:
    mapping = {}
    for table in tables:
        for row in env.nb_rows(table):
            label = nb_value(row.get("name")) or nb_value(row["external_ids"]).get("k8s.ovn.org/id", table)
            mapping[nb_value(row["_uuid"])[1]] = label
    return mapping


def pod_annotation(pod: dict[str, Any]) -> dict[str, Any]:
    return json.loads(pod["metadata"]["annotations"]["k8s.ovn.org/pod-networks"])["default"]


def wait_annotated(env: ClusterEnv, namespace: str, count: int, timeout: float = 120) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        pods = env.pods(namespace)
        done = [p for p in pods if "k8s.ovn.org/pod-networks" in (p["metadata"].get("annotations") or {})]
        if len(done) == count:
            return pods
        assert time.monotonic() < deadline, f"{len(done)}/{count} pods annotated"
        time.sleep(0.2)


@pytest.mark.kube
@pytest.mark.ovn
@pytest.mark.slow
def test_three_nodes_200_pods_rows_and_traces(env: ClusterEnv) -> None:
    env.start_controller()
    nodes = ["node-a", "node-b", "node-c"]
    for i, node in enumerate(nodes):
        env.create_node(node, i)
    ns = "t-topo"
    env.create_namespace(ns)
    for i in range(200):
        env.create_pod(ns, f"p{i}", nodes[i % 3])
    pods = wait_annotated(env, ns, 200)
    env.wait_idle()

    # -- nodes: allocations published, unique, from the cluster subnet ----------
    subnets = {}
    node_ids = set()
    for node in env.client.list(NODES)[0]:
        ann = node["metadata"]["annotations"]
        subnet = ipaddress.ip_network(json.loads(ann["k8s.ovn.org/node-subnets"])["default"][0])
        assert subnet.subnet_of(ipaddress.ip_network("10.244.0.0/16")) and subnet.prefixlen == 24
        subnets[node["metadata"]["name"]] = subnet
        node_ids.add(int(ann["k8s.ovn.org/node-id"]))
    assert len(set(subnets.values())) == 3
    assert node_ids == {2, 3, 4}

    # -- switches and ports ---------------------------------------------------------
    switches = {nb_value(r["name"]): r for r in env.nb_rows("Logical_Switch")}
    assert set(switches) == {*nodes, "join", *(f"ext_{n}" for n in nodes)}
    for node in nodes:
        other = nb_value(switches[node]["other_config"])
        assert other == {"subnet": str(subnets[node]), "exclude_ips": str(subnets[node].network_address + 2)}
        for key in ("k8s.ovn.org/owner-controller", "k8s.ovn.org/owner-type", "k8s.ovn.org/id"):
            assert key in nb_value(switches[node]["external_ids"])
    ports = {nb_value(r["name"]): r for r in env.nb_rows("Logical_Switch_Port")}
    by_uuid = names_by_uuid(env, "Logical_Switch_Port")
    for node in nodes:
        member_names = {by_uuid[u[1]] for u in nb_value(switches[node]["ports"])}
        expected_pods = {f"{ns}_p{i}" for i in range(200) if nodes[i % 3] == node}
        assert member_names == {f"stor-{node}", f"k8s-{node}", *expected_pods}
        stor = ports[f"stor-{node}"]
        assert nb_value(stor["type"]) == "router" and nb_value(stor["options"]) == {"router-port": f"rtos-{node}"}
    ips = []
    for pod in pods:
        annotation = pod_annotation(pod)
        ip = ipaddress.ip_interface(annotation["ip_addresses"][0])
        node = pod["spec"]["nodeName"]
        assert ip.network == subnets[node]
        assert int(ip.ip) - int(subnets[node].network_address) >= 3
        mac = "0a:58:" + ":".join(f"{b:02x}" for b in ip.ip.packed)
        assert annotation["mac_address"] == mac
        assert annotation["gateway_ips"] == [str(subnets[node].network_address + 1)]
        assert {r["dest"] for r in annotation["routes"]} == {"10.244.0.0/16", "10.96.0.0/16", "169.254.0.5/32",
                                                            "100.64.0.0/16"}
        lsp = ports[f"{ns}_{pod['metadata']['name']}"]
        assert nb_value(lsp["addresses"]) == f"{mac} {ip.ip}"
        assert nb_value(lsp["port_security"]) == f"{mac} {ip.ip}"
        assert nb_value(lsp["options"]) == {"iface-id-ver": pod["metadata"]["uid"],
                                            "requested-chassis": env.chassis[node]}
        ext = nb_value(lsp["external_ids"])
        assert ext["namespace"] == ns and ext["pod"] == "true"
        assert ext["k8s.ovn.org/owner-type"] == "Pod" and ext["k8s.ovn.org/owner-controller"] == CONTROLLER
        ips.append(ip.ip)
    assert len(set(ips)) == 200

    # -- routers, routes, NAT, policies ------------------------------------------------
    routers = {nb_value(r["name"]): r for r in env.nb_rows("Logical_Router")}
    assert set(routers) == {"ovn_cluster_router", *(f"GR_{n}" for n in nodes)}
    lrps = {nb_value(r["name"]): r for r in env.nb_rows("Logical_Router_Port")}
    for i, node in enumerate(nodes):
        gw = subnets[node].network_address + 1
        assert nb_value(lrps[f"rtos-{node}"]["networks"]) == f"{gw}/24"
        assert nb_value(lrps[f"rtos-{node}"]["mac"]) == "0a:58:" + ":".join(f"{b:02x}" for b in gw.packed)
        assert nb_value(lrps[f"rtoe-GR_{node}"]["networks"]) == f"{node_ip(i)}/24"
        options = nb_value(routers[f"GR_{node}"]["options"])
        assert options["chassis"] == env.chassis[node]
        assert options["lb_force_snat_ip"] == "router_ip"
    node_id_of = {n["metadata"]["name"]: int(n["metadata"]["annotations"]["k8s.ovn.org/node-id"])
                  for n in env.client.list(NODES)[0]}
    for node in nodes:
        assert nb_value(lrps[f"rtoj-GR_{node}"]["networks"]) == f"100.64.0.{node_id_of[node]}/16"
    routes = env.central.nbctl("lr-route-list", "ovn_cluster_router")
    for node in nodes:
        assert f"{subnets[node]}" in routes and f"100.64.0.{node_id_of[node]} src-ip" in routes
    gr_routes = env.central.nbctl("lr-route-list", "GR_node-a")
    assert "10.244.0.0/16" in gr_routes and "100.64.0.1" in gr_routes
    assert "0.0.0.0/0" in gr_routes and "172.30.0.254" in gr_routes and "rtoe-GR_node-a" in gr_routes
    nat = env.central.nbctl("lr-nat-list", "GR_node-a")
    assert "snat" in nat and node_ip(0) in nat and "10.244.0.0/16" in nat
    policies = env.central.nbctl("lr-policy-list", "ovn_cluster_router")
    for i, node in enumerate(nodes):
        assert f'1004 inport == "rtos-{node}" && ip4.dst == {node_ip(i)} /* {node} */' in policies

    # -- namespace address set ---------------------------------------------------------
    sets = [r for r in env.nb_rows("Address_Set") if nb_value(r["external_ids"]).get("k8s.ovn.org/name") == ns]
    assert len(sets) == 1 and set(nb_value(sets[0]["addresses"])) == {str(ip) for ip in ips}

    # -- ovn-trace ---------------------------------------------------------------------
    env.central.wait_northd()
    by_name = {p["metadata"]["name"]: pod_annotation(p) for p in pods}
    p0, p3, p1 = by_name["p0"], by_name["p3"], by_name["p1"]  # p0, p3 on node-a; p1 on node-b

    def flow(src: dict[str, Any], src_name: str, dst_mac: str, dst_ip: str) -> str:
        return (f'inport == "{ns}_{src_name}" && eth.src == {src["mac_address"]} && eth.dst == {dst_mac} && '
                f'ip4.src == {src["ip_addresses"][0].split("/")[0]} && ip4.dst == {dst_ip} && ip.ttl == 64 && '
                'tcp && tcp.src == 33333 && tcp.dst == 80')

    same = env.central.trace("node-a", flow(p0, "p0", p3["mac_address"], p3["ip_addresses"][0].split("/")[0]))
    assert f'output("{ns}_p3")' in same.replace("outport = ", "") or f'"{ns}_p3"' in same
    assert "ovn_cluster_router" not in same, "same-node traffic is switched, not routed"
    rtos_mac = nb_value(lrps["rtos-node-a"]["mac"])
    cross = env.central.trace("node-a", flow(p0, "p0", rtos_mac, p1["ip_addresses"][0].split("/")[0]))
    assert 'datapath "ovn_cluster_router"' in cross or "ovn_cluster_router" in cross
    assert f'"{ns}_p1"' in cross and "node-b" in cross
    # The external gateway's MAC as ovn-controller would have learned it (a trace sends nothing);
    # a current timestamp, or northd's MAC binding aging (mac_binding_age_threshold) removes it.
    env.central.sbctl("create", "MAC_Binding", "logical_port=rtoe-GR_node-a", "ip=172.30.0.254",
                      "mac=\"0a:00:00:00:00:fe\"", f"timestamp={int(time.time() * 1000)}",
                      f"datapath={env.central.sbctl('--bare', '--columns=_uuid', 'find', 'Datapath_Binding', 'external_ids:name=GR_node-a').strip()}")
    external = env.central.trace("node-a", flow(p0, "p0", rtos_mac, "192.0.2.10"))
    assert 'ingress(dp="GR_node-a"' in external
    assert "0.0.0.0/0" in external or "172.30.0.254" in external
    assert f"ct_snat({node_ip(0)})" in external
    assert 'output to "breth0_node-a", type "localnet"' in external


@pytest.mark.kube
@pytest.mark.ovn
@pytest.mark.slow
def test_churn_1000_random_pod_operations_and_a_node_delete(env: ClusterEnv) -> None:
    env.start_controller()
    nodes = ["c1", "c2", "c3"]
    for i, node in enumerate(nodes):
        env.create_node(node, i)
    ns = "t-churn"
    env.create_namespace(ns)
    rng = random.Random(7)
    live: dict[str, str] = {}
    counter = 0
    for _ in range(1000):
        if live and (rng.random() < 0.45 or len(live) > 120):
            name = rng.choice(sorted(live))
            env.delete_pod(ns, name)
            del live[name]
        else:
            name = f"c{counter}"
            counter += 1
            node = rng.choice(nodes)
            env.create_pod(ns, name, node)
            live[name] = node
    env.client.delete(NODES, "c3")
    for name in [n for n, node in live.items() if node == "c3"]:
        env.delete_pod(ns, name)
        del live[name]
    deadline = time.monotonic() + 120
    while True:
        env.wait_idle()
        pods = {p["metadata"]["name"]: p for p in env.pods(ns)}
        if set(pods) == set(live) and all("k8s.ovn.org/pod-networks" in (p["metadata"].get("annotations") or {})
                                          for p in pods.values()):
            break
        assert time.monotonic() < deadline
        time.sleep(0.2)
    env.wait_idle()
    # No stale row: pod ports are exactly the live pods; nothing of c3 remains.
    pod_ports = {nb_value(r["name"]) for r in env.nb_rows("Logical_Switch_Port")
                 if nb_value(r["external_ids"]).get("pod") == "true"}
    assert pod_ports == {f"{ns}_{name}" for name in live}
    assert "c3" not in {nb_value(r["name"]) for r in env.nb_rows("Logical_Switch")}
    assert "GR_c3" not in {nb_value(r["name"]) for r in env.nb_rows("Logical_Router")}
    assert "rtos-c3" not in {nb_value(r["name"]) for r in env.nb_rows("Logical_Router_Port")}
    # No duplicate IP, no leaked IP.
    ips = [pod_annotation(p)["ip_addresses"][0] for p in pods.values()]
    assert len(ips) == len(set(ips))
    state = env.process.ctx.topology  # type: ignore[union-attr]
    holders = {str(ip): holder for _node, pool in state.all_pools() for ip, holder in pool.in_use().items()}
    assert set(holders) == {ip.split("/")[0] for ip in ips}, {
        ip: holders[ip] for ip in set(holders) - {ip.split("/")[0] for ip in ips}}
    assert state.node("c3") is None and state.subnets.subnets_of("c3") == []
    as_rows = [r for r in env.nb_rows("Address_Set") if nb_value(r["external_ids"]).get("k8s.ovn.org/name") == ns]
    assert set(nb_value(as_rows[0]["addresses"])) == {ip.split("/")[0] for ip in ips}


@pytest.mark.kube
@pytest.mark.ovn
@pytest.mark.slow
def test_restart_with_1000_pods_writes_nothing_and_cleans_pods_deleted_while_down(env: ClusterEnv) -> None:
    env.start_controller()
    nodes = ["r1", "r2", "r3", "r4", "r5"]  # a /24 host subnet holds 252 pods
    for i, node in enumerate(nodes):
        env.create_node(node, i)
    ns = "t-restart"
    env.create_namespace(ns)
    for i in range(1000):
        env.create_pod(ns, f"r{i}", nodes[i % len(nodes)])
    wait_annotated(env, ns, 1000, timeout=300)
    env.wait_idle(300)
    env.stop_controller()
    env.central.wait_northd()

    mark = env.central.nb.mark()
    started = time.monotonic()
    env.start_controller()
    env.wait_idle(300)
    assert env.metric("ovnk_nb_txn_total", {"owner": "Pod", "result": "committed"}) == 0
    assert env.metric("ovnk_nb_txn_total", {"owner": "Node", "result": "committed"}) == 0
    assert env.central.nb.writes_since(mark) == [], "an unchanged restart must not write to the NB database"
    assert time.monotonic() - started < 120
    env.stop_controller()

    gone = env.pods(ns)[5]
    gone_ip = pod_annotation(gone)["ip_addresses"][0].split("/")[0]
    env.delete_pod(ns, gone["metadata"]["name"])
    env.start_controller()
    env.wait_idle(300)
    ports = {nb_value(r["name"]) for r in env.nb_rows("Logical_Switch_Port")}
    assert f"{ns}_{gone['metadata']['name']}" not in ports
    assert len([p for p in ports if p.startswith(f"{ns}_")]) == 999
    as_rows = [r for r in env.nb_rows("Address_Set") if nb_value(r["external_ids"]).get("k8s.ovn.org/name") == ns]
    assert gone_ip not in set(nb_value(as_rows[0]["addresses"]))
    node = gone["spec"]["nodeName"]
    pool = env.process.ctx.topology.pool_for_ip(node, ipaddress.ip_address(gone_ip))  # type: ignore[union-attr]
    assert pool is not None and pool.holder(ipaddress.ip_address(gone_ip)) is None
