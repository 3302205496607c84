"""EgressService against a real API server and a real NB: host, status, label, rows, ovn-trace,
bad input, failover, EgressIP alongside, zero-write restart and plugin off.

Nodes are API objects with the annotations a node agent publishes (no
kubelet), so the Service has no selector and the test writes its
EndpointSlice, as it writes ``status.loadBalancer`` in place of a
load-balancer controller. Packets are the e2e suite's job.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ovnk.core.kube.resources import ENDPOINTSLICES
from ovnk.core.kube.resources import EVENTS
from ovnk.core.kube.resources import NAMESPACES
from ovnk.core.kube.resources import NODES
from ovnk.core.kube.resources import SERVICES
from ovnk.plugins.egressip.selection import EGRESSIPS
from ovnk.plugins.egressservice.controller import EGRESSSERVICES
from tests.functional.topology.conftest import ClusterEnv
from tests.functional.topology.conftest import nb_value

pytestmark = [pytest.mark.kube, pytest.mark.ovn]

ROOT = Path(__file__).resolve().parents[4]
CRDS = (ROOT / "plugins" / "egressservice" / "crds" / "egressservices.yaml",
        ROOT / "plugins" / "egressip" / "crds" / "egressips.yaml")
ONLY = ("plugins.enabled=egressservice",)
BOTH = ("plugins.enabled=egressservice,egressip", "egressip.reachability-total-timeout=0")
EIP_ONLY = ("plugins.enabled=egressip", "egressip.reachability-total-timeout=0")
INGRESS = "172.30.0.200"
EXTERNAL = "172.30.0.254"


def wait_for(what: str, check: Callable[[], Any], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {timeout:g}s"
        time.sleep(0.2)


def set_ready(env: ClusterEnv, name: str, ready: bool) -> None:
    env.client.patch(NODES, name, {"status": {"conditions": [
        {"type": "Ready", "status": "True" if ready else "False", "reason": "Test", "message": "test",
         "lastHeartbeatTime": "2026-01-01T00:00:00Z", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}},
        subresource="status")


def labels_of(env: ClusterEnv, node: str) -> dict[str, str]:
    return dict(((env.client.get(NODES, node) or {}).get("metadata") or {}).get("labels") or {})


def pod_ip(env: ClusterEnv, ns: str, name: str) -> str:
    def annotated() -> str | None:
        for pod in env.pods(ns):
            raw = (pod["metadata"].get("annotations") or {}).get("k8s.ovn.org/pod-networks")
            if pod["metadata"]["name"] == name and raw:
                return str(json.loads(raw)["default"]["ip_addresses"][0].split("/")[0])
        return None
    return str(wait_for(f"pod {ns}/{name} annotated", annotated))


def owned(env: ClusterEnv, table: str, owner: str) -> list[dict[str, Any]]:
    rows = []
    for row in env.nb_rows(table):
        if nb_value(row["external_ids"]).get("k8s.ovn.org/owner-type") == owner:
            rows.append({k: nb_value(v) for k, v in row.items()})
    return rows


def as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


def reroutes(env: ClusterEnv, owner: str = "EgressService") -> dict[str, list[str]]:
    return {r["match"]: sorted(as_list(r["nexthops"])) for r in owned(env, "Logical_Router_Policy", owner)
            if r["action"] == "reroute"}


def served(env: ClusterEnv) -> list[str]:
    sets = owned(env, "Address_Set", "EgressService")
    assert len(sets) == 1, sets
    return sorted(str(a) for a in as_list(sets[0]["addresses"]) if a != [])


def mgmt_ip(env: ClusterEnv, node: str) -> str:
    row = next(r for r in env.nb_rows("Logical_Switch_Port") if nb_value(r["name"]) == f"k8s-{node}")
    return str(nb_value(row["addresses"]).split()[1])


def status(env: ClusterEnv, ns: str, name: str = "web") -> dict[str, Any]:
    return dict(((env.client.get(EGRESSSERVICES, name, namespace=ns) or {}).get("status")) or {})


def reasons(env: ClusterEnv, ns: str, name: str = "web") -> set[str]:
    items, _ = env.client.list(EVENTS, namespace=ns)
    return {e["reason"] for e in items if e["involvedObject"].get("name") == name
            and e["involvedObject"].get("kind") == "EgressService"}


def create_egressservice(env: ClusterEnv, ns: str, spec: dict[str, Any], name: str = "web") -> None:
    env.client.create(EGRESSSERVICES, {"apiVersion": "k8s.ovn.org/v1", "kind": "EgressService",
                                       "metadata": {"name": name, "namespace": ns}, "spec": spec}, namespace=ns)


def create_service(env: ClusterEnv, ns: str, *, type_: str = "LoadBalancer", name: str = "web") -> None:
    env.client.create(SERVICES, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
                                 "spec": {"type": type_, "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}},
                      namespace=ns)


def set_ingress(env: ClusterEnv, ns: str, ip: str, name: str = "web") -> None:
    env.client.patch(SERVICES, name, {"status": {"loadBalancer": {"ingress": [{"ip": ip}]}}}, namespace=ns,
                     subresource="status")


def set_endpoints(env: ClusterEnv, ns: str, endpoints: list[tuple[str, str]], name: str = "web") -> None:
    # The test bed's API server serves discovery.k8s.io/v1beta1 (node in topology, not nodeName).
    body = {"apiVersion": "discovery.k8s.io/v1beta1", "kind": "EndpointSlice",
            "metadata": {"name": f"{name}-1", "namespace": ns, "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": [ip], "topology": {"kubernetes.io/hostname": node},
                           "conditions": {"ready": True}} for ip, node in endpoints]}
    if env.client.get(ENDPOINTSLICES, f"{name}-1", namespace=ns) is None:
        env.client.create(ENDPOINTSLICES, body, namespace=ns)
    else:
        env.client.patch(ENDPOINTSLICES, f"{name}-1", {"endpoints": body["endpoints"]}, namespace=ns)


@pytest.fixture
def crds(env: ClusterEnv) -> Any:
    for path in CRDS:
        env.kube.kubectl("apply", "-f", str(path))
    env.kube.kubectl("wait", "--for=condition=Established", "crd/egressservices.k8s.ovn.org",
                     "crd/egressips.k8s.ovn.org", "--timeout=30s")
    yield
    for obj in env.client.list(EGRESSIPS)[0]:
        env.client.delete(EGRESSIPS, obj["metadata"]["name"])
    # The namespaces go asynchronously: leave no EgressService or slice behind for the next test.
    for resource in (EGRESSSERVICES, ENDPOINTSLICES):
        for obj in env.client.list(resource)[0]:
            if obj["metadata"]["namespace"].startswith("t-es-"):
                env.client.delete(resource, obj["metadata"]["name"], namespace=obj["metadata"]["namespace"])


def cluster(env: ClusterEnv) -> tuple[str, str, str, str]:
    """Nodes es-a and es-b (Ready), a namespace with pods a1 (es-a), b1 (es-b), free (es-b); their IPs."""
    for index, name in enumerate(("es-a", "es-b")):
        env.create_node(name, index)
        set_ready(env, name, True)
    ns = f"t-es-{uuid.uuid4().hex[:6]}"
    env.client.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace",
                                   "metadata": {"name": ns, "labels": {"team": ns}}})
    env.create_pod(ns, "a1", "es-a")
    env.create_pod(ns, "b1", "es-b")
    env.create_pod(ns, "free", "es-b")
    return ns, pod_ip(env, ns, "a1"), pod_ip(env, ns, "b1"), pod_ip(env, ns, "free")


def test_bad_input_then_host_rows_trace_failover_restart_and_plugin_off(env: ClusterEnv, crds: None) -> None:
    env.start_controller(*ONLY)
    ns, a1, b1, free = cluster(env)
    create_egressservice(env, ns, {"sourceIPBy": "LoadBalancerIP", "nodeSelector": {"matchLabels": {"egress": "yes"}}})

    # Bad input, one fix at a time: no Service, not a LoadBalancer, no ingress IP yet, no node matching.
    wait_for("ServiceNotFound", lambda: "ServiceNotFound" in reasons(env, ns))
    create_service(env, ns, type_="ClusterIP")
    wait_for("ServiceNotLoadBalancer", lambda: "ServiceNotLoadBalancer" in reasons(env, ns))
    env.client.patch(SERVICES, "web", {"spec": {"type": "LoadBalancer"}}, namespace=ns)
    wait_for("NoIngressIP", lambda: "NoIngressIP" in reasons(env, ns))
    set_endpoints(env, ns, [(a1, "es-a"), (b1, "es-b")])
    set_ingress(env, ns, INGRESS)
    wait_for("NoMatchingNodeFound", lambda: "NoMatchingNodeFound" in reasons(env, ns))
    env.wait_idle()
    condition = status(env, ns)["conditions"][0]
    assert "host" not in status(env, ns) and condition["status"] == "False"
    assert condition["message"] == "no node can host it: es-a, es-b does not match spec.nodeSelector"
    assert reroutes(env) == {} and served(env) == []
    assert not any(k.startswith("egress-service.k8s.ovn.org/") for n in ("es-a", "es-b") for k in labels_of(env, n))

    # A node matching: host, label, one policy per endpoint to its management IP, the served set.
    env.client.patch(NODES, "es-a", {"metadata": {"labels": {"egress": "yes"}}})
    label = f"egress-service.k8s.ovn.org/{ns}-web"
    wait_for("host es-a", lambda: status(env, ns).get("host") == "es-a")
    env.wait_idle()
    assert label in labels_of(env, "es-a") and label not in labels_of(env, "es-b")
    hop_a = mgmt_ip(env, "es-a")
    assert reroutes(env) == {f"ip4.src == {a1}": [hop_a], f"ip4.src == {b1}": [hop_a]}
    assert served(env) == sorted([a1, b1])
    policies = {r["external_ids"]["k8s.ovn.org/name"]: r for r in owned(env, "Logical_Router_Policy", "EgressService")}
    assert policies[f"{ns}/web"]["priority"] == 101 and policies[f"{ns}/web"]["external_ids"]["EgressSVC"] == f"{ns}/web"
    assert policies["EgressSVC-No-Reroute-Pod-To-Node"]["priority"] == 102
    no_reroute = {r["external_ids"]["k8s.ovn.org/name"] for r in owned(env, "Logical_Router_Policy", "EgressNoReroute")}
    assert no_reroute == {"EIP-No-Reroute-Pod-To-Pod", "EIP-No-Reroute-Pod-To-Join", "EIP-No-Reroute-reply-traffic"}

    # ovn-trace: the endpoint on es-b goes to es-a's management port; the other pod is not rerouted;
    # pod to pod is not rerouted either.
    env.central.wait_northd()
    trace = env.central.trace("es-b", f'inport == "{ns}_b1" && eth.src == {mac_of(env, ns, "b1")} && '
                                      f'eth.dst == {router_mac(env, "es-b")} && ip4.src == {b1} && '
                                      f'ip4.dst == {EXTERNAL} && ip.ttl == 64 && udp && udp.dst == 53')
    policy = trace[trace.index("lr_in_policy"):trace.index("lr_in_policy_ecmp")]
    assert "priority 101" in policy and f"reg0 = {hop_a};" in policy, policy
    assert 'output to "k8s-es-a"' in trace, trace[-3000:]
    plain = env.central.trace("es-b", f'inport == "{ns}_free" && eth.src == {mac_of(env, ns, "free")} && '
                                      f'eth.dst == {router_mac(env, "es-b")} && ip4.src == {free} && '
                                      f'ip4.dst == {EXTERNAL} && ip.ttl == 64 && udp && udp.dst == 53')
    assert "k8s-es-a" not in plain, plain[-3000:]
    east_west = env.central.trace("es-b", f'inport == "{ns}_b1" && eth.src == {mac_of(env, ns, "b1")} && '
                                          f'eth.dst == {router_mac(env, "es-b")} && ip4.src == {b1} && '
                                          f'ip4.dst == {a1} && ip.ttl == 64 && udp && udp.dst == 53')
    assert f'output to "{ns}_a1"' in east_west and "k8s-es-a" not in east_west, east_west[-3000:]

    # Endpoints change: a removed endpoint loses its policy and leaves the set.
    set_endpoints(env, ns, [(a1, "es-a")])
    wait_for("b1 unserved", lambda: reroutes(env) == {f"ip4.src == {a1}": [hop_a]} and served(env) == [a1])
    set_endpoints(env, ns, [(a1, "es-a"), (b1, "es-b")])
    wait_for("b1 served again", lambda: len(reroutes(env)) == 2)

    # Failover: es-b matches too, es-a goes NotReady -> es-b hosts, the label and the rows follow.
    env.client.patch(NODES, "es-b", {"metadata": {"labels": {"egress": "yes"}}})
    env.wait_idle()
    assert status(env, ns)["host"] == "es-a", "a qualifying host keeps the service"
    set_ready(env, "es-a", False)
    wait_for("host es-b", lambda: status(env, ns).get("host") == "es-b")
    env.wait_idle()
    hop_b = mgmt_ip(env, "es-b")
    assert reroutes(env) == {f"ip4.src == {a1}": [hop_b], f"ip4.src == {b1}": [hop_b]}
    assert label in labels_of(env, "es-b") and label not in labels_of(env, "es-a")
    # ... and by the selector: es-b unlabelled, es-a Ready again.
    set_ready(env, "es-a", True)
    env.client.patch(NODES, "es-b", {"metadata": {"labels": {"egress": None}}})
    wait_for("host es-a again", lambda: status(env, ns).get("host") == "es-a")
    wait_for("rows back on es-a", lambda: reroutes(env) == {f"ip4.src == {a1}": [hop_a], f"ip4.src == {b1}": [hop_a]})
    assert env.metric("ovnk_egressservice_host_moves_total") >= 2

    # sourceIPBy Network: host ALL, no reroute, no label.
    create_service(env, ns, name="db")
    create_egressservice(env, ns, {"sourceIPBy": "Network", "network": "100"}, name="db")
    set_endpoints(env, ns, [(free, "es-b")], name="db")
    wait_for("db host ALL", lambda: status(env, ns, "db").get("host") == "ALL")
    env.wait_idle()
    assert f"ip4.src == {free}" not in reroutes(env)
    assert not any(k.endswith(f"{ns}-db") for n in ("es-a", "es-b") for k in labels_of(env, n))

    # A restart with nothing changed writes nothing.
    env.stop_controller()
    env.central.wait_northd()
    mark = env.central.nb.mark()
    env.start_controller(*ONLY)
    env.wait_idle()
    assert env.central.nb.writes_since(mark) == [], "an unchanged restart must not write"

    # Deleted while the controller is down: repair removes its rows, the shared reconcile its label.
    env.stop_controller()
    env.client.delete(EGRESSSERVICES, "web", namespace=ns)
    wait_for("deleted", lambda: env.client.get(EGRESSSERVICES, "web", namespace=ns) is None)
    env.start_controller(*ONLY)
    wait_for("rows gone", lambda: reroutes(env) == {} and served(env) == [])
    wait_for("label gone", lambda: label not in labels_of(env, "es-a"))

    # Deleted while running: the same. Then plugin off removes everything it made.
    create_egressservice(env, ns, {"sourceIPBy": "LoadBalancerIP"})
    wait_for("programmed again", lambda: len(reroutes(env)) == 2)
    env.client.delete(EGRESSSERVICES, "web", namespace=ns)
    wait_for("rows gone on delete", lambda: reroutes(env) == {} and served(env) == [])
    wait_for("label gone on delete", lambda: all(label not in labels_of(env, n) for n in ("es-a", "es-b")))
    create_egressservice(env, ns, {"sourceIPBy": "LoadBalancerIP"})
    wait_for("programmed once more", lambda: len(reroutes(env)) == 2)
    wait_for("labelled once more", lambda: label in labels_of(env, "es-a"))
    env.stop_controller()
    env.start_controller()
    env.wait_idle()
    for table, owner in (("Logical_Router_Policy", "EgressService"), ("Address_Set", "EgressService"),
                         ("Logical_Router_Policy", "EgressNoReroute"), ("Address_Set", "EgressNodeIPs")):
        assert owned(env, table, owner) == [], f"{owner} rows in {table} remain with the plugin off"
    assert all(label not in labels_of(env, n) for n in ("es-a", "es-b")), "the host label goes with the plugin"
    assert labels_of(env, "es-a").get("egress") == "yes", "labels it did not write stay"


def test_with_egressip_shared_rows_once_101_beats_100_and_each_plugin_off(env: ClusterEnv, crds: None) -> None:
    env.start_controller(*BOTH)
    ns, _a1, b1, free = cluster(env)
    env.client.patch(NODES, "es-b", {"metadata": {"labels": {"k8s.ovn.org/egress-assignable": ""}}})
    env.client.create(EGRESSIPS, {"apiVersion": "k8s.ovn.org/v1", "kind": "EgressIP", "metadata": {"name": "es-eip"},
                                  "spec": {"egressIPs": ["172.30.0.150"], "namespaceSelector": {"matchLabels": {"team": ns}}}})
    create_service(env, ns)
    set_endpoints(env, ns, [(b1, "es-b")])
    set_ingress(env, ns, INGRESS)
    create_egressservice(env, ns, {"sourceIPBy": "LoadBalancerIP", "nodeSelector": {"matchLabels": {
        "kubernetes.io/hostname-test": "es-a"}}})
    env.client.patch(NODES, "es-a", {"metadata": {"labels": {"kubernetes.io/hostname-test": "es-a"}}})
    wait_for("host es-a", lambda: status(env, ns).get("host") == "es-a")
    env.wait_idle()
    wait_for("egressip rows", lambda: len(reroutes(env, "EgressIP")) == 3)
    hop_a = mgmt_ip(env, "es-a")
    assert reroutes(env) == {f"ip4.src == {b1}": [hop_a]}
    # The shared rows exist once, whoever wrote them last.
    no_reroute = [r["external_ids"]["k8s.ovn.org/name"] for r in owned(env, "Logical_Router_Policy", "EgressNoReroute")]
    assert sorted(no_reroute) == sorted({"EIP-No-Reroute-Pod-To-Pod", "EIP-No-Reroute-Pod-To-Join",
                                         "EIP-No-Reroute-reply-traffic"})
    assert len(owned(env, "Address_Set", "EgressNodeIPs")) == 1
    # Both select b1: the service's 101 wins over EgressIP's 100; free (EgressIP only) gets 100.
    env.central.wait_northd()
    trace = env.central.trace("es-b", f'inport == "{ns}_b1" && eth.src == {mac_of(env, ns, "b1")} && '
                                      f'eth.dst == {router_mac(env, "es-b")} && ip4.src == {b1} && '
                                      f'ip4.dst == {EXTERNAL} && ip.ttl == 64 && udp && udp.dst == 53')
    policy = trace[trace.index("lr_in_policy"):trace.index("lr_in_policy_ecmp")]
    assert "priority 101" in policy and f"reg0 = {hop_a};" in policy, policy
    trace_free = env.central.trace("es-b", f'inport == "{ns}_free" && eth.src == {mac_of(env, ns, "free")} && '
                                           f'eth.dst == {router_mac(env, "es-b")} && ip4.src == {free} && '
                                           f'ip4.dst == {EXTERNAL} && ip.ttl == 64 && udp && udp.dst == 53')
    policy = trace_free[trace_free.index("lr_in_policy"):trace_free.index("lr_in_policy_ecmp")]
    assert "priority 100" in policy, policy
    # Neither rewrites the other's view of the shared rows: after a restart with both on, neither commits a
    # change (counted per owner: pods of earlier tests' namespaces may still be going away in this NB).
    env.stop_controller()
    env.start_controller(*BOTH)
    env.wait_idle()
    for owner in ("EgressService", "EgressIP"):
        assert env.metric("ovnk_nb_txn_total", {"owner": owner, "result": "committed"}) == 0, owner
        assert env.metric("ovnk_nb_txn_total", {"owner": owner, "result": "unchanged"}) > 0, owner

    # EgressIP off: its rows go, the shared ones stay for EgressService.
    env.stop_controller()
    env.start_controller(*ONLY)
    env.wait_idle()
    assert reroutes(env, "EgressIP") == {} and reroutes(env) == {f"ip4.src == {b1}": [hop_a]}
    assert len(owned(env, "Logical_Router_Policy", "EgressNoReroute")) == 3
    assert len(owned(env, "Address_Set", "EgressNodeIPs")) == 1
    # EgressService off, EgressIP on: the other way round.
    env.stop_controller()
    env.start_controller(*EIP_ONLY)
    env.wait_idle()
    wait_for("egressip rows back", lambda: len(reroutes(env, "EgressIP")) == 3)
    assert reroutes(env) == {} and owned(env, "Address_Set", "EgressService") == []
    assert len(owned(env, "Logical_Router_Policy", "EgressNoReroute")) == 3


def mac_of(env: ClusterEnv, ns: str, pod: str) -> str:
    row = next(r for r in env.nb_rows("Logical_Switch_Port") if nb_value(r["name"]) == f"{ns}_{pod}")
    return str(nb_value(row["addresses"]).split()[0])


def router_mac(env: ClusterEnv, node: str) -> str:
    row = next(r for r in env.nb_rows("Logical_Router_Port") if nb_value(r["name"]) == f"rtos-{node}")
    return str(nb_value(row["mac"]))
