"""Core plugin: the default network's topology, cluster-wide and per node (and the cluster-manager role).

Controllers:

* ``cluster`` (singleton key ``cluster``): ``ovn_cluster_router``, ``join``, LB
  groups, cluster port groups.
* ``nodes``: allocates each node a host subnet and a node id (published as
  ``k8s.ovn.org/node-subnets`` and ``k8s.ovn.org/node-id``), writes its rows in
  one transaction with what plugins add, deletes rows it no longer intends,
  and on node deletion removes every row of the node and frees subnet and id.

Restore (always, before repair and workers): the subnet and node-id
allocators are rebuilt from the node annotations, and pod IPs and MACs from
what ovnk itself committed (see :meth:`TopologyController.restore_allocations`).
Repair: rows of nodes that no longer exist are planned for deletion.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from ovnk.core.builtin import common
from ovnk.core.builtin.pods import PODS_CONTROLLER
from ovnk.core.claims import Claims
from ovnk.core.context import ControllerContext
from ovnk.core.errors import PermanentError
from ovnk.core.errors import TemporaryError
from ovnk.core.hookspecs import hookimpl
from ovnk.core.kube.resources import NODES
from ovnk.core.kube.resources import PODS
from ovnk.core.ovn.commands import Match
from ovnk.core.ovn.commands import Ref
from ovnk.core.ovn.ids import OWNER_CONTROLLER_KEY
from ovnk.core.ovn.ids import parse_ids
from ovnk.core.ovn.sync import RepairPlan
from ovnk.core.plugins import OvnkPluginManager
from ovnk.core.reconcile.spec import ControllerSpec
from ovnk.core.reconcile.spec import ReconcileRequest
from ovnk.core.reconcile.spec import Watch
from ovnk.core.topology import annotations as ann
from ovnk.core.topology import builder
from ovnk.core.topology import naming as n
from ovnk.core.topology.intents import NodeTopology
from ovnk.core.topology.intents import write_rows
from ovnk.core.topology.ipam import AllocationError
from ovnk.core.topology.state import NodeFacts

logger = logging.getLogger(__name__)

CLUSTER_KEY = "cluster"

NODE_ANNOTATIONS_WRITTEN = (ann.NODE_SUBNETS, ann.NODE_ID)
NODE_ANNOTATIONS_READ = (ann.NODE_CHASSIS_ID, ann.L3_GATEWAY_CONFIG, ann.NODE_PRIMARY_IFADDR,
                         ann.NODE_MGMT_PORT_MAC, ann.HOST_CIDRS, ann.NODE_ENCAP_IPS)


@hookimpl
def ovnk_claims(claims: Claims) -> None:
    for owner in (*builder.CLUSTER_OWNERS.values(), *builder.NODE_OWNERS.values()):
        claims.owner_type(owner)
    for key in NODE_ANNOTATIONS_WRITTEN + NODE_ANNOTATIONS_READ:
        claims.annotation(key)


def node_needs_update(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Node status heartbeats do not matter; annotations, labels and spec do."""
    return common.changed(old, new, ("metadata.annotations", "metadata.labels", "spec", "metadata.deletionTimestamp"))


