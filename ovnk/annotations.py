"""The ``k8s.ovn.org/*`` annotations core writes and reads, and their parsers (public).

Plugins read pods' and nodes' network facts through these (a pod's IPs, a
node's subnets, its primary address and gateway) rather than parsing the JSON
themselves. The formats are ovn-kubernetes' (ovn-kubernetes.md §2). Parsers
raise :class:`AnnotationError` naming the annotation when it is malformed.
"""

from __future__ import annotations

from ovnk.core.topology.annotations import ACL_LOGGING
from ovnk.core.topology.annotations import DEFAULT
from ovnk.core.topology.annotations import HOST_CIDRS
from ovnk.core.topology.annotations import L3_GATEWAY_CONFIG
from ovnk.core.topology.annotations import NODE_CHASSIS_ID
from ovnk.core.topology.annotations import NODE_ENCAP_IPS
from ovnk.core.topology.annotations import NODE_ID
from ovnk.core.topology.annotations import NODE_MGMT_PORT_MAC
from ovnk.core.topology.annotations import NODE_PRIMARY_IFADDR
from ovnk.core.topology.annotations import NODE_SUBNETS
from ovnk.core.topology.annotations import POD_NETWORKS
from ovnk.core.topology.annotations import AnnotationError
from ovnk.core.topology.annotations import GatewayConfig
from ovnk.core.topology.annotations import PodNetwork
from ovnk.core.topology.annotations import PodRoute
from ovnk.core.topology.annotations import annotations_of
from ovnk.core.topology.annotations import chassis_id
from ovnk.core.topology.annotations import gateway_config
from ovnk.core.topology.annotations import node_id
from ovnk.core.topology.annotations import node_subnets
from ovnk.core.topology.annotations import pod_ips
from ovnk.core.topology.annotations import pod_network
from ovnk.core.topology.annotations import pod_networks_raw
from ovnk.core.topology.annotations import primary_ifaddr

__all__ = [
    "ACL_LOGGING",
    "DEFAULT",
    "HOST_CIDRS",
    "L3_GATEWAY_CONFIG",
    "NODE_CHASSIS_ID",
    "NODE_ENCAP_IPS",
    "NODE_ID",
    "NODE_MGMT_PORT_MAC",
    "NODE_PRIMARY_IFADDR",
    "NODE_SUBNETS",
    "POD_NETWORKS",
    "AnnotationError",
    "GatewayConfig",
    "PodNetwork",
    "PodRoute",
    "annotations_of",
    "chassis_id",
    "gateway_config",
    "node_id",
    "node_subnets",
    "pod_ips",
    "pod_network",
    "pod_networks_raw",
    "primary_ifaddr",
]
