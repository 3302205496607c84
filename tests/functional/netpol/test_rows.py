"""NetworkPolicy rows in a real NB, driven through a real API server (ovn-kubernetes.md §5)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from ovnk.core.kube.resources import NAMESPACES
from ovnk.core.kube.resources import PODS
from ovnk.core.ovn.ids import hashed_name
from ovnk.core.reconcile.spec import ReconcileRequest
from tests.functional.netpol.conftest import NetpolCluster
from tests.functional.netpol.conftest import as_list
from tests.functional.netpol.conftest import wait_for
from tests.functional.topology.conftest import nb_value

pytestmark = [pytest.mark.kube, pytest.mark.ovn, pytest.mark.slow]

CONTROLLER = "default-network-controller"
HAIRPIN = "169.254.0.5"


def pg_name(owner: str, *values: str) -> str:
    return hashed_name(":".join([CONTROLLER, owner, *values]))


def as_name(key: str) -> str:
    return hashed_name(f"{CONTROLLER}:PodSelector:{key}:v4")


def acls_by_id(cluster: NetpolCluster, owner: str, name: str) -> dict[str, dict[str, Any]]:
    return {r["external_ids"]["k8s.ovn.org/id"]: r for r in cluster.owned("ACL", owner, name)}


def acl_uuids_of(cluster: NetpolCluster, table: str, name: str) -> set[str]:
    for row in cluster.env.nb_rows(table):
        if nb_value(row["name"]) == name:
            return {u[1] for u in as_list(nb_value(row["acls"]))}
    raise AssertionError(f"no {table} {name}")


def addresses(cluster: NetpolCluster, name: str) -> set[str]:
    for row in cluster.env.nb_rows("Address_Set"):
        if nb_value(row["name"]) == name:
            return set(as_list(nb_value(row["addresses"])))
    raise AssertionError(f"no address set {name}")


def expected_tier(cluster: NetpolCluster) -> int | None:
    """Tier 2 (NetworkPolicy's, as upstream) where the NB schema has ACL tiers, none on OVN 23.03."""
    return 2 if cluster.central.install.acl_tiers else None


def assert_tier(cluster: NetpolCluster, acl: dict[str, Any]) -> None:
    tier = expected_tier(cluster)
    if tier is None:
        assert "tier" not in acl  # priorities alone order the ACLs
    else:
        assert acl["tier"] == tier, f"{acl['external_ids']['k8s.ovn.org/id']}: tier {acl['tier']}"


def committed(cluster: NetpolCluster, owner: str) -> float:
    return cluster.env.metric("ovnk_nb_txn_total", {"owner": owner, "result": "committed"})


def test_policy_rows_default_deny_shared_sets_and_cluster_acls(cluster: NetpolCluster) -> None:
    ns = cluster.namespace("rows", labels={"team": "rows"})
    peer = cluster.namespace("rows-peer", labels={"team": "peer"})
    cluster.pod(ns, "p1", node="np-a", labels={"app": "web"}, ports=[{"name": "http", "containerPort": 8080}])
    cluster.pod(ns, "p2", node="np-b", labels={"app": "db"})
    cluster.pod(ns, "p3", node="np-b", labels={"app": "web"}, ports=[{"name": "http", "containerPort": 8081}])
    cluster.pod(peer, "q1", node="np-a", labels={"app": "client"})
    pods = cluster.pods(ns, 3)
    q1 = cluster.pods(peer, 1)["q1"]
    spec = {"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [
        {"from": [{"podSelector": {}}], "ports": [{"port": 80}, {"port": "http"}]},
        {"from": [{"namespaceSelector": {"matchLabels": {"team": "peer"}},
                   "podSelector": {"matchLabels": {"app": "client"}}}]},
        {"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}},
                  {"ipBlock": {"cidr": "192.168.0.0/16"}}]},
    ], "egress": [{"ports": [{"protocol": "UDP", "port": 53}]}]}
    cluster.policy(ns, "web", spec)
    # A second policy with the same peer selector shares the address set.
    cluster.policy(ns, "db", {"podSelector": {"matchLabels": {"app": "db"}}, "policyTypes": ["Ingress"],
                              "ingress": [{"from": [{"podSelector": {}}]}]})
    cluster.settle()

    pg = pg_name("NetworkPolicy", f"{ns}:web")
    assert cluster.port_group_members(pg) == {f"{ns}_p1", f"{ns}_p3"}
    same_ns = as_name(f"{ns}_LS{{}}")
    from_peer = as_name("LS{ML:{team: peer,},}_LS{ML:{app: client,},}")
    assert addresses(cluster, same_ns) == {p.ip for p in pods.values()}
    assert addresses(cluster, from_peer) == {q1.ip}
    sets = cluster.owned("Address_Set", "PodSelector")
    assert {r["external_ids"]["k8s.ovn.org/name"] for r in sets} >= {f"{ns}_LS{{}}",
                                                                      "LS{ML:{team: peer,},}_LS{ML:{app: client,},}"}
    assert len([r for r in sets if r["external_ids"]["k8s.ovn.org/name"] == f"{ns}_LS{{}}"]) == 1  # shared

    p1, p3 = pods["p1"], pods["p3"]
    named = " || ".join(sorted([f"(ip4.dst == {p1.ip} && tcp.dst == 8080)", f"(ip4.dst == {p3.ip} && tcp.dst == 8081)"],
                               key=lambda t: [int(x) for x in t.split(" ")[2].split(".")]))
    hairpin_same = f"(ip4.src == {{${same_ns}}} || (ip4.src == {HAIRPIN} && ip4.dst == {{${same_ns}}}))"
    hairpin_peer = f"(ip4.src == {{${from_peer}}} || (ip4.src == {HAIRPIN} && ip4.dst == {{${from_peer}}}))"
    expected = {
        ("Ingress", "0", "-1", "tcp"): f"{hairpin_same} && tcp && tcp.dst == 80 && outport == @{pg}",
        ("Ingress", "0", "-1", "tcp-namedPort"): f"{hairpin_same} && ({named}) && outport == @{pg}",
        ("Ingress", "1", "-1", "None"): f"{hairpin_peer} && outport == @{pg}",
        # 10.0.0.0/8 without 10.1.0.0/16, and 192.168.0.0/16: positive prefixes only (issue 24 D2).
        ("Ingress", "2", "-2", "None"): ("ip4.src == {10.0.0.0/16, 10.2.0.0/15, 10.4.0.0/14, 10.8.0.0/13, "
                                         "10.16.0.0/12, 10.32.0.0/11, 10.64.0.0/10, 10.128.0.0/9, 192.168.0.0/16} "
                                         f"&& outport == @{pg}"),
        ("Egress", "0", "-1", "udp"): f"ip4 && udp && udp.dst == 53 && inport == @{pg}",
    }
    acls = acls_by_id(cluster, "NetworkPolicy", f"{ns}:web")
    assert len(acls) == len(expected)
    for (direction, gress, block, protocol), match in expected.items():
        acl = acls[f"{CONTROLLER}:NetworkPolicy:{ns}:web:{direction}:{gress}:{block}:{protocol}"]
        ext = acl["external_ids"]
        assert (ext["direction"], ext["gress-index"], ext["ip-block-index"], ext["port-policy-protocol"]) == \
            (direction, gress, block, protocol)
        assert ext["k8s.ovn.org/owner-controller"] == CONTROLLER
        assert acl["match"] == match
        assert acl["priority"] == 1001 and acl["action"] == "allow-related"
        assert acl["name"] == f"NP:{ns}:web:{direction}:{gress}"
        assert acl["log"] is False and acl["severity"] == [] and acl["meter"] == []
        assert_tier(cluster, acl)
        if direction == "Ingress":
            assert acl["direction"] == "to-lport" and acl["options"] == {}
        else:
            assert acl["direction"] == "from-lport" and acl["options"] == {"apply-after-lb": "true"}
    assert {a["_uuid"][1] for a in acls.values()} == acl_uuids_of(cluster, "Port_Group", pg)

    # Default deny: both directions for "web" (egress rules), ingress only for "db" (explicit types).
    deny_in, deny_eg = pg_name("NetpolNamespace", ns, "Ingress"), pg_name("NetpolNamespace", ns, "Egress")
    assert cluster.port_group_members(deny_in) == {f"{ns}_p1", f"{ns}_p2", f"{ns}_p3"}
    assert cluster.port_group_members(deny_eg) == {f"{ns}_p1", f"{ns}_p3"}
    deny = acls_by_id(cluster, "NetpolNamespace", ns)
    rows = {(a["external_ids"]["direction"], a["external_ids"]["type"]): a for a in deny.values()}
    assert set(rows) == {("Ingress", "defaultDeny"), ("Ingress", "arpAllow"), ("Egress", "defaultDeny"),
                         ("Egress", "arpAllow")}
    for (direction, kind), acl in rows.items():
        group = deny_in if direction == "Ingress" else deny_eg
        lport = f"outport == @{group}" if direction == "Ingress" else f"inport == @{group}"
        assert acl["name"] == f"NP:{ns}:{direction}"
        assert acl["direction"] == ("to-lport" if direction == "Ingress" else "from-lport")
        assert acl["options"] == ({} if direction == "Ingress" else {"apply-after-lb": "true"})
        if kind == "defaultDeny":
            assert (acl["priority"], acl["action"], acl["match"]) == (1000, "drop", lport)
        else:
            assert (acl["priority"], acl["action"], acl["match"]) == (1001, "allow", f"{lport} && (arp || nd)")
        assert_tier(cluster, acl)
        assert acl["_uuid"][1] in acl_uuids_of(cluster, "Port_Group", group)

    # Hairpin allow on clusterPortGroup, management-IP allow on each node switch, the logging meter.
    hairpin = acls_by_id(cluster, "NetpolDefault", "allow-hairpinning")
    assert {(a["direction"], a["match"], a["action"], a["priority"], tuple(a["options"].items()))
            for a in hairpin.values()} == {
        ("to-lport", f"ip4.src == {HAIRPIN}", "allow-related", 1001, ()),
        ("from-lport", f"ip4.src == {HAIRPIN}", "allow-related", 1001, (("apply-after-lb", "true"),)),
    }
    assert {a["_uuid"][1] for a in hairpin.values()} <= acl_uuids_of(cluster, "Port_Group",
                                                                       pg_name("Cluster", "clusterPortGroup"))
    for acl in hairpin.values():
        assert_tier(cluster, acl)
    for node in ("np-a", "np-b"):
        (node_acl,) = cluster.owned("ACL", "NetpolNode", node)
        mgmt = cluster.mgmt_ip(node)
        assert (node_acl["direction"], node_acl["match"], node_acl["action"], node_acl["priority"]) == (
            "to-lport", f"ip4.src == {mgmt}", "allow-related", 1001)
        assert node_acl["external_ids"]["ip"] == mgmt
        assert_tier(cluster, node_acl)
        assert node_acl["_uuid"][1] in acl_uuids_of(cluster, "Logical_Switch", node)
    (meter,) = cluster.owned("Meter", "NetpolDefault")
    assert (meter["name"], meter["unit"], meter["fair"]) == ("acl-logging", "pktps", True)
    (band,) = [r for r in cluster.env.nb_rows("Meter_Band") if nb_value(r["_uuid"]) == meter["bands"]]
    assert (nb_value(band["action"]), nb_value(band["rate"])) == ("drop", 20)

    # Reconciling every key again writes nothing.
    before = cluster.snapshot()
    rt = cluster.runtime
    counts = {o: committed(cluster, o) for o in ("NetworkPolicy", "NetpolNamespace", "PodSelector", "NetpolDefault")}
    for key in (f"{ns}/web", f"{ns}/db"):
        rt.policies.reconcile(ReconcileRequest(key=key))
    rt.namespaces.reconcile(ReconcileRequest(key=ns))
    for key in rt.selection.peer_keys():
        rt.address_sets.reconcile(ReconcileRequest(key=key))
    rt.cluster.reconcile(ReconcileRequest(key="cluster"))
    assert {o: committed(cluster, o) for o in counts} == counts
    assert cluster.snapshot() == before


