"""EgressService's reconcilers: host, status, node label and NB rows of each object; the shared rows.

* ``egressservice`` (one key per object, ``<ns>/<name>``, one worker so host
  choices see each other): parses the object with its Service
  (:mod:`.models`), chooses the host node (:mod:`.hosts`), writes the
  object's reroute policies and the whole ``egresssvc-served-pods`` set in one
  NB transaction (:mod:`.nb`), moves the node label
  ``egress-service.k8s.ovn.org/<ns>-<name>`` to the host and writes
  ``status.host``. Bad input (no such Service, not a LoadBalancer, no ingress
  IP yet, no node qualifies) leaves nothing programmed: ``status.host`` is
  empty, a ``HostAssigned=False`` condition says why, a Warning event is
  recorded once, and fixing the input re-runs the key (the Service, its
  EndpointSlices and the Nodes are watched).
* ``egressservice-shared`` (one key): the rows shared with EgressIP
  (:mod:`ovnk.egress`), this feature's pod-to-node policy and, at start, the
  removal of host labels whose EgressService is gone.

Node health: when EgressIP is enabled it checks the nodes EgressService names
through the hooks it publishes (:mod:`ovnk.plugins.egressip.hooks`, called
through the plugin manager, never imported); a node that fails its check
loses its services. Without EgressIP only readiness counts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from collections.abc import Mapping
from typing import Any

from ovnk import ENDPOINTSLICES
from ovnk import NODES
from ovnk import SERVICES
from ovnk import ControllerContext
from ovnk import ControllerSpec
from ovnk import Match
from ovnk import Parent
from ovnk import ReconcileRequest
from ovnk import RepairPlan
from ovnk import Resource
from ovnk import TemporaryError
from ovnk import Watch
from ovnk import egress
from ovnk import names
from ovnk import parse_selector
from ovnk.names import IPAddress
from ovnk.plugins.egressservice import nb
from ovnk.plugins.egressservice.hosts import choose_host
from ovnk.plugins.egressservice.metrics import EgressServiceMetrics
from ovnk.plugins.egressservice.models import ALL_NODES
from ovnk.plugins.egressservice.models import HOST_LABEL_PREFIX
from ovnk.plugins.egressservice.models import SERVICE_NAME_LABEL
from ovnk.plugins.egressservice.models import EgressServiceError
from ovnk.plugins.egressservice.models import EgressServiceModel
from ovnk.plugins.egressservice.models import Endpoint
from ovnk.plugins.egressservice.models import HostCandidate
from ovnk.plugins.egressservice.models import endpoints
from ovnk.plugins.egressservice.models import host_label
from ovnk.plugins.egressservice.models import node_is_ready
from ovnk.plugins.egressservice.models import parse_egressservice

logger = logging.getLogger(__name__)

EGRESSSERVICES = Resource("k8s.ovn.org", "v1", "EgressService", "egressservices")

OBJECTS = "egressservice"
#: The owner of the host labels (the plugin's name).
OWNER = "egressservice"
SHARED = "egressservice-shared"
SHARED_KEY = "shared"
CONDITION = "HostAssigned"


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def _labels(obj: Mapping[str, Any]) -> Mapping[str, str]:
    return _meta(obj).get("labels") or {}


def object_key(obj: Mapping[str, Any]) -> str:
    return f"{_meta(obj).get('namespace', '')}/{_meta(obj).get('name', '')}"


def service_changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    return bool(old.get("spec") != new.get("spec") or old.get("status") != new.get("status"))


def node_changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Node changes that can move a host: labels (the selector, the host label itself), readiness."""
    return bool(_labels(old) != _labels(new) or node_is_ready(old) != node_is_ready(new))


def node_addresses_changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    return bool(egress.node_host_addresses(old) != egress.node_host_addresses(new))


def endpoints_changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    return bool(old.get("endpoints") != new.get("endpoints"))


def spec_changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    return bool(old.get("spec") != new.get("spec"))


