"""The hybrid overlay in the controller: foreign nodes' subnets, OVN nodes' distributed routers, NB rows.

* ``ovnk_node_hostsubnet`` answers ``False`` for foreign nodes (those the node
  selector picks): core gives them no host subnet, no switch and no gateway.
* ``hybrid-overlay`` (one key per node, on every node event):

  - a foreign node gets ``k8s.ovn.org/hybrid-overlay-node-subnet`` from
    ``cluster-subnets`` (:mod:`.allocation`); with no cluster subnets it must
    carry one already (set by someone else) and nothing is allocated;
  - an OVN node gets its distributed-router (DR) IP, ``.3`` of its subnet
    unless a pod holds it already (then the lowest free address), held in the
    node's IP pool so no pod gets it, and the MAC derived from it, published as
    ``k8s.ovn.org/hybrid-overlay-distributed-router-gateway-ip``/``-mac``.

* ``ovnk_node_topology`` adds an OVN node's rows (:mod:`.nb`) once its DR is
  published, and ``.3`` to its switch's ``exclude_ips``; core writes them in
  the node's transaction and removes those no longer intended.
* Without ``cluster-subnets`` the rows name each foreign node's subnet: a
  foreign node that comes, changes or goes re-runs core's ``nodes`` controller
  for every OVN node.

Restore rebuilds the subnet allocator and the DR IPs' pool entries from the
annotations; repair removes rows of nodes that are gone or foreign now.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Mapping
from typing import Any

import ovnk.annotations as ann
from ovnk import NODES
from ovnk import ControllerContext
from ovnk import ControllerSpec
from ovnk import NodeTopology
from ovnk import ReconcileRequest
from ovnk import RepairPlan
from ovnk import TemporaryError
from ovnk import Watch
from ovnk import names
from ovnk.plugins.hybrid_overlay import models
from ovnk.plugins.hybrid_overlay import nb
from ovnk.plugins.hybrid_overlay.allocation import AllocationError
from ovnk.plugins.hybrid_overlay.allocation import SubnetAllocator
from ovnk.plugins.hybrid_overlay.metrics import HybridOverlayMetrics
from ovnk.plugins.hybrid_overlay.models import HybridOverlayError
from ovnk.plugins.hybrid_overlay.settings import HybridOverlaySettings

logger = logging.getLogger(__name__)

CONTROLLER = "hybrid-overlay"
#: Core's node controller, re-run for OVN nodes whose rows name foreign subnets.
CORE_NODES_CONTROLLER = "nodes"
#: Annotations whose change matters to this controller (besides labels and deletion).
WATCHED_ANNOTATIONS = (models.NODE_SUBNET, models.DR_IP, models.DR_MAC, ann.NODE_SUBNETS)


def node_changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    old_meta, new_meta = old.get("metadata") or {}, new.get("metadata") or {}
    if old_meta.get("labels") != new_meta.get("labels"):
        return True
    old_ann, new_ann = models.annotations_of(old), models.annotations_of(new)
    return any(old_ann.get(k) != new_ann.get(k) for k in WATCHED_ANNOTATIONS)


def dr_holder(node: str) -> str:
    """The holder name of an OVN node's DR IP in the node's IP pool (pods hold ``<ns>/<pod>`` keys)."""
    return f"hybrid-overlay:{node}"


class HybridOverlayController:
    """State and reconcilers of one controller process."""

    def __init__(self, ctx: ControllerContext, settings: HybridOverlaySettings,
                 metrics: HybridOverlayMetrics | None) -> None:
        self.ctx = ctx
        self.settings = settings
        self.metrics = metrics
        self.selector = models.parse_node_selector(settings.node_selector)
        self.allocator = SubnetAllocator(settings.cluster_subnets)
        self._lock = threading.Lock()
        self._reported: set[tuple[str, str]] = set()
        # Foreign node -> subnet as the OVN nodes' rows name them (no cluster subnets only).
        self._targets: dict[str, ipaddress.IPv4Network] = {}
        if metrics is not None:
            metrics.subnets.set(self.allocator.capacity)

    @property
    def allocating(self) -> bool:
        """Whether this controller hands out foreign subnets (``cluster-subnets`` is set)."""
        return bool(self.settings.cluster_subnets)

    def is_foreign(self, node: Mapping[str, Any]) -> bool:
        return self.selector.matches_object(node)

    def specs(self) -> list[ControllerSpec]:
        return [ControllerSpec(name=CONTROLLER, reconcile=self.reconcile,
                               watches=(Watch(NODES, needs_update=node_changed),))]

    # -- what the OVN nodes' rows point at ---------------------------------------------

    def foreign_subnets(self) -> dict[str, ipaddress.IPv4Network]:
        """Foreign node -> its valid subnet annotation (malformed ones are skipped; the reconcile reports them)."""
        found: dict[str, ipaddress.IPv4Network] = {}
        for node in self.ctx.select(NODES, self.selector):
            try:
                subnet = models.node_subnet(node)
            except HybridOverlayError:
                continue
            if subnet is not None:
                found[node["metadata"]["name"]] = subnet
        return found

    def targets(self) -> list[nb.Target]:
        if self.allocating:
            return [nb.Target(r.network) for r in self.settings.cluster_subnets]
        return [nb.Target(subnet, foreign=name) for name, subnet in sorted(self.foreign_subnets().items())]

    # -- hooks ------------------------------------------------------------------------------

    def hostsubnet(self, node: Mapping[str, Any]) -> bool | None:
        return False if self.is_foreign(node) else None

    def topology(self, node: Mapping[str, Any], topology: NodeTopology) -> None:
        """Add an OVN node's rows and reserve its DR IP (``ovnk_node_topology``)."""
        name = topology.node
        # Core deletes rows of these owner types that a reconcile no longer intends (DR gone, say).
        self.ctx.topology.note_node_owners(name, nb.OWNER_TYPES)
        if self.is_foreign(node):
            return
        try:
            router = models.distributed_router(node)
        except HybridOverlayError:
            return  # the hybrid-overlay controller rewrites it and reports
        subnet = next((s for s in topology.subnets if isinstance(s, ipaddress.IPv4Network)), None)
        if router is None or subnet is None or router.ip not in subnet:
            return
        topology.reserved_ips.append(router.ip)
        join = self.ctx.config.gateway.v4_join_subnet
        gr_join = names.join_ip(join, topology.node_id) if "gw-router" in topology.rows else None
        for row in nb.node_rows(node=name, dr_ip=router.ip, dr_mac=router.mac, targets=self.targets(),
                                gr_join_ip=gr_join, cluster_router_join_ip=names.cluster_router_join_ip(join)):
            topology.rows.add(row)

    # -- reconcile --------------------------------------------------------------------------

    def reconcile(self, req: ReconcileRequest) -> None:
        name = req.key
        node = self.ctx.cache(NODES).get(name)
        if node is None:
            released = self.allocator.release(name)
            if released is not None:
                logger.info("foreign node %s deleted: freed hybrid overlay subnet %s", name, released)
        elif self.is_foreign(node):
            self._release_dr(name)
            self._ensure_foreign(node)
        else:
            self._leave_foreign(node)
            self._ensure_dr(node)
        self._refresh_targets()
        self._observe()

    def _ensure_foreign(self, node: Mapping[str, Any]) -> None:
        name = node["metadata"]["name"]
        patch: dict[str, str | None] = {}
        if models.DR_IP in models.annotations_of(node):
            patch[models.DR_IP] = None  # written while it was an OVN node
        try:
            current = models.node_subnet(node)
        except HybridOverlayError as exc:
            if not self.allocating:
                self._report(node, "InvalidAnnotation", str(exc))
                self._patch(name, patch)
                return
            current = None
        if self.allocating:
            subnet = self._allocate(node, current)
            if subnet != current:
                patch[models.NODE_SUBNET] = str(subnet)
                logger.info("foreign node %s: hybrid overlay subnet %s", name, subnet)
        self._patch(name, patch)

    def _allocate(self, node: Mapping[str, Any], current: ipaddress.IPv4Network | None) -> ipaddress.IPv4Network:
        name = node["metadata"]["name"]
        if current is not None and self.allocator.subnet_of(name) != current:
            try:
                self.allocator.reserve(name, current)
            except AllocationError as exc:
                self._report(node, "InvalidAnnotation", f"{models.NODE_SUBNET} {current}: {exc}; allocating another")
        try:
            return self.allocator.allocate(name)
        except AllocationError as exc:
            if self.metrics is not None:
                self.metrics.allocation_failures.inc()
            self._report(node, "ErrorAllocatingHybridSubnet", str(exc))
            raise TemporaryError(f"foreign node {name}: {exc}", delay=10) from exc

    def _leave_foreign(self, node: Mapping[str, Any]) -> None:
        """An OVN node that was foreign before: its hybrid subnet goes back (when this controller allocated it)."""
        name = node["metadata"]["name"]
        if not self.allocating:
            return
        if self.allocator.release(name) is not None or models.NODE_SUBNET in models.annotations_of(node):
            self._patch(name, {models.NODE_SUBNET: None})

    def _ensure_dr(self, node: Mapping[str, Any]) -> None:
        """Hold and publish an OVN node's DR IP and MAC."""
        name = node["metadata"]["name"]
        try:
            subnets = [s for s in ann.node_subnets(node) if isinstance(s, ipaddress.IPv4Network)]
        except ann.AnnotationError:
            return  # core reports its own annotation
        if not subnets:
            return  # no host subnet yet: the annotation's arrival queues this node again
        subnet = subnets[0]
        pool = next((p for p in self.ctx.topology.pools(name) if p.subnet == subnet), None)
        if pool is None:
            raise TemporaryError(f"node {name}: its switch is not built yet", delay=1.0)
        try:
            current = models.distributed_router(node)
        except HybridOverlayError as exc:
            self._report(node, "InvalidAnnotation", f"{exc}; allocating the distributed router again")
            current = None
        holder = dr_holder(name)
        ip = current.ip if current is not None and current.ip in subnet else None
        if ip is not None and pool.holder(ip) not in (None, holder):
            logger.warning("node %s: DR IP %s is held by %s; choosing another", name, ip, pool.holder(ip))
            ip = None
        if ip is None:
            ip = models.choose_dr_ip(subnet, free=lambda a: pool.holder(a) is None and not pool.excluded(a))
            if ip is None:
                if self.metrics is not None:
                    self.metrics.allocation_failures.inc()
                self._report(node, "ErrorAllocatingHybridOverlayDRIP", f"node subnet {subnet} has no free address")
                raise TemporaryError(f"node {name}: no free address for the distributed router", delay=10)
        if pool.holder(ip) is None and not pool.excluded(ip):
            pool.reserve(ip, holder)
        for held in pool.held_by(holder):
            if held != ip:
                pool.release(held, holder)
        mac = current.mac if current is not None else models.dr_mac_of(ip)
        patch: dict[str, str | None] = {models.DR_IP: str(ip), models.DR_MAC: mac}
        annotations = models.annotations_of(node)
        self._patch(name, {k: v for k, v in patch.items() if annotations.get(k) != v})

    def _release_dr(self, name: str) -> None:
        for pool in self.ctx.topology.pools(name):
            for ip in pool.held_by(dr_holder(name)):
                pool.release(ip, dr_holder(name))

    def _refresh_targets(self) -> None:
        """Without cluster subnets, re-run every OVN node when the foreign subnets its rows name changed."""
        if self.allocating:
            return
        current = self.foreign_subnets()
        with self._lock:
            if current == self._targets:
                return
            self._targets = current
        if CORE_NODES_CONTROLLER not in self.ctx.controllers.names():
            return
        for node in self.ctx.cache(NODES).list():
            if not self.is_foreign(node):
                self.ctx.enqueue(CORE_NODES_CONTROLLER, node["metadata"]["name"])

    def _patch(self, name: str, annotations: Mapping[str, str | None]) -> None:
        if annotations:
            self.ctx.kube.patch(NODES, name, {"metadata": {"annotations": dict(annotations)}}, subresource="status")

    def _report(self, node: Mapping[str, Any], reason: str, message: str) -> None:
        name = node["metadata"]["name"]
        with self._lock:
            if (name, message) in self._reported:
                return
            self._reported.add((name, message))
        logger.warning("node %s: %s", name, message)
        self.ctx.events.event(node, type="Warning", reason=reason, message=message)

    def _observe(self) -> None:
        if self.metrics is None:
            return
        self.metrics.foreign_nodes.set(len(self.ctx.select(NODES, self.selector)))
        self.metrics.allocated_subnets.set(len(self.allocator.allocated()))

    # -- restore and repair -----------------------------------------------------------------

    def restore(self) -> None:
        """Foreign subnets into the allocator and DR IPs into their nodes' pools, from the annotations."""
        for node in self.ctx.cache(NODES).list():
            name = node["metadata"]["name"]
            try:
                if self.is_foreign(node):
                    subnet = models.node_subnet(node)
                    if subnet is not None and self.allocating:
                        self.allocator.reserve(name, subnet)
                    continue
                router = models.distributed_router(node)
                subnets = ann.node_subnets(node)
            except (HybridOverlayError, AllocationError, ann.AnnotationError) as exc:
                logger.warning("node %s: cannot restore its hybrid overlay state: %s", name, exc)
                continue
            if router is None:
                continue
            for pool in self.ctx.topology.pools_for(name, subnets):
                if router.ip in pool.subnet and pool.holder(router.ip) is None and not pool.excluded(router.ip):
                    pool.reserve(router.ip, dr_holder(name))
        if not self.allocating:
            self._targets = self.foreign_subnets()
        self._observe()

    def plan_repair(self, plan: RepairPlan) -> None:
        """Rows of nodes that are gone or foreign now (an OVN node's other rows are pruned by its reconcile)."""
        nodes = {n["metadata"]["name"]: n for n in self.ctx.cache(NODES).list()}
        for owner in nb.OWNER_TYPES:
            for row in self.ctx.nb.owned(owner):
                name = row.external_ids.get("k8s.ovn.org/name", "")
                node = nodes.get(name)
                if node is None:
                    plan.stale(row, reason=f"node {name} no longer exists")
                elif self.is_foreign(node):
                    plan.stale(row, reason=f"node {name} is a foreign node now")
