"""One secondary network's controller: its rows, its nodes' subnets and rows, its pods' attachments.

The NAD controller (:mod:`.controller`) starts one per network
(``<network>-network-controller``) and stops it when the network goes.
Keys:

* ``network``: the rows that do not depend on nodes (layer3 router, the
  layer2 or localnet switch, the localnet port).
* ``node:<name>``: layer3: the node's subnet of the network (published in its
  ``k8s.ovn.org/node-subnets`` under the network's name) and its switch and
  router ports; every topology: the node's attached pods are re-run when its
  chassis changes.
* ``<ns>/<pod>`` (the primary watch): the pod's attachments of this network:
  addresses (static on request) written to ``k8s.ovn.org/pod-networks``
  (``<ns>/<nad>`` keys) before any port exists, then one transaction with the
  ports. A pod gone, finished or no longer selecting the network loses its
  ports and addresses.

Each pod annotation update carries the ``resourceVersion`` it was computed
from, so concurrent writers (core's default network, other networks) never
overwrite each other: a conflict is retried on fresh data.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from collections.abc import Mapping
from typing import Any

import ovnk.annotations as ann
from ovnk import NODES
from ovnk import PODS
from ovnk import ControllerContext
from ovnk import ControllerSpec
from ovnk import Match
from ovnk import NbTxn
from ovnk import Parent
from ovnk import PermanentError
from ovnk import ReconcileRequest
from ovnk import TemporaryError
from ovnk import Watch
from ovnk.names import IPNetwork
from ovnk.plugins.secondary_networks import models
from ovnk.plugins.secondary_networks import nb
from ovnk.plugins.secondary_networks.ipam import AllocationError
from ovnk.plugins.secondary_networks.models import Selection
from ovnk.plugins.secondary_networks.state import Network

logger = logging.getLogger(__name__)

NETWORK_KEY = "network"
NODE_PREFIX = "node:"
Reporter = Callable[[Mapping[str, Any], str, str], None]


def selections_of(pod: Mapping[str, Any]) -> list[Selection]:
    """The pod's selections; a malformed annotation selects nothing (the NAD controller reports it)."""
    try:
        return models.parse_selections(pod)
    except models.SelectionError:
        return []


def node_subnets_of(node: Mapping[str, Any], network: str) -> list[IPNetwork]:
    try:
        return ann.node_subnets(node, network)
    except ann.AnnotationError:
        return []


