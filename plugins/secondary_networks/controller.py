"""The NetworkAttachmentDefinition controller: which secondary networks run, and their lifecycles.

``secondary-networks`` reconciles one key (``nads``): it reads every NAD of
type ``ovn-k8s-cni-overlay`` from the cache, groups them into networks
(:func:`.models.resolve_networks`), reports unusable and conflicting NADs
with a Warning event on the NAD (once per message), and makes the running
networks match:

* a new network gets a :class:`~.state.Network` and its own controller
  (:class:`~.network.NetworkController`, added with ``ctx.controllers.add``);
* a network whose NADs are all gone keeps running while pods use it (each such
  pod gets a Warning event) and is torn down once the last one detaches: its
  controller stops, every row it owns is deleted and, for layer3, its entry in
  the nodes' ``k8s.ovn.org/node-subnets`` is removed;
* a network whose config changed while no pod uses it is torn down and started
  again with the new config; with pods attached it keeps its config and the
  NAD with the new one is a conflict.

Restore rebuilds the networks from the NADs and re-holds every annotated
subnet and address before any worker runs; repair deletes rows of networks,
nodes and attachments that no longer exist.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from typing import Any

import ovnk.annotations as ann
from ovnk import NODES
from ovnk import PODS
from ovnk import ControllerContext
from ovnk import ControllerSpec
from ovnk import ReconcileRequest
from ovnk import RepairPlan
from ovnk import Resource
from ovnk import Watch
from ovnk.plugins.secondary_networks import models
from ovnk.plugins.secondary_networks import nb
from ovnk.plugins.secondary_networks.network import NetworkController
from ovnk.plugins.secondary_networks.state import Network
from ovnk.plugins.secondary_networks.state import Registry

logger = logging.getLogger(__name__)

NADS = Resource("k8s.cni.cncf.io", "v1", "NetworkAttachmentDefinition", "network-attachment-definitions",
                namespaced=True)
CONTROLLER = "secondary-networks"
ALL = "nads"


def nad_info(nad: Mapping[str, Any]) -> models.NadInfo | None:
    """What one NAD defines; ``None`` for NADs of other CNI types (not ours to judge)."""
    key = models.nad_key_of(nad)
    created = str((nad.get("metadata") or {}).get("creationTimestamp") or "")
    try:
        spec = models.parse_config(models.nad_config(nad), key)
    except models.NetworkError as exc:
        return models.NadInfo(key=key, created=created, error=str(exc))
    if spec is None:
        return None
    return models.NadInfo(key=key, created=created, spec=spec)


class SecondaryNetworks:
    """Every secondary network of one controller process (see the module docstring)."""

    def __init__(self, ctx: ControllerContext) -> None:
        self.ctx = ctx
        self.registry = Registry()
        self.controllers: dict[str, NetworkController] = {}
        self._lock = threading.Lock()
        self._reported: set[tuple[str, str]] = set()

    def specs(self) -> list[ControllerSpec]:
        def nad_changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
            return bool(old.get("spec") != new.get("spec"))

        return [ControllerSpec(name=CONTROLLER, reconcile=self.reconcile, initial_keys=lambda: [ALL],
                               watches=(Watch(NADS, keys=lambda _nad: [ALL], needs_update=nad_changed),))]

    # -- events ------------------------------------------------------------------------

    def report(self, obj: Mapping[str, Any], reason: str, message: str) -> None:
        """A Warning event on ``obj``, once per (object, message) while this process runs."""
        meta = obj.get("metadata") or {}
        ident = (f"{obj.get('kind', '')}/{meta.get('namespace', '')}/{meta.get('name', '')}/{meta.get('uid', '')}",
                 message)
        with self._lock:
            if ident in self._reported:
                return
            self._reported.add(ident)
        logger.warning("%s %s/%s: %s", obj.get("kind", "object"), meta.get("namespace", ""), meta.get("name", ""),
                       message)
        try:
            self.ctx.events.event(obj, type="Warning", reason=reason, message=message)
        except Exception:
            logger.warning("could not record event %s", reason, exc_info=True)

    # -- the NAD controller ----------------------------------------------------------------

    def _resolve(self) -> models.Resolution:
        infos = []
        for nad in self.ctx.cache(NADS).list():
            info = nad_info(nad)
            if info is not None:
                infos.append(info)
        return models.resolve_networks(infos, pinned=self.registry.pinned())

    def reconcile(self, req: ReconcileRequest) -> None:
        resolution = self._resolve()
        cache = self.ctx.cache(NADS)
        for key, message in {**resolution.invalid, **resolution.conflicts}.items():
            nad = cache.get(key)
            if nad is not None:
                reason = "InvalidNetworkConfig" if key in resolution.invalid else "NetworkConfigConflict"
                self.report({"kind": "NetworkAttachmentDefinition", **nad}, reason, message)
        for name, (spec, keys) in resolution.networks.items():
            network = self.registry.get(name)
            if network is not None and network.spec != spec:
                if network.in_use:
                    continue  # cannot happen: pinned configs win; kept for safety
                self._teardown(network)
                network = None
            if network is None:
                network = self._start(spec)
            network.set_nads(keys)
        for network in self.registry.networks():
            if network.spec.name in resolution.networks:
                continue
            network.set_nads(())
            if network.in_use:
                self._report_orphans(network)
            else:
                self._teardown(network)
        for node, name in self.stale_node_subnets():
            self.drop_node_subnets(node, name)

    def _report_orphans(self, network: Network) -> None:
        pods = self.ctx.cache(PODS)
        for pod_key, nad_keys in sorted(network.attached().items()):
            pod = pods.get(pod_key)
            if pod is None:
                continue
            gone = sorted({models.nad_name_of(k) for k in nad_keys})
            self.report({"kind": "Pod", **pod}, "NetworkAttachmentDefinitionDeleted",
                        f"NetworkAttachmentDefinition(s) {', '.join(gone)} of network {network.spec.name} were "
                        f"deleted while this pod uses them; its interfaces keep working until it is deleted, and "
                        f"the network is removed with its last pod")

    def _network_controller(self, network: Network) -> NetworkController:
        return NetworkController(self.ctx, network, report=self.report,
                                 on_detached=lambda: self.ctx.enqueue(CONTROLLER, ALL))

    def _start(self, spec: models.NetworkSpec, *, add_controller: bool = True) -> Network:
        network = Network(spec)
        controller = self._network_controller(network)
        self.registry.add(network)
        self.controllers[spec.name] = controller
        if add_controller:
            self.ctx.controllers.add(controller.spec_())
        logger.info("network %s (%s): started", spec.name, spec.describe())
        return network

    def _teardown(self, network: Network) -> None:
        """Stop the network's controller, delete every row it owns and its node subnets."""
        name = network.spec.name
        self.ctx.controllers.remove(network.controller_name)
        self.registry.remove(name)
        self.controllers.pop(name, None)
        with self.ctx.nb.transaction(reason=f"network {name} removed", owner="SecondaryNetwork") as txn:
            for owner in nb.TEARDOWN_ORDER:
                for row in self.ctx.nb.owned_by_name(owner, name):
                    txn.remove(row.table, uuid=row.uuid)
        if network.spec.topology == models.LAYER3:
            for node in self.ctx.cache(NODES).list():
                self.drop_node_subnets(node, name)
        logger.info("network %s: removed (no NetworkAttachmentDefinition defines it and no pod uses it)", name)

    def drop_node_subnets(self, node: Mapping[str, Any], network: str) -> None:
        """Remove ``network``'s key from the node's ``k8s.ovn.org/node-subnets`` (compare-and-swap)."""
        raw = ann.annotations_of(node).get(ann.NODE_SUBNETS)
        try:
            doc = dict(json.loads(raw)) if raw else {}
        except (TypeError, ValueError):
            return
        if network not in doc:
            return
        doc.pop(network)
        meta = node["metadata"]
        self.ctx.kube.patch(NODES, meta["name"], {"metadata": {
            "resourceVersion": meta.get("resourceVersion"),
            "annotations": {ann.NODE_SUBNETS: json.dumps(doc, sort_keys=True, separators=(",", ":"))}}},
            subresource="status")

    # -- restore and repair -------------------------------------------------------------------

    def restore(self) -> None:
        """Networks from the NADs, their node subnets and every annotated attachment's addresses."""
        resolution = self._resolve()
        pods = self.ctx.cache(PODS).list()
        nodes = self.ctx.cache(NODES).list()
        for name, (spec, keys) in resolution.networks.items():
            network = self.registry.get(name) or self._start(spec)
            network.set_nads(keys)
            restored = self.controllers[name].restore(pods, nodes)
            logger.info("network %s: restored %d attachment(s)", name, restored)

    def plan_repair(self, plan: RepairPlan) -> None:
        """Rows of networks, layer3 nodes and pod attachments that no longer exist."""
        nodes = set(self.ctx.cache(NODES).keys())
        pods = self.ctx.cache(PODS).list()
        for owner in nb.TEARDOWN_ORDER:
            for row in self.ctx.nb.owned(owner):
                network = row.external_ids.get("k8s.ovn.org/name", "")
                controller = self.controllers.get(network)
                if controller is None:
                    plan.stale(row, reason=f"secondary network {network!r} is not defined by any "
                                           f"NetworkAttachmentDefinition")
                    continue
                if owner is nb.POD_PORT:
                    if row.name not in controller.expected_ports(pods):
                        plan.stale(row, reason=f"no pod is attached to network {network} through port {row.name}")
                    continue
                node = nb.role_node(row.external_ids.get("type", ""))
                if node is not None and (node not in nodes or controller.spec.topology != models.LAYER3):
                    plan.stale(row, reason=f"node {node} of network {network} no longer exists")

    def stale_node_subnets(self) -> list[tuple[Mapping[str, Any], str]]:
        """(node, network) pairs of ``k8s.ovn.org/node-subnets`` keys of networks that no longer run
        (deleted while no controller ran); the NAD reconcile drops them."""
        running = {n.spec.name for n in self.registry.networks() if n.spec.topology == models.LAYER3}
        stale = []
        for node in self.ctx.cache(NODES).list():
            raw = ann.annotations_of(node).get(ann.NODE_SUBNETS)
            try:
                doc = dict(json.loads(raw)) if raw else {}
            except (TypeError, ValueError):
                continue
            stale += [(node, key) for key in sorted(doc) if key != ann.DEFAULT and key not in running]
        return stale
