"""Builds the intents of the default network in shared-gateway mode (ovn-kubernetes.md §1).

Cluster-wide: ``ovn_cluster_router`` (``always_learn_from_arp_request=false``),
the ``join`` switch with ``rtoj-``/``jtor-ovn_cluster_router``, the three LB
groups and the cluster port groups.

Per node: switch ``<node>`` (``other_config:subnet``, ``exclude_ips``, LB
groups), ``rtos-<node>``/``stor-<node>``, the management port ``k8s-<node>``,
and, once the node agent published its gateway facts and chassis id, gateway
router ``GR_<node>`` (``rtoj-``/``rtoe-`` ports, default route, route to the
cluster subnets, SNAT of the cluster subnets to the node IP), external switch
``ext_<node>`` with ``etor-GR_<node>`` and the localnet port
``<bridge>_<node>``, the cluster router's ``src-ip`` route of the node subnet to
the GR's join IP, its route to the GR's join IP itself (replies to
load-balanced traffic the GR SNATed to that IP) and the priority-1004 policy
sending pod traffic for the node's own IP to the management port. With
``[gateway] nodeport-templates``, the node's chassis also gets its
``Chassis_Template_Var`` row: its NodePort addresses as ``NODEIP_IPv4_<i>``.
"""

from __future__ import annotations

import functools
import ipaddress
from typing import Any

from ovnk.core.config import Config
from ovnk.core.ovn.commands import Match
from ovnk.core.ovn.commands import Ref
from ovnk.core.ovn.ids import OwnerType
from ovnk.core.ovn.ids import hashed_name
from ovnk.core.topology import naming as n
from ovnk.core.topology.annotations import GatewayConfig
from ovnk.core.topology.intents import ClusterTopology
from ovnk.core.topology.intents import NodeTopology
from ovnk.core.topology.intents import RowIntent
from ovnk.core.topology.naming import IPAddress
from ovnk.core.topology.naming import IPNetwork

# Load_Balancer_Group has no external_ids column: its three rows are ours by name.
CLUSTER_TABLES = ("Logical_Router", "Logical_Switch", "Logical_Router_Port", "Logical_Switch_Port", "Port_Group")
NODE_TABLES = (
    "Logical_Switch", "Logical_Switch_Port", "Logical_Router", "Logical_Router_Port", "Logical_Router_Static_Route",
    "Logical_Router_Policy", "NAT", "Chassis_Template_Var",
)

#: Owner types of core's topology rows, one per table.
CLUSTER_OWNERS = {table: OwnerType(name="Cluster", table=table, keys=("name",)) for table in CLUSTER_TABLES}
NODE_OWNERS = {table: OwnerType(name="Node", table=table, keys=("name", "type")) for table in NODE_TABLES}

CLUSTER_OWNER_NAME = "cluster"
#: Role of a node's Chassis_Template_Var row (its NodePort addresses).
NODE_IP_VARS_ROLE = "node-ip-vars"


@functools.lru_cache(maxsize=256)
def port_group_name(controller: str, role: str) -> str:
    """The ``a<fnv>`` name of a cluster port group (``clusterPortGroup``...)."""
    return hashed_name(CLUSTER_OWNERS["Port_Group"].ids(controller, name=role).primary_id)


def _ref(table: str, name: str) -> Ref:
    return Ref(Match.of(table, name=name))


def cluster_topology(cfg: Config) -> ClusterTopology:
    join = cfg.gateway.v4_join_subnet
    cr_join = n.cluster_router_join_ip(join)
    topo = ClusterTopology(
        cluster_subnets=tuple(s.network for s in cfg.default.cluster_subnets),
        join_subnet=join,
    )
    rows = topo.rows
    rows.add(RowIntent("Logical_Router", n.CLUSTER_ROUTER, name=n.CLUSTER_ROUTER,
                       columns={"options": {"always_learn_from_arp_request": "false"}},
                       external_ids={"k8s-cluster-router": "yes"}))
    rows.add(RowIntent("Logical_Switch", n.JOIN_SWITCH, name=n.JOIN_SWITCH))
    rows.add(RowIntent("Logical_Router_Port", n.rtoj(n.CLUSTER_ROUTER), name=n.rtoj(n.CLUSTER_ROUTER),
                       columns={"mac": n.mac_from_ip(cr_join), "networks": [f"{cr_join}/{join.prefixlen}"]},
                       parent=("Logical_Router", n.CLUSTER_ROUTER, "ports")))
    rows.add(RowIntent("Logical_Switch_Port", n.jtor(n.CLUSTER_ROUTER), name=n.jtor(n.CLUSTER_ROUTER),
                       columns={"type": "router", "addresses": ["router"],
                                "options": {"router-port": n.rtoj(n.CLUSTER_ROUTER)}},
                       parent=("Logical_Switch", n.JOIN_SWITCH, "ports")))
    for group in (n.CLUSTER_LB_GROUP, n.CLUSTER_SWITCH_LB_GROUP, n.CLUSTER_ROUTER_LB_GROUP):
        rows.add(RowIntent("Load_Balancer_Group", group, name=group))
    for group in (n.CLUSTER_PORT_GROUP, n.CLUSTER_RTR_PORT_GROUP):
        rows.add(RowIntent("Port_Group", group, name=port_group_name(cfg.controller.name, group)))
    return topo


