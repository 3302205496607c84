"""Replies to a gateway router's join IP come back to that router, from pods of any node (ovn-trace).

A GR SNATs load-balanced traffic to its join IP (``lb_force_snat_ip=router_ip``):
a NodePort connection to node A with a backend on node B reaches the backend
from ``100.64.0.<A>``. The backend's reply must be routed to ``GR_<A>``; the
cluster router's ``src-ip`` route of node B's subnet (a /24) outranks the
connected join /16 and would hand it to ``GR_<B>``, which drops it mid-connection
(found by tests/e2e/test_services.py: NodePorts answered only from local backends).
"""

from __future__ import annotations

import ipaddress

import pytest

from ovnk.core.kube.resources import NODES
from tests.functional.topology.conftest import ClusterEnv
from tests.functional.topology.conftest import nb_value
from tests.functional.topology.test_topology import pod_annotation
from tests.functional.topology.test_topology import wait_annotated


@pytest.mark.kube
@pytest.mark.ovn
@pytest.mark.slow
def test_a_pod_replying_to_another_nodes_gateway_router_join_ip_reaches_that_router(env: ClusterEnv) -> None:
    env.start_controller()
    env.create_node("node-a", 0)
    env.create_node("node-b", 1)
    ns = "t-joinroute"
    env.create_namespace(ns)
    env.create_pod(ns, "backend", "node-b")
    backend = pod_annotation(wait_annotated(env, ns, 1)[0])
    env.wait_idle()
    env.central.wait_northd()
    node_ids = {n["metadata"]["name"]: int(n["metadata"]["annotations"]["k8s.ovn.org/node-id"])
                for n in env.client.list(NODES)[0]}
    join = {node: ipaddress.IPv4Address(f"100.64.0.{node_id}") for node, node_id in node_ids.items()}

    routes = env.central.nbctl("lr-route-list", "ovn_cluster_router").split("\n")
    for node, ip in join.items():
        assert any(line.split()[:3] == [str(ip), str(ip), "dst-ip"] for line in routes), (
            f"route to GR_{node}'s join IP on the cluster router:\n" + "\n".join(routes))

    rtos_mac = next(nb_value(r["mac"]) for r in env.nb_rows("Logical_Router_Port") if nb_value(r["name"]) == "rtos-node-b")
    backend_ip = backend["ip_addresses"][0].split("/")[0]
    reply = (f'inport == "{ns}_backend" && eth.src == {backend["mac_address"]} && eth.dst == {rtos_mac} && '
             f"ip4.src == {backend_ip} && ip4.dst == {join['node-a']} && ip.ttl == 64 && "
             "tcp && tcp.src == 8080 && tcp.dst == 33333")
    trace = env.central.trace("node-b", reply, "--ct=est", "--ct=est", "--ct=est")
    assert 'ingress(dp="GR_node-a"' in trace, f"the reply reaches GR_node-a:\n{trace}"
    assert 'ingress(dp="GR_node-b"' not in trace, f"the reply does not detour through GR_node-b:\n{trace}"
    # Traffic to anything else still leaves through the pod's own node's gateway router.
    egress = reply.replace(f"ip4.dst == {join['node-a']}", "ip4.dst == 192.0.2.10")
    assert 'ingress(dp="GR_node-b"' in env.central.trace("node-b", egress, "--ct=new", "--ct=new", "--ct=new")
