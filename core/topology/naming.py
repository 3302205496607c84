"""Names, addresses and constants of the default network, as ovn-kubernetes uses them.

See ovn-kubernetes.md §1 (object names, port names, addresses and ranges).
"""

from __future__ import annotations

import hashlib
import ipaddress
from typing import Final

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

CLUSTER_ROUTER: Final = "ovn_cluster_router"
JOIN_SWITCH: Final = "join"
CLUSTER_LB_GROUP: Final = "clusterLBGroup"
CLUSTER_SWITCH_LB_GROUP: Final = "clusterSwitchLBGroup"
CLUSTER_ROUTER_LB_GROUP: Final = "clusterRouterLBGroup"
CLUSTER_PORT_GROUP: Final = "clusterPortGroup"
CLUSTER_RTR_PORT_GROUP: Final = "clusterRtrPortGroup"
PHYSNET: Final = "physnet"
DEFAULT_NETWORK: Final = "default"

# Router policy priorities (go-controller/pkg/types/const.go).
NODE_SUBNET_POLICY_PRIORITY: Final = 1004  # pod -> own node IP through the management port
DEFAULT_NO_REROUTE_PRIORITY: Final = 102
EGRESS_SVC_REROUTE_PRIORITY: Final = 101
EGRESS_IP_REROUTE_PRIORITY: Final = 100


def node_switch(node: str) -> str:
    return node


def rtos(node: str) -> str:
    """Cluster-router port towards the node switch."""
    return f"rtos-{node}"


def stor(node: str) -> str:
    """Node-switch port towards the cluster router."""
    return f"stor-{node}"


def mgmt_port(node: str) -> str:
    """Management LSP (OVS side: interface ovn-k8s-mp0 with iface-id k8s-<node>)."""
    return f"k8s-{node}"


def gateway_router(node: str) -> str:
    return f"GR_{node}"


def external_switch(node: str) -> str:
    return f"ext_{node}"


def rtoj(router: str) -> str:
    return f"rtoj-{router}"


def jtor(router: str) -> str:
    return f"jtor-{router}"


def rtoe(node: str) -> str:
    return f"rtoe-{gateway_router(node)}"


def etor(node: str) -> str:
    return f"etor-{gateway_router(node)}"


def localnet_port(bridge: str, node: str) -> str:
    """Localnet port of the external switch, e.g. ``breth0_node-1``."""
    return f"{bridge}_{node}"


def node_ip_var(version: int, index: int) -> str:
    """The chassis template variable holding a node's ``index``-th NodePort address of one IP family
    (``NODEIP_IPv4_0``); template load balancers reference it as ``^NODEIP_IPv4_0``."""
    return f"NODEIP_IPv{version}_{index}"


def pod_port(namespace: str, name: str) -> str:
    """Pod LSP name and OVS ``iface-id``: ``<namespace>_<pod>``."""
    return f"{namespace}_{name}"


def mac_from_ip(ip: IPAddress | str) -> str:
    """``0a:58:`` + the 4 IPv4 bytes, or the first 4 bytes of sha256(ip) for IPv6."""
    addr = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
    if addr.version == 4:
        raw = addr.packed
    else:
        raw = hashlib.sha256(str(addr).encode()).digest()[:4]
    return "0a:58:" + ":".join(f"{b:02x}" for b in raw)


def nth_address(network: IPNetwork, n: int) -> IPAddress:
    return network.network_address + n


def gateway_ip(subnet: IPNetwork) -> IPAddress:
    """``.1`` of a node subnet: the ``rtos-`` port."""
    return nth_address(subnet, 1)


def mgmt_ip(subnet: IPNetwork) -> IPAddress:
    """``.2`` of a node subnet: the management port."""
    return nth_address(subnet, 2)


def join_ip(join_subnet: ipaddress.IPv4Network, node_id: int) -> ipaddress.IPv4Address:
    """Join IP of ``GR_<node>``: join subnet base + node id (100.64.0.2 for node id 2)."""
    return join_subnet.network_address + node_id


def cluster_router_join_ip(join_subnet: ipaddress.IPv4Network) -> ipaddress.IPv4Address:
    """First join IP: ``rtoj-ovn_cluster_router`` (100.64.0.1)."""
    return join_subnet.network_address + 1


def masquerade_ip(masq_subnet: ipaddress.IPv4Network, offset: int) -> ipaddress.IPv4Address:
    """Masquerade subnet offsets: .1 OVN masq, .2 host masq, .3 ETP=local, .4 dummy next hop, .5 hairpin."""
    return masq_subnet.network_address + offset


def hairpin_ip(masq_subnet: ipaddress.IPv4Network) -> ipaddress.IPv4Address:
    return masquerade_ip(masq_subnet, 5)
