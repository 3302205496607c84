"""EgressIP's reconcilers: assignment (status), the NB rows of each object, the shared rows.

* ``egressip-assignment`` (one key): recomputes which node holds which IP for
  every object (:mod:`.assignment`) from the nodes, their health and the
  current status, and writes ``status.items`` where it changed. Conflicts and
  IPs no node can host become Warning events on the object.
* ``egressip`` (one key per object): the object's reroute policies and SNATs
  (:mod:`.nb`) in one transaction, with its pods added to
  ``egressip-served-pods``; rows of pods it no longer serves and of nodes that
  no longer hold its IPs are removed in the same transaction.
* ``egressip-shared`` (one key): the rows shared with EgressService
  (:mod:`ovnk.egress`), this feature's pod-to-node policy, and the whole
  content of ``egressip-served-pods``.

Node health is checked by a leader-only periodic task (:mod:`.health`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

from ovnk import NAMESPACES
from ovnk import NODES
from ovnk import PODS
from ovnk import ControllerContext
from ovnk import ControllerSpec
from ovnk import Match
from ovnk import NbTxn
from ovnk import Parent
from ovnk import PeriodicTask
from ovnk import ReconcileRequest
from ovnk import RepairPlan
from ovnk import TemporaryError
from ovnk import Watch
from ovnk import egress
from ovnk import names
from ovnk.names import IPAddress
from ovnk.plugins.egressip import health
from ovnk.plugins.egressip import nb
from ovnk.plugins.egressip.assignment import assign
from ovnk.plugins.egressip.metrics import EgressIPMetrics
from ovnk.plugins.egressip.models import ASSIGNABLE_LABEL
from ovnk.plugins.egressip.models import EgressIPError
from ovnk.plugins.egressip.models import EgressIPModel
from ovnk.plugins.egressip.models import egress_node
from ovnk.plugins.egressip.models import node_is_ready
from ovnk.plugins.egressip.models import status_items
from ovnk.plugins.egressip.selection import EGRESSIPS
from ovnk.plugins.egressip.selection import Selection
from ovnk.plugins.egressip.selection import pod_wants_network
from ovnk.plugins.egressip.settings import EgressIPSettings

logger = logging.getLogger(__name__)

ASSIGNMENT = "egressip-assignment"
OBJECTS = "egressip"
SHARED = "egressip-shared"
ASSIGNMENT_KEY = "assignment"
SHARED_KEY = "shared"
EGRESS_NODE_KEY = "k8s.ovn.org/egress-node"


def _spec_or_status_changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    return bool(old.get("spec") != new.get("spec") or old.get("status") != new.get("status"))


def _labels(obj: Mapping[str, Any]) -> Mapping[str, str]:
    return (obj.get("metadata") or {}).get("labels") or {}


def _annotations(obj: Mapping[str, Any]) -> Mapping[str, str]:
    return (obj.get("metadata") or {}).get("annotations") or {}


#: Node annotations assignment reads (the node's networks and addresses).
ADDRESS_ANNOTATIONS = ("k8s.ovn.org/node-primary-ifaddr", "k8s.ovn.org/host-cidrs")


def node_assignment_changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Node changes that can move egress IPs: the label, readiness, its addresses."""
    return bool(
        (ASSIGNABLE_LABEL in _labels(old)) != (ASSIGNABLE_LABEL in _labels(new))
        or node_is_ready(old) != node_is_ready(new)
        or any(_annotations(old).get(k) != _annotations(new).get(k) for k in ADDRESS_ANNOTATIONS)
    )


def node_rows_changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Node changes that change rows: its gateway facts, its addresses (``node-ips``)."""
    return _annotations(old) != _annotations(new)


def pod_changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    return bool(
        _labels(old) != _labels(new)
        or _annotations(old).get("k8s.ovn.org/pod-networks") != _annotations(new).get("k8s.ovn.org/pod-networks")
        or pod_wants_network(old) != pod_wants_network(new)
    )


def labels_changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    return _labels(old) != _labels(new)


class EgressIPState:
    """What the controllers and the health task share within one controller process."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reachable: dict[str, bool] = {}
        # (object, egress IP) -> (node, time the assignment was written), for the latency metrics
        self.assigned_at: dict[tuple[str, str], tuple[str, float]] = {}
        self.unassigned_at: dict[tuple[str, str], float] = {}
        # (object, message) already reported as an event
        self.reported: set[tuple[str, str]] = set()