def test_policy_types_empty_rules_and_empty_selectors(cluster: NetpolCluster) -> None:
    ns = cluster.namespace("types")
    cluster.pod(ns, "p1", node="np-a", labels={"app": "x"})
    cluster.pods(ns, 1)
    # Explicit Egress only: the ingress rule is ignored, only the egress default deny exists.
    cluster.policy(ns, "egress-only", {"podSelector": {}, "policyTypes": ["Egress"],
                                       "ingress": [{"from": [{"podSelector": {}}]}],
                                       "egress": [{"to": [{"namespaceSelector": {}}]}]})
    # Empty rule: allow from everywhere on every port.
    cluster.policy(ns, "allow-all", {"podSelector": {"matchLabels": {"app": "x"}}, "ingress": [{}]})
    cluster.settle()
    eg = acls_by_id(cluster, "NetworkPolicy", f"{ns}:egress-only")
    all_namespaces = as_name("LS{}_nil")
    assert {a["match"] for a in eg.values()} == {
        f"(ip4.dst == {{${all_namespaces}}} || (ip4.dst == {HAIRPIN} && ip4.src == {{${all_namespaces}}})) "
        f"&& inport == @{pg_name('NetworkPolicy', f'{ns}:egress-only')}"}
    annotated = set()
    for pod in cluster.client.list(PODS)[0]:
        raw = (pod["metadata"].get("annotations") or {}).get("k8s.ovn.org/pod-networks")
        if raw and pod["spec"].get("nodeName") and not pod["spec"].get("hostNetwork"):
            annotated.add(json.loads(raw)["default"]["ip_addresses"][0].split("/")[0])
    assert addresses(cluster, all_namespaces) == annotated
    allow = acls_by_id(cluster, "NetworkPolicy", f"{ns}:allow-all")
    ((acl_id, acl),) = allow.items()
    assert acl_id.endswith(":Ingress:0:-1:None")
    assert acl["match"] == f"ip4 && outport == @{pg_name('NetworkPolicy', f'{ns}:allow-all')}"
    directions = {r["external_ids"]["direction"] for r in cluster.owned("Port_Group", "NetpolNamespace", ns)}
    assert directions == {"Ingress", "Egress"}
    cluster.delete_policy(ns, "allow-all")
    cluster.settle()
    directions = {r["external_ids"]["direction"] for r in cluster.owned("Port_Group", "NetpolNamespace", ns)}
    assert directions == {"Egress"}
    cluster.delete_policy(ns, "egress-only")
    cluster.settle()
    assert cluster.owned("Port_Group", "NetpolNamespace", ns) == []
    assert cluster.owned("Port_Group", "NetworkPolicy", f"{ns}:egress-only") == []
    assert cluster.owned("ACL", "NetworkPolicy", f"{ns}:egress-only") == []
    assert not [r for r in cluster.owned("Address_Set", "PodSelector") if r["name"] == all_namespaces]