class NetworkController:
    """The controller of one network (see the module docstring)."""

    def __init__(self, ctx: ControllerContext, network: Network, *, report: Reporter,
                 on_detached: Callable[[], None]) -> None:
        self.ctx = ctx
        self.network = network
        self.spec = network.spec
        self.report = report
        self.on_detached = on_detached
        self.controller = ctx.controller_name
        self._chassis: dict[str, str] = {}
        self._lock = threading.Lock()

    # -- watches -------------------------------------------------------------------

    def pod_keys(self, pod: Mapping[str, Any]) -> list[str]:
        if any(self.network.serves(s.nad_name) for s in selections_of(pod)):
            return [models.pod_key(pod)]
        return []

    def node_keys(self, node: Mapping[str, Any]) -> list[str]:
        return [NODE_PREFIX + str((node.get("metadata") or {}).get("name", ""))]

    def node_changed(self, old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
        return bool(ann.chassis_id(old) != ann.chassis_id(new)
                    or node_subnets_of(old, self.spec.name) != node_subnets_of(new, self.spec.name))

    def spec_(self) -> ControllerSpec:
        def pod_changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
            keys = ("annotations", "uid")
            return bool(any(old["metadata"].get(k) != new["metadata"].get(k) for k in keys)
                        or (old.get("spec") or {}).get("nodeName") != (new.get("spec") or {}).get("nodeName")
                        or (old.get("status") or {}).get("phase") != (new.get("status") or {}).get("phase"))

        return ControllerSpec(
            name=self.network.controller_name, reconcile=self.reconcile, initial_keys=lambda: [NETWORK_KEY],
            watches=(Watch(PODS, keys=self.pod_keys, needs_update=pod_changed),
                     Watch(NODES, keys=self.node_keys, needs_update=self.node_changed)))

    # -- reconcile -------------------------------------------------------------------

    def reconcile(self, req: ReconcileRequest) -> None:
        if req.key == NETWORK_KEY:
            self.reconcile_network()
        elif req.key.startswith(NODE_PREFIX):
            self.reconcile_node(req.key[len(NODE_PREFIX):])
        else:
            self.reconcile_pod(req.key, req.deleted)

    def _write_rows(self, txn: NbTxn, rows: list[nb.Row]) -> None:
        extra = nb.network_external_ids(self.spec)
        for row in rows:
            parent = Parent(Match.of(row.parent[0], name=row.parent[1]), row.parent[2]) if row.parent else None
            txn.ensure(row.table, name=row.name, ids=row.ids(self.controller, self.spec.name),
                       columns=dict(row.columns), external_ids=extra, parent=parent)

    def reconcile_network(self) -> None:
        with self.ctx.nb.transaction(reason=f"network {self.spec.name}", owner="SecondaryNetwork") as txn:
            self._write_rows(txn, nb.network_rows(self.spec))
        self.network.mark_ready()

    # -- nodes --------------------------------------------------------------------------

    def reconcile_node(self, name: str) -> None:
        node = self.ctx.cache(NODES).get(name)
        if node is None:
            self._delete_node(name)
            return
        chassis = ann.chassis_id(node) or ""
        with self._lock:
            moved = self._chassis.get(name) not in (None, chassis)
            self._chassis[name] = chassis
        if moved:
            for pod in self.ctx.cache(PODS).by_index("node", name):
                for key in self.pod_keys(pod):
                    self.ctx.enqueue(self.network.controller_name, key)
        if self.spec.topology != models.LAYER3:
            return
        try:
            subnets = self.network.allocate_node(name)
        except AllocationError as exc:
            self.report(node, "ErrorAllocatingSubnet", f"network {self.spec.name}: {exc}")
            raise TemporaryError(f"node {name}: {exc}", delay=10) from exc
        self._publish_subnets(node, subnets)
        if not self.network.network_ready:
            raise TemporaryError(f"network {self.spec.name}: its router is not committed yet", delay=0.2)
        with self.ctx.nb.transaction(reason=f"network {self.spec.name} node {name}", owner="SecondaryNetwork") as txn:
            self._write_rows(txn, nb.node_rows(self.spec, name, subnets))
        self.network.mark_ready(name)

    def _publish_subnets(self, node: Mapping[str, Any], subnets: list[IPNetwork]) -> None:
        """The node's subnet of this network in ``k8s.ovn.org/node-subnets`` (core keeps ``default`` and
        every other key); compare-and-swap on the node's resourceVersion."""
        if sorted(map(str, node_subnets_of(node, self.spec.name))) == sorted(map(str, subnets)):
            return
        annotations = ann.annotations_of(node)
        try:
            doc = dict(json.loads(annotations.get(ann.NODE_SUBNETS) or "{}"))
        except (TypeError, ValueError):
            doc = {}
        doc[self.spec.name] = [str(s) for s in subnets]
        meta = node["metadata"]
        self.ctx.kube.patch(NODES, meta["name"], {"metadata": {
            "resourceVersion": meta.get("resourceVersion"),
            "annotations": {ann.NODE_SUBNETS: json.dumps(doc, sort_keys=True, separators=(",", ":"))}}},
            subresource="status")
        logger.info("network %s: node %s has subnet(s) %s", self.spec.name, meta["name"], ", ".join(map(str, subnets)))

    def _delete_node(self, name: str) -> None:
        with self._lock:
            self._chassis.pop(name, None)
        if self.spec.topology != models.LAYER3:
            return
        roles = {nb.node_role(kind, name) for kind in ("switch", "rtos", "stor")}
        with self.ctx.nb.transaction(reason=f"network {self.spec.name} node {name} gone", owner="SecondaryNetwork") as txn:
            for owner in nb.TEARDOWN_ORDER:
                if owner is nb.POD_PORT:
                    continue
                for row in self.ctx.nb.owned_by_name(owner, self.spec.name):
                    if row.external_ids.get("type") in roles:
                        txn.remove(row.table, uuid=row.uuid)
        self.network.release_node(name)

    # -- pods ----------------------------------------------------------------------------

    def wanted(self, pod: Mapping[str, Any]) -> list[Selection]:
        """The pod's selections this network serves (none for a pod that wants no network here)."""
        if not models.pod_wants_network(pod):
            return []
        return [s for s in selections_of(pod) if self.network.serves(s.nad_name)]

    def entry_for(self, pod: Mapping[str, Any], selection: Selection, node: str,
                  existing: Mapping[str, Any] | None) -> dict[str, Any]:
        """The annotation entry of one attachment: the existing one re-held, else new addresses.

        :raises AllocationError: addresses cannot be had (reported by the caller).
        """
        holder = models.attachment_holder(pod, selection.nad_key)
        if existing:
            try:
                ips, mac = models.entry_addresses(existing)
            except ValueError as exc:
                raise AllocationError(f"{ann.POD_NETWORKS}[{selection.nad_key!r}] is malformed: {exc}") from None
            self.network.reserve_addresses(node=node, holder=holder, ips=ips)
            return dict(existing)
        new_ips, mac = self.network.addresses_for(node=node, holder=holder, selection=selection)
        return models.pod_network_entry(self.spec, ips=new_ips, mac=mac, node_subnets=self.network.node_subnet_list(node),
                                        routes=selection.occurrence == 0)

    def add_entries(self, pod: Mapping[str, Any], networks: dict[str, Any] | Any) -> None:
        """Core's ``ovnk_pod_networks``: this network's entries in the pod's first annotation write.

        Attachments that cannot be had yet (the node's rows are not there, no address) are left out:
        the pod's reconcile here adds them, or reports why not.
        """
        selections = self.wanted(pod)
        if not selections:
            return
        node = pod["spec"]["nodeName"]
        if not self.network.ready_for(node):
            return
        for selection in selections:
            if selection.nad_key in networks:
                continue
            try:
                networks[selection.nad_key] = self.entry_for(pod, selection, node, None)
            except AllocationError:
                continue

    def reconcile_pod(self, key: str, deleted: Mapping[str, Any] | None) -> None:
        pod = self.ctx.cache(PODS).get(key)
        if deleted is not None and (pod is None or pod["metadata"].get("uid") != deleted["metadata"].get("uid")):
            self._cleanup(deleted, keep=())
        if pod is None:
            return
        selections = self.wanted(pod)
        self._cleanup(pod, keep={s.nad_key for s in selections})
        if not selections:
            return
        node = pod["spec"]["nodeName"]
        if not self.network.ready_for(node):
            raise TemporaryError(f"network {self.spec.name} has no rows for node {node} yet", delay=0.5)
        node_obj = self.ctx.cache(NODES).get(node)
        chassis = ann.chassis_id(node_obj) if node_obj is not None else None
        if not chassis:
            raise TemporaryError(f"node {node} has no {ann.NODE_CHASSIS_ID} yet", delay=1.0)
        networks = ann.pod_networks_raw(pod)
        if ann.DEFAULT not in networks:
            # Core writes the annotation first, with these entries (ovnk_pod_networks); its event brings us back.
            return
        entries = {}
        for selection in selections:
            existing = networks.get(selection.nad_key)
            try:
                entries[selection.nad_key] = self.entry_for(pod, selection, node, existing)
            except AllocationError as exc:
                message = f"network {self.spec.name} ({selection.nad_key}, interface {selection.ifname}): {exc}"
                self.report(pod, "ErrorAllocatingIP", message)
                raise PermanentError(message) from exc
        missing = {k: v for k, v in entries.items() if networks.get(k) != v}
        if missing:
            networks.update(missing)
            meta = pod["metadata"]
            self.ctx.kube.patch(PODS, meta["name"], {"metadata": {
                "resourceVersion": meta.get("resourceVersion"),
                "annotations": {ann.POD_NETWORKS: json.dumps(networks, sort_keys=True, separators=(",", ":"))},
            }}, namespace=meta["namespace"], subresource="status")
            return  # the annotation's event runs the ports
        self._write_ports(pod, selections, entries, node, chassis)

    def _write_ports(self, pod: Mapping[str, Any], selections: list[Selection], entries: Mapping[str, Any],
                     node: str, chassis: str) -> None:
        meta = pod["metadata"]
        ports = []
        for selection in selections:
            ips, mac = models.entry_addresses(entries[selection.nad_key])
            ports.append(nb.PodPort(
                name=models.port_name(selection.nad_key, meta["namespace"], meta["name"]),
                switch=nb.switch_name(self.spec, node), nad_key=selection.nad_key, namespace=meta["namespace"],
                pod=meta["name"], uid=meta.get("uid", ""), mac=mac, ips=tuple(i.ip for i in ips), chassis=chassis))
        with self.ctx.nb.transaction(reason=f"pod {meta['namespace']}/{meta['name']} on {self.spec.name}",
                                     owner="SecondaryNetworkPod") as txn:
            for port in ports:
                txn.ensure("Logical_Switch_Port", name=port.name, ids=port.ids(self.controller, self.spec.name),
                           columns=port.columns(), external_ids=port.external_ids(self.spec),
                           parent=Parent(Match.of("Logical_Switch", name=port.switch), "ports"))
        self.network.note_attached(models.pod_key(pod), [s.nad_key for s in selections])

    def _cleanup(self, pod: Mapping[str, Any], *, keep: set[str] | tuple[()]) -> None:
        """Remove the pod's ports and addresses of this network except those of ``keep`` (annotation keys)."""
        meta = pod["metadata"]
        key = models.pod_key(pod)
        attached = self.network.attached().get(key, set())
        candidates = attached | {s.nad_key for s in selections_of(pod) if self.network.serves(s.nad_name)}
        stale = sorted(k for k in candidates if k not in keep)
        if not stale:
            return
        with self.ctx.nb.transaction(reason=f"pod {key} off {self.spec.name}", owner="SecondaryNetworkPod") as txn:
            for nad_key in stale:
                txn.remove("Logical_Switch_Port", name=models.port_name(nad_key, meta["namespace"], meta["name"]))
        for nad_key in stale:
            self.network.release_everywhere(models.attachment_holder(pod, nad_key))
        self.network.note_attached(key, set(attached) & set(keep))
        logger.info("pod %s: removed its attachment(s) %s of network %s", key, ", ".join(stale), self.spec.name)
        if not self.network.in_use and not self.network.nads:
            self.on_detached()

    # -- restore and repair -------------------------------------------------------------------

    def restore(self, pods: list[Mapping[str, Any]], nodes: list[Mapping[str, Any]]) -> int:
        """Re-hold node subnets (layer3) and every annotated attachment's addresses; returns attachments."""
        if self.spec.topology == models.LAYER3:
            for node in nodes:
                subnets = node_subnets_of(node, self.spec.name)
                if subnets:
                    try:
                        self.network.reserve_node(node["metadata"]["name"], subnets)
                    except AllocationError as exc:
                        logger.error("network %s: node %s: cannot restore its subnet: %s", self.spec.name,
                                     node["metadata"]["name"], exc)
        restored = 0
        for pod in pods:
            selections = self.wanted(pod)
            if not selections:
                continue
            networks = ann.pod_networks_raw(pod)
            held = []
            for selection in selections:
                entry = networks.get(selection.nad_key)
                if not entry:
                    continue
                try:
                    ips, _mac = models.entry_addresses(entry)
                    self.network.reserve_addresses(node=pod["spec"]["nodeName"],
                                                   holder=models.attachment_holder(pod, selection.nad_key), ips=ips)
                except (AllocationError, ValueError) as exc:
                    logger.warning("pod %s: not restoring %s of network %s: %s", models.pod_key(pod),
                                   selection.nad_key, self.spec.name, exc)
                    continue
                held.append(selection.nad_key)
                restored += 1
            if held:
                self.network.note_attached(models.pod_key(pod), held)
        return restored

    def expected_ports(self, pods: list[Mapping[str, Any]]) -> set[str]:
        """Port names the network's pods should have (repair keeps those)."""
        expected = set()
        for pod in pods:
            meta = pod["metadata"]
            for selection in self.wanted(pod):
                expected.add(models.port_name(selection.nad_key, meta["namespace"], meta["name"]))
        return expected
