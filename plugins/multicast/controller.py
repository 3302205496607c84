"""Multicast's reconcilers and repair.

* ``multicast-cluster`` (singleton key ``cluster``): the four ``MulticastCluster``
  ACLs on the cluster port groups (written once core's cluster topology is).
* The namespace ACLs (``MulticastNS``) are written in core's own transaction of
  each namespace (:meth:`MulticastControllers.namespace_txn`, called from
  ``ovnk_namespace_txn``): the namespace port group and its ACLs appear and
  change together, so an ACL never names a port group that is not there yet.
* ``multicast-annotations`` (key: namespace): reports an annotation value other
  than ``true``/``false`` as a Warning event ``InvalidMulticastAnnotation``
  and one log line, once per value.

The node switches' snooping options and the cluster router's relay are keys of
core's own rows, set through ``ovnk_node_topology`` and
``ovnk_cluster_topology`` (see :mod:`.plugin`); core writes those columns whole,
so with the plugin off they are written without them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

from ovnk import NAMESPACES
from ovnk import ControllerContext
from ovnk import ControllerSpec
from ovnk import Match
from ovnk import NbTxn
from ovnk import Parent
from ovnk import ReconcileRequest
from ovnk import RepairPlan
from ovnk import TemporaryError
from ovnk import Watch
from ovnk import names
from ovnk.plugins.multicast import nb
from ovnk.plugins.multicast.models import annotation_problem
from ovnk.plugins.multicast.models import annotation_value
from ovnk.plugins.multicast.models import multicast_enabled

logger = logging.getLogger(__name__)

CLUSTER = "multicast-cluster"
ANNOTATIONS = "multicast-annotations"
CLUSTER_KEY = "cluster"


def annotation_changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    return annotation_value(old) != annotation_value(new)


class MulticastControllers:
    """The reconcilers, the namespace transaction part and repair (one instance per controller process)."""

    def __init__(self, ctx: ControllerContext) -> None:
        self.ctx = ctx
        self.controller = ctx.controller_name
        self.families = sorted({s.network.version for s in ctx.config.default.cluster_subnets})
        self.tier = ctx.nb.has_column("ACL", "tier")
        self._lock = threading.Lock()
        self._reported: dict[str, str] = {}  # namespace -> annotation value already reported

    def specs(self) -> list[ControllerSpec]:
        return [
            ControllerSpec(name=CLUSTER, watches=(), reconcile=self.reconcile_cluster,
                           initial_keys=lambda: [CLUSTER_KEY], workers=1),
            ControllerSpec(name=ANNOTATIONS, reconcile=self.check_annotation,
                           watches=(Watch(NAMESPACES, needs_update=annotation_changed),)),
        ]

    def enabled_namespaces(self) -> int:
        """How many namespaces have multicast enabled now (the cache's view)."""
        return sum(1 for ns in self.ctx.cache(NAMESPACES).list() if multicast_enabled(ns))

    def _ensure(self, txn: NbTxn, acl: nb.AclRow) -> None:
        txn.ensure("ACL", ids=acl.ids, columns=acl.columns(tier=self.tier),
                   parent=Parent(Match.of("Port_Group", name=acl.port_group), "acls"))

    # -- cluster ACLs ---------------------------------------------------------------------

    def cluster_acls(self) -> list[nb.AclRow]:
        return nb.cluster_acls(
            self.controller,
            cluster_port_group=names.port_group_name(self.controller, names.CLUSTER_PORT_GROUP),
            router_port_group=names.port_group_name(self.controller, names.CLUSTER_RTR_PORT_GROUP))

    def reconcile_cluster(self, req: ReconcileRequest) -> None:
        if not self.ctx.topology.cluster_ready.is_set():
            raise TemporaryError("cluster port groups not written yet", delay=0.2)
        acls = self.cluster_acls()
        wanted = {acl.ids.primary_id for acl in acls}
        stale = [row for row in self.ctx.nb.owned(nb.CLUSTER_ACL) if row.primary_id not in wanted]
        with self.ctx.nb.transaction(reason="multicast cluster ACLs", owner="MulticastCluster") as txn:
            for acl in acls:
                self._ensure(txn, acl)
            for row in stale:
                txn.remove("ACL", uuid=row.uuid)

    # -- namespaces ------------------------------------------------------------------------

    def namespace_acls(self, namespace: str) -> list[nb.AclRow]:
        port_group, _ = names.namespace_port_group(self.controller, namespace)
        sets: dict[int, str] = {family: names.namespace_address_set(self.controller, namespace, family)[0]
                                for family in self.families}
        return nb.namespace_acls(self.controller, namespace, port_group=port_group, address_sets=sets)

    def namespace_txn(self, txn: NbTxn, namespace: Mapping[str, Any], deleted: bool) -> None:
        """The namespace's allow ACLs while its annotation says ``true``; none otherwise.

        Core ensured the namespace's port group and address sets earlier in ``txn``
        (or removed the port group, and with it its ACLs, when the namespace is gone).
        """
        name = str(namespace["metadata"]["name"])
        if deleted:
            return  # its port group goes in this transaction; the server deletes the ACLs it held
        if multicast_enabled(namespace):
            for acl in self.namespace_acls(name):
                self._ensure(txn, acl)
            return
        for row in self.ctx.nb.owned_by_name(nb.NAMESPACE_ACL, name):
            txn.remove("ACL", uuid=row.uuid)

    def check_annotation(self, req: ReconcileRequest) -> None:
        namespace = self.ctx.cache(NAMESPACES).get(req.key)
        problem = annotation_problem(namespace) if namespace is not None else None
        with self._lock:
            if namespace is None or problem is None:
                self._reported.pop(req.key, None)
                return
            value = str(annotation_value(namespace))
            if self._reported.get(req.key) == value:
                return
            self._reported[req.key] = value
        logger.warning("namespace %s: %s", req.key, problem)
        self.ctx.events.event(namespace, type="Warning", reason="InvalidMulticastAnnotation", message=problem)

    # -- repair ---------------------------------------------------------------------------

    def plan_repair(self, plan: RepairPlan) -> None:
        """ACLs of namespaces that are gone or no longer enabled, and cluster ACLs of an older scheme."""
        namespaces = self.ctx.cache(NAMESPACES)
        for row in self.ctx.nb.owned(nb.NAMESPACE_ACL):
            name = row.external_ids.get("k8s.ovn.org/name", "")
            namespace = namespaces.get(name)
            if namespace is None:
                plan.stale(row, reason=f"namespace {name} no longer exists")
            elif not multicast_enabled(namespace):
                plan.stale(row, reason=f"namespace {name} no longer has multicast enabled")
        wanted = {acl.ids.primary_id for acl in self.cluster_acls()}
        for row in self.ctx.nb.owned(nb.CLUSTER_ACL):
            if row.primary_id not in wanted:
                plan.stale(row, reason="not a multicast cluster ACL of this version")
