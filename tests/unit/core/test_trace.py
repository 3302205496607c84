"""``ovnk trace``'s pure parts: ovn-trace output parsing, the NB/SB lookups, the verdict and the naming hook."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from ovnk.core.hookspecs import hookimpl
from ovnk.core.ovn.reader import RowSnapshot
from ovnk.core.plugins import OvnkPluginManager
from ovnk.core.trace import engine
from ovnk.core.trace.explain import generic_text
from ovnk.core.trace.model import OvnState
from ovnk.core.trace.model import parse_addresses
from ovnk.core.trace.parse import parse

# Shortened from a real ovn-trace (OVN 23.03) of a connection dropped by a namespace's ingress default deny.
DROPPED = """\
# tcp,reg14=0x4,vlan_tci=0x0000,dl_src=0a:58:0a:f4:00:04,dl_dst=0a:58:0a:f4:00:01,nw_src=10.244.0.4,nw_dst=10.244.1.3

ingress(dp="np-a", inport="ns_c")
---------------------------------
 0. ls_in_check_port_sec (northd.c:8432): 1, priority 50, uuid 2c6165e5
    reg0[15] = check_in_port_sec();
    next;
 6. ls_in_pre_stateful (northd.c:6132): reg0[2] == 1, priority 110, uuid 8831210a
    ct_lb_mark;

ct_lb_mark
----------
 8. ls_in_acl (northd.c:6809): ip && !ct.est, priority 1, uuid 22f9383e
    reg0[1] = 1;
    next;
25. ls_in_l2_lkup (northd.c:9193): eth.dst == 0a:58:0a:f4:00:01, priority 50, uuid 87c402d1
    outport = "stor-np-a";
    output;

egress(dp="np-a", inport="ns_c", outport="stor-np-a")
-----------------------------------------------------
 9. ls_out_apply_port_sec (northd.c:5777): 1, priority 0, uuid 0ba8d1b2
    output;
    /* output to "stor-np-a", type "patch" */

egress(dp="np-b", inport="stor-np-b", outport="ns_b")
-----------------------------------------------------
 4. ls_out_acl (northd.c:6543): reg0[9] == 1 && (outport == @a7694955774882470915), priority 2000, uuid 407d2f30
    drop;
"""

ALLOWED_TAIL = """\
egress(dp="np-b", inport="stor-np-b", outport="ns_b")
-----------------------------------------------------
 4. ls_out_acl (northd.c:6445): reg0[7] == 1 && (ip4.src == {$a1}), priority 2001, uuid 821050f4
    reg0[1] = 1;
    next;
 9. ls_out_apply_port_sec (northd.c:5777): 1, priority 0, uuid 0ba8d1b2
    output;
    /* output to "ns_b", type "" */
"""

# The same drop on OVN 25.03 (tiered ACLs): the ACL's eval flow only sets the drop verdict bit,
# the action stage acts on it and ovn-trace prints no ``drop;``.
TIERED_DROP_TAIL = """\
egress(dp="np-b", inport="stor-np-b", outport="ns_b")
-----------------------------------------------------
 6. ls_out_acl_eval (northd.c:7449): ip && !ct.est, priority 1, uuid 2fe33dd3
    reg0[1] = 1;
    next;
 8. ls_out_acl_action (northd.c:7270): reg8[30..31] == 0, priority 500, uuid d25a4222
    reg8[30..31] = 1;
    next(6);
 6. ls_out_acl_eval (northd.c:7072): reg8[30..31] == 2 && reg0[9] == 1 && (outport == @a7694955774882470915), \
priority 2000, uuid 407d2f30
    reg8[17] = 1;
    next;
 8. ls_out_acl_action (northd.c:7243): reg8[17] == 1, priority 1000, uuid 19b757a8
    reg8[16] = 0;
    reg8[17] = 0;
    reg8[18] = 0;
    reg8[30..31] = 0;
