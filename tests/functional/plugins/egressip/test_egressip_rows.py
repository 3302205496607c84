"""EgressIP against a real API server and a real NB: assignment, rows, ovn-trace, repair, plugin off.

Nodes are API objects with the annotations a node agent publishes (no
kubelet); their health checks are switched off here (the gRPC health path has
its own test against a real server). Packets are the e2e suite's job.
"""

from __future__ import annotations

import ipaddress
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from ovnk.core.kube.resources import EVENTS
from ovnk.core.kube.resources import NAMESPACES
from ovnk.core.kube.resources import NODES
from ovnk.plugins.egressip.selection import EGRESSIPS
from tests.functional.topology.conftest import ClusterEnv
from tests.functional.topology.conftest import nb_value
from tests.functional.topology.conftest import node_ip

pytestmark = [pytest.mark.kube, pytest.mark.ovn]

CRD = Path(__file__).resolve().parents[4] / "plugins" / "egressip" / "crds" / "egressips.yaml"
LABEL = "k8s.ovn.org/egress-assignable"
ENABLE = ("plugins.enabled=egressip", "egressip.reachability-total-timeout=0")


def wait_for(what: str, check: Callable[[], Any], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {timeout:g}s"
        time.sleep(0.2)


def ready_node(env: ClusterEnv, name: str, index: int, *, labelled: bool) -> None:
    env.create_node(name, index)
    env.client.patch(NODES, name, {"status": {"conditions": [
        {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "test",
         "lastHeartbeatTime": "2026-01-01T00:00:00Z", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}},
        subresource="status")
    if labelled:
        label(env, name, True)


def label(env: ClusterEnv, node: str, on: bool) -> None:
    env.client.patch(NODES, node, {"metadata": {"labels": {LABEL: "" if on else None}}})


def namespace(env: ClusterEnv, labels: dict[str, str]) -> str:
    name = f"t-eip-{uuid.uuid4().hex[:6]}"
    env.client.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace",
                                   "metadata": {"name": name, "labels": labels}})
    return name


def pod_ip(env: ClusterEnv, ns: str, name: str) -> str:
    def annotated() -> str | None:
        for pod in env.pods(ns):
            raw = (pod["metadata"].get("annotations") or {}).get("k8s.ovn.org/pod-networks")
            if pod["metadata"]["name"] == name and raw:
                return str(json.loads(raw)["default"]["ip_addresses"][0].split("/")[0])
        return None
    return str(wait_for(f"pod {ns}/{name} annotated", annotated))


def create_eip(env: ClusterEnv, name: str, ips: list[str], selector: dict[str, str],
               pods: dict[str, str] | None = None) -> None:
    spec: dict[str, Any] = {"egressIPs": ips, "namespaceSelector": {"matchLabels": selector}}
    if pods:
        spec["podSelector"] = {"matchLabels": pods}
    env.client.create(EGRESSIPS, {"apiVersion": "k8s.ovn.org/v1", "kind": "EgressIP",
                                  "metadata": {"name": name}, "spec": spec})


def status(env: ClusterEnv, name: str) -> dict[str, str]:
    obj = env.client.get(EGRESSIPS, name) or {}
    return {i["egressIP"]: i["node"] for i in (obj.get("status") or {}).get("items") or []}


def owned(env: ClusterEnv, table: str, owner: str) -> list[dict[str, Any]]:
    rows = []
    for row in env.nb_rows(table):
        ids = nb_value(row["external_ids"])
        if ids.get("k8s.ovn.org/owner-type") == owner:
            rows.append({k: nb_value(v) for k, v in row.items()})
    return rows


def as_list(value: Any) -> list[Any]:
    """An OVSDB set column: one element comes back bare, several as a list."""
    return list(value) if isinstance(value, list) else [value]


def reroutes(env: ClusterEnv) -> dict[str, list[str]]:
    """match -> nexthops of every EgressIP reroute policy."""
    return {r["match"]: sorted(as_list(r["nexthops"])) for r in owned(env, "Logical_Router_Policy", "EgressIP")
            if r["action"] == "reroute"}


def snats(env: ClusterEnv) -> set[tuple[str, str, str]]:
    """(router, external_ip, logical_ip) of every EgressIP SNAT."""
    routers = {}
    for router in env.nb_rows("Logical_Router"):
        for ref in as_list(nb_value(router["nat"])):
            routers[ref[1] if isinstance(ref, tuple) else ref] = nb_value(router["name"])
    return {(routers.get(r["_uuid"][1], "?"), r["external_ip"], r["logical_ip"]) for r in owned(env, "NAT", "EgressIP")}


def events(env: ClusterEnv, name: str) -> list[tuple[str, str]]:
    items, _ = env.client.list(EVENTS, namespace="default")
    return [(e["reason"], e["message"]) for e in items if e["involvedObject"].get("name") == name]


def join_ip(env: ClusterEnv, node: str) -> str:
    gr = next(r for r in env.nb_rows("Logical_Router_Port") if nb_value(r["name"]) == f"rtoj-GR_{node}")
    return str(ipaddress.ip_interface(nb_value(gr["networks"])).ip)


@pytest.fixture
def crd(env: ClusterEnv) -> None:
    env.kube.kubectl("apply", "-f", str(CRD))
    env.kube.kubectl("wait", "--for=condition=Established", "crd/egressips.k8s.ovn.org", "--timeout=30s")
    yield
    for obj in env.client.list(EGRESSIPS)[0]:
        env.client.delete(EGRESSIPS, obj["metadata"]["name"])


def test_crd_schema_rejects_what_it_can(env: ClusterEnv, crd: None) -> None:
    bad = [
        {"egressIPs": [], "namespaceSelector": {}},
        {"egressIPs": ["not-an-ip"], "namespaceSelector": {}},
        {"egressIPs": ["172.30.0.100", "172.30.0.100"], "namespaceSelector": {}},
        {"egressIPs": ["172.30.0.100"]},
        {"egressIPs": ["172.30.0.100"], "namespaceSelector": {"matchExpressions": [{"key": "a", "operator": "Is"}]}},
    ]
    for index, spec in enumerate(bad):
        doc = {"apiVersion": "k8s.ovn.org/v1", "kind": "EgressIP", "metadata": {"name": f"bad-{index}"}, "spec": spec}
        with pytest.raises(Exception, match=r"(?i)invalid|Unsupported|Duplicate|Required"):
            env.kube.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))
    good = {"apiVersion": "k8s.ovn.org/v1", "kind": "EgressIP", "metadata": {"name": "good"},
            "spec": {"egressIPs": ["172.30.0.100", "fd00::100"], "namespaceSelector": {"matchLabels": {"a": "b"}}}}
    env.kube.kubectl("apply", "-f", "-", input=yaml.safe_dump(good))