class EgressIPControllers:
    """The three reconcilers, the health task and repair (one instance per controller process)."""

    def __init__(self, ctx: ControllerContext, settings: EgressIPSettings, metrics: EgressIPMetrics | None) -> None:
        self.ctx = ctx
        self.settings = settings
        self.metrics = metrics
        self.state = EgressIPState()
        self.selection = Selection(ctx)
        self.controller = ctx.controller_name

    # -- specs ---------------------------------------------------------------------

    def specs(self) -> list[ControllerSpec]:
        s = self.selection
        to_assignment = lambda _obj: [ASSIGNMENT_KEY]  # noqa: E731
        to_shared = lambda _obj: [SHARED_KEY]  # noqa: E731
        return [
            ControllerSpec(name=ASSIGNMENT, reconcile=self.reconcile_assignment, workers=1,
                           initial_keys=lambda: [ASSIGNMENT_KEY], watches=(
                Watch(EGRESSIPS, keys=to_assignment, needs_update=_spec_or_status_changed),
                Watch(NODES, keys=to_assignment, needs_update=node_assignment_changed),
            )),
            ControllerSpec(name=OBJECTS, reconcile=self.reconcile_object, watches=(
                Watch(EGRESSIPS, keys=s.all_keys, needs_update=_spec_or_status_changed),
                Watch(PODS, keys=s.keys_for_pod, needs_update=pod_changed),
                Watch(NAMESPACES, keys=s.keys_for_namespace, needs_update=labels_changed),
                Watch(NODES, keys=s.keys_for_node, needs_update=node_rows_changed),
            )),
            ControllerSpec(name=SHARED, reconcile=self.reconcile_shared, workers=1,
                           initial_keys=lambda: [SHARED_KEY], watches=(
                Watch(NODES, keys=to_shared, needs_update=node_rows_changed),
                Watch(EGRESSIPS, keys=to_shared, needs_update=_spec_or_status_changed),
                Watch(PODS, keys=lambda pod: [SHARED_KEY] if s.keys_for_pod(pod) else [], needs_update=pod_changed),
                Watch(NAMESPACES, keys=lambda ns: [SHARED_KEY] if s.keys_for_namespace(ns) else [],
                      needs_update=labels_changed),
            )),
        ]

    def tasks(self) -> list[PeriodicTask]:
        if self.settings.reachability_total_timeout <= 0:
            return []
        return [PeriodicTask(name="egressip-health", interval=self.settings.reachability_interval,
                             run=self.check_nodes)]

    # -- health ------------------------------------------------------------------------

    def check_nodes(self) -> None:
        """One round of health checks of every egress-assignable node; re-assign on a change."""
        targets: dict[str, str] = {}
        extra = {str(name) for names_ in self.ctx.pm.hook.ovnk_egressip_health_targets(ctx=self.ctx)
                 for name in names_ or ()}
        for node in self.ctx.cache(NODES).list():
            if ASSIGNABLE_LABEL not in _labels(node) and node["metadata"]["name"] not in extra:
                continue
            info = egress_node(node)
            if info.addresses:
                targets[info.name] = health.address_of(info.addresses[0], self.settings.node_healthcheck_port)
        results = health.check_all(targets, timeout=self.settings.reachability_total_timeout)
        changed = []
        with self.state.lock:
            for name in list(self.state.reachable):
                if name not in results:
                    del self.state.reachable[name]
            for name, ok in results.items():
                if self.state.reachable.get(name, True) != ok:
                    changed.append((name, ok))
                self.state.reachable[name] = ok
            down = sum(1 for ok in self.state.reachable.values() if not ok)
        if self.metrics is not None:
            self.metrics.unreachable_nodes.set(down)
        for name, ok in changed:
            logger.warning("egress node %s %s", name, "answers its health check again" if ok
                           else f"does not answer its health check at {targets[name]}")
            if not ok and self.metrics is not None:
                self.metrics.node_unreachable.inc()
        if changed:
            self.ctx.enqueue(ASSIGNMENT, ASSIGNMENT_KEY)
            self.ctx.pm.hook.ovnk_egressip_health_changed(ctx=self.ctx, reachable=dict(results))

    # -- assignment ------------------------------------------------------------------------

    def reconcile_assignment(self, req: ReconcileRequest) -> None:
        models = []
        for obj in self.ctx.cache(EGRESSIPS).list():
            parsed = self.selection.parsed(obj)
            if isinstance(parsed, EgressIPError):
                self._report(obj, "InvalidEgressIP", str(parsed))
                continue
            models.append(parsed)
        with self.state.lock:
            reachable = dict(self.state.reachable)
        nodes = [egress_node(n, reachable=reachable.get(n["metadata"]["name"], True))
                 for n in self.ctx.cache(NODES).list()]
        results = assign(models, nodes)
        assigned_total = 0
        for model in models:
            result = results[model.name]
            assigned_total += len(result.assigned)
            obj = self.ctx.cache(EGRESSIPS).get(model.name)
            if obj is None:
                continue
            for ip, holder in result.conflicts.items():
                self._report(obj, "EgressIPConflict",
                             f"egress IP {ip} is already assigned to EgressIP {holder}; it is not used here")
            for ip, reason in result.unassigned.items():
                if ip not in result.conflicts:
                    self._report(obj, "NoMatchingNodeFound", f"egress IP {ip} is not assigned: {reason}")
            desired = status_items(result.assigned)
            current = (obj.get("status") or {}).get("items")
            if current == desired:
                continue
            self._note_moves(model, result.assigned)
            self.ctx.kube.patch(EGRESSIPS, model.name, {"status": {"items": desired}})
            logger.info("EgressIP %s: %s", model.name,
                        ", ".join(f"{i['egressIP']} on {i['node']}" for i in desired) or "no IP assigned")
        if self.metrics is not None:
            self.metrics.assigned.set(assigned_total)

    def _note_moves(self, model: EgressIPModel, assigned: Mapping[IPAddress, str]) -> None:
        now = time.monotonic()
        before = {str(ip): node for ip, node in model.status}
        after = {str(ip): node for ip, node in assigned.items()}
        with self.state.lock:
            for ip, node in after.items():
                if before.get(ip) != node:
                    self.state.assigned_at[(model.name, ip)] = (node, now)
                    if ip in before and self.metrics is not None:
                        self.metrics.reassignments.inc()
            for ip in before:
                if ip not in after:
                    self.state.unassigned_at[(model.name, ip)] = now

    def _report(self, obj: Mapping[str, Any], reason: str, message: str) -> None:
        name = obj["metadata"]["name"]
        with self.state.lock:
            if (name, message) in self.state.reported:
                return
            self.state.reported.add((name, message))
        logger.warning("EgressIP %s: %s", name, message)
        self.ctx.events.event(obj, type="Warning", reason=reason, message=message)

    # -- one object's rows -------------------------------------------------------------------

    def _hops(self, model: EgressIPModel) -> list[nb.EgressHop]:
        join = self.ctx.config.gateway.v4_join_subnet
        hops = []
        for ip, node in model.status:
            if ip not in model.ips:
                continue
            facts = self.ctx.topology.node(node)
            if facts is None or facts.gateway is None:
                raise TemporaryError(f"egress node {node} has no gateway router yet", delay=1.0)
            hops.append(nb.EgressHop(node=node, egress_ip=ip, join_ip=facts.join_ip(join)))
        return hops

    def desired_rows(self, name: str) -> tuple[list[nb.Row], list[nb.ServedPod]]:
        """The rows object ``name`` should have now (none when it is gone or invalid)."""
        model = self.selection.model(name)
        if not isinstance(model, EgressIPModel):
            return [], []
        models = self.selection.models()
        pods = self.selection.served_pods(model, models)
        rows = nb.object_rows(controller=self.controller, eip=name, pods=pods, hops=self._hops(model))
        return rows, pods

    def _existing(self, name: str) -> list[tuple[Any, tuple[str, str, tuple[tuple[str, str], ...]], str]]:
        """(row snapshot, identity, egress node) of every row of object ``name`` in NB."""
        prefix = f"{name}_"
        found: list[tuple[Any, tuple[str, str, tuple[tuple[str, str], ...]], str]] = []
        for row in self.ctx.nb.owned(nb.REROUTE_POLICY):
            if row.external_ids.get("k8s.ovn.org/name", "").startswith(prefix):
                found.append((row, (row.table, row.primary_id or "", ()), ""))
        for row in self.ctx.nb.owned(nb.SNAT, columns=("external_ip", "logical_ip")):
            if row.external_ids.get("k8s.ovn.org/name", "").startswith(prefix):
                where = tuple(sorted((("external_ip", str(row["external_ip"])),
                                      ("logical_ip", str(row["logical_ip"])))))
                found.append((row, (row.table, row.primary_id or "", where), row.external_ids.get(EGRESS_NODE_KEY, "")))
        return found

    def reconcile_object(self, req: ReconcileRequest) -> None:
        name = req.key
        rows, pods = self.desired_rows(name)
        wanted = {(row.identity, _node_of(row)) for row in rows}
        stale = [row for row, identity, node in self._existing(name) if (identity, node) not in wanted]
        with self.ctx.nb.transaction(reason=f"egressip {name}", owner="EgressIP") as txn:
            for row in stale:
                txn.remove(row.table, uuid=row.uuid)
            for row in rows:
                self._ensure(txn, row)
            for version in (4, 6):
                ips = [str(ip) for pod in pods for ip in pod.ips if ip.version == version]
                if ips:
                    set_name, set_ids = nb.served_pods_set(self.controller, version)
                    txn.ensure("Address_Set", name=set_name, ids=set_ids)
                    txn.add_to(Match.of("Address_Set", name=set_name), "addresses", ips)
        if txn.outcome == "committed":
            self._observe_latency(name)

    def _ensure(self, txn: NbTxn, row: nb.Row) -> None:
        parent = Parent(Match.of("Logical_Router", name=row.router), row.router_column)
        extra = {EGRESS_NODE_KEY: _node_of(row)} if row.table == "NAT" else None
        txn.ensure(row.table, ids=row.ids, where=row.where, columns=row.columns, external_ids=extra, parent=parent)

    def _observe_latency(self, name: str) -> None:
        if self.metrics is None:
            return
        now = time.monotonic()
        with self.state.lock:
            for key in [k for k in self.state.assigned_at if k[0] == name]:
                self.metrics.assign_latency.observe(now - self.state.assigned_at.pop(key)[1])
            for key in [k for k in self.state.unassigned_at if k[0] == name]:
                self.metrics.unassign_latency.observe(now - self.state.unassigned_at.pop(key))

    # -- shared rows ---------------------------------------------------------------------------

    def node_addresses(self) -> dict[int, list[IPAddress]]:
        """``node-ips`` content from core's one definition (EgressService writes the same)."""
        return egress.all_node_addresses(self.ctx.cache(NODES).list())

    def reconcile_shared(self, req: ReconcileRequest) -> None:
        families = sorted({s.network.version for s in self.ctx.config.default.cluster_subnets})
        served: dict[int, set[str]] = {v: set() for v in families}
        models = self.selection.models()
        for model in models:
            for pod in self.selection.served_pods(model, models):
                for ip in pod.ips:
                    served.setdefault(ip.version, set()).add(str(ip))
        with self.ctx.nb.transaction(reason="egressip shared rows", owner="EgressIP") as txn:
            egress.write_shared_rows(txn, egress.shared_rows(self.ctx.config, controller=self.controller,
                                                             node_ips=self.node_addresses()))
            for version in families:
                set_name, set_ids = nb.served_pods_set(self.controller, version)
                txn.ensure("Address_Set", name=set_name, ids=set_ids,
                           columns={"addresses": sorted(served.get(version, ()))})
                self._ensure(txn, nb.pod_to_node_policy(self.controller, version))

    # -- repair ---------------------------------------------------------------------------------

    def plan_repair(self, plan: RepairPlan) -> None:
        """Rows of objects that are gone (every live object's key is reconciled right after)."""
        live = set(self.ctx.cache(EGRESSIPS).keys())
        for owner in (nb.REROUTE_POLICY, nb.SNAT):
            for row in self.ctx.nb.owned(owner):
                object_name = row.external_ids.get("k8s.ovn.org/name", "")
                if object_name == nb.POD_TO_NODE:
                    continue
                if nb.egressip_of(object_name) not in live:
                    plan.stale(row, reason=f"EgressIP {nb.egressip_of(object_name)} no longer exists")


def _node_of(row: nb.Row) -> str:
    """The egress node of a SNAT row (its gateway router's node); "" for policies."""
    prefix = names.gateway_router("")
    return row.router[len(prefix):] if row.table == "NAT" and row.router.startswith(prefix) else ""
