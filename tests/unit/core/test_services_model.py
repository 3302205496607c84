"""Pure logic of the services plugin: endpoint selection, LB layout, options, NodePort steering targets.

The row-level behaviour against a real API server and OVN NB is in ``tests/functional/services``; these
cover what the 1.20 test API server cannot produce (it rejects unsupported protocols, knows no
``internalTrafficPolicy`` and has no ``discovery.k8s.io/v1``).
"""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from typing import Any

from ovnk.core.bootstrap import collect_claims
from ovnk.core.builtin.services import LB_OWNER
from ovnk.core.builtin.services import model
from ovnk.core.builtin.services.nodeport import host_nat_table
from ovnk.core.builtin.services.nodeport import host_nat_targets
from ovnk.core.builtin.services.nodeport import patch_port_name
from ovnk.core.builtin.services.nodeport import steering_flows
from ovnk.core.builtin.services.nodeport import steering_targets
from ovnk.core.plugins import OvnkPluginManager

HAIRPIN = (ipaddress.ip_address("169.254.0.5"),)
NODES = (
    model.NodeInfo(name="n1", host_ips=(ipaddress.ip_address("172.30.0.11"),), router=True, switch=True),
    model.NodeInfo(name="n2.example", host_ips=(ipaddress.ip_address("172.30.0.12"),), router=True, switch=True),
)


def service(name: str = "s", *, ports: list[dict[str, Any]] | None = None, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"namespace": "ns", "name": name},
            "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                     "ports": ports or [{"name": "http", "port": 80, "protocol": "TCP"}], **spec}}