def test_assignment_rows_trace_failover_conflicts_and_plugin_off(env: ClusterEnv, crd: None) -> None:
    env.start_controller(*ENABLE)
    ready_node(env, "eip-a", 0, labelled=True)
    ready_node(env, "eip-b", 1, labelled=False)
    team = namespace(env, {"team": "eip"})
    other = namespace(env, {"team": "other"})
    env.create_pod(team, "web", "eip-b")
    env.create_pod(team, "db", "eip-a")
    env.create_pod(other, "free", "eip-b")
    web, db, free = pod_ip(env, team, "web"), pod_ip(env, team, "db"), pod_ip(env, other, "free")

    create_eip(env, "eip1", ["172.30.0.100"], {"team": "eip"})
    wait_for("eip1 assigned to eip-a", lambda: status(env, "eip1") == {"172.30.0.100": "eip-a"})
    env.wait_idle()
    hop_a = join_ip(env, "eip-a")
    assert reroutes(env) == {f"ip4.src == {web}": [hop_a], f"ip4.src == {db}": [hop_a]}
    assert snats(env) == {("GR_eip-a", "172.30.0.100", web), ("GR_eip-a", "172.30.0.100", db)}
    served = owned(env, "Address_Set", "EgressIP")
    assert len(served) == 1 and sorted(as_list(served[0]["addresses"])) == sorted([web, db])
    assert free not in str(served[0]["addresses"])
    node_ips = owned(env, "Address_Set", "EgressNodeIPs")
    assert sorted(as_list(node_ips[0]["addresses"])) == [node_ip(0), node_ip(1)]
    no_reroute = {r["external_ids"]["k8s.ovn.org/name"]: r for r in owned(env, "Logical_Router_Policy", "EgressNoReroute")}
    assert set(no_reroute) == {"EIP-No-Reroute-Pod-To-Pod", "EIP-No-Reroute-Pod-To-Join", "EIP-No-Reroute-reply-traffic"}
    assert no_reroute["EIP-No-Reroute-Pod-To-Pod"]["match"] == "ip4.src == 10.244.0.0/16 && ip4.dst == 10.244.0.0/16"
    assert all(r["priority"] == 102 and r["action"] == "allow" for r in no_reroute.values())

    # ovn-trace: the selected pod on eip-b leaves through GR_eip-a with the egress IP; the other pod
    # through its own node with the node IP; pod-to-pod is not rerouted. The outside host's MAC is
    # known to the gateway routers (a static binding the test adds), so the trace follows the packet
    # past the ARP step.
    env.central.wait_northd()
    for node in ("eip-a", "eip-b"):
        datapath = env.central.sbctl("--bare", "--columns=_uuid", "find", "Datapath_Binding",
                                     f"external_ids:name=GR_{node}").strip()
        # A fresh timestamp: the gateway routers age MAC bindings out (mac_binding_age_threshold).
        env.central.sbctl("create", "MAC_Binding", f"logical_port=rtoe-GR_{node}", "ip=172.30.0.254",
                          'mac="0a:00:00:00:fe:fe"', f"datapath={datapath}", f"timestamp={int(time.time() * 1000)}")
    trace = env.central.trace("eip-b", f'inport == "{team}_web" && eth.src == {mac_of(env, team, "web")} && '
                                         f'eth.dst == {router_mac(env, "eip-b")} && ip4.src == {web} && '
                                         f'ip4.dst == 172.30.0.254 && ip.ttl == 64 && udp && udp.dst == 53',
                              "--ct", "new", "--ct", "new", "--ct", "new")
    policy = trace[trace.index("lr_in_policy"):trace.index("lr_in_policy_ecmp")]
    assert "priority 100" in policy and f"reg0 = {hop_a};" in policy, policy
    assert 'egress(dp="GR_eip-a"' in trace and "ct_snat(172.30.0.100)" in trace, trace[-3000:]
    plain = env.central.trace("eip-b", f'inport == "{other}_free" && eth.src == {mac_of(env, other, "free")} && '
                                         f'eth.dst == {router_mac(env, "eip-b")} && ip4.src == {free} && '
                                         f'ip4.dst == 172.30.0.254 && ip.ttl == 64 && udp && udp.dst == 53',
                              "--ct", "new", "--ct", "new", "--ct", "new")
    assert 'egress(dp="GR_eip-b"' in plain and f"ct_snat({node_ip(1)})" in plain, plain[-3000:]
    east_west = env.central.trace("eip-b", f'inport == "{team}_web" && eth.src == {mac_of(env, team, "web")} && '
                                             f'eth.dst == {router_mac(env, "eip-b")} && ip4.src == {web} && '
                                             f'ip4.dst == {db} && ip.ttl == 64 && udp && udp.dst == 53')
    assert "GR_eip-a" not in east_west and f'output to "{team}_db"' in east_west, east_west[-3000:]

    # Failover: the label moves, so does the IP and every row.
    label(env, "eip-b", True)
    label(env, "eip-a", False)
    wait_for("eip1 moved to eip-b", lambda: status(env, "eip1") == {"172.30.0.100": "eip-b"})
    env.wait_idle()
    hop_b = join_ip(env, "eip-b")
    assert reroutes(env) == {f"ip4.src == {web}": [hop_b], f"ip4.src == {db}": [hop_b]}
    assert snats(env) == {("GR_eip-b", "172.30.0.100", web), ("GR_eip-b", "172.30.0.100", db)}

    # A second object with the same IP: refused with an event; an IP no node can host: event, no rows.
    create_eip(env, "eip2", ["172.30.0.100"], {"team": "other"})
    create_eip(env, "eip3", ["10.99.0.1"], {"team": "other"})
    wait_for("conflict reported", lambda: any(r == "EgressIPConflict" for r, _ in events(env, "eip2")))
    wait_for("no node reported", lambda: any(r == "NoMatchingNodeFound" for r, _ in events(env, "eip3")))
    env.wait_idle()
    assert status(env, "eip2") == {} and status(env, "eip3") == {}
    assert f"ip4.src == {free}" not in reroutes(env)
    message = dict(events(env, "eip3"))["NoMatchingNodeFound"]
    assert message == "egress IP 10.99.0.1 is not assigned: no node has a network containing 10.99.0.1"

    # Pods joining and leaving: a new pod is served, a relabelled namespace stops being served.
    env.create_pod(team, "late", "eip-a")
    late = pod_ip(env, team, "late")
    wait_for("late pod rerouted", lambda: f"ip4.src == {late}" in reroutes(env))
    env.client.patch(NAMESPACES, team, {"metadata": {"labels": {"team": "gone"}}})
    wait_for("namespace unselected", lambda: reroutes(env) == {})
    env.wait_idle()
    assert snats(env) == set()
    env.client.patch(NAMESPACES, team, {"metadata": {"labels": {"team": "eip"}}})
    wait_for("namespace selected again", lambda: len(reroutes(env)) == 3)
    env.wait_idle()

    # A restart with nothing changed writes nothing.
    env.stop_controller()
    env.central.wait_northd()
    mark = env.central.nb.mark()
    env.start_controller(*ENABLE)
    env.wait_idle()
    assert env.central.nb.writes_since(mark) == [], "an unchanged restart must not write"

    # Deleting the object removes its rows, and the object that lost the conflict gets the IP.
    env.client.delete(EGRESSIPS, "eip1")
    wait_for("eip2 takes 172.30.0.100", lambda: status(env, "eip2") == {"172.30.0.100": "eip-b"})
    wait_for("eip1 rows gone, eip2's there",
             lambda: set(reroutes(env)) == {f"ip4.src == {free}"} and snats(env) == {("GR_eip-b", "172.30.0.100", free)})
    # The plugin off removes everything it made.
    create_eip(env, "eip4", ["172.30.0.101"], {"team": "eip"})
    wait_for("eip4 programmed", lambda: len(reroutes(env)) == 4)
    env.stop_controller()
    env.start_controller()
    env.wait_idle()
    for table, owner in (("Logical_Router_Policy", "EgressIP"), ("NAT", "EgressIP"), ("Address_Set", "EgressIP"),
                         ("Logical_Router_Policy", "EgressNoReroute"), ("Address_Set", "EgressNodeIPs")):
        assert owned(env, table, owner) == [], f"{owner} rows in {table} remain with the plugin off"
    assert "ovn_cluster_router" in env.central.nbctl("lr-list")


