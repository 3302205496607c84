"""Controller hooks of a test plugin, through the real controller, API server and NB."""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from typing import Any

import pytest

from ovnk.core.kube.resources import NODES
from ovnk_lab.procs import free_port
from tests.functional.topology.conftest import ClusterEnv
from tests.functional.topology.conftest import nb_value

PLUGIN = '''
from ovnk import hookimpl, OwnerType
from prometheus_client import Counter
from ovnk.core.ovn.commands import Match, Ref
from ovnk.core.topology.intents import RowIntent

NODE_SET = OwnerType("HookNode", "Address_Set", ("name",))
NS_GROUP = OwnerType("HookNamespace", "Port_Group", ("name",))
NODE_POLICY = OwnerType("HookPolicy", "Logical_Router_Policy", ("name", "type"))
COMMITS = []

@hookimpl
def ovnk_claims(claims):
    for owner in (NODE_SET, NS_GROUP, NODE_POLICY):
        claims.owner_type(owner)

@hookimpl
def ovnk_register_metrics(registry):
    global PODS_SEEN
    PODS_SEEN = Counter("ovnk_hooktest_pods_total", "pods seen by the test plugin", registry=registry)

@hookimpl
def ovnk_cluster_topology(ctx, topology):
    router = topology.rows["ovn_cluster_router"]
    router.columns["options"] = {**router.columns["options"], "mcast_relay": "true"}

@hookimpl
def ovnk_node_hostsubnet(ctx, node):
    if (node["metadata"].get("labels") or {}).get("kubernetes.io/os") == "windows":
        return False
    return None

@hookimpl
def ovnk_node_topology(ctx, node, topology):
    subnet = topology.subnets[0]
    topology.reserved_ips.append(subnet.network_address + 3)
    topology.rows.add(RowIntent("Logical_Router_Policy", "hook-policy", owner=NODE_POLICY,
        columns={"priority": 1002, "match": f"ip4.dst == 10.99.0.0/16 && inport == \\"rtos-{topology.node}\\"",
                 "action": "reroute", "nexthops": [str(subnet.network_address + 3)]},
        parent=("Logical_Router", "ovn_cluster_router", "policies")))

def node_set(ctx, name):
    oids = NODE_SET.ids(ctx.controller_name, name=name)
    return oids.hashed_name, oids

@hookimpl
def ovnk_node_txn(ctx, txn, node, deleted):
    name, oids = node_set(ctx, node["metadata"]["name"])
    if deleted:
        txn.remove("Address_Set", name=name)
    else:
        txn.ensure("Address_Set", name=name, ids=oids, columns={"addresses": ["10.99.0.1"]})

def ns_group(ctx, namespace):
    oids = NS_GROUP.ids(ctx.controller_name, name=namespace)
    return oids.hashed_name, oids

@hookimpl
def ovnk_namespace_txn(ctx, txn, namespace, deleted):
    name, oids = ns_group(ctx, namespace["metadata"]["name"])
    if deleted:
        txn.remove("Port_Group", name=name)
    else:
        txn.ensure("Port_Group", name=name, ids=oids)

@hookimpl
def ovnk_pod_networks(ctx, pod, networks):
    networks["hooks/extra"] = {"ip_addresses": [], "mac_address": "0a:00:00:00:99:99", "role": "secondary"}

@hookimpl
def ovnk_pod_lsp(ctx, pod, lsp):
    lsp.options["hook"] = "yes"

@hookimpl
def ovnk_pod_txn(ctx, txn, pod, lsp, deleted):
    name, oids = ns_group(ctx, pod["metadata"]["namespace"])
    port = Ref(Match.of("Logical_Switch_Port", name=f"{pod['metadata']['namespace']}_{pod['metadata']['name']}"))
    if deleted:
        txn.remove_from(Match.of("Port_Group", name=name), "ports", [port])
    else:
        PODS_SEEN.inc()
        txn.ensure("Port_Group", name=name, ids=oids)
        txn.add_to(Match.of("Port_Group", name=name), "ports", [port])

@hookimpl(wrapper=True)
def ovnk_nb_commit(txn):
    outcome = yield
    COMMITS.append((txn.owner, outcome))
    return outcome

@hookimpl
def ovnk_repair(ctx, plan):
    for row in ctx.nb.owned(NODE_SET):
        if ctx.cache(__import__("ovnk.core.kube.resources", fromlist=["NODES"]).NODES).get(
                row.external_ids["k8s.ovn.org/name"]) is None:
            plan.stale(row, reason="node gone")
'''


@pytest.fixture
def hook_env(env: ClusterEnv, fake_dists) -> ClusterEnv:
    fake_dists.add("ovnk-hooktest", plugins={"hooktest": "hooktest_plugin"}, modules={"hooktest_plugin": PLUGIN})
    return env


def rows(env: ClusterEnv, table: str, owner_type: str) -> list[dict[str, Any]]:
    return [r for r in env.nb_rows(table) if nb_value(r["external_ids"]).get("k8s.ovn.org/owner-type") == owner_type]


def members(value: Any) -> list[Any]:
    """A set column from ovsdb JSON (a one-element set is encoded as the element)."""
    decoded = nb_value(value)
    return decoded if isinstance(decoded, list) else [decoded]