def endpoint_slice(*endpoints: dict[str, Any], ports: list[dict[str, Any]] | None = None,
                   address_type: str = "IPv4") -> dict[str, Any]:
    return {"metadata": {"namespace": "ns", "name": "s-1", "labels": {model.SERVICE_NAME_LABEL: "s"}},
            "addressType": address_type, "ports": ports or [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": list(endpoints)}


def ep(ip: str, node: str | None = None, **conditions: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {"addresses": [ip], "conditions": conditions}
    if node:
        entry["nodeName"] = node
    return entry


def build(svc: dict[str, Any], *slices: dict[str, Any], nodes: tuple[model.NodeInfo, ...] = NODES,
          families: set[int] | None = None) -> dict[str, model.LoadBalancer]:
    result = model.build(svc, list(slices), nodes, families=families or {4}, hairpin_ips=HAIRPIN)
    return {lb.name: lb for lb in result.load_balancers}


def test_hook_ovnk_claims_the_service_load_balancer_owner_type(pm: OvnkPluginManager) -> None:
    claims = collect_claims(pm)
    assert claims.owners.get("Load_Balancer", "Service") == LB_OWNER
    assert claims.owners.plugin_of(LB_OWNER) == "core"


def test_ready_endpoints_else_serving_and_terminating_ones() -> None:
    port = model.ServicePort(name="http", protocol="TCP", port=80, node_port=None)
    slices = endpoint_slice(ep("10.0.0.1", ready=False, serving=True, terminating=True),
                            ep("10.0.0.2", ready=False, serving=False, terminating=True),
                            ep("10.0.0.3", ready=False))
    assert [str(e.ip) for e in model.select(model.slice_endpoints(slices, port))] == ["10.0.0.1"]
    slices["endpoints"].append(ep("10.0.0.4"))  # conditions omitted: ready (the API's "unknown")
    assert [str(e.ip) for e in model.select(model.slice_endpoints(slices, port))] == ["10.0.0.4"]


def test_v1_and_v1beta1_node_fields_and_named_ports() -> None:
    port = model.ServicePort(name="http", protocol="TCP", port=80, node_port=None)
    v1 = endpoint_slice(ep("10.0.0.1", "n1"))
    v1beta1 = endpoint_slice({"addresses": ["10.0.0.2"], "topology": {"kubernetes.io/hostname": "n2"}},
                             ports=[{"name": "http", "port": 9090}])
    assert [(e.node, e.port) for e in model.slice_endpoints(v1, port)] == [("n1", 8080)]
    assert [(e.node, e.port) for e in model.slice_endpoints(v1beta1, port)] == [("n2", 9090)]
    other_name = endpoint_slice(ep("10.0.0.3"), ports=[{"name": "metrics", "port": 9100}])
    other_protocol = endpoint_slice(ep("10.0.0.3"), ports=[{"name": "http", "port": 8080, "protocol": "UDP"}])
    fqdn = endpoint_slice({"addresses": ["db.example.com"]}, address_type="FQDN")
    assert model.slice_endpoints(other_name, port) == []
    assert model.slice_endpoints(other_protocol, port) == []
    assert model.slice_endpoints(fqdn, port) == []


def test_unsupported_protocol_is_a_problem_and_the_other_ports_are_built() -> None:
    svc = service(ports=[{"name": "http", "port": 80, "protocol": "TCP"}, {"name": "x", "port": 1, "protocol": "DCCP"}])
    result = model.build(svc, [endpoint_slice(ep("10.0.0.1"))], (), families={4}, hairpin_ips=HAIRPIN)
    assert [lb.name for lb in result.load_balancers] == ["Service_ns/s_TCP_cluster"]
    assert [p.reason for p in result.problems] == ["UnsupportedProtocol"]


def test_plain_nodeport_coalesces_router_and_switch_rules_per_node() -> None:
    lbs = build(service(type="NodePort", ports=[{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}]),
                endpoint_slice(ep("10.0.0.1", "n1")))
    assert set(lbs) == {"Service_ns/s_TCP_cluster", "Service_ns/s_TCP_node_router+switch_n1",
                        "Service_ns/s_TCP_node_router+switch_n2.example"}
    n1 = lbs["Service_ns/s_TCP_node_router+switch_n1"]
    assert n1.vips == {"172.30.0.11:30080": "10.0.0.1:8080"}
    assert (n1.routers, n1.switches, n1.lb_group) == (("GR_n1",), ("n1",), None)
    assert lbs["Service_ns/s_TCP_cluster"].lb_group == "clusterLBGroup"
    assert model.scope_node(lbs["Service_ns/s_TCP_node_router+switch_n2.example"].scope) == "n2.example"
    # A node without NodePorts, or without a gateway router, gets no router-side rule.
    no_np = (model.NodeInfo(name="n1", host_ips=NODES[0].host_ips, router=True, switch=True, node_port=False),
             model.NodeInfo(name="n3", host_ips=NODES[0].host_ips, router=False, switch=True))
    lbs = build(service(type="NodePort", ports=[{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}]),
                nodes=no_np)
    assert set(lbs) == {"Service_ns/s_TCP_cluster", "Service_ns/s_TCP_node_switch_n3"}


def test_plain_nodeport_with_templates_is_one_lb_per_side_and_family_whatever_the_nodes() -> None:
    svc = service(type="NodePort", ipFamilies=["IPv4", "IPv6"], clusterIPs=["10.96.0.10", "fd00:96::10"],
                  ports=[{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080},
                         {"name": "dns", "port": 53, "protocol": "UDP", "nodePort": 30053}])
    slices = [endpoint_slice(ep("10.0.0.1", "n1"), ports=[{"name": "http", "port": 8080, "protocol": "TCP"},
                                                          {"name": "dns", "port": 5353, "protocol": "UDP"}])]
    result = model.build(svc, slices, NODES, families={4, 6}, hairpin_ips=HAIRPIN, node_ip_slots={4: 2, 6: 1})
    lbs = {lb.name: lb for lb in result.load_balancers}
    assert set(lbs) == {
        "Service_ns/s_TCP_cluster", "Service_ns/s_UDP_cluster",
        *(f"Service_ns/s_{proto}_node_{side}_template_IPv{family}"
          for proto in ("TCP", "UDP") for side in ("switch", "router") for family in (4, 6))}
    switch, router = lbs["Service_ns/s_TCP_node_switch_template_IPv4"], lbs["Service_ns/s_TCP_node_router_template_IPv4"]
    # One VIP per address slot any node has; each chassis resolves the ones it holds.
    assert switch.vips == router.vips == {"^NODEIP_IPv4_0:30080": "10.0.0.1:8080", "^NODEIP_IPv4_1:30080": "10.0.0.1:8080"}
    assert lbs["Service_ns/s_UDP_node_switch_template_IPv6"].vips == {"^NODEIP_IPv6_0:30053": ""}
    assert (switch.lb_group, switch.routers, switch.switches) == ("clusterSwitchLBGroup", (), ())
    assert (router.lb_group, router.routers, router.switches) == ("clusterRouterLBGroup", (), ())
    assert switch.options["template"] == "true" and switch.options["address-family"] == "ipv4"
    assert lbs["Service_ns/s_UDP_node_router_template_IPv6"].options["address-family"] == "ipv6"
    assert lbs["Service_ns/s_UDP_node_router_template_IPv6"].options["ct_flush"] == "true"
    assert "template" not in lbs["Service_ns/s_TCP_cluster"].options
    # Template scopes name no node (the per-node prefix "node_switch_" must not read "template_IPv4" as one).
    assert model.scope_node(switch.scope) is None and model.scope_node(router.scope) is None
    # No node has an address yet: no NodePort VIP, only the cluster LBs.
    empty = model.build(svc, slices, (), families={4, 6}, hairpin_ips=HAIRPIN, node_ip_slots={4: 0, 6: 0})
    assert {lb.scope for lb in empty.load_balancers} == {"cluster"}


def test_which_nodeports_use_templates_and_what_then_depends_on_nodes() -> None:
    nodeport = [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}]
    plain = service(type="NodePort", ports=nodeport)
    assert model.uses_templates(plain)
    assert model.depends_on_nodes(plain) and not model.depends_on_nodes(plain, templates=True)
    forever = service(type="NodePort", ports=nodeport, sessionAffinity="ClientIP",
                      sessionAffinityConfig={"clientIP": {"timeoutSeconds": 86400}})
    assert model.uses_templates(forever)
    for per_node in (service(type="NodePort", ports=nodeport, externalTrafficPolicy="Local"),
                     service(type="NodePort", ports=nodeport, internalTrafficPolicy="Local"),
                     service(type="NodePort", ports=nodeport, sessionAffinity="ClientIP")):
        assert not model.uses_templates(per_node)
        assert model.depends_on_nodes(per_node, templates=True)
    assert not model.uses_templates(service())
    assert not model.uses_templates(service(type="NodePort", ports=nodeport, clusterIP="None", clusterIPs=["None"]))


def test_external_traffic_policy_local() -> None:
    svc = service(type="LoadBalancer", externalTrafficPolicy="Local", externalIPs=["192.0.2.1"],
                  ports=[{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}])
    svc["status"] = {"loadBalancer": {"ingress": [{"ip": "198.51.100.1"}, {"hostname": "lb.example"}]}}
    lbs = build(svc, endpoint_slice(ep("10.0.0.1", "n1"), ep("10.0.0.2", "n2.example")))
    assert lbs["Service_ns/s_TCP_cluster"].vips == {"10.96.0.10:80": "10.0.0.1:8080,10.0.0.2:8080"}
    local = lbs["Service_ns/s_TCP_node_local_router_n1"]
    assert local.vips == {"172.30.0.11:30080": "10.0.0.1:8080", "192.0.2.1:80": "10.0.0.1:8080",
                          "198.51.100.1:80": "10.0.0.1:8080"}
    assert local.options["skip_snat"] == "true" and local.routers == ("GR_n1",) and not local.switches
    switch = lbs["Service_ns/s_TCP_node_switch_n1"]
    assert switch.vips["172.30.0.11:30080"] == "10.0.0.1:8080,10.0.0.2:8080"
    assert "skip_snat" not in switch.options and "Service_ns/s_TCP_node_router_n1" not in lbs
    assert model.depends_on_nodes(svc)


def test_internal_traffic_policy_local_keeps_cluster_ips_on_the_node() -> None:
    svc = service(internalTrafficPolicy="Local")
    lbs = build(svc, endpoint_slice(ep("10.0.0.1", "n1"), ep("10.0.0.2", "n2.example", ready=False, serving=True,
                                                             terminating=True)))
    assert set(lbs) == {"Service_ns/s_TCP_node_router+switch_n1", "Service_ns/s_TCP_node_router+switch_n2.example"}
    assert lbs["Service_ns/s_TCP_node_router+switch_n1"].vips == {"10.96.0.10:80": "10.0.0.1:8080"}
    assert lbs["Service_ns/s_TCP_node_router+switch_n2.example"].vips == {"10.96.0.10:80": "10.0.0.2:8080"}
    assert model.depends_on_nodes(svc) and not model.depends_on_nodes(service())


def test_options_affinity_and_reject() -> None:
    plain = build(service())["Service_ns/s_TCP_cluster"]
    assert plain.vips == {"10.96.0.10:80": ""}, "no endpoint: an empty VIP, which OVN rejects"
    assert plain.options == {"reject": "true", "neighbor_responder": "none", "hairpin_snat_ip": "169.254.0.5"}
    assert plain.selection_fields == []
    timed = build(service(sessionAffinity="ClientIP", sessionAffinityConfig={"clientIP": {"timeoutSeconds": 60}}))
    assert timed["Service_ns/s_TCP_cluster"].options["affinity_timeout"] == "60"
    default = build(service(sessionAffinity="ClientIP"))
    assert default["Service_ns/s_TCP_cluster"].options["affinity_timeout"] == "10800"
    forever = build(service(sessionAffinity="ClientIP",
                            sessionAffinityConfig={"clientIP": {"timeoutSeconds": 86400}}))["Service_ns/s_TCP_cluster"]
    assert "affinity_timeout" not in forever.options and set(forever.selection_fields) == {"ip_src", "ip_dst"}


def test_udp_load_balancers_flush_conntrack_of_removed_backends() -> None:
    """Only UDP: a TCP connection to a terminating backend may still drain; a UDP 'connection' never ends."""
    ports = [{"name": "dns", "port": 53, "protocol": "UDP", "nodePort": 30053},
             {"name": "dns-tcp", "port": 53, "protocol": "TCP", "nodePort": 30054},
             {"name": "assoc", "port": 9, "protocol": "SCTP"}]
    lbs = build(service(ports=ports, type="NodePort", externalTrafficPolicy="Local"))
    assert lbs["Service_ns/s_UDP_cluster"].options["ct_flush"] == "true"
    assert all(lb.options.get("ct_flush") == "true" for name, lb in lbs.items() if "_UDP_" in name)
    assert any("_UDP_node" in name for name in lbs), "the per-node UDP LBs are covered too"
    assert not any("ct_flush" in lb.options for name, lb in lbs.items() if "_UDP_" not in name)


def test_services_labelled_for_another_proxy_want_no_load_balancers() -> None:
    assert model.wants_load_balancers(service())
    for label in model.NOT_OURS_LABELS:
        labelled = {**service(), "metadata": {"namespace": "ns", "name": "s", "labels": {label: ""}}}
        assert not model.wants_load_balancers(labelled), label
        assert build(labelled) == {}, label


def test_headless_external_name_and_ip_families() -> None:
    assert build(service(clusterIP="None", clusterIPs=["None"])) == {}
    assert build({"metadata": {"namespace": "ns", "name": "s"},
                  "spec": {"type": "ExternalName", "externalName": "example.com"}}) == {}
    dual = service(clusterIPs=["10.96.0.10", "fd00:10:96::10"], externalIPs=["fd00::1"])
    lbs = build(dual, endpoint_slice(ep("10.0.0.1")), endpoint_slice(ep("fd00:10:244::5"), address_type="IPv6"),
                families={4, 6})
    assert lbs["Service_ns/s_TCP_cluster"].vips == {
        "10.96.0.10:80": "10.0.0.1:8080", "[fd00:10:96::10]:80": "[fd00:10:244::5]:8080",
        "[fd00::1]:80": "[fd00:10:244::5]:8080"}
    result = model.build(dual, [], (), families={4}, hairpin_ips=HAIRPIN)
    assert {p.reason for p in result.problems} == {"UnsupportedIPFamily"}


def test_nodeport_steering_targets_and_flows() -> None:
    svc = service(type="NodePort", externalIPs=["192.0.2.1", "fd00::1"],
                  ports=[{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080},
                         {"name": "dns", "port": 53, "protocol": "UDP", "nodePort": 30053}])
    targets = steering_targets([svc, service("plain"), service("headless", clusterIP="None")],
                               [ipaddress.IPv4Address("172.30.0.11")])
    assert targets == [("172.30.0.11", "tcp", 30080), ("172.30.0.11", "udp", 30053),
                       ("192.0.2.1", "tcp", 80), ("192.0.2.1", "udp", 53)]
    flows = steering_flows(targets[:1], uplink_ofport=1, patch_ofport=2)
    assert flows == ["table=0,priority=95,in_port=1,tcp,nw_dst=172.30.0.11,tp_dst=30080 "
                     "actions=ct(commit,zone=64000,exec(load:0x1->NXM_NX_CT_MARK[])),output:2"]
    assert patch_port_name("breth0", "n1") == "patch-breth0_n1-to-br-int"


def test_host_nat_targets_and_table() -> None:
    svc = service(type="NodePort", externalIPs=["192.0.2.1", "fd00::1"],
                  ports=[{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080},
                         {"name": "dns", "port": 53, "protocol": "UDP", "nodePort": 30053}])
    other_proxy = service("other", type="NodePort", ports=[{"port": 81, "protocol": "TCP", "nodePort": 30081}])
    other_proxy["metadata"]["labels"] = {"service.kubernetes.io/service-proxy-name": "elsewhere"}
    targets = host_nat_targets([svc, service("plain"), service("headless", clusterIP="None"), other_proxy])
    assert targets == [("tcp", None, 30080, "10.96.0.10", 80), ("tcp", "192.0.2.1", 80, "10.96.0.10", 80),
                       ("udp", None, 30053, "10.96.0.10", 53), ("udp", "192.0.2.1", 53, "10.96.0.10", 53)]
    table = host_nat_table(targets[:2], mgmt_port="ovn-k8s-mp0", mgmt_ip="10.244.0.2")
    assert table.family == "ip"
    dnat, snat = table.chains
    assert (dnat.type, dnat.hook, dnat.priority, snat.hook, snat.priority) == ("nat", "output", -100, "postrouting", 100)
    node_port, external = (rule.expr for rule in dnat.rules)
    assert {"match": {"op": "==", "left": {"fib": {"result": "type", "flags": ["daddr"]}}, "right": "local"}} \
        in node_port
    assert node_port[-1] == {"dnat": {"addr": "10.96.0.10", "port": 80}}
    assert external[0] == {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}},
                                     "right": "192.0.2.1"}}
    assert snat.rules[0].expr[-1] == {"snat": {"addr": "10.244.0.2"}}
    # Before the management port has its address: the DNAT only.
    assert [c.name for c in host_nat_table(targets, mgmt_port="ovn-k8s-mp0", mgmt_ip=None).chains] == \
        ["host-to-services"]