def mac_of(env: ClusterEnv, ns: str, pod: str) -> str:
    row = next(r for r in env.nb_rows("Logical_Switch_Port") if nb_value(r["name"]) == f"{ns}_{pod}")
    return str(nb_value(row["addresses"]).split()[0])


def router_mac(env: ClusterEnv, node: str) -> str:
    row = next(r for r in env.nb_rows("Logical_Router_Port") if nb_value(r["name"]) == f"rtos-{node}")
    return str(nb_value(row["mac"]))


def test_two_ips_on_two_nodes_reroute_over_both_and_snat_on_each(env: ClusterEnv, crd: None) -> None:
    env.start_controller(*ENABLE)
    ready_node(env, "ecmp-a", 0, labelled=True)
    ready_node(env, "ecmp-b", 1, labelled=True)
    team = namespace(env, {"team": "ecmp"})
    env.create_pod(team, "p", "ecmp-b")
    p = pod_ip(env, team, "p")
    create_eip(env, "two", ["172.30.0.100", "172.30.0.101"], {"team": "ecmp"})
    wait_for("one IP on each node", lambda: set(status(env, "two").values()) == {"ecmp-a", "ecmp-b"})
    env.wait_idle()
    held = {node: ip for ip, node in status(env, "two").items()}
    assert reroutes(env) == {f"ip4.src == {p}": sorted([join_ip(env, "ecmp-a"), join_ip(env, "ecmp-b")])}
    assert snats(env) == {("GR_ecmp-a", held["ecmp-a"], p), ("GR_ecmp-b", held["ecmp-b"], p)}