def changed_rows(before: dict[str, dict[str, str]], after: dict[str, dict[str, str]]) -> set[str]:
    """``table:name`` (or uuid) of rows created, deleted or modified between two snapshots."""
    def label(row: dict[str, str]) -> str:
        return row["__label__"]
    changed = {label(before[k]) for k in before.keys() - after.keys()} | {label(after[k]) for k in after.keys() - before.keys()}
    changed |= {label(after[k]) for k in before.keys() & after.keys() if before[k] != after[k]}
    return changed


def test_label_changes_touch_only_the_sets_and_groups_they_affect(cluster: NetpolCluster) -> None:
    ns = cluster.namespace("incr")
    other = cluster.namespace("incr-other", labels={"team": "other"})
    cluster.pod(ns, "p1", node="np-a", labels={"app": "a"})
    cluster.pod(ns, "p2", node="np-b", labels={"app": "b"})
    cluster.pod(ns, "p3", node="np-a", labels={"app": "a", "env": "prod"})
    cluster.pod(other, "o1", node="np-b")
    cluster.pods(ns, 3)
    cluster.pods(other, 1)
    cluster.policy(ns, "pa", {"podSelector": {"matchLabels": {"app": "a"}},
                              "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "x"}}}]}]})
    cluster.policy(ns, "pb", {"podSelector": {"matchLabels": {"app": "b"}},
                              "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "b"}}}]}]})
    cluster.policy(ns, "pc", {"podSelector": {"matchLabels": {"env": "prod"}}, "policyTypes": ["Egress"],
                              "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"team": "other"}}}]}]})
    cluster.settle()
    pa, pb = pg_name("NetworkPolicy", f"{ns}:pa"), pg_name("NetworkPolicy", f"{ns}:pb")
    set_b, set_other = as_name(f"{ns}_LS{{ML:{{app: b,}},}}"), as_name("LS{ML:{team: other,},}_nil")
    assert cluster.port_group_members(pb) == {f"{ns}_p2"}
    assert len(addresses(cluster, set_b)) == 1 and len(addresses(cluster, set_other)) == 1

    before = cluster.snapshot()
    owners = ("NetworkPolicy", "NetpolNamespace", "PodSelector", "NetpolDefault", "Pod")
    counts = {o: committed(cluster, o) for o in owners}
    cluster.label_pod(ns, "p2", {"app": "a"})
    wait_for("p2 moved to pa", lambda: cluster.port_group_members(pa) == {f"{ns}_p1", f"{ns}_p2", f"{ns}_p3"})
    cluster.settle()
    assert changed_rows(before, cluster.snapshot()) == {f"Port_Group:{pa}", f"Port_Group:{pb}", f"Address_Set:{set_b}"}
    assert cluster.port_group_members(pb) == set() and addresses(cluster, set_b) == set()
    commits = {o: committed(cluster, o) - counts[o] for o in owners}
    # p2 joins pa's group in the pod's own transaction or in pa's, whichever commits it first.
    assert commits["NetworkPolicy"] + commits["Pod"] == 2 and commits["NetworkPolicy"] >= 1
    assert {o: commits[o] for o in ("NetpolNamespace", "PodSelector", "NetpolDefault")} == {
        "NetpolNamespace": 0, "PodSelector": 1, "NetpolDefault": 0}

    # A namespace label change touches only the address sets whose namespace selector it affects.
    before = cluster.snapshot()
    cluster.label_namespace(other, {"team": "none"})
    wait_for("set emptied", lambda: addresses(cluster, set_other) == set())
    cluster.settle()
    assert changed_rows(before, cluster.snapshot()) == {f"Address_Set:{set_other}"}


def test_acl_logging_follows_the_namespace_annotation(cluster: NetpolCluster) -> None:
    ns = cluster.namespace("logging")
    cluster.pod(ns, "p1", node="np-a")
    cluster.pods(ns, 1)
    cluster.policy(ns, "allow", {"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]})
    cluster.settle()

    def levels() -> dict[tuple[str, str], tuple[bool, Any, Any]]:
        result = {}
        for acl in cluster.owned("ACL", "NetworkPolicy", f"{ns}:allow") + cluster.owned("ACL", "NetpolNamespace", ns):
            kind = acl["external_ids"].get("type", "policy")
            result[(acl["external_ids"]["direction"], kind)] = (acl["log"], acl["severity"] or None, acl["meter"] or None)
        return result

    assert set(levels().values()) == {(False, None, None)}
    cluster.annotate_namespace(ns, {"k8s.ovn.org/acl-logging": json.dumps({"deny": "alert", "allow": "notice"})})
    wait_for("logging on", lambda: levels()[("Ingress", "policy")][0])
    cluster.settle()
    assert levels() == {
        ("Ingress", "policy"): (True, "notice", "acl-logging"),
        ("Ingress", "defaultDeny"): (True, "alert", "acl-logging"),
        ("Ingress", "arpAllow"): (False, None, None),
    }
    cluster.annotate_namespace(ns, {"k8s.ovn.org/acl-logging": "{not json"})
    # Events about a Namespace (cluster-scoped) live in "default".
    wait_for("invalid annotation reported", lambda: [e for e in cluster.events("default", "InvalidAclLogging")
                                                     if e["involvedObject"]["name"] == ns])
    cluster.settle()
    assert set(levels().values()) == {(False, None, None)}
    cluster.annotate_namespace(ns, {"k8s.ovn.org/acl-logging": json.dumps({"deny": "warning"})})
    wait_for("deny logging", lambda: levels()[("Ingress", "defaultDeny")] == (True, "warning", "acl-logging"))
    cluster.annotate_namespace(ns, {"k8s.ovn.org/acl-logging": None})
    wait_for("logging off", lambda: set(levels().values()) == {(False, None, None)})


def invalid(ns: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": ns, "resourceVersion": "1", "uid": f"uid-{name}"}, "spec": spec}


def test_invalid_policies_are_reported_and_do_not_block_others(cluster: NetpolCluster) -> None:
    ns = cluster.namespace("invalid")
    cluster.pod(ns, "p1", node="np-a", labels={"app": "bad"})
    cluster.pod(ns, "p2", node="np-b", labels={"app": "good"})
    cluster.pods(ns, 2)
    bad = {
        "bad-cidr": ({"ipBlock": {"cidr": "10.0.0.0/33"}}, [], "not a valid CIDR"),
        "bad-except": ({"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.1.0.0/24"]}}, [], "outside cidr"),
        "bad-protocol": ({"podSelector": {}}, [{"protocol": "ICMP", "port": 1}], "protocol 'ICMP'"),
        "bad-range": ({"podSelector": {}}, [{"port": 2000, "endPort": 1000}], "endPort 1000 is below port 2000"),
    }
    # The API server validates these fields (and 1.20 prunes endPort): deliver them like a watch would.
    for name, (peer, ports, _) in bad.items():
        cluster.inject_policy(invalid(ns, name, {"podSelector": {"matchLabels": {"app": "bad"}},
                                                 "ingress": [{"from": [peer], "ports": ports}]}))
    cluster.policy(ns, "good", {"podSelector": {"matchLabels": {"app": "good"}},
                                "ingress": [{"from": [{"podSelector": {}}]}]})
    cluster.settle()
    for name, (_, _, message) in bad.items():
        events = [e for e in cluster.events(ns, "InvalidNetworkPolicy") if e["involvedObject"]["name"] == name]
        assert events and message in events[0]["message"] and events[0]["type"] == "Warning", (name, events)
        assert cluster.owned("Port_Group", "NetworkPolicy", f"{ns}:{name}") == []
    assert cluster.port_group_members(pg_name("NetworkPolicy", f"{ns}:good")) == {f"{ns}_p2"}
    assert cluster.owned("ACL", "NetworkPolicy", f"{ns}:good")
    # Pods an invalid policy selects stay isolated (fail closed).
    assert cluster.port_group_members(pg_name("NetpolNamespace", ns, "Ingress")) == {f"{ns}_p1", f"{ns}_p2"}
    assert cluster.env.metric("ovnk_controller_final_failures_total", {"controller": "netpol-policies"}) >= len(bad)
    # Later policies are still served.
    cluster.policy(ns, "later", {"podSelector": {"matchLabels": {"app": "bad"}}, "ingress": [{}]})
    wait_for("later programmed", lambda: cluster.owned("ACL", "NetworkPolicy", f"{ns}:later"))
    for name in bad:
        cluster.remove_injected_policy(ns, name)


def test_end_port_rows_from_a_model_the_api_server_would_prune(cluster: NetpolCluster) -> None:
    ns = cluster.namespace("endport")
    cluster.pod(ns, "p1", node="np-a")
    cluster.pods(ns, 1)
    cluster.inject_policy(invalid(ns, "range", {"podSelector": {}, "ingress": [{"ports": [
        {"protocol": "TCP", "port": 1000, "endPort": 2000}, {"protocol": "TCP", "port": 80},
        {"protocol": "UDP", "port": 5000, "endPort": 5000}]}]}))
    cluster.settle()
    pg = pg_name("NetworkPolicy", f"{ns}:range")
    matches = {a["external_ids"]["port-policy-protocol"]: a["match"]
               for a in cluster.owned("ACL", "NetworkPolicy", f"{ns}:range")}
    assert matches == {"tcp": f"ip4 && tcp && (tcp.dst == 80 || 1000<=tcp.dst<=2000) && outport == @{pg}",
                       "udp": f"ip4 && udp && udp.dst == 5000 && outport == @{pg}"}
    cluster.remove_injected_policy(ns, "range")
    cluster.settle()
    assert cluster.owned("ACL", "NetworkPolicy", f"{ns}:range") == []


def test_repair_removes_rows_of_what_vanished_while_down_and_restart_writes_nothing(cluster: NetpolCluster) -> None:
    ns = cluster.namespace("repair")
    gone_ns = cluster.namespace("repair-gone")
    for namespace in (ns, gone_ns):
        cluster.pod(namespace, "p1", node="np-a", labels={"app": "x"})
        cluster.pods(namespace, 1)
    cluster.policy(ns, "keep", {"podSelector": {}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"k": "v"}}}]}]})
    cluster.policy(ns, "gone", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"],
                                "egress": [{"to": [{"podSelector": {"matchLabels": {"gone": "yes"}}}]}]})
    cluster.policy(gone_ns, "other", {"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]})
    cluster.settle()
    gone_set = as_name(f"{ns}_LS{{ML:{{gone: yes,}},}}")
    assert addresses(cluster, gone_set) == set()
    cluster.env.stop_controller()

    cluster.delete_policy(ns, "gone")
    cluster.delete_policy(gone_ns, "other")
    cluster.client.delete(PODS, "p1", namespace=gone_ns, grace_period_seconds=0)
    cluster.client.delete(NAMESPACES, gone_ns)
    cluster.env.start_controller()
    cluster.settle()
    assert cluster.owned("Port_Group", "NetworkPolicy", f"{ns}:gone") == []
    assert cluster.owned("ACL", "NetworkPolicy", f"{ns}:gone") == []
    assert cluster.owned("Port_Group", "NetworkPolicy", f"{ns}:keep")
    assert {r["external_ids"]["direction"] for r in cluster.owned("Port_Group", "NetpolNamespace", ns)} == {"Ingress"}
    assert cluster.owned("Port_Group", "NetpolNamespace", gone_ns) == []
    assert cluster.owned("ACL", "NetpolNamespace", gone_ns) == []
    assert not [r for r in cluster.owned("Address_Set", "PodSelector") if r["name"] == gone_set]
    assert cluster.owned("Address_Set", "PodSelector", f"{ns}_LS{{ML:{{k: v,}},}}")

    # A restart with nothing changed writes nothing at all.
    before = cluster.snapshot()
    cluster.env.stop_controller()
    started = time.monotonic()
    cluster.env.start_controller()
    cluster.settle()
    for owner in ("NetworkPolicy", "NetpolNamespace", "PodSelector", "NetpolDefault", "repair"):
        assert committed(cluster, owner) == 0, owner
    assert cluster.snapshot() == before
    assert time.monotonic() - started < 60


def test_acls_from_before_tiers_move_to_tier_2_when_the_controller_starts(cluster: NetpolCluster) -> None:
    """An OVN upgrade from 23.03 converts the NB database: ACLs written without a tier get the
    column's default, tier 0, where they would be evaluated before admin network policies (tier 1).
    The controller's start-up reconcile moves every NetworkPolicy ACL to tier 2."""
    if expected_tier(cluster) is None:
        pytest.skip(f"{cluster.central.install.label} has no ACL tiers (tests/functional/netpol/test_ovn_23_03.py)")
    ns = cluster.namespace("tiers")
    cluster.pod(ns, "p1", node="np-a", labels={"app": "web"})
    cluster.pods(ns, 1)
    cluster.policy(ns, "web", {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress", "Egress"],
                               "ingress": [{"from": [{"podSelector": {}}]}], "egress": [{"ports": [{"port": 53}]}]})
    cluster.settle()
    cluster.env.stop_controller()
    ours = [acl for owner in ("NetworkPolicy", "NetpolNamespace", "NetpolDefault", "NetpolNode")
            for acl in cluster.owned("ACL", owner)]
    assert len(ours) >= 7 and {acl["tier"] for acl in ours} == {2}
    for acl in ours:
        cluster.central.nbctl("set", "ACL", acl["_uuid"][1], "tier=0")
    cluster.env.start_controller()
    cluster.settle()
    tiers = {acl["_uuid"][1]: acl["tier"] for owner in ("NetworkPolicy", "NetpolNamespace", "NetpolDefault", "NetpolNode")
             for acl in cluster.owned("ACL", owner)}
    assert {tiers[acl["_uuid"][1]] for acl in ours} == {2}
