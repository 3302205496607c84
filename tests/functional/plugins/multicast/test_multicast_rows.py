"""Multicast against a real API server and a real NB/SB: rows for each case, ovn-trace verdicts, repair,
an unchanged restart, settings, and the plugin switched off.

Nodes are API objects with the annotations a node agent publishes and pods are
created with ``spec.nodeName`` (no kubelet, no ovn-controller). The groups
ovn-controller would learn from IGMP reports are written into the Southbound
``IGMP_Group`` table by the test (with the chassis they name), so ovn-northd
builds the multicast groups and ``ovn-trace`` follows a datagram to its
receivers. Real packets are the e2e suite's job.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from ovnk.core.kube.resources import EVENTS
from ovnk.core.kube.resources import NAMESPACES
from ovnk.core.ovn.ids import hashed_name
from tests.functional.topology.conftest import ClusterEnv
from tests.functional.topology.conftest import nb_value

pytestmark = [pytest.mark.kube, pytest.mark.ovn]

ENABLE = ("plugins.enabled=multicast",)
ANNOTATION = "k8s.ovn.org/multicast-enabled"
CONTROLLER = "default-network-controller"
MULTICAST = "(ip4.mcast || mldv1 || mldv2 || (ip6.dst[120..127] == 0xff && ip6.dst[116] == 1))"
GROUP = "239.1.1.1"


def wait_for(what: str, check: Callable[[], Any], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {timeout:g}s"
        time.sleep(0.2)


def namespace(env: ClusterEnv, value: str | None) -> str:
    name = f"t-mc-{uuid.uuid4().hex[:6]}"
    annotations = {ANNOTATION: value} if value is not None else {}
    env.client.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace",
                                   "metadata": {"name": name, "annotations": annotations}})
    return name


def annotate(env: ClusterEnv, ns: str, value: str | None) -> None:
    env.client.patch(NAMESPACES, ns, {"metadata": {"annotations": {ANNOTATION: value}}})


def rows(env: ClusterEnv, table: str) -> list[dict[str, Any]]:
    return [{k: nb_value(v) for k, v in row.items()} for row in env.nb_rows(table)]


def owned(env: ClusterEnv, table: str, owner: str) -> list[dict[str, Any]]:
    return [r for r in rows(env, table) if r["external_ids"].get("k8s.ovn.org/owner-type") == owner]


def as_list(value: Any) -> list[Any]:
    """An OVSDB set column: one element comes back bare, several as a list."""
    return list(value) if isinstance(value, list) else [value]


def uuid_of(value: Any) -> str:
    return str(value[1]) if isinstance(value, tuple) else str(value)


def pg_name(role: str) -> str:
    return hashed_name(f"{CONTROLLER}:Cluster:{role}")


def ns_pg(ns: str) -> str:
    return hashed_name(f"{CONTROLLER}:Namespace:{ns}")


def ns_set(ns: str) -> str:
    return hashed_name(f"{CONTROLLER}:Namespace:{ns}:v4")


def acls_by_group(env: ClusterEnv) -> dict[str, set[str]]:
    """Port group name -> uuids of its ACLs."""
    return {str(pg["name"]): {uuid_of(a) for a in as_list(pg["acls"]) if a} for pg in rows(env, "Port_Group")}


def switch_config(env: ClusterEnv, switch: str) -> dict[str, str]:
    row = next(r for r in rows(env, "Logical_Switch") if r["name"] == switch)
    return dict(row["other_config"])


def router_options(env: ClusterEnv) -> dict[str, str]:
    return dict(next(r for r in rows(env, "Logical_Router") if r["name"] == "ovn_cluster_router")["options"])


def port_of(env: ClusterEnv, ns: str, pod: str) -> dict[str, Any]:
    return next(r for r in rows(env, "Logical_Switch_Port") if r["name"] == f"{ns}_{pod}")


def ns_acls(env: ClusterEnv) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["external_ids"]["k8s.ovn.org/name"], r["external_ids"]["direction"]): r
            for r in owned(env, "ACL", "MulticastNS")}


def events(env: ClusterEnv, ns: str) -> list[tuple[str, str]]:
    """Events about namespace ``ns`` (a cluster-scoped object: they live in ``default``)."""
    items, _ = env.client.list(EVENTS, namespace="default")
    return [(e["reason"], e["message"]) for e in items if e["involvedObject"].get("name") == ns]


def mcast_keys(config: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in config.items() if k.startswith("mcast_")}


def learn(env: ClusterEnv, node: str, members: list[str]) -> None:
    """What ovn-controller of ``node`` writes after IGMP reports of ``members`` (logical ports) for GROUP."""
    chassis = env.chassis[node]
    if not env.central.sbctl("--bare", "--columns=_uuid", "find", "Chassis", f"name={chassis}").strip():
        # Encap (type, ip) is unique: one loopback address per chassis.
        env.central.sbctl("chassis-add", chassis, "geneve", f"127.0.0.{10 + list(env.chassis).index(node)}")
    chassis_uuid = env.central.sbctl("--bare", "--columns=_uuid", "find", "Chassis", f"name={chassis}").strip()
    datapath = env.central.sbctl("--bare", "--columns=_uuid", "find", "Datapath_Binding",
                                 f"external_ids:name={node}").strip()
    ports = [env.central.sbctl("--bare", "--columns=_uuid", "find", "Port_Binding", f"logical_port={p}").strip()
             for p in members]
    env.central.sbctl("create", "IGMP_Group", f"address={GROUP}", f"datapath={datapath}",
                      f"chassis={chassis_uuid}", f"ports=[{','.join(ports)}]")


def mac_and_ip(env: ClusterEnv, ns: str, pod: str) -> tuple[str, str]:
    mac, ip = str(port_of(env, ns, pod)["addresses"]).split()[:2]
    return mac, ip


def test_rows_traces_repair_restart_and_plugin_off(env: ClusterEnv, run_cli: Callable[..., Any]) -> None:
    env.start_controller(*ENABLE)
    env.create_node("mc-a", 0)
    env.create_node("mc-b", 1)
    on = namespace(env, "true")
    off = namespace(env, None)
    bad = namespace(env, "yes")
    for ns, pod, node in ((on, "sender", "mc-a"), (on, "near", "mc-a"), (on, "far", "mc-b"),
                          (off, "other", "mc-a"), (bad, "typo", "mc-b")):
        env.create_pod(ns, pod, node)
    wait_for("pod ports", lambda: len([r for r in rows(env, "Logical_Switch_Port") if "_" in str(r["name"])
                                       and str(r["name"]).startswith("t-mc-")]) == 5)
    env.wait_idle()

    # The cluster router relays; node switches snoop and query from their router port's MAC and .1.
    assert router_options(env).get("mcast_relay") == "true"
    for node, index in (("mc-a", 0), ("mc-b", 1)):
        rtos = next(r for r in rows(env, "Logical_Router_Port") if r["name"] == f"rtos-{node}")
        gateway = str(rtos["networks"]).split("/")[0]
        assert mcast_keys(switch_config(env, node)) == {
            "mcast_snoop": "true", "mcast_querier": "true", "mcast_eth_src": rtos["mac"], "mcast_ip4_src": gateway,
        }, f"node {node} (index {index})"

    # Cluster ACLs: deny all multicast on clusterPortGroup, allow it on the router ports' group.
    tier = "tier" in rows(env, "ACL")[0]
    cluster = {(r["external_ids"]["type"], r["external_ids"]["direction"]): r for r in owned(env, "ACL", "MulticastCluster")}
    assert set(cluster) == {("DefaultDeny", "Egress"), ("DefaultDeny", "Ingress"),
                            ("AllowInterNode", "Egress"), ("AllowInterNode", "Ingress")}
    rtr, all_pods = pg_name("clusterRtrPortGroup"), pg_name("clusterPortGroup")
    expected = {
        ("DefaultDeny", "Egress"): ("from-lport", 1011, "drop", MULTICAST, {"apply-after-lb": "true"}),
        ("DefaultDeny", "Ingress"): ("to-lport", 1011, "drop", MULTICAST, {}),
        ("AllowInterNode", "Egress"): ("from-lport", 1012, "allow", f"inport == @{rtr} && {MULTICAST}",
                                       {"apply-after-lb": "true"}),
        ("AllowInterNode", "Ingress"): ("to-lport", 1012, "allow", f"outport == @{rtr} && {MULTICAST}", {}),
    }
    groups = acls_by_group(env)
    for key, (direction, priority, action, match, options) in expected.items():
        acl = cluster[key]
        assert (acl["direction"], acl["priority"], acl["action"], acl["match"], dict(acl["options"])) == \
            (direction, priority, action, match, options), key
        assert acl["external_ids"]["k8s.ovn.org/id"] == f"{CONTROLLER}:MulticastCluster:{key[0]}:{key[1]}"
        assert acl["_uuid"][1] in groups[all_pods if key[0] == "DefaultDeny" else rtr], key
        if tier:
            assert acl["tier"] == 2

    # Namespace ACLs: only the annotated namespace, on its port group, naming its address set.
    acls = ns_acls(env)
    assert set(acls) == {(on, "Egress"), (on, "Ingress")}
    assert acls[(on, "Egress")]["match"] == f"inport == @{ns_pg(on)} && ip4.mcast"
    assert acls[(on, "Ingress")]["match"] == f"outport == @{ns_pg(on)} && (igmp || (ip4.src == ${ns_set(on)} && ip4.mcast))"
    assert all(a["priority"] == 1012 and a["action"] == "allow" for a in acls.values())
    assert {a["_uuid"][1] for a in acls.values()} <= groups[ns_pg(on)]
    members = next(pg for pg in rows(env, "Port_Group") if pg["name"] == ns_pg(on))["ports"]
    assert {uuid_of(p) for p in as_list(members)} == {port_of(env, on, p)["_uuid"][1] for p in ("sender", "near", "far")}
    assert env.metric("ovnk_multicast_enabled_namespaces") == 1
    # A value that is not "true"/"false": disabled, and said so.
    wait_for("invalid annotation reported", lambda: any(r == "InvalidMulticastAnnotation" for r, _ in events(env, bad)))
    assert dict(events(env, bad))["InvalidMulticastAnnotation"] == (
        "annotation k8s.ovn.org/multicast-enabled='yes' is not \"true\" or \"false\"; "
        "multicast stays disabled in this namespace")

    # ovn-trace: IGMP reports. The enabled namespace's report passes its ACLs and reaches the
    # switch's IGMP snooping (the "igmp" action); the other namespace's is dropped by the default deny.
    env.central.wait_northd()
    allowed = report(env, on, "sender")
    assert acl_hits(allowed) == [2012] and "igmp;" in stage(allowed, "ls_in_l2_lkup"), allowed
    dropped = report(env, off, "other")
    # (OVN 23.03 prints the ACL's "drop;"; with tiers the action stage ends the pipeline.)
    assert acl_hits(dropped) == [2011] and "ls_in_l2_lkup" not in dropped, dropped

    # A datagram to GROUP once the ovn-controllers learnt members: "near" (same node), "far" (the
    # other node, through the cluster router's relay) and, as if it had joined, the other namespace's
    # pod. "typo" never joined: snooping sends it nothing.
    learn(env, "mc-a", [f"{on}_near", f"{off}_other"])
    learn(env, "mc-b", [f"{on}_far"])
    env.central.wait_northd()
    trace = wait_for("northd built the groups", lambda: (t := datagram(env, on, "sender")) and f"{on}_far" in t and t)
    assert delivered(trace) == {f"{on}_near", f"{on}_far"}, trace
    assert "ovn_cluster_router" in trace and "ip.ttl--" in trace  # relayed by the router
    assert egress_verdict(trace, f"{off}_other") == "drop", trace
    assert f"{bad}_typo" not in trace
    # What OVN learnt, in Kubernetes terms.
    result = run_cli("--sb-address", env.central.sb_address, "multicast", "groups")
    assert result.exit_code == 0, result.output
    first, second = sorted([f"{on}/near", f"{off}/other"])  # members of a node by pod name
    assert result.output.splitlines() == [f"{GROUP}  mc-a  {first}", f"           mc-a  {second}",
                                          f"           mc-b  {on}/far"], result.output
    result = run_cli("--sb-address", env.central.sb_address, "multicast", "groups", "--json")
    assert json.loads(result.output) == {GROUP: [
        {"node": "mc-a", "pod": first, "port": first.replace("/", "_")},
        {"node": "mc-a", "pod": second, "port": second.replace("/", "_")},
        {"node": "mc-b", "pod": f"{on}/far", "port": f"{on}_far"}]}
    # The other namespace's pod sends nothing anywhere (its datagram is dropped on the way in).
    foreign = datagram(env, off, "other")
    assert delivered(foreign) == set() and acl_hits(foreign) == [2011], foreign

    # The annotation removed: the namespace's ACLs go (its port group stays, core's), sends are dropped.
    annotate(env, on, None)
    wait_for("namespace ACLs removed", lambda: ns_acls(env) == {})
    env.wait_idle()
    env.central.wait_northd()
    assert delivered(datagram(env, on, "sender")) == set()
    assert ns_pg(on) in acls_by_group(env)
    annotate(env, on, "true")
    wait_for("namespace ACLs back", lambda: set(ns_acls(env)) == {(on, "Egress"), (on, "Ingress")})

    # Repair: changes made while no controller ran are found at start.
    env.wait_idle()
    env.stop_controller()
    annotate(env, on, "false")
    annotate(env, bad, "true")
    env.client.delete(NAMESPACES, off)
    env.start_controller(*ENABLE)
    env.wait_idle()
    assert set(ns_acls(env)) == {(bad, "Egress"), (bad, "Ingress")}
    annotate(env, on, "true")
    wait_for("namespace ACLs back", lambda: len(ns_acls(env)) == 4)
    env.wait_idle()

    # A restart with nothing changed writes nothing.
    env.stop_controller()
    env.central.wait_northd()
    mark = env.central.nb.mark()
    env.start_controller(*ENABLE)
    env.wait_idle()
    assert env.central.nb.writes_since(mark) == [], "an unchanged restart must not write"

    # Settings: the snooping timers land on every node switch.
    env.stop_controller()
    env.start_controller(*ENABLE, "multicast.idle-timeout=120", "multicast.query-interval=30")
    env.wait_idle()
    for node in ("mc-a", "mc-b"):
        config = switch_config(env, node)
        assert (config["mcast_idle_timeout"], config["mcast_query_interval"]) == ("120", "30")

    # The plugin off: every multicast row, switch key and router option goes; core's rows stay.
    env.stop_controller()
    env.start_controller()
    env.wait_idle()
    assert owned(env, "ACL", "MulticastCluster") == [] and owned(env, "ACL", "MulticastNS") == []
    assert "mcast_relay" not in router_options(env)
    assert router_options(env)["always_learn_from_arp_request"] == "false"
    for node in ("mc-a", "mc-b"):
        config = switch_config(env, node)
        assert mcast_keys(config) == {} and config["subnet"], config
    assert not any(pg["name"] in (ns_pg(on), ns_pg(bad)) for pg in rows(env, "Port_Group")), \
        "no plugin needs namespace port groups any more"
    assert len(owned(env, "ACL", "NetpolDefault")) == 2, "other ACLs on the cluster port groups stay"


def acl_hits(trace: str) -> list[int]:
    """Priorities of the ACL flows a packet matched in the first switch's after-LB ACL stage
    (``ls_in_acl_after_lb``; ``ls_in_acl_after_lb_eval`` where OVN evaluates ACL tiers).
    An ACL at priority P is a flow at P + 1000."""
    ingress = trace.split("egress(dp=")[0]
    return [int(p) for p in re.findall(r"^ *\d+\. ls_in_acl_after_lb(?:_eval)? \(.*, priority (\d+),", ingress, re.M)]


def stage(trace: str, name: str) -> str:
    """The lines of one pipeline stage of an ovn-trace output (its first occurrence)."""
    start = trace.index(f". {name} ")
    end = trace.find("\n", trace.find("\n", start) + 1)
    return trace[start:end]


def delivered(trace: str) -> set[str]:
    """The pod ports a traced packet is output to (router and patch ports left out)."""
    return {p for p in re.findall(r'/\* output to "([^"]+)", type "" \*/', trace)}


def egress_verdict(trace: str, port: str) -> str:
    """``output``, ``drop`` (by the multicast default deny, priority 1011) or ``?``: what the egress
    pipeline did with the copy for ``port``."""
    start = trace.index(f'outport="{port}")')
    end = trace.find("egress(dp=", start)
    part = trace[start:end if end != -1 else len(trace)]
    if f'output to "{port}"' in part:
        return "output"
    hits = [int(p) for p in re.findall(r"^ *\d+\. ls_out_acl(?:_eval)? \(.*, priority (\d+),", part, re.M)]
    return "drop" if hits == [2011] else "?"


def report(env: ClusterEnv, ns: str, pod: str) -> str:
    """ovn-trace of an IGMPv3 membership report from a pod on node mc-a."""
    mac, ip = mac_and_ip(env, ns, pod)
    return env.central.trace("mc-a", f'inport == "{ns}_{pod}" && eth.src == {mac} && eth.dst == 01:00:5e:00:00:16 '
                                     f"&& ip4.src == {ip} && ip4.dst == 224.0.0.22 && ip.ttl == 1 && igmp")


def datagram(env: ClusterEnv, ns: str, pod: str) -> str:
    """ovn-trace of a UDP datagram to GROUP (TTL 4) from a pod on node mc-a."""
    mac, ip = mac_and_ip(env, ns, pod)
    return env.central.trace("mc-a", f'inport == "{ns}_{pod}" && eth.src == {mac} && eth.dst == 01:00:5e:01:01:01 '
                                     f"&& ip4.src == {ip} && ip4.dst == {GROUP} && ip.ttl == 4 && udp && udp.dst == 5000")