def wait(predicate: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline
        time.sleep(0.1)


@pytest.mark.kube
@pytest.mark.ovn
def test_hook_ovnk_cluster_topology_node_topology_and_node_txn(hook_env: ClusterEnv) -> None:
    env = hook_env
    env.start_controller("plugins.enabled=hooktest")
    env.create_node("hook-1", 0)
    env.wait_idle()
    router = next(r for r in env.nb_rows("Logical_Router") if nb_value(r["name"]) == "ovn_cluster_router")
    assert nb_value(router["options"])["mcast_relay"] == "true"
    switch = next(r for r in env.nb_rows("Logical_Switch") if nb_value(r["name"]) == "hook-1")
    other = nb_value(switch["other_config"])
    base = other["subnet"].rsplit(".", 1)[0]
    assert other["exclude_ips"] == f"{base}.2 {base}.3"
    policies = rows(env, "Logical_Router_Policy", "HookPolicy")
    assert len(policies) == 1 and nb_value(policies[0]["priority"]) == 1002
    assert [nb_value(r["external_ids"])["k8s.ovn.org/name"] for r in rows(env, "Address_Set", "HookNode")] == ["hook-1"]
    env.client.delete(NODES, "hook-1")
    env.wait_idle()
    assert rows(env, "Address_Set", "HookNode") == []
    assert rows(env, "Logical_Router_Policy", "HookPolicy") == []


@pytest.mark.kube
@pytest.mark.ovn
def test_hook_ovnk_node_hostsubnet_false_skips_the_node(hook_env: ClusterEnv) -> None:
    env = hook_env
    env.start_controller("plugins.enabled=hooktest")
    env.create_node("win-1", 0)
    env.client.patch(NODES, "win-1", {"metadata": {"labels": {"kubernetes.io/os": "windows"}}})
    env.create_node("lin-1", 1)
    env.wait_idle()
    time.sleep(0.5)
    env.wait_idle()
    switches = {nb_value(r["name"]) for r in env.nb_rows("Logical_Switch")}
    assert "lin-1" in switches and "win-1" not in switches
    win = env.client.get(NODES, "win-1")
    assert "k8s.ovn.org/node-subnets" not in (win["metadata"].get("annotations") or {})


@pytest.mark.kube
@pytest.mark.ovn
def test_hook_ovnk_pod_networks_pod_lsp_pod_txn_namespace_txn_nb_commit(hook_env: ClusterEnv) -> None:
    env = hook_env
    port = free_port()
    env.start_controller("plugins.enabled=hooktest", f"controller.metrics-bind-address=127.0.0.1:{port}")
    env.create_node("hook-2", 0)
    ns = f"t-hooks-{uuid.uuid4().hex[:6]}"
    env.create_namespace(ns)
    env.create_pod(ns, "p1", "hook-2")
    env.create_pod(ns, "p2", "hook-2")
    wait(lambda: all("k8s.ovn.org/pod-networks" in (p["metadata"].get("annotations") or {}) for p in env.pods(ns))
         and len(env.pods(ns)) == 2)
    env.wait_idle()
    networks = json.loads(env.pods(ns)[0]["metadata"]["annotations"]["k8s.ovn.org/pod-networks"])
    assert networks["hooks/extra"]["mac_address"] == "0a:00:00:00:99:99" and "default" in networks
    lsp = next(r for r in env.nb_rows("Logical_Switch_Port") if nb_value(r["name"]) == f"{ns}_p1")
    assert nb_value(lsp["options"])["hook"] == "yes"
    group = [r for r in rows(env, "Port_Group", "HookNamespace") if nb_value(r["external_ids"])["k8s.ovn.org/name"] == ns]
    assert len(group) == 1 and len(members(group[0]["ports"])) == 2
    import hooktest_plugin

    assert ("Pod", "committed") in hooktest_plugin.COMMITS
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        seen = [line for line in resp.read().decode().splitlines() if line.startswith("ovnk_hooktest_pods_total ")]
    # The hook runs on every reconcile of a live pod (a re-run writes nothing), so at least once per pod.
    assert seen and float(seen[0].split()[1]) >= 2
    env.delete_pod(ns, "p1")
    env.wait_idle()
    time.sleep(0.3)
    env.wait_idle()
    group = [r for r in rows(env, "Port_Group", "HookNamespace") if nb_value(r["external_ids"])["k8s.ovn.org/name"] == ns]
    assert len(members(group[0]["ports"])) == 1


@pytest.mark.kube
@pytest.mark.ovn
def test_hook_ovnk_repair_and_ovnk_register_metrics(hook_env: ClusterEnv) -> None:
    env = hook_env
    env.central.nbctl("create", "Address_Set", "name=leftover",
                      'external_ids:"k8s.ovn.org/owner-controller"=default-network-controller',
                      'external_ids:"k8s.ovn.org/owner-type"=HookNode', 'external_ids:"k8s.ovn.org/name"=gone-node',
                      'external_ids:"k8s.ovn.org/id"=default-network-controller:HookNode:gone-node')
    port = free_port()
    env.start_controller("plugins.enabled=hooktest", f"controller.metrics-bind-address=127.0.0.1:{port}")
    env.wait_idle()
    assert "leftover" not in {nb_value(r["name"]) for r in env.nb_rows("Address_Set")}
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    assert "ovnk_hooktest_pods_total" in text and "ovnk_build_info" in text