"""

NS = "ns"
DENY_IDS = {"k8s.ovn.org/owner-controller": "default-network-controller", "k8s.ovn.org/owner-type": "NetpolNamespace",
            "k8s.ovn.org/name": NS, "direction": "Ingress", "type": "defaultDeny",
            "k8s.ovn.org/id": f"default-network-controller:NetpolNamespace:{NS}:Ingress:defaultDeny"}
ALLOW_IDS = {"k8s.ovn.org/owner-controller": "default-network-controller", "k8s.ovn.org/owner-type": "NetworkPolicy",
             "k8s.ovn.org/name": f"{NS}:web", "direction": "Ingress", "gress-index": "2", "ip-block-index": "-1",
             "port-policy-protocol": "tcp", "k8s.ovn.org/id": "x"}


def row(table: str, uuid: str, *, name: str | None = None, ext: dict[str, str] | None = None,
        **columns: Any) -> RowSnapshot:
    return RowSnapshot(table=table, uuid=uuid, name=name, external_ids=ext or {}, columns=columns)


def state() -> OvnState:
    nb = {
        "Logical_Switch": [row("Logical_Switch", "s1", name="np-a", ports=["p-c", "p-stor-a"],
                               other_config={"subnet": "10.244.0.0/24"}),
                           row("Logical_Switch", "s2", name="np-b", ports=["p-b", "p-stor-b"],
                               other_config={"subnet": "10.244.1.0/24"})],
        "Logical_Switch_Port": [
            row("Logical_Switch_Port", "p-c", name="ns_c", addresses=["0a:58:0a:f4:00:04 10.244.0.4"], type="",
                options={}, ext={"namespace": NS}),
            row("Logical_Switch_Port", "p-b", name="ns_b", addresses=["0a:58:0a:f4:01:03 10.244.1.3"], type="",
                options={}, ext={"namespace": NS}),
            row("Logical_Switch_Port", "p-stor-a", name="stor-np-a", addresses=["router"], type="router",
                options={"router-port": "rtos-np-a"}),
            row("Logical_Switch_Port", "p-stor-b", name="stor-np-b", addresses=["router"], type="router",
                options={"router-port": "rtos-np-b"}),
        ],
        "Logical_Router_Port": [row("Logical_Router_Port", "r1", name="rtos-np-a", mac="0a:58:0a:f4:00:01")],
        "Port_Group": [row("Port_Group", "g1", name="a1", ports=["p-b"],
                           ext={"k8s.ovn.org/owner-type": "NetworkPolicy", "k8s.ovn.org/name": f"{NS}:web"})],
        "ACL": [row("ACL", "aaaa0001-0000", action="drop", ext=DENY_IDS),
                row("ACL", "aaaa0002-0000", action="allow-related", ext=ALLOW_IDS)],
        "Load_Balancer": [row("Load_Balancer", "lb1", name="Service_ns/web_TCP_cluster",
                              vips={"10.96.0.10:80": "10.244.1.3:8080"}, protocol=["tcp"],
                              ext={"k8s.ovn.org/owner-type": "Service", "k8s.ovn.org/name": f"{NS}/web"})],
    }
    sb = {"Logical_Flow": [row("Logical_Flow", "407d2f30-1111", ext={"stage-hint": "aaaa0001"}),
                           row("Logical_Flow", "821050f4-2222", ext={"stage-hint": "aaaa0002"}),
                           row("Logical_Flow", "2c6165e5-3333", ext={"stage-name": "ls_in_check_port_sec"})]}
    return OvnState.from_rows(nb, sb)


def test_parse_reads_pipelines_steps_actions_and_outputs() -> None:
    parsed = parse(DROPPED)
    assert parsed.flow.startswith("tcp,reg14=0x4")
    assert [(s.pipeline.datapath, s.pipeline.direction, s.table, s.stage) for s in parsed.steps] == [
        ("np-a", "ingress", 0, "ls_in_check_port_sec"), ("np-a", "ingress", 6, "ls_in_pre_stateful"),
        ("np-a", "ingress", 8, "ls_in_acl"), ("np-a", "ingress", 25, "ls_in_l2_lkup"),
        ("np-a", "egress", 9, "ls_out_apply_port_sec"), ("np-b", "egress", 4, "ls_out_acl")]
    last = parsed.steps[-1]
    assert last.drops and last.lflow == "407d2f30" and last.priority == 2000 and last.pipeline.outport == "ns_b"
    assert parsed.steps[3].actions == ['outport = "stor-np-a";', "output;"]
    assert parsed.outputs == ["stor-np-a"]
    assert not any(s.drops for s in parsed.steps[:-1])


def test_state_lookups() -> None:
    st = state()
    assert st.ports["ns_b"].pod == "ns/b" and st.ports["stor-np-a"].pod is None
    assert st.port_with_ip(ipaddress.ip_address("10.244.1.3")) == st.ports["ns_b"]
    assert st.port_with_ip(ipaddress.ip_address("10.244.1.3"), switch="np-a") is None
    assert st.router_mac("np-a") == "0a:58:0a:f4:00:01" and st.router_mac("np-b") is None
    found = st.row_of_lflow("407d2f30")
    assert found is not None and found.external_ids == DENY_IDS
    assert st.row_of_lflow("2c6165e5") is None
    assert st.groups_with_port(st.ports["ns_b"], owner_type="NetworkPolicy") == [f"{NS}:web"]
    [vip] = st.service_vips("ns/web")
    assert (str(vip.vip), vip.port, vip.protocol, vip.backends) == (
        "10.96.0.10", 80, "tcp", ((ipaddress.ip_address("10.244.1.3"), 8080),))
    assert parse_addresses(["router"]) == (None, ())
    assert parse_addresses(["0a:58:0a:f4:00:04 10.244.0.4 fd00::4"])[1] == (
        ipaddress.ip_address("10.244.0.4"), ipaddress.ip_address("fd00::4"))


def test_microflow_uses_the_gateway_mac_across_switches_and_rejects_unknown_names() -> None:
    st = state()
    src = engine.resolve_source(st, "ns/c")
    dst = engine.resolve_destination(st, "ns/b", family=None, protocol="tcp", port=None)
    flow = engine.microflow(st, src, dst, protocol="udp", port=53)
    assert flow == ('inport == "ns_c" && eth.src == 0a:58:0a:f4:00:04 && eth.dst == 0a:58:0a:f4:00:01 && '
                    "ip4.src == 10.244.0.4 && ip4.dst == 10.244.1.3 && ip.ttl == 64 && "
                    "udp && udp.src == 33333 && udp.dst == 53")
    svc = engine.resolve_destination(st, "ns/web", family=None, protocol="tcp", port=None)
    assert svc.kind == "service" and str(svc.ip) == "10.96.0.10" and svc.vip is not None and svc.vip.port == 80
    by_vip = engine.resolve_destination(st, "10.96.0.10", family=None, protocol="tcp", port=80)
    assert by_vip.kind == "service" and by_vip.name == "ns/web (10.96.0.10)"
    with pytest.raises(engine.TraceError, match="no pod or UDP service ns/web"):
        engine.resolve_destination(st, "ns/web", family=None, protocol="udp", port=None)
    with pytest.raises(engine.TraceError, match=r"has no tcp/81 \(it serves tcp/80\)"):
        engine.resolve_destination(st, "ns/web", family=None, protocol="tcp", port=81)
    with pytest.raises(engine.TraceError, match="expected <namespace>/<pod>"):
        engine.resolve_source(st, "c")


def test_verdicts_dropped_allowed_unreachable(pm: OvnkPluginManager) -> None:
    st = state()
    dropped = engine.trace(st, source="ns/c", destination="ns/b", run=lambda dp, flow: DROPPED, hook=pm.hook)
    assert dropped.verdict == engine.DROPPED and dropped.datapath == "np-a"
    assert dropped.decisive is not None and dropped.decisive.owner_type == "NetpolNamespace"
    assert dropped.reason.startswith(f"dropped by the ingress default deny of namespace {NS}")
    assert dropped.reason.endswith(f"NetworkPolicies selecting ns/b: {NS}/web")

    allowed_text = DROPPED[:DROPPED.index('egress(dp="np-b"')] + ALLOWED_TAIL
    allowed = engine.trace(st, source="ns/c", destination="ns/b", run=lambda dp, flow: allowed_text, hook=pm.hook)
    assert allowed.verdict == engine.ALLOWED and allowed.decisive is not None
    assert allowed.decisive.text == f"NetworkPolicy {NS}/web, ingress rule 2 (selector peers, ports tcp)"
    assert allowed.reason == f"delivered to ns/b; allowed by {allowed.decisive.text}"

    nowhere = DROPPED[:DROPPED.index("egress(dp=")]
    gone = engine.trace(st, source="ns/c", destination="10.244.1.99", run=lambda dp, flow: nowhere, hook=pm.hook)
    assert gone.verdict == engine.UNREACHABLE and gone.reason.startswith("no logical port has 10.244.1.99")
    assert "the trace ends in ls_in_l2_lkup on np-a" in gone.reason


def test_generic_text_names_rows_from_their_ownership_keys() -> None:
    ext = {"k8s.ovn.org/owner-controller": "c", "k8s.ovn.org/owner-type": "EgressFirewall",
           "k8s.ovn.org/name": "ns", "rule-index": "3", "k8s.ovn.org/id": "c:EgressFirewall:ns:3"}
    assert generic_text("ACL", ext, {"action": "drop"}) == "EgressFirewall ns (rule-index=3): ACL drop"
    assert generic_text("NAT", {}, {"type": "snat"}) == "NAT not written by ovnk (snat)"


class _FirewallNamer:
    @hookimpl
    def ovnk_trace_explain(self, table: str, external_ids: dict[str, str]) -> str | None:
        if external_ids.get("k8s.ovn.org/owner-type") != "NetpolNamespace":
            return None
        return f"plugin says: {table} of {external_ids['k8s.ovn.org/name']}"


def test_hook_ovnk_trace_explain_names_a_plugins_rows_and_falls_back_to_core(pm: OvnkPluginManager) -> None:
    st = state()
    pm.register(_FirewallNamer(), name="namer")
    # tryfirst is not needed: a plugin registered later is called first (pluggy's LIFO order).
    dropped = engine.trace(st, source="ns/c", destination="ns/b", run=lambda dp, flow: DROPPED, hook=pm.hook)
    assert dropped.decisive is not None and dropped.decisive.text == f"plugin says: ACL of {NS}"
    # Rows the plugin does not answer for keep core's text (the netpol plugin names its own ACLs).
    allowed_text = DROPPED[:DROPPED.index('egress(dp="np-b"')] + ALLOWED_TAIL
    allowed = engine.trace(st, source="ns/c", destination="ns/b", run=lambda dp, flow: allowed_text, hook=pm.hook)
    assert allowed.decisive is not None and allowed.decisive.text.startswith(f"NetworkPolicy {NS}/web")
    # Without any plugin answering, the generic text from the ownership keys.
    bare = engine.trace(st, source="ns/c", destination="ns/b", run=lambda dp, flow: DROPPED, hook=None)
    assert bare.decisive is not None
    assert bare.decisive.text == f"NetpolNamespace {NS} (direction=Ingress, type=defaultDeny): ACL drop"


REJECTED = """\
ingress(dp="np-a", inport="ns_c")
---------------------------------
12. ls_in_lb (northd.c:7558): ct.new && ip4.dst == 10.96.0.10 && tcp.dst == 80, priority 120, uuid 5fc3ba48
    reg0 = 0;
    reject { outport <-> inport; next(pipeline=egress, table=5); };

