"""EgressFirewall against a real API server, a real NB with ovn-northd and a real DNS server.

Nodes are API objects with the annotations a node agent publishes (no
kubelet); the DNS server is a dnsmasq on loopback whose answers the test
changes. Verdicts come from ovn-trace on the logical flows northd built;
packets are the e2e suite's job.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ovnk.core.kube.resources import EVENTS
from ovnk.core.kube.resources import NAMESPACES
from ovnk.core.kube.resources import NETWORKPOLICIES
from ovnk.core.kube.resources import NODES
from ovnk.plugins.egressfirewall.selection import EGRESSFIREWALLS
from ovnk_lab.outside import Dnsmasq
from ovnk_lab.procs import free_port
from tests.functional.topology.conftest import ClusterEnv
from tests.functional.topology.conftest import nb_value
from tests.functional.topology.conftest import node_ip

pytestmark = [pytest.mark.kube, pytest.mark.ovn]

CRD = Path(__file__).resolve().parents[4] / "plugins" / "egressfirewall" / "crds" / "egressfirewalls.yaml"
APPLIED = "EgressFirewall Rules applied"
NOT_APPLIED = "EgressFirewall Rules not correctly applied"


def wait_for(what: str, check: Callable[[], Any], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {timeout:g}s (last: {value!r})"
        time.sleep(0.2)


@pytest.fixture
def crd(env: ClusterEnv) -> Iterator[None]:
    env.kube.kubectl("apply", "-f", str(CRD))
    env.kube.kubectl("wait", "--for=condition=Established", "crd/egressfirewalls.k8s.ovn.org", "--timeout=30s")
    yield
    for obj in env.client.list(EGRESSFIREWALLS)[0]:
        env.client.delete(EGRESSFIREWALLS, obj["metadata"]["name"], namespace=obj["metadata"]["namespace"])


@pytest.fixture
def dns(tmp_path: Path) -> Iterator[Dnsmasq]:
    server = Dnsmasq(tmp_path / "dns", address="127.0.0.1", port=free_port(), ttl=1)
    server.start({"www.ovnk.test": ["198.18.0.10", "198.18.0.11"], "inside.ovnk.test": ["10.244.9.9"]})
    yield server
    server.stop()


def namespace(env: ClusterEnv) -> str:
    name = f"t-ef-{uuid.uuid4().hex[:6]}"
    env.client.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    return name


def node(env: ClusterEnv, name: str, index: int, labels: dict[str, str]) -> None:
    env.create_node(name, index)
    env.client.patch(NODES, name, {"metadata": {"labels": labels, "annotations": {
        "k8s.ovn.org/host-cidrs": json.dumps([f"{node_ip(index)}/24"])}}})


def firewall(env: ClusterEnv, ns: str, rules: list[dict[str, Any]], *, name: str = "default") -> None:
    body = {"apiVersion": "k8s.ovn.org/v1", "kind": "EgressFirewall", "metadata": {"name": name, "namespace": ns},
            "spec": {"egress": rules}}
    if env.client.get(EGRESSFIREWALLS, name, namespace=ns) is None:
        env.client.create(EGRESSFIREWALLS, body, namespace=ns)
    else:
        env.client.patch(EGRESSFIREWALLS, name, {"spec": {"egress": rules}}, namespace=ns)


def status(env: ClusterEnv, ns: str, name: str = "default") -> dict[str, Any]:
    obj = env.client.get(EGRESSFIREWALLS, name, namespace=ns) or {}
    return dict(obj.get("status") or {})


def acls(env: ClusterEnv, ns: str | None = None) -> dict[int, dict[str, Any]]:
    """rule index -> row of every EgressFirewall ACL (of ``ns`` when given)."""
    found = {}
    for row in env.nb_rows("ACL"):
        ids = nb_value(row["external_ids"])
        if ids.get("k8s.ovn.org/owner-type") == "EgressFirewall" and ns in (None, ids["k8s.ovn.org/name"]):
            found[int(ids["rule-index"])] = {k: nb_value(v) for k, v in row.items()}
    return found


def dns_sets(env: ClusterEnv) -> dict[str, list[str]]:
    """DNS name -> addresses of the v4 EgressFirewallDNS sets."""
    found = {}
    for row in env.nb_rows("Address_Set"):
        ids = nb_value(row["external_ids"])
        if ids.get("k8s.ovn.org/owner-type") == "EgressFirewallDNS":
            value = nb_value(row["addresses"])
            found[ids["k8s.ovn.org/name"]] = sorted(value if isinstance(value, list) else [value])
    return found


def pod_ip(env: ClusterEnv, ns: str, name: str) -> str:
    def annotated() -> str | None:
        for pod in env.pods(ns):
            raw = (pod["metadata"].get("annotations") or {}).get("k8s.ovn.org/pod-networks")
            if pod["metadata"]["name"] == name and raw:
                return str(json.loads(raw)["default"]["ip_addresses"][0].split("/")[0])
        return None
    return str(wait_for(f"pod {ns}/{name} annotated", annotated))


def trace(env: ClusterEnv, ns: str, pod: str, node_name: str, dst: str, port: int) -> str:
    """ovn-trace of a new TCP connection from ``ns/pod`` (on ``node_name``) to ``dst:port``."""
    lsp = next(r for r in env.nb_rows("Logical_Switch_Port") if nb_value(r["name"]) == f"{ns}_{pod}")
    rtos = next(r for r in env.nb_rows("Logical_Router_Port") if nb_value(r["name"]) == f"rtos-{node_name}")
    mac, ip = str(nb_value(lsp["addresses"])).split()[:2]
    flow = (f'inport == "{ns}_{pod}" && eth.src == {mac} && eth.dst == {nb_value(rtos["mac"])} && '
            f"ip4.src == {ip} && ip4.dst == {dst} && ip.ttl == 64 && tcp && tcp.dst == {port}")
    return env.central.trace(node_name, flow, "--ct", "new", "--ct", "new", "--ct", "new")


def leaves(text: str) -> bool:
    """The traced packet left the node switch for the cluster router."""
    return 'ingress(dp="ovn_cluster_router"' in text


def last_acl_stage(text: str, stage: str) -> str:
    """The trace from the last evaluation of ACL stage ``stage`` on: ``ls_out_acl`` on OVN 23.03,
    ``ls_out_acl_eval`` (then ``ls_out_acl_action``) where the schema has ACL tiers."""
    return re.split(rf"{stage}(?:_eval)? \(", text)[-1]


def drops(verdict: str) -> bool:
    """The ACL verdict is a drop: ``drop;`` (23.03), or the drop bit ``reg8[17]`` the eval stage sets for
    the action stage (tiered pipelines)."""
    return "drop;" in verdict or "reg8[17] = 1;" in verdict


def events(env: ClusterEnv, ns: str) -> list[tuple[str, str]]:
    items, _ = env.client.list(EVENTS, namespace=ns)
    return [(e["reason"], e["message"]) for e in items if e["involvedObject"].get("kind") == "EgressFirewall"]


def test_crd_schema_rejects_what_it_can(env: ClusterEnv, crd: None) -> None:
    ns = namespace(env)
    deny = {"type": "Deny", "to": {"cidrSelector": "0.0.0.0/0"}}
    bad = [
        ("other", [deny]),
        ("default", [{"type": "Deny", "to": {"cidrSelector": "1.2.3.0/24", "dnsName": "a.example"}}]),
        ("default", [{"type": "Deny", "to": {}}]),
        ("default", [{"type": "Block", "to": {"cidrSelector": "1.2.3.0/24"}}]),
        ("default", [{"type": "Deny", "to": {"dnsName": "bad name!"}}]),
        ("default", [{**deny, "ports": [{"protocol": "TCP", "port": 0}]}]),
        ("default", [{**deny, "ports": [{"protocol": "ICMP", "port": 1}]}]),
        ("default", [deny] * 8001),
    ]
    for name, rules in bad:
        doc = {"apiVersion": "k8s.ovn.org/v1", "kind": "EgressFirewall",
               "metadata": {"name": name, "namespace": ns}, "spec": {"egress": rules}}
        with pytest.raises(Exception, match=r"(?i)invalid|Unsupported|Required|must"):
            env.kube.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))
    good = {"apiVersion": "k8s.ovn.org/v1", "kind": "EgressFirewall", "metadata": {"name": "default", "namespace": ns},
            "spec": {"egress": [{"type": "Allow", "to": {"dnsName": "www.example.com"},
                                 "ports": [{"protocol": "TCP", "port": 443}]},
                                {"type": "Allow", "to": {"nodeSelector": {"matchLabels": {"a": "b"}}}}, deny]}}
    env.kube.kubectl("apply", "-f", "-", input=yaml.safe_dump(good))


def test_rules_rows_traces_dns_nodes_status_restart_and_plugin_off(env: ClusterEnv, crd: None, dns: Dnsmasq) -> None:
    enable = ("plugins.enabled=egressfirewall", f"egressfirewall.dns-servers={dns.server}",
              "egressfirewall.dns-min-interval=1")
    # Namespaces of earlier tests on the shared API server must be gone first: one that disappears
    # while the controller is stopped below is a real change, and its restart would rightly write.
    wait_for("earlier tests' namespaces gone", lambda: not [
        ns for ns in env.client.list(NAMESPACES)[0] if (ns.get("status") or {}).get("phase") == "Terminating"],
        timeout=120)
    env.start_controller(*enable)
    node(env, "ef-a", 0, {"role": "worker"})
    node(env, "ef-b", 1, {"role": "infra"})
    team, other = namespace(env), namespace(env)
    env.create_pod(team, "web", "ef-a")
    env.create_pod(other, "peer", "ef-b")
    peer = pod_ip(env, other, "peer")
    pod_ip(env, team, "web")
    # A NetworkPolicy that allows every egress of the team: it must not override a firewall deny.
    env.client.create(NETWORKPOLICIES, {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                                        "metadata": {"name": "allow-all-egress", "namespace": team},
                                        "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]}},
                      namespace=team)
    firewall(env, team, [
        {"type": "Allow", "to": {"dnsName": "www.ovnk.test"}},
        {"type": "Allow", "to": {"cidrSelector": "198.18.0.1/32"}, "ports": [{"protocol": "TCP", "port": 80}]},
        {"type": "Allow", "to": {"nodeSelector": {"matchLabels": {"role": "infra"}}}},
        {"type": "Allow", "to": {"dnsName": "inside.ovnk.test"}},
        {"type": "Deny", "to": {"cidrSelector": "0.0.0.0/0"}},
    ])
    wait_for("status applied", lambda: status(env, team).get("status") == APPLIED)
    assert status(env, team)["messages"] == [f"global: {APPLIED}"]
    wait_for("www resolved", lambda: dns_sets(env).get("www.ovnk.test") == ["198.18.0.10", "198.18.0.11"])
    env.wait_idle()
    rows = acls(env, team)
    assert sorted(rows) == [0, 1, 2, 3, 4]
    assert [rows[i]["priority"] for i in range(5)] == [10000, 9999, 9998, 9997, 9996]
    assert [rows[i]["action"] for i in range(5)] == ["allow"] * 4 + ["drop"]
    assert all(rows[i]["direction"] == "to-lport" and rows[i]["name"] == f"EF:{team}:{i}" for i in range(5))
    if "tier" in rows[0]:  # OVN 24.03+: upstream's tier for NetworkPolicy and EgressFirewall alike
        assert {rows[i]["tier"] for i in range(5)} == {2}
    pg = next(nb_value(r["name"]) for r in env.nb_rows("Port_Group")
              if nb_value(r["external_ids"]).get("k8s.ovn.org/owner-type") == "Namespace"
              and nb_value(r["external_ids"]).get("k8s.ovn.org/name") == team)
    assert rows[1]["match"] == f"(ip4.dst == 198.18.0.1/32) && inport == @{pg} && ((tcp && ( tcp.dst == 80 )))"
    assert rows[2]["match"] == f"(ip4.dst == {node_ip(1)}) && inport == @{pg}"
    assert rows[4]["match"] == f"(ip4.dst == 0.0.0.0/0 && ip4.dst != 10.244.0.0/16) && inport == @{pg}"
    assert rows[0]["match"].startswith("(ip4.dst == $a") and rows[0]["match"].endswith(f") && inport == @{pg}")
    # A name that resolves into the cluster subnet adds nothing: pod traffic is never the firewall's.
    assert dns_sets(env)["inside.ovnk.test"] == []
    # Every ACL hangs on the namespace's port group, and nowhere else.
    groups = {nb_value(r["name"]): r for r in env.nb_rows("Port_Group")}
    members = {ref[1] for ref in (nb_value(groups[pg]["acls"]) or [])} if isinstance(
        nb_value(groups[pg]["acls"]), list) else {nb_value(groups[pg]["acls"])[1]}
    assert {rows[i]["_uuid"][1] for i in rows} <= members

    # ovn-trace: the NetworkPolicy allows all egress, the firewall still decides what leaves.
    env.central.wait_northd()
    denied = trace(env, team, "web", "ef-a", "198.18.0.99", 80)
    # northd adds 1000 to ACL priorities in the logical flows: rule 4 (9996) is flow priority 10996.
    verdict = last_acl_stage(denied, "ls_out_acl")
    assert not leaves(denied) and "ip4.dst == 0.0.0.0/0" in verdict and "priority 10996" in verdict, denied
    assert drops(verdict) and "ls_in_acl_after_lb" in denied, "the NetworkPolicy allowed it in its stage"
    assert leaves(trace(env, team, "web", "ef-a", "198.18.0.1", 80)), "allowed CIDR and port"
    assert not leaves(trace(env, team, "web", "ef-a", "198.18.0.1", 81)), "the port is not allowed"
    assert leaves(trace(env, team, "web", "ef-a", "198.18.0.10", 443)), "allowed by DNS name"
    assert leaves(trace(env, team, "web", "ef-a", node_ip(1), 22)), "allowed by node selector"
    assert not leaves(trace(env, team, "web", "ef-a", node_ip(0), 22)), "a node the selector does not pick"
    east_west = trace(env, team, "web", "ef-a", peer, 8080)
    assert f'output to "{other}_peer"' in east_west, "pod-to-pod traffic is never the firewall's"
    # A firewall allow does not undo a NetworkPolicy default deny either (the other ACL stage).
    env.client.create(NETWORKPOLICIES, {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                                        "metadata": {"name": "deny-egress", "namespace": other},
                                        "spec": {"podSelector": {}, "policyTypes": ["Egress"]}}, namespace=other)
    firewall(env, other, [{"type": "Allow", "to": {"cidrSelector": "198.18.0.0/24"}}])
    wait_for("other's firewall applied", lambda: status(env, other).get("status") == APPLIED)
    env.wait_idle()
    env.central.wait_northd()
    blocked = trace(env, other, "peer", "ef-b", "198.18.0.1", 80)
    verdict = last_acl_stage(blocked, "ls_in_acl_after_lb")
    assert not leaves(blocked) and drops(verdict) and "egress(" not in blocked, blocked

    # The DNS answer changes: the set follows within the TTL (1 s here) plus a round.
    started = time.monotonic()
    dns.set_hosts({"www.ovnk.test": ["198.18.0.12"], "inside.ovnk.test": ["10.244.9.9"]})
    wait_for("www follows its new answer", lambda: dns_sets(env).get("www.ovnk.test") == ["198.18.0.12"], timeout=15)
    assert time.monotonic() - started < 10
    # Nodes come, go and change labels: the node rule follows.
    env.client.patch(NODES, "ef-a", {"metadata": {"labels": {"role": "infra"}}})
    wait_for("both nodes allowed", lambda: acls(env, team).get(2, {}).get("match")
             == f"(ip4.dst == {node_ip(0)} || ip4.dst == {node_ip(1)}) && inport == @{pg}")
    env.client.patch(NODES, "ef-a", {"metadata": {"labels": {"role": "worker"}}})
    env.client.patch(NODES, "ef-b", {"metadata": {"labels": {"role": "worker"}}})
    wait_for("no node selected: the rule has no ACL", lambda: 2 not in acls(env, team))

    # A broken edit: reported in status and as an event; the rules in NB stay as they were.
    before = acls(env, team)
    firewall(env, team, [{"type": "Deny", "to": {"cidrSelector": "198.18.0.300/32"}}])
    wait_for("error status", lambda: status(env, team).get("status") == NOT_APPLIED)
    message = status(env, team)["messages"][0]
    assert message == (f"global: {NOT_APPLIED}: spec.egress[0].to.cidrSelector '198.18.0.300/32' is not a CIDR")
    wait_for("event", lambda: any(r == "InvalidEgressFirewall" for r, _ in events(env, team)))
    env.wait_idle()
    assert acls(env, team) == before
    # A second object with another name (the schema refuses it; if it got in, the status says why).
    firewall(env, team, [{"type": "Allow", "to": {"cidrSelector": "0.0.0.0/0"}},
                         {"type": "Allow", "to": {"dnsName": "www.ovnk.test"}},
                         {"type": "Allow", "to": {"dnsName": "nope.ovnk.test"}},
                         {"type": "Deny", "to": {"cidrSelector": "0.0.0.0/0"}}])
    wait_for("fixed", lambda: status(env, team).get("status") == APPLIED)
    wait_for("a name that does not exist is named in the status", lambda: any(
        "dnsName nope.ovnk.test does not exist (NXDOMAIN)" in m for m in status(env, team).get("messages", [])))
    wait_for("inside.ovnk.test's set is gone with its last rule", lambda: "inside.ovnk.test" not in dns_sets(env))
    env.wait_idle()
    assert sorted(acls(env, team)) == [0, 1, 2, 3]

    # A restart with nothing changed writes nothing.
    env.stop_controller()
    env.central.wait_northd()
    mark = env.central.nb.mark()
    env.start_controller(*enable)
    env.wait_idle()
    assert env.central.nb.writes_since(mark) == [], "an unchanged restart must not write"

    # Restarted while the DNS server is down: the sets keep the last answer, the status says why.
    env.stop_controller()
    hosts = {"www.ovnk.test": ["198.18.0.12"]}
    dns.stop()
    env.start_controller(*enable)
    wait_for("the failure is in the status", lambda: any(
        "dnsName www.ovnk.test cannot be resolved now" in m for m in status(env, team).get("messages", [])))
    assert dns_sets(env)["www.ovnk.test"] == ["198.18.0.12"], "a failed first resolution must not empty the set"
    dns.start(hosts)
    wait_for("resolved again", lambda: not any("www.ovnk.test" in m for m in status(env, team)["messages"]),
             timeout=60)

    # Deleted while the controller was down: repair removes the rows. Deleted while up: the reconcile does.
    env.stop_controller()
    env.client.delete(EGRESSFIREWALLS, "default", namespace=other)
    env.start_controller(*enable)
    env.wait_idle()
    assert acls(env, other) == {}
    env.client.delete(EGRESSFIREWALLS, "default", namespace=team)
    wait_for("team's ACLs and every DNS set gone", lambda: acls(env) == {} and dns_sets(env) == {})
    assert env.metric("ovnk_egressfirewall_firewalls") == 0

    # The plugin off removes everything it made (and core's namespace port groups it asked for).
    firewall(env, team, [{"type": "Allow", "to": {"dnsName": "www.ovnk.test"}}])
    wait_for("programmed again", lambda: 0 in acls(env, team) and "www.ovnk.test" in dns_sets(env))
    assert env.metric("ovnk_egressfirewall_firewalls") == 1 and env.metric("ovnk_egressfirewall_rules") == 1
    assert env.metric("ovnkube_controller_num_egress_firewalls") == 1
    assert env.metric("ovnkube_controller_num_egress_firewall_rules") == 1
    env.stop_controller()
    env.start_controller()
    env.wait_idle()
    assert acls(env) == {} and dns_sets(env) == {}
    assert not [r for r in env.nb_rows("Port_Group")
                if nb_value(r["external_ids"]).get("k8s.ovn.org/owner-type") == "Namespace"]
