"""Row intents: the desired NB rows of the cluster, of a node and of a pod, before they are written.

Core builds the intents, hands them to plugins (``ovnk_cluster_topology``,
``ovnk_node_topology``, ``ovnk_pod_lsp``) so they can adjust the keys their
feature owns, then writes them with :func:`write_rows` as idempotent
``ensure`` commands in the object's one transaction. A node reconcile also
deletes rows it owns for that node that are no longer intended, so the
topology converges whatever changed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from ovnk.core.ovn.commands import Match
from ovnk.core.ovn.commands import Parent
from ovnk.core.ovn.ids import OwnerType
from ovnk.core.ovn.txn import NbTxn
from ovnk.core.topology.annotations import GatewayConfig
from ovnk.core.topology.naming import IPAddress
from ovnk.core.topology.naming import IPNetwork

# Tables whose rows are found by their ``name`` column; the others by primary id.
NAMED_TABLES = frozenset({
    "Logical_Switch", "Logical_Router", "Logical_Switch_Port", "Logical_Router_Port", "Port_Group",
    "Address_Set", "Load_Balancer", "Load_Balancer_Group", "Gateway_Chassis", "Meter", "Copp",
})


@dataclass
class RowIntent:
    """One desired row.

    :param table: NB table.
    :param role: identity of the row within its owner (``switch``, ``rtos``,
        ``route:gr-default``...); part of the primary id.
    :param name: the row's ``name`` for named tables.
    :param columns: complete desired values of the listed columns.
    :param parent: (table, name, column) of the row that must reference this one.
    :param owner: owner type; defaults to the topology's (Cluster or Node).
    :param external_ids: extra, non-ownership external_ids.
    """

    table: str
    role: str
    name: str | None = None
    columns: dict[str, Any] = field(default_factory=dict)
    parent: tuple[str, str, str] | None = None
    owner: OwnerType | None = None
    external_ids: dict[str, str] = field(default_factory=dict)


class RowSet:
    """Ordered intents by role (parents before children); plugins may add, change or drop."""

    def __init__(self) -> None:
        self._rows: dict[str, RowIntent] = {}

    def add(self, intent: RowIntent) -> RowIntent:
        self._rows[intent.role] = intent
        return intent

    def get(self, role: str) -> RowIntent | None:
        return self._rows.get(role)

    def __getitem__(self, role: str) -> RowIntent:
        return self._rows[role]

    def __contains__(self, role: object) -> bool:
        return role in self._rows

    def discard(self, role: str) -> None:
        self._rows.pop(role, None)

    def __iter__(self) -> Iterator[RowIntent]:
        return iter(list(self._rows.values()))

    def __len__(self) -> int:
        return len(self._rows)


@dataclass
class ClusterTopology:
    """Cluster-wide rows: ``ovn_cluster_router``, ``join``, LB groups, cluster port groups."""

    rows: RowSet = field(default_factory=RowSet)
    cluster_subnets: tuple[IPNetwork, ...] = ()
    join_subnet: ipaddress.IPv4Network | None = None


@dataclass
class NodeTopology:
    """One node's rows and the facts they were built from.

    Plugins may append to ``reserved_ips`` (never handed to pods; written to the
    switch's ``exclude_ips``) and edit or add rows.
    """

    node: str
    node_id: int
    subnets: tuple[IPNetwork, ...]
    chassis_id: str | None
    gateway: GatewayConfig | None
    mgmt_mac: str | None
    rows: RowSet = field(default_factory=RowSet)
    reserved_ips: list[IPAddress] = field(default_factory=list)


@dataclass
class PodPort:
    """The logical switch port of a pod (``ovnk_pod_lsp`` may edit it).

    ``port_groups`` are Port_Group names the port must belong to;
    ``address_sets`` are Address_Set names that must contain the pod's IPs.
    """

    name: str
    switch: str
    namespace: str
    pod: str
    uid: str
    mac: str
    ips: tuple[IPAddress, ...]
    addresses: list[str] = field(default_factory=list)
    port_security: list[str] = field(default_factory=list)
    options: dict[str, str] = field(default_factory=dict)
    external_ids: dict[str, str] = field(default_factory=dict)
    port_groups: list[str] = field(default_factory=list)
    address_sets: list[str] = field(default_factory=list)


def write_rows(txn: NbTxn, rows: Iterable[RowIntent], *, owner_name: str, default_owner: dict[str, OwnerType]) -> set[str]:
    """Add one ``ensure`` per intent; returns the primary ids written.

    ``default_owner`` maps table -> owner type for intents without their own.
    The owner type's keys are ``(name, type)``: ``name`` = ``owner_name``
    (the node or ``cluster``), ``type`` = the intent's role.
    """
    written = set()
    for intent in rows:
        if intent.owner is None and intent.table not in default_owner:
            # A table without external_ids (Load_Balancer_Group): found and owned by name only.
            txn.ensure(intent.table, name=intent.name, columns=intent.columns)
            continue
        owner = intent.owner or default_owner[intent.table]
        values: dict[str, str] = {"name": owner_name, "type": intent.role}
        if owner.keys == ("name",):
            values = {"name": intent.role}
        oids = owner.ids(txn.controller, **values)
        parent = None
        if intent.parent is not None:
            ptable, pname, pcolumn = intent.parent
            parent = Parent(Match.of(ptable, name=pname), pcolumn)
        if intent.table in NAMED_TABLES and intent.name is not None:
            txn.ensure(intent.table, name=intent.name, ids=oids, columns=intent.columns,
                       external_ids=intent.external_ids, parent=parent)
        else:
            txn.ensure(intent.table, ids=oids, columns=intent.columns, external_ids=intent.external_ids,
                       parent=parent)
        written.add(oids.primary_id)
    return written