tcp_reset
---------
    outport <-> inport;
    next(pipeline=egress, table=5);

egress(dp="np-a", outport="ns_c")
---------------------------------
 9. ls_out_apply_port_sec (northd.c:5777): 1, priority 0, uuid 0ba8d1b2
    output;
    /* output to "ns_c", type "" */
"""


def test_a_service_without_endpoints_is_rejected_by_its_load_balancer() -> None:
    st = state()
    st.load_balancers[0].columns["vips"]["10.96.0.10:80"] = ""  # type: ignore[index]
    st.lflow_hints["5fc3ba48"] = "lb1"[:8]
    st.hinted["lb1"] = st.load_balancers[0]
    result = engine.trace(st, source="ns/c", destination="ns/web", run=lambda dp, flow: REJECTED, hook=None)
    assert result.verdict == engine.REJECTED and result.decisive is not None
    assert result.decisive.owner == "ns/web" and result.reason.endswith("service ns/web has no ready endpoints")


def test_traffic_leaving_the_cluster_names_the_gateway_snat() -> None:
    nb_snat = row("NAT", "n1", type="snat", logical_ip="10.244.0.0/16", external_ip="172.30.0.11",
                  ext={"k8s.ovn.org/owner-type": "Node", "k8s.ovn.org/name": "np-a"})
    pod_snat = row("NAT", "n2", type="snat", logical_ip="10.244.0.4", external_ip="172.30.0.100",
                   ext={"k8s.ovn.org/owner-type": "EgressIP", "k8s.ovn.org/name": "eip"})
    st = state()
    st.router_nats["GR_np-a"] = [nb_snat, pod_snat]
    st.ports["breth0_np-a"] = st.ports["stor-np-a"].__class__(
        name="breth0_np-a", uuid="p-ln", switch="ext_np-a", type="localnet", mac=None, ips=(), options={},
        external_ids={})
    out = """\
