"""Names, addresses and priorities of the default network, as ovn-kubernetes uses them (public).

Plugins that add rows next to core's (a reroute policy on ``ovn_cluster_router``,
a SNAT on ``GR_<node>``, an ACL on a namespace's port group) build the names of
the rows they refer to with these functions instead of spelling them out, so a
change of scheme in core reaches every plugin. See ovn-kubernetes.md §1.
"""

from __future__ import annotations

from ovnk.core.builtin.pods import namespace_address_set
from ovnk.core.builtin.pods import namespace_port_group
from ovnk.core.topology.builder import port_group_name
from ovnk.core.topology.naming import CLUSTER_LB_GROUP
from ovnk.core.topology.naming import CLUSTER_PORT_GROUP
from ovnk.core.topology.naming import CLUSTER_ROUTER
from ovnk.core.topology.naming import CLUSTER_ROUTER_LB_GROUP
from ovnk.core.topology.naming import CLUSTER_RTR_PORT_GROUP
from ovnk.core.topology.naming import CLUSTER_SWITCH_LB_GROUP
from ovnk.core.topology.naming import DEFAULT_NETWORK
from ovnk.core.topology.naming import DEFAULT_NO_REROUTE_PRIORITY
from ovnk.core.topology.naming import EGRESS_IP_REROUTE_PRIORITY
from ovnk.core.topology.naming import EGRESS_SVC_REROUTE_PRIORITY
from ovnk.core.topology.naming import JOIN_SWITCH
from ovnk.core.topology.naming import NODE_SUBNET_POLICY_PRIORITY
from ovnk.core.topology.naming import PHYSNET
from ovnk.core.topology.naming import IPAddress
from ovnk.core.topology.naming import IPNetwork
from ovnk.core.topology.naming import cluster_router_join_ip
from ovnk.core.topology.naming import etor
from ovnk.core.topology.naming import external_switch
from ovnk.core.topology.naming import gateway_ip
from ovnk.core.topology.naming import gateway_router
from ovnk.core.topology.naming import hairpin_ip
from ovnk.core.topology.naming import join_ip
from ovnk.core.topology.naming import jtor
from ovnk.core.topology.naming import localnet_port
from ovnk.core.topology.naming import mac_from_ip
from ovnk.core.topology.naming import masquerade_ip
from ovnk.core.topology.naming import mgmt_ip
from ovnk.core.topology.naming import mgmt_port
from ovnk.core.topology.naming import node_switch
from ovnk.core.topology.naming import pod_port
from ovnk.core.topology.naming import rtoe
from ovnk.core.topology.naming import rtoj
from ovnk.core.topology.naming import rtos
from ovnk.core.topology.naming import stor

__all__ = [
    "CLUSTER_LB_GROUP",
    "CLUSTER_PORT_GROUP",
    "CLUSTER_ROUTER",
    "CLUSTER_ROUTER_LB_GROUP",
    "CLUSTER_RTR_PORT_GROUP",
    "CLUSTER_SWITCH_LB_GROUP",
    "DEFAULT_NETWORK",
    "DEFAULT_NO_REROUTE_PRIORITY",
    "EGRESS_IP_REROUTE_PRIORITY",
    "EGRESS_SVC_REROUTE_PRIORITY",
    "JOIN_SWITCH",
    "NODE_SUBNET_POLICY_PRIORITY",
    "PHYSNET",
    "IPAddress",
    "IPNetwork",
    "cluster_router_join_ip",
    "etor",
    "external_switch",
    "gateway_ip",
    "gateway_router",
    "hairpin_ip",
    "join_ip",
    "jtor",
    "localnet_port",
    "mac_from_ip",
    "masquerade_ip",
    "mgmt_ip",
    "mgmt_port",
    "namespace_address_set",
    "namespace_port_group",
    "node_switch",
    "pod_port",
    "port_group_name",
    "rtoe",
    "rtoj",
    "rtos",
    "stor",
]