class TopologyController:
    """Reconciles the cluster singleton and the nodes."""

    def __init__(self, ctx: ControllerContext) -> None:
        self.ctx = ctx
        self.cfg = ctx.config
        self.state = ctx.topology
        # Node -> the owner of the foreign Chassis_Template_Var row last reported for its chassis.
        self._template_conflicts: dict[str, str] = {}

    # -- cluster ---------------------------------------------------------------

    def reconcile_cluster(self, req: ReconcileRequest) -> None:
        topo = builder.cluster_topology(self.cfg)
        self.ctx.pm.hook.ovnk_cluster_topology(ctx=self.ctx, topology=topo)
        with self.ctx.nb.transaction(reason="cluster topology", owner="Cluster") as txn:
            write_rows(txn, topo.rows, owner_name=builder.CLUSTER_OWNER_NAME, default_owner=builder.CLUSTER_OWNERS)
        self.state.cluster_ready.set()

    # -- nodes -----------------------------------------------------------------

    def reconcile_node(self, req: ReconcileRequest) -> None:
        name = req.key
        node = self.ctx.cache(NODES).get(name)
        if node is None:
            self._delete_node(name, req.deleted)
            return
        if not self.state.cluster_ready.is_set():
            raise TemporaryError("cluster topology not written yet", delay=0.2)
        wants = self.ctx.pm.hook.ovnk_node_hostsubnet(ctx=self.ctx, node=node)
        if wants is False:
            self._delete_node_rows(name, node, reason=f"node {name} has no host subnet")
            self.state.remove_node(name)
            self.state.subnets.release(name)
            if ann.NODE_SUBNETS in ann.annotations_of(node):
                self.ctx.kube.patch(NODES, name, {"metadata": {"annotations": {ann.NODE_SUBNETS: None}}},
                                    subresource="status")
            return
        try:
            subnets = tuple(self.state.subnets.allocate(name))
            node_id = self.state.node_ids.allocate(name)
        except AllocationError as exc:
            self.ctx.events.event(node, type="Warning", reason="ErrorAllocatingSubnet", message=str(exc))
            raise TemporaryError(f"cannot allocate for node {name}: {exc}", delay=10) from exc
        self._publish_allocations(node, subnets, node_id)
        try:
            gateway = ann.gateway_config(node)
            mgmt_mac = ann.mgmt_port_mac(node)
        except ann.AnnotationError as exc:
            self.ctx.events.event(node, type="Warning", reason="InvalidAnnotation", message=str(exc))
            raise PermanentError(f"node {name}: {exc}") from exc
        topo = builder.node_topology(self.cfg, node=name, node_id=node_id, subnets=subnets,
                                     chassis_id=ann.chassis_id(node), gateway=gateway, mgmt_mac=mgmt_mac)
        self.ctx.pm.hook.ovnk_node_topology(ctx=self.ctx, node=node, topology=topo)
        self._skip_foreign_template_vars(node, topo)
        switch = topo.rows.get("switch")
        if switch is not None:
            excluded = [str(ip) for ip in topo.reserved_ips if ip.version == 4]
            other = dict(switch.columns.get("other_config", {}))
            if excluded:
                other["exclude_ips"] = " ".join(excluded)
            switch.columns["other_config"] = other
        controller = self.cfg.controller.name
        owners = self.state.note_node_owners(
            name, [*builder.NODE_OWNERS.values(), *(i.owner for i in topo.rows if i.owner is not None)])
        with self.ctx.nb.transaction(reason=f"node {name}", owner="Node") as txn:
            written = write_rows(txn, topo.rows, owner_name=name, default_owner=builder.NODE_OWNERS)
            # Rows of this node (core's, and plugins' node intents) that are no longer intended.
            for owner in owners:
                for row in self.ctx.nb.owned_by_name(owner, name):
                    if row.primary_id not in written:
                        txn.remove(owner.table, uuid=row.uuid)
            if "stor" in topo.rows:
                txn.add_to(Match.of("Port_Group", name=builder.port_group_name(controller, n.CLUSTER_RTR_PORT_GROUP)),
                           "ports", [Ref(Match.of("Logical_Switch_Port", name=n.stor(name)))])
            if "mgmt" in topo.rows:
                txn.add_to(Match.of("Port_Group", name=builder.port_group_name(controller, n.CLUSTER_PORT_GROUP)),
                           "ports", [Ref(Match.of("Logical_Switch_Port", name=n.mgmt_port(name)))])
            self.ctx.pm.hook.ovnk_node_txn(ctx=self.ctx, txn=txn, node=node, deleted=False)
        facts = NodeFacts(name=name, node_id=node_id, subnets=subnets, chassis_id=topo.chassis_id,
                          gateway=topo.gateway, reserved_ips=tuple(topo.reserved_ips))
        if self.state.node(name) != facts:
            self.state.set_node(facts)
            # Pods read these facts (switch, chassis, gateway): re-run every pod of the node, or
            # a pod reconciled just before would keep the old requested-chassis for good.
            if PODS_CONTROLLER in self.ctx.controllers.names():
                for key in self.ctx.cache(PODS).index_keys("node", name):
                    self.ctx.enqueue(PODS_CONTROLLER, key)

    def _skip_foreign_template_vars(self, node: Mapping[str, Any], topo: NodeTopology) -> None:
        """Leave out the node's Chassis_Template_Var row when another owner's row holds its chassis.

        OVN allows one row per chassis and ours never replace another's (one left by ovn-kubernetes,
        or written by hand): inserting ours would fail the node's whole transaction. Without it only
        the template NodePorts stay dark on that node; a Warning event says why, once per owner.
        """
        name = node["metadata"]["name"]
        intent = topo.rows.get(builder.NODE_IP_VARS_ROLE)
        if intent is None:
            self._template_conflicts.pop(name, None)
            return
        table, chassis = intent.table, str(intent.columns["chassis"])
        ours = builder.NODE_OWNERS[table].ids(self.cfg.controller.name, name=name, type=intent.role).primary_id
        others = [row for row in self.ctx.nb.reader.keyed(table, chassis) if row.primary_id != ours]
        if not others:
            self._template_conflicts.pop(name, None)
            return
        topo.rows.discard(intent.role)
        owner = others[0].external_ids.get(OWNER_CONTROLLER_KEY) or "nobody"
        if self._template_conflicts.get(name) == owner:
            return
        self._template_conflicts[name] = owner
        message = (f"chassis {chassis} already has a {table} row ({others[0].uuid}, owned by {owner!r}): "
                   "it is left alone and NodePorts served by template load balancers do not answer on this node")
        logger.warning("node %s: %s", name, message)
        self.ctx.events.event(node, type="Warning", reason="ForeignChassisTemplateVar", message=message)

    def _publish_allocations(self, node: Mapping[str, Any], subnets: tuple[Any, ...], node_id: int) -> None:
        current = ann.annotations_of(node)
        wanted = {
            ann.NODE_SUBNETS: ann.format_node_subnets(subnets, current.get(ann.NODE_SUBNETS)),
            ann.NODE_ID: str(node_id),
        }
        patch = {k: v for k, v in wanted.items() if current.get(k) != v}
        if not patch:
            return
        try:
            existing = ann.node_subnets(node)
        except ann.AnnotationError:
            existing = []
        if existing and set(existing) == set(subnets) and current.get(ann.NODE_ID) == str(node_id):
            return  # same content, only formatting differs
        self.ctx.kube.patch(NODES, node["metadata"]["name"], {"metadata": {"annotations": patch}}, subresource="status")

    def _delete_node_rows(self, name: str, node: Mapping[str, Any] | None, *, reason: str) -> None:
        owners = set(builder.NODE_OWNERS.values()) | self.state.node_owners(name)
        with self.ctx.nb.transaction(reason=reason, owner="Node") as txn:
            for owner in owners:
                for row in self.ctx.nb.owned_by_name(owner, name):
                    txn.remove(owner.table, uuid=row.uuid)
            self.ctx.pm.hook.ovnk_node_txn(ctx=self.ctx, txn=txn, node=node or {"metadata": {"name": name}},
                                           deleted=True)

    def _delete_node(self, name: str, last: Mapping[str, Any] | None) -> None:
        self._delete_node_rows(name, last, reason=f"node {name} deleted")
        self._template_conflicts.pop(name, None)
        self.state.remove_node(name)
        released = self.state.subnets.release(name)
        node_id = self.state.node_ids.release(name)
        if released or node_id is not None:
            logger.info("node %s deleted: freed subnets %s and node id %s", name,
                        ", ".join(map(str, released)) or "-", node_id)

    # -- repair ----------------------------------------------------------------

    def restore_allocations(self) -> None:
        """Rebuild subnet and node-id allocations from the node annotations (pods restore their own IPs)."""
        nodes = self.ctx.cache(NODES).list()
        for node in nodes:
            name = node["metadata"]["name"]
            try:
                subnets = ann.node_subnets(node)
                if subnets:
                    self.state.subnets.reserve(name, subnets)
                node_id = ann.node_id(node)
                if node_id is not None:
                    self.state.node_ids.reserve(name, node_id)
            except (ann.AnnotationError, AllocationError) as exc:
                logger.error("node %s: cannot restore its allocation: %s", name, exc)
                self.ctx.events.event(node, type="Warning", reason="ErrorRestoringAllocation", message=str(exc))
        logger.info("restored allocations of %d nodes", len(nodes))

    def plan_stale(self, plan: RepairPlan) -> None:
        live = set(self.ctx.cache(NODES).keys())
        for owner in builder.NODE_OWNERS.values():
            for row in self.ctx.nb.owned(owner):
                node = row.external_ids.get("k8s.ovn.org/name")
                if node not in live:
                    plan.stale(row, reason=f"node {node} no longer exists")