def test_host_network_endpoints_are_reached_through_their_own_nodes_management_port() -> None:
    """A node's own host-network endpoint is its management port's IP on its switch and gateway router;
    such a ClusterIP leaves the cluster LB for per-node rules (the other node keeps the node IP)."""
    nodes = tuple(replace(node, mgmt_ips=(ipaddress.ip_address(mgmt),))
                  for node, mgmt in zip(NODES, ("10.244.0.2", "10.244.1.2"), strict=True))
    host_backed = endpoint_slice(ep("172.30.0.11", "n1"), ep("10.244.1.7", "n2.example"))
    lbs = build(service(), host_backed, nodes=nodes)
    assert set(lbs) == {"Service_ns/s_TCP_node_router+switch_n1", "Service_ns/s_TCP_node_router+switch_n2.example"}
    assert lbs["Service_ns/s_TCP_node_router+switch_n1"].vips == {"10.96.0.10:80": "10.244.0.2:8080,10.244.1.7:8080"}
    assert lbs["Service_ns/s_TCP_node_router+switch_n2.example"].vips == {
        "10.96.0.10:80": "10.244.1.7:8080,172.30.0.11:8080"}
    # NodePorts: the same on both sides; with externalTrafficPolicy=Local the router side (no SNAT)
    # keeps the node IP, or the host would answer the client directly.
    node_port = [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}]
    lbs = build(service(type="NodePort", ports=node_port), host_backed, nodes=nodes)
    assert lbs["Service_ns/s_TCP_node_router+switch_n1"].vips["172.30.0.11:30080"] == "10.244.0.2:8080,10.244.1.7:8080"
    lbs = build(service(type="NodePort", ports=node_port, externalTrafficPolicy="Local"), host_backed, nodes=nodes)
    assert lbs["Service_ns/s_TCP_node_local_router_n1"].vips == {"172.30.0.11:30080": "172.30.0.11:8080"}
    assert lbs["Service_ns/s_TCP_node_switch_n1"].vips["172.30.0.11:30080"] == "10.244.0.2:8080,10.244.1.7:8080"
    # Pod endpoints only: the cluster LB as before; and nodes without known management ports change nothing.
    assert set(build(service(), endpoint_slice(ep("10.244.1.7", "n2.example")), nodes=nodes)) == {
        "Service_ns/s_TCP_cluster"}
    assert set(build(service(), host_backed)) == {"Service_ns/s_TCP_cluster"}


