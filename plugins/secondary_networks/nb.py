"""The NB rows of a secondary network, as pure functions of its config, nodes and pods.

Names are upstream's, with the network's prefix ``p`` (``tenant-blue`` ->
``tenant.blue_``; ovn-kubernetes.md §6.7). One central NB holds every node,
so a layer3 network needs no transit switch: its router is distributed.

=========  ===================================  ===========================================================
topology   row                                  what
=========  ===================================  ===========================================================
layer3     router ``<p>ovn_cluster_router``      the network's distributed router
layer3     switch ``<p><node>``                  ``other_config:subnet`` = the node's subnet of the network
layer3     port ``rtos-<p><node>``               router port, ``.1`` of the node subnet, MAC from that IP
layer3     port ``stor-<p><node>``               the switch's router-type port to it
layer2     switch ``<p>ovn_layer2_switch``       one switch across every node (``other_config:subnet``)
localnet   switch ``<p>ovn_localnet_switch``     one switch across every node (``other_config:subnet``)
localnet   port ``<p>ovn_localnet_port``         ``type=localnet``, ``addresses=unknown``,
                                                 ``options:network_name=<physical network>``,
                                                 ``tag_request=<vlanID>`` when set
any        port ``<nad prefix><ns>_<pod>``       one per attachment: addresses and port security
                                                 ``<mac> <ips>``, ``iface-id-ver``, ``requested-chassis``
=========  ===================================  ===========================================================

Every row carries ``k8s.ovn.org/network``, ``k8s.ovn.org/topology`` and
``k8s.ovn.org/role=secondary`` (pod ports also ``k8s.ovn.org/nad``,
``namespace`` and ``pod=true``) next to ovnk's ownership keys: owner type
``SecondaryNetwork`` (keys: network name, row role) for the topology and
``SecondaryNetworkPod`` (keys: network name, port name) for pod ports, so
``owned_by_name(owner, <network>)`` finds every row of one network.
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field

from ovnk import DbObjectIds
from ovnk import OwnerType
from ovnk import names
from ovnk.names import IPAddress
from ovnk.names import IPNetwork
from ovnk.plugins.secondary_networks.models import LAYER2
from ovnk.plugins.secondary_networks.models import LAYER3
from ovnk.plugins.secondary_networks.models import LOCALNET
from ovnk.plugins.secondary_networks.models import NAD_KEY
from ovnk.plugins.secondary_networks.models import NETWORK_KEY
from ovnk.plugins.secondary_networks.models import ROLE_KEY
from ovnk.plugins.secondary_networks.models import SECONDARY
from ovnk.plugins.secondary_networks.models import TOPOLOGY_KEY
from ovnk.plugins.secondary_networks.models import NetworkSpec

TOPOLOGY_TABLES = ("Logical_Router", "Logical_Switch", "Logical_Router_Port", "Logical_Switch_Port")
#: Topology rows, one owner type per table: keys (network, role of the row).
TOPOLOGY_OWNERS = {table: OwnerType(name="SecondaryNetwork", table=table, keys=("name", "type"))
                   for table in TOPOLOGY_TABLES}
#: Pod attachments: keys (network, port name).
POD_PORT = OwnerType(name="SecondaryNetworkPod", table="Logical_Switch_Port", keys=("name", "port"))
OWNER_TYPES = (*TOPOLOGY_OWNERS.values(), POD_PORT)
#: Children before parents: the order in which a network's rows are deleted.
TEARDOWN_ORDER = (POD_PORT, TOPOLOGY_OWNERS["Logical_Switch_Port"], TOPOLOGY_OWNERS["Logical_Router_Port"],
                  TOPOLOGY_OWNERS["Logical_Switch"], TOPOLOGY_OWNERS["Logical_Router"])

NETWORK_ROLE = "network"


@dataclass(frozen=True)
class Row:
    """One desired row: table, row role (part of its identity), name, columns and the parent referencing it."""

    table: str
    role: str
    name: str
    columns: Mapping[str, object] = field(default_factory=dict)
    parent: tuple[str, str, str] | None = None

    def ids(self, controller: str, network: str) -> DbObjectIds:
        return TOPOLOGY_OWNERS[self.table].ids(controller, name=network, type=self.role)


# -- names ------------------------------------------------------------------------------


def router(spec: NetworkSpec) -> str:
    return spec.prefix + names.CLUSTER_ROUTER


def node_switch(spec: NetworkSpec, node: str) -> str:
    return spec.prefix + node


def rtos(spec: NetworkSpec, node: str) -> str:
    return names.rtos(node_switch(spec, node))


def stor(spec: NetworkSpec, node: str) -> str:
    return names.stor(node_switch(spec, node))


def switch_name(spec: NetworkSpec, node: str = "") -> str:
    """The switch pods of ``node`` attach to."""
    if spec.topology == LAYER3:
        return node_switch(spec, node)
    if spec.topology == LAYER2:
        return spec.prefix + "ovn_layer2_switch"
    return spec.prefix + "ovn_localnet_switch"


def localnet_port(spec: NetworkSpec) -> str:
    return spec.prefix + "ovn_localnet_port"


def network_external_ids(spec: NetworkSpec) -> dict[str, str]:
    return {NETWORK_KEY: spec.name, TOPOLOGY_KEY: spec.topology, ROLE_KEY: SECONDARY}


def node_role(kind: str, node: str) -> str:
    """Role of a layer3 node row (``switch:<node>``); :func:`role_node` reads the node back."""
    return f"{kind}:{node}"


def role_node(role: str) -> str | None:
    kind, sep, node = role.partition(":")
    return node if sep and kind in ("switch", "rtos", "stor") else None


def _switch_config(subnets: Iterable[IPNetwork]) -> dict[str, str]:
    other: dict[str, str] = {}
    for subnet in subnets:
        if subnet.version == 4 and "subnet" not in other:
            other["subnet"] = str(subnet)
        elif subnet.version == 6 and "ipv6_prefix" not in other:
            other["ipv6_prefix"] = str(subnet.network_address)
    return other


# -- rows -----------------------------------------------------------------------------------


def network_rows(spec: NetworkSpec) -> list[Row]:
    """The rows of a network that do not depend on nodes."""
    if spec.topology == LAYER3:
        return [Row("Logical_Router", NETWORK_ROLE, router(spec))]
    switch = switch_name(spec)
    rows = [Row("Logical_Switch", NETWORK_ROLE, switch,
                columns={"other_config": _switch_config(s.cidr for s in spec.subnets)})]
    if spec.topology == LOCALNET:
        columns: dict[str, object] = {"type": "localnet", "addresses": ["unknown"],
                                      "options": {"network_name": spec.physical_network},
                                      "tag_request": [spec.vlan_id] if spec.vlan_id else []}
        rows.append(Row("Logical_Switch_Port", "localnet", localnet_port(spec), columns=columns,
                        parent=("Logical_Switch", switch, "ports")))
    return rows


def node_rows(spec: NetworkSpec, node: str, subnets: Sequence[IPNetwork]) -> list[Row]:
    """A layer3 network's rows of one node (none for the other topologies)."""
    if spec.topology != LAYER3 or not subnets:
        return []
    switch = node_switch(spec, node)
    gateways = [names.gateway_ip(s) for s in subnets]
    mac_source = next((g for g in gateways if g.version == 4), gateways[0])
    return [
        Row("Logical_Switch", node_role("switch", node), switch, columns={"other_config": _switch_config(subnets)}),
        Row("Logical_Router_Port", node_role("rtos", node), rtos(spec, node),
            columns={"mac": names.mac_from_ip(mac_source),
                     "networks": [f"{g}/{s.prefixlen}" for g, s in zip(gateways, subnets, strict=True)]},
            parent=("Logical_Router", router(spec), "ports")),
        Row("Logical_Switch_Port", node_role("stor", node), stor(spec, node),
            columns={"type": "router", "addresses": ["router"], "options": {"router-port": rtos(spec, node)}},
            parent=("Logical_Switch", switch, "ports")),
    ]


@dataclass(frozen=True)
class PodPort:
    """One attachment's logical switch port."""

    name: str
    switch: str
    nad_key: str
    namespace: str
    pod: str
    uid: str
    mac: str
    ips: tuple[IPAddress, ...]
    chassis: str

    def ids(self, controller: str, network: str) -> DbObjectIds:
        return POD_PORT.ids(controller, name=network, port=self.name)

    def columns(self) -> dict[str, object]:
        address = " ".join([self.mac, *(str(ip) for ip in self.ips)])
        return {"addresses": [address], "port_security": [address],
                "options": {"iface-id-ver": self.uid, "requested-chassis": self.chassis}}

    def external_ids(self, spec: NetworkSpec) -> dict[str, str]:
        return {**network_external_ids(spec), NAD_KEY: self.nad_key, "namespace": self.namespace, "pod": "true"}