ingress(dp="GR_np-a", inport="rtoj-GR_np-a")
--------------------------------------------
13. lr_in_ip_routing (northd.c:10388): ip4.dst == 0.0.0.0/0, priority 1, uuid 4775c4c7
    outport = "rtoe-GR_np-a";

egress(dp="ext_np-a", inport="etor-GR_np-a", outport="breth0_np-a")
-------------------------------------------------------------------
 9. ls_out_apply_port_sec (northd.c:5777): 1, priority 0, uuid 0ba8d1b2
    output;
    /* output to "breth0_np-a", type "localnet" */
"""
    result = engine.trace(st, source="ns/c", destination="192.0.2.1", run=lambda dp, flow: out, hook=None)
    assert result.verdict == engine.ALLOWED and result.snat is not None
    # The pod's own SNAT (an egress IP) is more specific than the cluster subnet's.
    assert result.snat["external_ip"] == "172.30.0.100" and result.snat["router"] == "GR_np-a"
    assert "SNATed to 172.30.0.100 by GR_np-a (EgressIP eip" in result.reason


def test_core_names_the_default_networks_gateway_rows(pm: OvnkPluginManager) -> None:
    from ovnk.core.topology import builder

    nat = builder.NODE_OWNERS["NAT"].ids("default-network-controller", name="node-2", type="nat:snat:0")
    text = pm.hook.ovnk_trace_explain(table="NAT", external_ids=nat.external_ids(),
                                      columns={"type": "snat", "logical_ip": "10.244.0.0/16",
                                               "external_ip": "172.30.0.12"})
    assert text == "node node-2's gateway snat: 10.244.0.0/16 to 172.30.0.12"
    route = builder.NODE_OWNERS["Logical_Router_Static_Route"].ids("c", name="node-2", type="route:gr-default:0")
    assert pm.hook.ovnk_trace_explain(table="Logical_Router_Static_Route", external_ids=route.external_ids(),
                                      columns={"ip_prefix": "0.0.0.0/0", "nexthop": "172.30.0.254"}) == (
        "node node-2's route 0.0.0.0/0 via 172.30.0.254")
    # Rows of other owners: core's network plugin has no opinion, the generic text applies.
    assert pm.hook.ovnk_trace_explain(table="NAT", external_ids={"k8s.ovn.org/owner-type": "EgressIP"},
                                      columns={}) is None


def test_tiered_acl_verdict_bits_count_as_drop_and_reject(pm: OvnkPluginManager) -> None:
    """OVN >= 23.06: the eval step that sets ``reg8[17]`` (drop) or ``reg8[18]`` (reject) decides."""
    tiered = DROPPED[:DROPPED.index('egress(dp="np-b"')] + TIERED_DROP_TAIL
    parsed = parse(tiered)
    verdicts = [(s.stage, s.drops) for s in parsed.steps if s.pipeline.datapath == "np-b"]
    assert verdicts == [("ls_out_acl_eval", False), ("ls_out_acl_action", False),
                        ("ls_out_acl_eval", True), ("ls_out_acl_action", False)]
    dropped = engine.trace(state(), source="ns/c", destination="ns/b", run=lambda dp, flow: tiered, hook=pm.hook)
    assert dropped.verdict == engine.DROPPED
    assert dropped.decisive is not None and dropped.decisive.owner_type == "NetpolNamespace"
    assert dropped.reason.startswith(f"dropped by the ingress default deny of namespace {NS}")
    # Clearing the bit in the action stage is not a verdict; setting the reject bit is.
    assert not parse(tiered).steps[-1].rejects
    rejected = parse(tiered.replace("reg8[17] = 1;", "reg8[18] = 1;"))
    assert [s.rejects for s in rejected.steps if s.stage == "ls_out_acl_eval"] == [False, True]