def test_outside_addresses_are_the_endpoints_beyond_the_cluster_subnets() -> None:
    cluster = [ipaddress.ip_network("10.244.0.0/16")]
    assert model.outside_addresses([endpoint_slice(ep("10.244.1.7"))], cluster) == frozenset()
    assert model.outside_addresses([endpoint_slice(ep("10.244.1.7")), endpoint_slice(ep("172.30.0.11")),
                                    endpoint_slice(ep("fd00::1"), address_type="IPv6")], cluster) == {
        ipaddress.ip_address("172.30.0.11"), ipaddress.ip_address("fd00::1")}
    assert model.outside_addresses([endpoint_slice({"addresses": ["db.example.com"]}, address_type="FQDN")],
                                   cluster) == frozenset()


def test_address_links_keep_the_holders_of_each_address() -> None:
    from ovnk.core.builtin.services.controller import AddressLinks

    links = AddressLinks()
    assert links.replace("a", frozenset({"10.0.0.1", "10.0.0.2"})) == frozenset()
    links.replace("b", frozenset({"10.0.0.2"}))
    assert links.holders("10.0.0.2") == {"a", "b"}
    assert links.replace("a", frozenset({"10.0.0.3"})) == {"10.0.0.1", "10.0.0.2"}
    assert (links.holders("10.0.0.1"), links.holders("10.0.0.2"), links.holders("10.0.0.3")) == (set(), {"b"}, {"a"})
    assert links.replace("b", frozenset()) == {"10.0.0.2"}
    assert links.holders("10.0.0.2") == set() and links._holders == {"10.0.0.3": {"a"}}