class NetworkPlugin:
    """The runtime half of this plugin (registered by ``ovnk_configure``): controllers and their state."""

    def __init__(self) -> None:
        self.controller: TopologyController | None = None

    @hookimpl
    def ovnk_controllers(self, ctx: ControllerContext) -> list[ControllerSpec]:
        controller = self.controller = TopologyController(ctx)
        return [
            ControllerSpec(name="cluster", watches=(), reconcile=controller.reconcile_cluster,
                           initial_keys=lambda: [CLUSTER_KEY], workers=1),
            ControllerSpec(name="nodes", watches=(Watch(NODES, needs_update=node_needs_update),),
                           reconcile=controller.reconcile_node),
        ]

    @hookimpl(tryfirst=True)
    def ovnk_restore(self, ctx: ControllerContext) -> None:
        assert self.controller is not None
        self.controller.restore_allocations()

    @hookimpl
    def ovnk_repair(self, ctx: ControllerContext, plan: RepairPlan) -> None:
        assert self.controller is not None
        self.controller.plan_stale(plan)


@hookimpl
def ovnk_configure(pluginmanager: OvnkPluginManager) -> None:
    pluginmanager.register_runtime("core.network", NetworkPlugin())


_ROW_WORDS = {"Logical_Router_Static_Route": "route", "Logical_Router_Policy": "router policy"}


@hookimpl
def ovnk_trace_explain(table: str, external_ids: Mapping[str, str], columns: Mapping[str, Any]) -> str | None:
    """The default network's rows in a trace: a node's gateway SNAT, its routes and policies."""
    if table not in builder.NODE_OWNERS and table not in builder.CLUSTER_OWNERS:
        return None
    ids = (parse_ids(builder.NODE_OWNERS[table], external_ids) if table in builder.NODE_OWNERS else None) or (
        parse_ids(builder.CLUSTER_OWNERS[table], external_ids) if table in builder.CLUSTER_OWNERS else None)
    if ids is None:
        return None
    whose = f"node {ids.value('name')}" if ids.owner.name == "Node" else "the cluster network"
    if table == "NAT":
        return (f"{whose}'s gateway {columns.get('type', 'NAT')}: {columns.get('logical_ip')} "
                f"to {columns.get('external_ip')}")
    what = _ROW_WORDS.get(table)
    if what is None:
        return None
    detail = columns.get("ip_prefix") or columns.get("match") or ""
    return f"{whose}'s {what}" + (f" {detail}" if detail else "") + (
        f" via {columns['nexthop']}" if columns.get("nexthop") else "")
