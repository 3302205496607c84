"""The services controller: one NB transaction per Service key, level-driven.

Each reconcile reads the Service, its EndpointSlices (by the
``kubernetes.io/service-name`` label) and the node facts of the topology
(``ctx.topology``), builds the load balancers with :mod:`.model`, and in one
transaction ensures them, attaches them (cluster LB group, ``GR_<node>``, node
switch) and deletes the Service's LBs it no longer needs. An unchanged
reconcile sends nothing.

Node facts are written by the topology controller after it built a node, so a
node event can reach this controller before the facts it needs. A node whose
facts do not yet reflect its annotations (host IPs, NodePorts on, chassis) is
*lagging*: its per-node LBs are left as they are (neither rebuilt from stale
facts nor deleted), and the key is retried shortly after the rest was
committed. A node that stays lagging longer than :data:`LAG_GRACE` (e.g. its
topology keeps failing) is no longer waited for.

A plain NodePort (``[gateway] nodeport-templates``, see :mod:`.model`) reads
no node: its template LBs only need how many NodePort addresses of each family
the most-addressed node has. The controller counts those from the node
annotations and re-queues the template services when the maximum changes, so a
node joining a cluster of N NodePort services costs nothing here, where per-node
LBs cost N reconciles that each rebuilt every node's LBs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter as Tally
from collections.abc import Iterable
from collections.abc import Mapping
from typing import Any

from prometheus_client import Counter
from prometheus_client import Histogram

from ovnk.core.builtin import common
from ovnk.core.builtin.services import model
from ovnk.core.context import ControllerContext
from ovnk.core.errors import TemporaryError
from ovnk.core.kube.resources import ENDPOINTSLICES
from ovnk.core.kube.resources import NODES
from ovnk.core.kube.resources import SERVICES
from ovnk.core.ovn.commands import Match
from ovnk.core.ovn.commands import Ref
from ovnk.core.ovn.ids import OwnerType
from ovnk.core.ovn.ids import external_key
from ovnk.core.ovn.reader import RowSnapshot
from ovnk.core.ovn.sync import RepairPlan
from ovnk.core.reconcile.spec import ControllerSpec
from ovnk.core.reconcile.spec import ReconcileRequest
from ovnk.core.reconcile.spec import Watch
from ovnk.core.topology import annotations as ann
from ovnk.core.topology import naming as n
from ovnk.core.topology.annotations import GatewayConfig
from ovnk.core.topology.state import NodeFacts

logger = logging.getLogger(__name__)

#: Our Load_Balancer rows: ``k8s.ovn.org/name=<ns>/<svc>``, protocol and scope (``cluster``,
#: ``node_router_<node>``...); the row name is ``Service_<ns>/<svc>_<PROTO>_<scope>``.
LB_OWNER = OwnerType(name="Service", table="Load_Balancer", keys=("name", "protocol", "scope"))
KIND_KEY = "k8s.ovn.org/kind"
OWNER_KEY = "k8s.ovn.org/owner"
SCOPE_KEY = external_key("scope")

SLICE_SERVICE_INDEX = "services.service"
NODE_DEPENDENT_INDEX = "services.node-dependent"
TEMPLATE_INDEX = "services.template"
NODE_ANNOTATIONS = (ann.L3_GATEWAY_CONFIG, ann.NODE_CHASSIS_ID, ann.NODE_SUBNETS)
#: Seconds a node's topology may lag behind its annotations before we stop waiting for it. The
#: retry delay doubles with the lag (0.2 s up to a quarter of this), so the grace ends after about
#: ten attempts, well within ``[controller] max-attempts``' default of 15.
LAG_GRACE = 10.0


def index_slice_service(endpoint_slice: dict[str, Any]) -> Iterable[str]:
    key = model.slice_service_key(endpoint_slice)
    return (key,) if key else ()


def index_node_dependent(service: dict[str, Any], *, templates: bool = False) -> Iterable[str]:
    return ("yes",) if model.depends_on_nodes(service, templates=templates) else ()


def index_template(service: dict[str, Any]) -> Iterable[str]:
    return ("yes",) if model.uses_templates(service) else ()


def slice_keys(endpoint_slice: Mapping[str, Any]) -> Iterable[str]:
    key = model.slice_service_key(endpoint_slice)
    return (key,) if key else ()


def service_needs_update(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Spec and status, and whether the service is ours at all (a label can hand it to another proxy)."""
    return (common.changed(old, new, ("spec", "status"))
            or model.wants_load_balancers(old) != model.wants_load_balancers(new))