def node_topology(
    cfg: Config,
    *,
    node: str,
    node_id: int,
    subnets: tuple[IPNetwork, ...],
    chassis_id: str | None,
    gateway: GatewayConfig | None,
    mgmt_mac: str | None,
) -> NodeTopology:
    """The intents of one node; gateway rows only when its gateway facts and chassis id are known."""
    topo = NodeTopology(node=node, node_id=node_id, subnets=subnets, chassis_id=chassis_id, gateway=gateway,
                        mgmt_mac=mgmt_mac)
    v4 = [s for s in subnets if s.version == 4]
    v6 = [s for s in subnets if s.version == 6]
    topo.reserved_ips.extend(n.mgmt_ip(s) for s in subnets)
    rows = topo.rows
    other_config: dict[str, str] = {}
    if v4:
        other_config["subnet"] = str(v4[0])
    if v6:
        other_config["ipv6_prefix"] = str(v6[0].network_address)
    lb_groups = [_ref("Load_Balancer_Group", n.CLUSTER_LB_GROUP), _ref("Load_Balancer_Group", n.CLUSTER_SWITCH_LB_GROUP)]
    rows.add(RowIntent("Logical_Switch", "switch", name=n.node_switch(node),
                       columns={"other_config": other_config, "load_balancer_group": lb_groups}))
    gw_ips = [n.gateway_ip(s) for s in subnets]
    rows.add(RowIntent("Logical_Router_Port", "rtos", name=n.rtos(node),
                       columns={"mac": n.mac_from_ip(gw_ips[0]),
                                "networks": [f"{ip}/{s.prefixlen}" for ip, s in zip(gw_ips, subnets, strict=True)]},
                       parent=("Logical_Router", n.CLUSTER_ROUTER, "ports")))
    rows.add(RowIntent("Logical_Switch_Port", "stor", name=n.stor(node),
                       columns={"type": "router", "addresses": ["router"], "options": {"router-port": n.rtos(node)}},
                       parent=("Logical_Switch", n.node_switch(node), "ports")))
    if mgmt_mac:
        mgmt_ips = " ".join(str(n.mgmt_ip(s)) for s in subnets)
        rows.add(RowIntent("Logical_Switch_Port", "mgmt", name=n.mgmt_port(node),
                           columns={"addresses": [f"{mgmt_mac} {mgmt_ips}"]},
                           parent=("Logical_Switch", n.node_switch(node), "ports")))
    if gateway is not None and chassis_id and v4:
        _gateway_rows(cfg, topo, gateway=gateway, chassis_id=chassis_id, node_subnet=v4[0])
    if gateway is not None and chassis_id:
        _node_ip_vars(cfg, topo, gateway=gateway, chassis_id=chassis_id)
    return topo


def _node_ip_vars(cfg: Config, topo: NodeTopology, *, gateway: GatewayConfig, chassis_id: str) -> None:
    """The chassis' ``NODEIP_IPv<f>_<i>`` variables: its NodePort addresses, which the template load
    balancers of plain NodePort services resolve on that chassis only. A node that serves no NodePorts
    has none, so no template VIP comes alive there."""
    if not (cfg.gateway.nodeport and cfg.gateway.nodeport_templates and gateway.node_port_enable):
        return
    variables: dict[str, str] = {}
    for version in (4, 6):
        for index, ip in enumerate(ip for ip in gateway.host_ips if ip.version == version):
            variables[n.node_ip_var(version, index)] = str(ip)
    if variables:
        topo.rows.add(RowIntent("Chassis_Template_Var", NODE_IP_VARS_ROLE,
                                columns={"chassis": chassis_id, "variables": variables}))


