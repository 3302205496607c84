"""The NB rows of the hybrid overlay for one OVN node, as pure functions (ovn-kubernetes.md §6.5).

For an OVN node ``<node>`` with distributed-router (DR) IP ``D`` (its subnet's
``.3`` unless taken) and MAC ``M``, and each *target* (a hybrid cluster subnet,
or one foreign node's subnet when the cluster subnets are not configured):

============================  ==========================  ============================================
row                           where                       what
============================  ==========================  ============================================
LSP ``int-<node>``            switch ``<node>``           ``addresses: "M D"``: the patch port to the
                                                          node's ``br-ext``
policy ``hybrid-subnet-<n>``  ``ovn_cluster_router``      priority 1002, ``inport == "rtos-<node>" &&
                                                          ip4.dst == <target>``, reroute ``D``
policy ``…-gr``               ``ovn_cluster_router``      priority 1002, ``ip4.src == <GR join IP> &&
                                                          ip4.dst == <target>``, reroute ``D``
static route                  ``ovn_cluster_router``      ``<target> -> D`` (traffic the GR sends in
                                                          reaches the policy stage)
static route ``…-gr``         ``GR_<node>``               ``<target> -> <cluster router join IP>``
============================  ==========================  ============================================

``D`` is also excluded from the switch's IPAM (``exclude_ips``). The GR rows
exist once the node has its gateway router. ``external_ids:name`` carries
upstream's names (``hybrid-subnet-<node>``, ``…:<foreign node>`` per foreign
node, ``…-gr``); ownership is ``k8s.ovn.org/owner-type=HybridOverlay`` with the
node as ``k8s.ovn.org/name``, and core writes and prunes the rows with the
node's other rows (``ovnk_node_topology``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from ovnk import OwnerType
from ovnk import RowIntent
from ovnk import names

OWNER = "HybridOverlay"
PORT = OwnerType(name=OWNER, table="Logical_Switch_Port", keys=("name", "type"))
POLICY = OwnerType(name=OWNER, table="Logical_Router_Policy", keys=("name", "type"))
ROUTE = OwnerType(name=OWNER, table="Logical_Router_Static_Route", keys=("name", "type"))
OWNER_TYPES = (PORT, POLICY, ROUTE)

#: Upstream's ``HybridOverlaySubnetPriority``.
SUBNET_POLICY_PRIORITY = 1002
PORT_PREFIX = "int-"
SUBNET_PREFIX = "hybrid-subnet-"
GR_SUFFIX = "-gr"
#: Roles (``type`` key) of the rows; unique among a node's row intents.
ROLE_PORT = "hybrid-overlay:port"


def port_name(node: str) -> str:
    """The LSP (and OVS ``iface-id``) of an OVN node's distributed-router port."""
    return f"{PORT_PREFIX}{node}"


@dataclass(frozen=True)
class Target:
    """Where foreign pods live: a hybrid cluster subnet (``foreign`` empty) or one foreign node's subnet."""

    subnet: ipaddress.IPv4Network
    foreign: str = ""

    def row_name(self, node: str) -> str:
        """Upstream's ``external_ids:name``: ``hybrid-subnet-<node>`` or ``hybrid-subnet-<node>:<foreign>``."""
        base = f"{SUBNET_PREFIX}{node}"
        return f"{base}:{self.foreign}" if self.foreign else base

    def gr_row_name(self, node: str) -> str:
        base = f"{SUBNET_PREFIX}{node}{GR_SUFFIX}"
        return f"{base}:{self.foreign}" if self.foreign else base


def node_rows(
    *,
    node: str,
    dr_ip: ipaddress.IPv4Address,
    dr_mac: str,
    targets: Sequence[Target],
    gr_join_ip: ipaddress.IPv4Address | None,
    cluster_router_join_ip: ipaddress.IPv4Address,
) -> list[RowIntent]:
    """Every hybrid overlay row of OVN node ``node`` (module docstring).

    :param gr_join_ip: the node's gateway router join IP; ``None`` while it has no gateway router
        (then there are no GR rows).
    """
    rows = [RowIntent("Logical_Switch_Port", ROLE_PORT, name=port_name(node),
                      columns={"addresses": [f"{dr_mac} {dr_ip}"]},
                      parent=("Logical_Switch", names.node_switch(node), "ports"), owner=PORT)]
    for target in sorted(targets, key=lambda t: (t.subnet, t.foreign)):
        key = f"{target.subnet}:{target.foreign}" if target.foreign else str(target.subnet)
        rows.append(RowIntent(
            "Logical_Router_Policy", f"hybrid-overlay:policy:{key}", owner=POLICY,
            columns={"priority": SUBNET_POLICY_PRIORITY, "action": "reroute", "nexthops": [str(dr_ip)],
                     "match": f'inport == "{names.rtos(node)}" && ip4.dst == {target.subnet}'},
            external_ids={"name": target.row_name(node)},
            parent=("Logical_Router", names.CLUSTER_ROUTER, "policies")))
        rows.append(RowIntent(
            "Logical_Router_Static_Route", f"hybrid-overlay:route:{key}", owner=ROUTE,
            columns={"ip_prefix": str(target.subnet), "nexthop": str(dr_ip)},
            external_ids={"name": target.row_name(node)},
            parent=("Logical_Router", names.CLUSTER_ROUTER, "static_routes")))
        if gr_join_ip is None:
            continue
        rows.append(RowIntent(
            "Logical_Router_Policy", f"hybrid-overlay:gr-policy:{key}", owner=POLICY,
            columns={"priority": SUBNET_POLICY_PRIORITY, "action": "reroute", "nexthops": [str(dr_ip)],
                     "match": f"ip4.src == {gr_join_ip} && ip4.dst == {target.subnet}"},
            external_ids={"name": target.gr_row_name(node)},
            parent=("Logical_Router", names.CLUSTER_ROUTER, "policies")))
        rows.append(RowIntent(
            "Logical_Router_Static_Route", f"hybrid-overlay:gr-route:{key}", owner=ROUTE,
            columns={"ip_prefix": str(target.subnet), "nexthop": str(cluster_router_join_ip)},
            external_ids={"name": target.gr_row_name(node)},
            parent=("Logical_Router", names.gateway_router(node), "static_routes")))
    return rows