def node_needs_update(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Only the annotations node IPs, chassis and switches come from matter (not heartbeats)."""
    old_ann, new_ann = ann.annotations_of(old), ann.annotations_of(new)
    return any(old_ann.get(k) != new_ann.get(k) for k in NODE_ANNOTATIONS)


#: The parts of a node's facts the load balancers use: host IPs, NodePorts on, chassis.
NodeDigest = tuple[tuple[str, ...], bool, str | None]


def node_digest(gateway: GatewayConfig | None, chassis_id: str | None) -> NodeDigest:
    if gateway is None:
        return ((), False, chassis_id)
    return (tuple(str(ip) for ip in gateway.host_ips), gateway.node_port_enable, chassis_id)


def node_ip_slots(digest: NodeDigest | None) -> tuple[int, int]:
    """(IPv4, IPv6) NodePort addresses a node's chassis variables hold, by its annotations' digest."""
    if digest is None or not digest[1]:
        return (0, 0)
    v6 = sum(1 for ip in digest[0] if ":" in ip)
    return (len(digest[0]) - v6, v6)


def node_info(facts: NodeFacts, *, nodeport_enabled: bool) -> model.NodeInfo:
    """What the LBs need of a built node; ``router`` mirrors when the topology creates ``GR_<node>``."""
    has_v4_subnet = any(s.version == 4 for s in facts.subnets)
    router = (facts.gateway is not None and bool(facts.chassis_id) and has_v4_subnet
              and any(ip.version == 4 for ip in facts.host_ips))
    node_port = nodeport_enabled and facts.gateway is not None and facts.gateway.node_port_enable
    return model.NodeInfo(name=facts.name, host_ips=tuple(facts.host_ips), router=router,
                          switch=bool(facts.subnets), node_port=node_port, mgmt_ips=tuple(facts.mgmt_ips))


class AddressLinks:
    """Each key's addresses, and the keys that hold each address (an address no key holds is dropped)."""

    def __init__(self) -> None:
        self._of: dict[str, frozenset[str]] = {}
        self._holders: dict[str, set[str]] = {}

    def replace(self, key: str, addresses: frozenset[str]) -> frozenset[str]:
        """Make ``addresses`` (empty: none) the key's; returns those it had."""
        old = self._of.pop(key, frozenset())
        for address in old - addresses:
            holders = self._holders.get(address, set())
            holders.discard(key)
            if not holders:
                self._holders.pop(address, None)
        if addresses:
            self._of[key] = addresses
            for address in addresses - old:
                self._holders.setdefault(address, set()).add(key)
        return old

    def holders(self, address: str) -> set[str]:
        return self._holders.get(address, set())


class ServicesController:
    """Reconciles Service keys (``ns/name``); see the module docstring."""

    def __init__(self, ctx: ControllerContext) -> None:
        self.ctx = ctx
        cfg = ctx.config
        self.controller = cfg.controller.name
        self.families: set[int] = {s.network.version for s in cfg.default.cluster_subnets}
        self.hairpin_ips = (n.hairpin_ip(cfg.gateway.v4_masquerade_subnet),) if 4 in self.families else ()
        self.cluster_networks = [s.network for s in cfg.default.cluster_subnets]
        # Services whose endpoints were outside the cluster subnets at their last reconcile, by address:
        # a node that has (or had) such an address as its own re-queues them. Those whose endpoints were
        # a node's own (host-network) have per-node LBs: every node change concerns them.
        self._outside = AddressLinks()
        self._host_backed: set[str] = set()
        self.nodeport_enabled = cfg.gateway.nodeport
        self.templates = cfg.gateway.nodeport and cfg.gateway.nodeport_templates
        self._lock = threading.Lock()
        # Node -> its host addresses and (IPv4, IPv6) NodePort address counts, by its annotations;
        # which nodes claim each address, and how many nodes have each count. Kept by node_keys,
        # which sees every node event; complete before the first reconcile, as an informer delivers
        # its initial list before it counts as synced and workers start only once all are.
        self._node_addresses = AddressLinks()
        self._node_slots: dict[str, tuple[int, int]] = {}
        self._slot_tally: tuple[Tally[int], Tally[int]] = (Tally(), Tally())
        self._expected: dict[str, tuple[str, NodeDigest | None]] = {}
        self._lag_since: dict[str, float] = {}
        self._not_waited_for: set[str] = set()
        self._reported: dict[str, frozenset[model.Problem]] = {}
        self.syncs = Counter("ovnk_services_sync", "Service reconciles by result "
                             "(committed, unchanged, empty, retry, error).", ["result"], registry=ctx.registry)
        self.duration = Histogram("ovnk_services_sync_duration_seconds", "Time to reconcile one Service.",
                                  registry=ctx.registry,
                                  buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))

    # -- wiring ------------------------------------------------------------------

    def spec(self) -> ControllerSpec:
        # The indexes live on the shared caches the watches below use.
        templates = self.templates

        def node_dependent(service: dict[str, Any]) -> Iterable[str]:
            return index_node_dependent(service, templates=templates)

        self.ctx.informers.informer(SERVICES, indexers={NODE_DEPENDENT_INDEX: node_dependent,
                                                       TEMPLATE_INDEX: index_template})
        self.ctx.informers.informer(ENDPOINTSLICES, indexers={SLICE_SERVICE_INDEX: index_slice_service})
        return ControllerSpec(name="services", watches=(
            Watch(SERVICES, needs_update=service_needs_update),
            Watch(ENDPOINTSLICES, keys=slice_keys),
            Watch(NODES, keys=self.node_keys, needs_update=node_needs_update),
        ), reconcile=self.reconcile, extra={"programming_kind": "service"})

    def node_keys(self, node: Mapping[str, Any]) -> list[str]:
        """A node change affects the services with per-node rules (NodePorts, ``Local`` policies,
        host-network endpoints), those with an endpoint at an address the node has or had, and the
        template ones when the node changed the most NodePort addresses a node has."""
        services = self.ctx.cache(SERVICES)
        keys = set(services.index_keys(NODE_DEPENDENT_INDEX, "yes"))
        addresses, slots_changed = self._note_node(node["metadata"]["name"])
        if self.templates and slots_changed:
            keys.update(services.index_keys(TEMPLATE_INDEX, "yes"))
        with self._lock:
            keys.update(self._host_backed)
            for address in addresses:
                keys.update(self._outside.holders(address))
        return sorted(keys)

    def _note_node(self, name: str) -> tuple[frozenset[str], bool]:
        """Record the node's host addresses and NodePort address counts as its cached object has them
        now (both the old and the new object of an update land here, and a deleted node is gone from
        the cache). Returns its addresses before and now, and whether the most NodePort addresses of
        either family a node has changed."""
        current = self.ctx.cache(NODES).get(name)
        digest = self._expected_facts(current) if current is not None else None
        with self._lock:
            before = self._max_slots()
            for tally, count in zip(self._slot_tally, self._node_slots.pop(name, ()), strict=False):
                tally[count] -= 1
                if tally[count] <= 0:
                    del tally[count]
            if current is None:
                self._expected.pop(name, None)
                return self._node_addresses.replace(name, frozenset()), self._max_slots() != before
            addresses = frozenset(digest[0]) if digest is not None else frozenset()
            old_addresses = self._node_addresses.replace(name, addresses)
            slots = self._node_slots[name] = node_ip_slots(digest)
            for tally, count in zip(self._slot_tally, slots, strict=True):
                tally[count] += 1
            return old_addresses | addresses, self._max_slots() != before

    def _note_outside(self, key: str, addresses: frozenset[str], *, host_backed: bool) -> None:
        """Remember the service's outside endpoint addresses (caller holds the lock)."""
        self._outside.replace(key, addresses)
        if host_backed:
            self._host_backed.add(key)
        else:
            self._host_backed.discard(key)

    def _max_slots(self) -> dict[int, int]:
        """IP version -> the most NodePort addresses of that family a node has (caller holds the lock)."""
        return {version: max(tally, default=0) for version, tally in zip((4, 6), self._slot_tally, strict=True)}

    # -- reconcile ---------------------------------------------------------------

    def reconcile(self, req: ReconcileRequest) -> None:
        started = time.monotonic()
        result = "error"
        try:
            result = self._reconcile(req.key)
        except TemporaryError:
            result = "retry"
            raise
        finally:
            self.syncs.labels(result=result).inc()
            self.duration.observe(time.monotonic() - started)

    def _reconcile(self, key: str) -> str:
        service = self.ctx.cache(SERVICES).get(key)
        existing = self.ctx.nb.owned_by_name(LB_OWNER, key)
        if service is None or not model.wants_load_balancers(service):
            with self._lock:
                self._reported.pop(key, None)
                self._note_outside(key, frozenset(), host_backed=False)
            if not existing:
                return "empty"
            why = "deleted" if service is None else "headless, ExternalName or another proxy's"
            with self.ctx.nb.transaction(reason=f"service {key} ({why})", owner="Service") as txn:
                for row in existing:
                    txn.remove(LB_OWNER.table, uuid=row.uuid)
            return str(txn.outcome)
        if not self.ctx.topology.cluster_ready.is_set():
            raise TemporaryError("the cluster load balancer group is not written yet", delay=0.2)
        nodes: list[model.NodeInfo] = []
        lagging: dict[str, float] = {}
        slices = self.ctx.cache(ENDPOINTSLICES).by_index(SLICE_SERVICE_INDEX, key)
        outside = frozenset(str(ip) for ip in model.outside_addresses(slices, self.cluster_networks))
        slots: dict[int, int] | None = None
        with self._lock:
            # An endpoint at a node's own address is host-network: reached through that node's
            # management port, so the LBs are per node. Other outside addresses load-balance like pods.
            host_backed = any(self._node_addresses.holders(address) for address in outside)
            self._note_outside(key, outside, host_backed=host_backed)
            templated = self.templates and not host_backed and model.uses_templates(service)
            if templated:
                slots = self._max_slots()
        if not templated and (host_backed or model.depends_on_nodes(service)):
            nodes, lagging = self._nodes()
        built = model.build(service, slices, nodes, families=self.families, hairpin_ips=self.hairpin_ips,
                            nodeport_enabled=self.nodeport_enabled, node_ip_slots=slots)
        self._report(key, service, built.problems)
        outcome = self._write(key, built.load_balancers, existing, keep_nodes=set(lagging))
        if lagging:
            age = max(lagging.values())
            raise TemporaryError(f"waiting for the topology of node(s) {', '.join(sorted(lagging))} "
                                 "(their per-node load balancers are kept as they are)",
                                 delay=min(LAG_GRACE / 4, max(0.2, age)))
        return outcome

    def _write(self, key: str, lbs: list[model.LoadBalancer], existing: list[RowSnapshot], *,
               keep_nodes: set[str]) -> str:
        wanted = {lb.name for lb in lbs}
        with self.ctx.nb.transaction(reason=f"service {key}", owner="Service") as txn:
            for lb in lbs:
                txn.ensure(
                    LB_OWNER.table, name=lb.name,
                    ids=LB_OWNER.ids(self.controller, name=key, protocol=lb.protocol, scope=lb.scope),
                    columns={"vips": lb.vips, "protocol": [lb.protocol], "options": lb.options,
                             "selection_fields": lb.selection_fields},
                    external_ids={KIND_KEY: "Service", OWNER_KEY: key},
                )
                ref = Ref(Match.of(LB_OWNER.table, name=lb.name))
                if lb.lb_group:
                    txn.add_to(Match.of("Load_Balancer_Group", name=lb.lb_group), "load_balancer", [ref])
                for router in lb.routers:
                    txn.add_to(Match.of("Logical_Router", name=router), "load_balancer", [ref])
                for switch in lb.switches:
                    txn.add_to(Match.of("Logical_Switch", name=switch), "load_balancer", [ref])
            for row in existing:
                if row.name in wanted:
                    continue
                node = model.scope_node(row.external_ids.get(SCOPE_KEY, ""))
                if node is not None and node in keep_nodes:
                    continue
                # Removing the row also drops it from every router, switch and group referring to it.
                txn.remove(LB_OWNER.table, uuid=row.uuid)
        return str(txn.outcome)

    def _report(self, key: str, service: Mapping[str, Any], problems: list[model.Problem]) -> None:
        """A Warning event per new problem (not again on every reconcile while it persists)."""
        current = frozenset(problems)
        with self._lock:
            previous = self._reported.pop(key, frozenset())
            if current:
                self._reported[key] = current
        for problem in sorted(current - previous, key=lambda p: (p.reason, p.message)):
            logger.warning("service %s: %s", key, problem.message)
            self.ctx.events.event(service, type="Warning", reason=problem.reason, message=problem.message)

    # -- nodes -------------------------------------------------------------------

    def _nodes(self) -> tuple[list[model.NodeInfo], dict[str, float]]:
        """Nodes with facts to build from, and lagging nodes with how long they have lagged."""
        now = time.monotonic()
        infos: list[model.NodeInfo] = []
        lagging: dict[str, float] = {}
        for node in self.ctx.cache(NODES).list():
            name = node["metadata"]["name"]
            facts = self.ctx.topology.node(name)
            lag = self._lag(node, facts, now)
            if lag is not None:
                lagging[name] = lag
                continue
            if facts is not None:
                infos.append(node_info(facts, nodeport_enabled=self.nodeport_enabled))
        self._forget_nodes_except({node["metadata"]["name"] for node in self.ctx.cache(NODES).list()})
        return infos, lagging

    def _forget_nodes_except(self, live: set[str]) -> None:
        with self._lock:
            for name in [k for k in self._expected if k not in live]:
                self._expected.pop(name, None)
                self._lag_since.pop(name, None)
                self._not_waited_for.discard(name)

    def _expected_facts(self, node: Mapping[str, Any]) -> NodeDigest | None:
        """What the LBs will read from the node's facts once the topology caught up with its annotations.

        ``None`` when its annotations are malformed (the topology rejects them too: nothing to wait for).
        """
        meta = node["metadata"]
        name, version = meta["name"], str(meta.get("resourceVersion", ""))
        with self._lock:
            cached = self._expected.get(name)
        if cached is not None and cached[0] == version:
            return cached[1]
        expected: NodeDigest | None
        try:
            expected = node_digest(ann.gateway_config(node), ann.chassis_id(node))
        except ann.AnnotationError:
            expected = None
        with self._lock:
            self._expected[name] = (version, expected)
        return expected

    def _lag(self, node: Mapping[str, Any], facts: NodeFacts | None, now: float) -> float | None:
        """Seconds the node's facts have lagged behind its annotations, ``None`` if they are current."""
        name = node["metadata"]["name"]
        expected = self._expected_facts(node)
        current = expected is None or (facts is not None and node_digest(facts.gateway, facts.chassis_id) == expected)
        with self._lock:
            if current:
                self._lag_since.pop(name, None)
                self._not_waited_for.discard(name)
                return None
            since = self._lag_since.setdefault(name, now)
            age = now - since
            if age <= LAG_GRACE:
                return age
            first = name not in self._not_waited_for
            self._not_waited_for.add(name)
        if first:
            logger.warning("node %s: its topology has lagged behind its annotations for %.0fs; "
                           "building its load balancers from what is known", name, age)
        return None

    # -- repair ------------------------------------------------------------------

    def plan_stale(self, plan: RepairPlan) -> None:
        """LBs of services that are gone or want none, and per-node LBs of nodes that are gone."""
        services = self.ctx.cache(SERVICES)
        nodes = self.ctx.cache(NODES)
        for row in self.ctx.nb.owned(LB_OWNER):
            key = row.external_ids.get(external_key("name"), "")
            service = services.get(key)
            if service is None:
                plan.stale(row, reason=f"service {key} no longer exists")
            elif not model.wants_load_balancers(service):
                plan.stale(row, reason=f"service {key} is headless, ExternalName or another proxy's")
            else:
                node = model.scope_node(row.external_ids.get(SCOPE_KEY, ""))
                if node is not None and nodes.get(node) is None:
                    plan.stale(row, reason=f"node {node} of service {key} no longer exists")