def _gateway_rows(cfg: Config, topo: NodeTopology, *, gateway: GatewayConfig, chassis_id: str,
                  node_subnet: ipaddress.IPv4Network | ipaddress.IPv6Network) -> None:
    node = topo.node
    rows = topo.rows
    gr = n.gateway_router(node)
    join = cfg.gateway.v4_join_subnet
    gr_join = n.join_ip(join, topo.node_id)
    v4_hosts = [(ip, net) for ip, net in zip(gateway.host_ips, gateway.ip_addresses, strict=True) if ip.version == 4]
    if not v4_hosts:
        return
    host_ip, host_net = v4_hosts[0]
    lb_groups = [_ref("Load_Balancer_Group", n.CLUSTER_LB_GROUP)]
    if cfg.gateway.nodeport and gateway.node_port_enable:
        lb_groups.append(_ref("Load_Balancer_Group", n.CLUSTER_ROUTER_LB_GROUP))
    rows.add(RowIntent("Logical_Router", "gw-router", name=gr,
                       columns={"options": {"chassis": chassis_id, "lb_force_snat_ip": "router_ip",
                                            "always_learn_from_arp_request": "false",
                                            "dynamic_neigh_routers": "false", "snat-ct-zone": "0",
                                            "mac_binding_age_threshold": "300"},
                                "load_balancer_group": lb_groups},
                       external_ids={"physical_ip": str(host_ip),
                                     "physical_ips": ",".join(str(ip) for ip in gateway.host_ips)}))
    rows.add(RowIntent("Logical_Router_Port", "gr-join", name=n.rtoj(gr),
                       columns={"mac": n.mac_from_ip(gr_join), "networks": [f"{gr_join}/{join.prefixlen}"]},
                       parent=("Logical_Router", gr, "ports")))
    rows.add(RowIntent("Logical_Switch_Port", "join-gr", name=n.jtor(gr),
                       columns={"type": "router", "addresses": ["router"], "options": {"router-port": n.rtoj(gr)}},
                       parent=("Logical_Switch", n.JOIN_SWITCH, "ports")))
    rows.add(RowIntent("Logical_Router_Port", "gr-ext", name=n.rtoe(node),
                       columns={"mac": gateway.mac_address, "networks": [f"{host_ip}/{host_net.prefixlen}"]},
                       external_ids={"gateway-physical-ip": "yes"},
                       parent=("Logical_Router", gr, "ports")))
    rows.add(RowIntent("Logical_Switch", "ext-switch", name=n.external_switch(node)))
    rows.add(RowIntent("Logical_Switch_Port", "ext-gr", name=n.etor(node),
                       columns={"type": "router", "addresses": [gateway.mac_address],
                                "options": {"router-port": n.rtoe(node), "nat-addresses": "router",
                                            "exclude-lb-vips-from-garp": "true"}},
                       parent=("Logical_Switch", n.external_switch(node), "ports")))
    localnet_columns: dict[str, Any] = {"type": "localnet", "addresses": ["unknown"],
                                        "options": {"network_name": n.PHYSNET}}
    if gateway.vlan_id:
        localnet_columns["tag_request"] = gateway.vlan_id
    rows.add(RowIntent("Logical_Switch_Port", "localnet", name=n.localnet_port(gateway.bridge_id, node),
                       columns=localnet_columns, parent=("Logical_Switch", n.external_switch(node), "ports")))
    cr_join = n.cluster_router_join_ip(join)
    for index, cluster in enumerate(s.network for s in cfg.default.cluster_subnets if s.network.version == 4):
        rows.add(RowIntent("Logical_Router_Static_Route", f"route:gr-cluster:{index}",
                           columns={"ip_prefix": str(cluster), "nexthop": str(cr_join)},
                           parent=("Logical_Router", gr, "static_routes")))
        rows.add(RowIntent("NAT", f"nat:snat:{index}",
                           columns={"type": "snat", "logical_ip": str(cluster), "external_ip": str(host_ip)},
                           parent=("Logical_Router", gr, "nat")))
    for index, hop in enumerate(h for h in gateway.next_hops if h.version == 4):
        rows.add(RowIntent("Logical_Router_Static_Route", f"route:gr-default:{index}",
                           columns={"ip_prefix": "0.0.0.0/0", "nexthop": str(hop), "output_port": [n.rtoe(node)]},
                           parent=("Logical_Router", gr, "static_routes")))
    rows.add(RowIntent("Logical_Router_Static_Route", "route:node-subnet-src",
                       columns={"ip_prefix": str(node_subnet), "nexthop": str(gr_join), "policy": ["src-ip"]},
                       parent=("Logical_Router", n.CLUSTER_ROUTER, "static_routes")))
    # The GR SNATs service traffic to its join IP (lb_force_snat_ip=router_ip). Replies from backends
    # on other nodes would otherwise follow their own node's src-ip route above (a /24 outranks the
    # connected join /16) into *their* GR, which drops them mid-connection: the GR's join IP is
    # reached directly, as ovn-kubernetes routes it (`<GR join IP> -> <GR join IP>`).
    rows.add(RowIntent("Logical_Router_Static_Route", "route:gr-join",
                       columns={"ip_prefix": str(gr_join), "nexthop": str(gr_join)},
                       parent=("Logical_Router", n.CLUSTER_ROUTER, "static_routes")))
    mgmt = n.mgmt_ip(node_subnet)
    for index, ip in enumerate(h for h in _host_ips(gateway) if h.version == 4):
        rows.add(RowIntent("Logical_Router_Policy", f"policy:node-ip:{index}",
                           columns={"priority": n.NODE_SUBNET_POLICY_PRIORITY,
                                    "match": f'inport == "{n.rtos(node)}" && ip4.dst == {ip} /* {node} */',
                                    "action": "reroute", "nexthops": [str(mgmt)]},
                           parent=("Logical_Router", n.CLUSTER_ROUTER, "policies")))


def _host_ips(gateway: GatewayConfig) -> list[IPAddress]:
    return list(gateway.host_ips)