class EgressServiceControllers:
    """The two reconcilers and repair (one instance per controller process)."""

    def __init__(self, ctx: ControllerContext, metrics: EgressServiceMetrics | None) -> None:
        self.ctx = ctx
        self.metrics = metrics
        self.controller = ctx.controller_name
        self.lock = threading.Lock()
        #: node -> last health check result, fed by EgressIP's health hook when it is enabled
        self.reachable: dict[str, bool] = {}
        #: (key, reason, message) already recorded as an event
        self.reported: set[tuple[str, str, str]] = set()
        #: key -> when its host went away (failover latency)
        self.lost_at: dict[str, float] = {}

    # -- specs -------------------------------------------------------------------------

    def specs(self) -> list[ControllerSpec]:
        return [
            ControllerSpec(name=OBJECTS, reconcile=self.reconcile, workers=1, watches=(
                Watch(EGRESSSERVICES, keys=lambda obj: [object_key(obj)], needs_update=service_changed),
                Watch(SERVICES, keys=self.keys_for_service, needs_update=service_changed),
                Watch(ENDPOINTSLICES, keys=self.keys_for_slice, needs_update=endpoints_changed),
                Watch(NODES, keys=self.all_keys, needs_update=node_changed),
            )),
            ControllerSpec(name=SHARED, reconcile=self.reconcile_shared, workers=1,
                           initial_keys=lambda: [SHARED_KEY], watches=(
                Watch(NODES, keys=lambda _node: [SHARED_KEY], needs_update=node_addresses_changed),
            )),
        ]

    def all_keys(self, _obj: Mapping[str, Any] | None = None) -> list[str]:
        return sorted(self.ctx.cache(EGRESSSERVICES).keys())

    def keys_for_service(self, service: Mapping[str, Any]) -> list[str]:
        key = object_key(service)
        return [key] if self.ctx.cache(EGRESSSERVICES).get(key) is not None else []

    def keys_for_slice(self, endpoint_slice: Mapping[str, Any]) -> list[str]:
        name = _labels(endpoint_slice).get(SERVICE_NAME_LABEL)
        if not name:
            return []
        key = f"{_meta(endpoint_slice).get('namespace', '')}/{name}"
        return [key] if self.ctx.cache(EGRESSSERVICES).get(key) is not None else []

    # -- health (EgressIP's checks, through its hooks) ---------------------------------------

    def health_targets(self) -> list[str]:
        """Nodes whose health matters: the hosts and every node that could become one."""
        return sorted(n["metadata"]["name"] for n in self.ctx.cache(NODES).list() if node_is_ready(n))

    def health_changed(self, reachable: Mapping[str, bool]) -> None:
        """A round of health checks changed some node's result: re-run every object."""
        with self.lock:
            self.reachable = dict(reachable)
        for key in self.all_keys():
            self.ctx.enqueue(OBJECTS, key)

    # -- one object --------------------------------------------------------------------------

    def endpoints_of(self, namespace: str, name: str) -> list[Endpoint]:
        selector = parse_selector({"matchLabels": {SERVICE_NAME_LABEL: name}}, field="service")
        slices = self.ctx.select(ENDPOINTSLICES, selector, namespace=namespace)
        return endpoints(slices, cluster_subnets=[s.network for s in self.ctx.config.default.cluster_subnets])

    def hosted(self, *, besides: str) -> dict[str, int]:
        counts: dict[str, int] = {}
        for obj in self.ctx.cache(EGRESSSERVICES).list():
            host = str((obj.get("status") or {}).get("host") or "")
            if host and host != ALL_NODES and object_key(obj) != besides:
                counts[host] = counts.get(host, 0) + 1
        return counts

    def reconcile(self, req: ReconcileRequest) -> None:
        key = req.key
        namespace, _, name = key.partition("/")
        obj = self.ctx.cache(EGRESSSERVICES).get(key)
        if obj is None:
            self._program(key, [], None)
            self._converge_labels(host_label(namespace, name), None)
            with self.lock:
                self.reported = {r for r in self.reported if r[0] != key}
                self.lost_at.pop(key, None)
            self._count()
            return
        try:
            model = parse_egressservice(obj, self.ctx.cache(SERVICES).get(key))
        except EgressServiceError as exc:
            self._unprogrammed(obj, key, reason=exc.reason, message=str(exc))
            return
        if not model.snat:
            self._program(key, [], None)
            self._converge_labels(model.label, None)
            self._write_status(obj, ALL_NODES, reason="AllNodes",
                               message="sourceIPBy: Network: every node serves its own endpoints")
            return
        found = self.endpoints_of(namespace, name)
        with self.lock:
            reachable = dict(self.reachable)
        nodes = [HostCandidate.of(n, reachable=reachable.get(n["metadata"]["name"], True))
                 for n in self.ctx.cache(NODES).list()]
        choice = choose_host(model, nodes, found, hosted=self.hosted(besides=key))
        if choice.host is None:
            self._unprogrammed(obj, key, reason="NoMatchingNodeFound", message=choice.reason)
            return
        self._program(key, found, choice.host)
        self._converge_labels(model.label, choice.host)
        moved = self._write_status(obj, choice.host, reason="HostSelected",
                                   message=f"node {choice.host} sends the endpoints' traffic out from "
                                           f"{', '.join(str(ip) for ip in model.ingress_ips)}")
        self._forget_reports(key)
        if moved:
            self._note_move(model, choice.host)

    def _unprogrammed(self, obj: Mapping[str, Any], key: str, *, reason: str, message: str) -> None:
        """Bad input or no host: nothing programmed, an empty host, a condition and one event."""
        with self.lock:
            new_report = (key, reason, message) not in self.reported
            if new_report:
                self.reported = {r for r in self.reported if r[0] != key}
                self.reported.add((key, reason, message))
        if new_report:
            logger.warning("EgressService %s: %s", key, message)
            self.ctx.events.event(obj, type="Warning", reason=reason, message=message)
        self._program(key, [], None)
        namespace, _, name = key.partition("/")
        self._converge_labels(host_label(namespace, name), None)
        if self._write_status(obj, "", reason=reason, message=message):
            with self.lock:
                self.lost_at.setdefault(key, time.monotonic())
        self._count()

    def _forget_reports(self, key: str) -> None:
        with self.lock:
            self.reported = {r for r in self.reported if r[0] != key}

    def _note_move(self, model: EgressServiceModel, host: str) -> None:
        now = time.monotonic()
        with self.lock:
            lost = self.lost_at.pop(model.key, None)
        if self.metrics is not None:
            if model.host and model.host != host:
                self.metrics.host_moves.inc()
            if lost is not None:
                self.metrics.unallocated_seconds.observe(now - lost)
        logger.info("EgressService %s: host %s (was %s)", model.key, host, model.host or "none")
        self._count()

    def _count(self) -> None:
        if self.metrics is None:
            return
        hosts = [str((o.get("status") or {}).get("host") or "") for o in self.ctx.cache(EGRESSSERVICES).list()]
        self.metrics.allocated.set(sum(1 for h in hosts if h and h != ALL_NODES))

    # -- writes --------------------------------------------------------------------------------

    def _host_mgmt_ips(self, host: str) -> tuple[IPAddress, ...]:
        facts = self.ctx.topology.node(host)
        if facts is None or not facts.subnets:
            raise TemporaryError(f"host node {host} has no subnet yet", delay=1.0)
        return facts.mgmt_ips

    def _program(self, key: str, found: Iterable[Endpoint], host: str | None) -> None:
        """The object's policies and the served set, in one transaction (nothing written when equal)."""
        rows = [] if host is None else nb.reroute_policies(
            controller=self.controller, key=key, endpoint_ips=[e.ip for e in found],
            host_mgmt_ips=self._host_mgmt_ips(host))
        wanted = {row.ids.primary_id for row in rows}
        existing = list(self.ctx.nb.owned(nb.POLICY))
        stale = [r for r in existing if r.external_ids.get("k8s.ovn.org/name") == key and r.primary_id not in wanted]
        served: dict[int, set[str]] = {4: set(), 6: set()}
        for snapshot in existing:
            row_key = nb.service_of(snapshot.external_ids.get("k8s.ovn.org/name", ""))
            ip = snapshot.external_ids.get("ip", "")
            if row_key is not None and row_key != key and ip:
                served[6 if ":" in ip else 4].add(ip)
        for row in rows:
            ip = row.ids.external_ids()["ip"]
            served[6 if ":" in ip else 4].add(ip)
        families = sorted({s.network.version for s in self.ctx.config.default.cluster_subnets})
        router = Parent(Match.of("Logical_Router", name=names.CLUSTER_ROUTER), "policies")
        with self.ctx.nb.transaction(reason=f"egressservice {key}", owner="EgressService") as txn:
            for snapshot in stale:
                txn.remove(snapshot.table, uuid=snapshot.uuid)
            for version in families:
                set_name, set_ids = nb.served_pods_set(self.controller, version)
                txn.ensure("Address_Set", name=set_name, ids=set_ids,
                           columns={"addresses": sorted(served.get(version, ()))})
            for row in rows:
                txn.ensure("Logical_Router_Policy", ids=row.ids, columns=row.columns, external_ids=row.external_ids,
                           parent=router)

    def _converge_labels(self, label: str, host: str | None) -> None:
        """The host label on ``host`` only (owned labels: core removes them if the plugin is switched off)."""
        for node in self.ctx.cache(NODES).list():
            node_name = node["metadata"]["name"]
            has = label in _labels(node)
            if node_name == host:
                self.ctx.node_labels.set(OWNER, node_name, {label: ""})
            elif has:
                self.ctx.node_labels.set(OWNER, node_name, {label: None})

    def _write_status(self, obj: Mapping[str, Any], host: str, *, reason: str, message: str) -> bool:
        """``status.host`` and the condition; returns whether the host changed."""
        status = obj.get("status") or {}
        current: Mapping[str, Any] = next((c for c in status.get("conditions") or () if c.get("type") == CONDITION), {})
        ok = "True" if host else "False"
        if status.get("host", "") == host and (current.get("status"), current.get("reason"),
                                                current.get("message")) == (ok, reason, message):
            return False
        since = current.get("lastTransitionTime") if current.get("status") == ok else None
        condition = {"type": CONDITION, "status": ok, "reason": reason, "message": message,
                     "lastTransitionTime": since or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        meta = _meta(obj)
        # No host: the field goes (merge patch null), as an empty string is stored as null here.
        self.ctx.kube.patch(EGRESSSERVICES, meta["name"], {"status": {"host": host or None, "conditions": [condition]}},
                            namespace=meta["namespace"], subresource="status")
        return bool(status.get("host", "") != host)

    # -- shared rows -----------------------------------------------------------------------------

    def reconcile_shared(self, req: ReconcileRequest) -> None:
        families = sorted({s.network.version for s in self.ctx.config.default.cluster_subnets})
        router = Parent(Match.of("Logical_Router", name=names.CLUSTER_ROUTER), "policies")
        node_ips = egress.all_node_addresses(self.ctx.cache(NODES).list())
        with self.ctx.nb.transaction(reason="egressservice shared rows", owner="EgressService") as txn:
            egress.write_shared_rows(txn, egress.shared_rows(self.ctx.config, controller=self.controller,
                                                             node_ips=node_ips))
            for version in families:
                set_name, set_ids = nb.served_pods_set(self.controller, version)
                txn.ensure("Address_Set", name=set_name, ids=set_ids)
                policy = nb.pod_to_node_policy(self.controller, version)
                txn.ensure("Logical_Router_Policy", ids=policy.ids, columns=policy.columns, parent=router)
        self.remove_stale_labels()

    def remove_stale_labels(self) -> None:
        """Host labels of EgressServices that no longer exist (deleted while no controller ran)."""
        live = {host_label(*k.split("/", 1)) for k in self.ctx.cache(EGRESSSERVICES).keys()}
        for node in self.ctx.cache(NODES).list():
            for label in _labels(node):
                if label.startswith(HOST_LABEL_PREFIX) and label not in live:
                    logger.info("node %s: removing %s (its EgressService is gone)", node["metadata"]["name"], label)
                    self.ctx.node_labels.set(OWNER, node["metadata"]["name"], {label: None})

    # -- repair ----------------------------------------------------------------------------------

    def plan_repair(self, plan: RepairPlan) -> None:
        """Policies of objects that are gone (every live object's key is reconciled right after)."""
        live = set(self.ctx.cache(EGRESSSERVICES).keys())
        for row in self.ctx.nb.owned(nb.POLICY):
            key = nb.service_of(row.external_ids.get("k8s.ovn.org/name", ""))
            if key is not None and key not in live:
                plan.stale(row, reason=f"EgressService {key} no longer exists")
