"""Core plugin: pod logical switch ports and namespace address sets.

For each scheduled, non-host-network, not completed pod: IPs from its node's
subnet (MAC ``0a:58:``+IP), the ``k8s.ovn.org/pod-networks`` annotation written
*before* the port exists, then one transaction with the LSP ``<ns>_<pod>``
(addresses, port_security, ``iface-id-ver``, ``requested-chassis``), its
namespace address set and cluster port group memberships, and whatever plugins
add (``ovnk_pod_txn``). Deletion or completion removes the port and
memberships, then releases the IPs and the MAC (only those this pod instance
holds). A pod is re-run when its node's facts change (the nodes controller
queues it), so its port never keeps an old ``requested-chassis``.

Restore trusts what ovnk committed: the IPs and MAC of each pod's logical
port in NB first, the pod annotations only for what no port holds; an
annotation that claims another pod's address is refused at reconcile, never
restored over its rightful holder.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import time
from collections.abc import Mapping
from typing import Any

from ovnk.core import metrics
from ovnk.core.builtin import common
from ovnk.core.claims import Claims
from ovnk.core.context import ControllerContext
from ovnk.core.errors import PermanentError
from ovnk.core.errors import TemporaryError
from ovnk.core.hookspecs import hookimpl
from ovnk.core.kube.resources import NAMESPACES
from ovnk.core.kube.resources import NODES
from ovnk.core.kube.resources import PODS
from ovnk.core.ovn.commands import Match
from ovnk.core.ovn.commands import Parent
from ovnk.core.ovn.commands import Ref
from ovnk.core.ovn.ids import OwnerType
from ovnk.core.ovn.ids import hashed_name
from ovnk.core.ovn.sync import RepairPlan
from ovnk.core.plugins import OvnkPluginManager
from ovnk.core.reconcile.spec import ControllerSpec
from ovnk.core.reconcile.spec import ReconcileRequest
from ovnk.core.reconcile.spec import Watch
from ovnk.core.topology import annotations as ann
from ovnk.core.topology import builder
from ovnk.core.topology import naming as n
from ovnk.core.topology.annotations import PodNetwork
from ovnk.core.topology.annotations import PodRoute
from ovnk.core.topology.intents import PodPort
from ovnk.core.topology.ipam import AllocationError
from ovnk.core.topology.naming import IPAddress

logger = logging.getLogger(__name__)

POD_PORT = OwnerType(name="Pod", table="Logical_Switch_Port", keys=("name",))
#: The pod controller's name: ``ctx.enqueue(PODS_CONTROLLER, "<ns>/<pod>")`` re-runs a pod.
PODS_CONTROLLER = "pods"
# How many IPs a new pod may skip because a hand-written annotation took their derived MAC.
MAC_CONFLICT_RETRIES = 8
NAMESPACE_ADDRESS_SET = OwnerType(name="Namespace", table="Address_Set", keys=("name", "ip-family"))
#: Port groups of every pod of a namespace, kept only while a plugin needs them (ovnk_namespace_port_groups).
NAMESPACE_PORT_GROUP = OwnerType(name="Namespace", table="Port_Group", keys=("name",))


@hookimpl
def ovnk_claims(claims: Claims) -> None:
    claims.owner_type(POD_PORT)
    claims.owner_type(NAMESPACE_ADDRESS_SET)
    claims.owner_type(NAMESPACE_PORT_GROUP)
    claims.annotation(ann.POD_NETWORKS)


@functools.lru_cache(maxsize=4096)
def namespace_address_set(controller: str, namespace: str, family: int) -> tuple[str, Any]:
    """(name, ids) of a namespace's address set for one IP family (cached: every pod event asks; both are immutable)."""
    oids = NAMESPACE_ADDRESS_SET.ids(controller, name=namespace, ip_family=f"v{family}")
    return hashed_name(oids.primary_id), oids


def namespace_port_group(controller: str, namespace: str) -> tuple[str, Any]:
    """(name, ids) of a namespace's port group (all its pods' ports)."""
    oids = NAMESPACE_PORT_GROUP.ids(controller, name=namespace)
    return hashed_name(oids.primary_id), oids


def pod_needs_update(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    return common.changed(old, new, ("metadata.annotations", "metadata.labels", "metadata.uid", "spec.nodeName",
                                     "spec.hostNetwork", "status.phase"))


class PodController:
    def __init__(self, ctx: ControllerContext, *, namespace_port_groups: bool = False) -> None:
        self.ctx = ctx
        self.namespace_port_groups = namespace_port_groups
        self.cfg = ctx.config
        self.state = ctx.topology
        self.controller = ctx.config.controller.name
        self.families = sorted({s.network.version for s in ctx.config.default.cluster_subnets})

    # -- reconcile -------------------------------------------------------------

    def reconcile(self, req: ReconcileRequest) -> None:
        pod = self.ctx.cache(PODS).get(req.key)
        old = req.deleted
        if old is not None and (pod is None or pod["metadata"].get("uid") != old["metadata"].get("uid")):
            # The instance we last saw is gone (maybe replaced by a new pod of the same name).
            self._cleanup(old, remove_port=pod is None or not common.pod_wants_network(pod))
        if pod is None:
            return
        if common.pod_completed(pod):
            self._cleanup(pod, remove_port=True)
            return
        if not common.pod_wants_network(pod):
            return
        self._ensure(pod)

    def _ensure(self, pod: Mapping[str, Any]) -> None:
        meta = pod["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        node_name = pod["spec"]["nodeName"]
        facts = self.state.node(node_name)
        if facts is None:
            if self.ctx.cache(NODES).get(node_name) is None:
                # The nodes controller queues the node's pods once it has built the node.
                logger.debug("node %s does not exist (yet); waiting for it", node_name)
                return
            # The node is known but not built by this process yet (a new leader's first pass
            # over every node): build it next, so the pod waits for one node, not for all.
            try:
                self.ctx.enqueue("nodes", node_name)
            except KeyError:
                pass  # no nodes controller runs (tests)
            raise TemporaryError(f"node {node_name} switch is not ready yet", delay=0.2)
        if not facts.subnets:
            return  # the node has no host subnet (e.g. hybrid overlay); nothing to do here
        if not facts.chassis_id:
            raise TemporaryError(f"node {node_name} has no k8s.ovn.org/node-chassis-id yet", delay=0.5)
        network = self._addresses(pod, facts.subnets, node_name)
        lsp = self._port(pod, network, node_name, facts.chassis_id)
        self.ctx.pm.hook.ovnk_pod_lsp(ctx=self.ctx, pod=pod, lsp=lsp)
        with self.ctx.nb.transaction(reason=f"pod {namespace}/{name}", owner="Pod") as txn:
            port = txn.ensure("Logical_Switch_Port", name=lsp.name, ids=POD_PORT.ids(self.controller, name=f"{namespace}/{name}"),
                       columns={"addresses": lsp.addresses, "port_security": lsp.port_security,
                                "options": lsp.options},
                       external_ids=lsp.external_ids,
                       parent=Parent(Match.of("Logical_Switch", name=lsp.switch), "ports"))
            for family in self.families:
                as_name, as_ids = namespace_address_set(self.controller, namespace, family)
                txn.ensure("Address_Set", name=as_name, ids=as_ids)
                ips = [str(ip) for ip in lsp.ips if ip.version == family]
                if ips:
                    txn.add_to(Match.of("Address_Set", name=as_name), "addresses", ips)
            port_ref = Ref(Match.of("Logical_Switch_Port", name=lsp.name))
            for group in lsp.port_groups:
                txn.add_to(Match.of("Port_Group", name=group), "ports", [port_ref])
            for address_set in lsp.address_sets:
                txn.add_to(Match.of("Address_Set", name=address_set), "addresses", [str(ip) for ip in lsp.ips])
            self.ctx.pm.hook.ovnk_pod_txn(ctx=self.ctx, txn=txn, pod=pod, lsp=lsp, deleted=False)
        logger.debug("pod %s/%s: %s", namespace, name, txn.outcome)
        # Told by the commit itself (no separate NB read under the lock before it).
        if port.inserted:
            scheduled = metrics.pod_scheduled_at(pod)
            if scheduled is not None:
                metrics.controller_metrics(self.ctx.registry).pod_creation_latency.observe(
                    max(0.0, time.time() - scheduled))

    def _addresses(self, pod: Mapping[str, Any], subnets: tuple[Any, ...], node_name: str) -> PodNetwork:
        """The pod's default network: reuse its annotation, else allocate and annotate."""
        holder = common.ip_holder(pod)
        try:
            existing = ann.pod_network(pod)
        except ann.AnnotationError as exc:
            self._event(pod, "InvalidAnnotation", str(exc))
            raise PermanentError(str(exc)) from exc
        if existing is not None:
            pools = []
            for iface in existing.ip_addresses:
                pool = self.state.pool_for_ip(node_name, iface.ip)
                if pool is None:
                    message = (f"annotated IP {iface.ip} is not in node {node_name}'s subnets "
                               f"({', '.join(map(str, subnets))}); refusing to change a pod's IPs")
                    self._event(pod, "ErrorAllocatingIP", message)
                    raise PermanentError(message)
                pools.append((pool, iface.ip))
            mac_was_ours = self.state.macs.holder(existing.mac_address) == holder
            try:
                self.state.macs.reserve(existing.mac_address, holder)
            except AllocationError as exc:
                self._event(pod, "ErrorAllocatingIP", str(exc))
                raise PermanentError(f"annotated MAC conflicts: {exc}") from exc
            try:
                for pool, ip in pools:
                    pool.reserve(ip, holder)
            except AllocationError as exc:
                if not mac_was_ours:
                    self.state.macs.release(existing.mac_address, holder)
                self._event(pod, "ErrorAllocatingIP", str(exc))
                raise PermanentError(f"annotated IP conflicts: {exc}") from exc
            return existing
        try:
            request = ann.default_network_request(pod)
        except ann.AnnotationError:
            request = None
        for _attempt in range(MAC_CONFLICT_RETRIES):
            ips = self._allocate(pod, node_name, holder)
            mac = request.mac if request is not None and request.mac else n.mac_from_ip(ips[0].ip)
            try:
                self.state.macs.reserve(mac, holder)
                break
            except AllocationError as exc:
                self._release(node_name, [i.ip for i in ips], holder)
                if request is not None and request.mac:
                    self._event(pod, "ErrorAllocatingIP", str(exc))
                    raise PermanentError(f"bad static MAC request: {exc}") from exc
                # Another pod claims this IP's MAC (a hand-written annotation): that IP is unusable
                # while it lives, so it is held in that pod's name and released with it.
                other = self.state.macs.holder(mac)
                pool = self.state.pool_for_ip(node_name, ips[0].ip)
                if other is not None and pool is not None:
                    pool.reserve(ips[0].ip, other)
                logger.warning("pod %s: skipping IP %s, whose MAC %s is in use by %s", common.pod_key(pod),
                               ips[0].ip, mac, other)
        else:
            message = f"no IP whose MAC is free after {MAC_CONFLICT_RETRIES} tries"
            self._event(pod, "ErrorAllocatingIP", message)
            raise TemporaryError(message, delay=5)
        network = self._network(ips, mac)
        networks: dict[str, Any] = ann.pod_networks_raw(pod)
        networks[ann.DEFAULT] = network.to_json()
        self.ctx.pm.hook.ovnk_pod_networks(ctx=self.ctx, pod=pod, networks=networks)
        meta = pod["metadata"]
        try:
            self.ctx.kube.patch(PODS, meta["name"], {"metadata": {
                "annotations": {ann.POD_NETWORKS: ann.format_pod_networks(networks)},
            }}, namespace=meta["namespace"], subresource="status")
        except Exception:
            self._release(node_name, [i.ip for i in ips], holder)
            self.state.macs.release(mac, holder)
            raise
        return network

    def _allocate(self, pod: Mapping[str, Any], node_name: str, holder: str) -> list[Any]:
        pools = self.state.pools(node_name)
        try:
            request = ann.default_network_request(pod)
        except ann.AnnotationError as exc:
            self._event(pod, "ErrorAllocatingIP", str(exc))
            raise PermanentError(str(exc)) from exc
        result: list[Any] = []
        try:
            if request is not None and request.ips:
                for iface in request.ips:
                    pool = next((p for p in pools if iface.ip in p.subnet), None)
                    if pool is None:
                        raise AllocationError(f"requested IP {iface.ip} is not in node {node_name}'s subnets")
                    pool.reserve(iface.ip, holder)
                    result.append(ipaddress.ip_interface(f"{iface.ip}/{pool.subnet.prefixlen}"))
            else:
                for pool in pools:
                    ip = pool.allocate(holder)
                    result.append(ipaddress.ip_interface(f"{ip}/{pool.subnet.prefixlen}"))
        except AllocationError as exc:
            self._release(node_name, [i.ip for i in result], holder)
            self._event(pod, "ErrorAllocatingIP", str(exc))
            if request is not None and request.ips:
                raise PermanentError(f"bad static IP request: {exc}") from exc
            raise TemporaryError(f"cannot allocate an IP: {exc}", delay=5) from exc
        return result

    def _network(self, ips: list[Any], mac: str) -> PodNetwork:
        gateways = tuple(n.gateway_ip(i.network) for i in ips)
        gw4 = next((g for g in gateways if g.version == 4), None)
        routes: list[PodRoute] = []
        if gw4 is not None:
            for cluster in self.cfg.default.cluster_subnets:
                if cluster.network.version == 4:
                    routes.append(PodRoute(cluster.network, gw4))
            for cidr in self.cfg.kubernetes.service_cidrs:
                if cidr.version == 4:
                    routes.append(PodRoute(cidr, gw4))
            routes.append(PodRoute(ipaddress.ip_network(f"{n.hairpin_ip(self.cfg.gateway.v4_masquerade_subnet)}/32"), gw4))
            routes.append(PodRoute(self.cfg.gateway.v4_join_subnet, gw4))
        return PodNetwork(ip_addresses=tuple(ips), mac_address=mac, gateway_ips=gateways, routes=tuple(routes))

    def _port(self, pod: Mapping[str, Any], network: PodNetwork, node_name: str, chassis: str) -> PodPort:
        meta = pod["metadata"]
        ips = tuple(i.ip for i in network.ip_addresses)
        address = " ".join([network.mac_address, *(str(ip) for ip in ips)])
        return PodPort(
            name=n.pod_port(meta["namespace"], meta["name"]), switch=n.node_switch(node_name),
            namespace=meta["namespace"], pod=meta["name"], uid=meta.get("uid", ""), mac=network.mac_address, ips=ips,
            addresses=[address], port_security=[address],
            options={"iface-id-ver": meta.get("uid", ""), "requested-chassis": chassis},
            external_ids={"namespace": meta["namespace"], "pod": "true"},
            port_groups=[builder.port_group_name(self.controller, n.CLUSTER_PORT_GROUP),
                         *([namespace_port_group(self.controller, meta["namespace"])[0]]
                           if self.namespace_port_groups else [])],
        )

    # -- cleanup ---------------------------------------------------------------

    def _cleanup(self, pod: Mapping[str, Any], *, remove_port: bool) -> None:
        meta = pod["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        try:
            network = ann.pod_network(pod)
        except ann.AnnotationError:
            network = None
        ips: list[IPAddress] = [i.ip for i in network.ip_addresses] if network else []
        node_name = pod.get("spec", {}).get("nodeName")
        holder = common.ip_holder(pod)
        # The last state we saw may predate our annotation (the pod can be deleted while we
        # annotate it): what the IPAM says this pod instance holds counts too.
        if node_name:
            for pool in self.state.pools(node_name):
                ips.extend(ip for ip in pool.held_by(holder) if ip not in ips)
        in_use = self._ips_used_by_others(pod, ips)
        with self.ctx.nb.transaction(reason=f"pod {namespace}/{name} gone", owner="Pod") as txn:
            if remove_port:
                txn.remove("Logical_Switch_Port", name=n.pod_port(namespace, name))
            stale = [str(ip) for ip in ips if ip not in in_use]
            for family in self.families:
                as_name, _ = namespace_address_set(self.controller, namespace, family)
                family_ips = [ip for ip in stale if ipaddress.ip_address(ip).version == family]
                if family_ips:
                    txn.remove_from(Match.of("Address_Set", name=as_name), "addresses", family_ips)
            self.ctx.pm.hook.ovnk_pod_txn(ctx=self.ctx, txn=txn, pod=pod, lsp=None, deleted=True)
        if node_name:
            self._release(node_name, [ip for ip in ips if ip not in in_use], holder)
        # By holder, not by the annotation: the last state we saw may predate it (see above).
        self.state.macs.release_holder(holder)

    def _ips_used_by_others(self, pod: Mapping[str, Any], ips: list[IPAddress]) -> set[IPAddress]:
        """IPs of ``pod`` that another live pod also has in its annotation (never release those)."""
        if not ips:
            return set()
        uid = pod["metadata"].get("uid")
        wanted = set(ips)
        used: set[IPAddress] = set()
        node_name = pod.get("spec", {}).get("nodeName")
        store = self.ctx.cache(PODS)
        candidates = store.by_index("node", node_name) if node_name else store.list()
        for other in candidates:
            if other["metadata"].get("uid") == uid or not common.pod_wants_network(other):
                continue
            try:
                network = ann.pod_network(other)
            except ann.AnnotationError:
                continue
            if network is not None:
                used |= wanted & {i.ip for i in network.ip_addresses}
        return used

    def _release(self, node_name: str, ips: list[IPAddress], holder: str) -> None:
        for ip in ips:
            pool = self.state.pool_for_ip(node_name, ip)
            if pool is not None:
                pool.release(ip, holder)

    def _event(self, pod: Mapping[str, Any], reason: str, message: str) -> None:
        logger.warning("pod %s: %s", common.pod_key(pod), message)
        self.ctx.events.event(pod, type="Warning", reason=reason, message=message)

    # -- restore and repair ------------------------------------------------------

    def restore_allocations(self) -> None:
        """Re-reserve every live pod's IPs and MAC, trusting what ovnk committed over annotations.

        First the logical ports ovnk wrote (their ``addresses``, for the pod
        instance named by ``iface-id-ver``): ovnk only writes a port after it
        allocated or accepted its addresses, so a port is proof. Then the
        annotations of pods without such a port (annotated, port not committed
        yet when the last controller stopped). An annotation that conflicts with
        an address restored in the first pass is not restored: the pod's
        reconcile refuses it with an ``ErrorAllocatingIP`` event.
        """
        committed: dict[str, tuple[str, str, list[IPAddress]]] = {}
        # Read from the datums (no row snapshot): at 10,000 pods copying each port cost seconds.
        for key, values in self.ctx.nb.reader.owned_values(POD_PORT, ("addresses", "options")):
            for address in values["addresses"]:
                mac, *ips = address.split()
                committed[key] = (values["options"].get("iface-id-ver", ""), mac,
                                  [ipaddress.ip_address(ip) for ip in ips])
                break
        pending = []
        restored = 0
        for pod in self.ctx.cache(PODS).list():
            if not common.pod_wants_network(pod):
                continue
            key = common.pod_key(pod)
            entry = committed.get(key)
            if entry is not None and entry[0] == pod["metadata"].get("uid"):
                restored += self._restore_pod(pod, entry[1], entry[2], source="its logical port")
            else:
                pending.append(pod)
        for pod in pending:
            try:
                network = ann.pod_network(pod)
            except ann.AnnotationError:
                continue
            if network is not None:
                restored += self._restore_pod(pod, network.mac_address, [i.ip for i in network.ip_addresses],
                                              source="its annotation")
        logger.info("restored %d pod IPs (%d pods from their logical ports)", restored, len(committed))

    def _restore_pod(self, pod: Mapping[str, Any], mac: str, ips: list[IPAddress], *, source: str) -> int:
        node_name = pod["spec"]["nodeName"]
        subnets = self.state.subnets.subnets_of(node_name)
        if not subnets:
            return 0
        holder = common.ip_holder(pod)
        pools = self.state.pools_for(node_name, subnets)
        try:
            self.state.macs.reserve(mac, holder)
        except AllocationError as exc:
            logger.warning("pod %s: not restoring MAC %s from %s: %s", common.pod_key(pod), mac, source, exc)
            return 0
        restored = 0
        for ip in ips:
            pool = next((p for p in pools if ip in p.subnet), None)
            if pool is None:
                continue
            try:
                pool.reserve(ip, holder)
                restored += 1
            except AllocationError as exc:
                logger.warning("pod %s: not restoring IP %s from %s: %s", common.pod_key(pod), ip, source, exc)
        return restored

    def plan_stale(self, plan: RepairPlan) -> None:
        pods = self.ctx.cache(PODS)
        reader = self.ctx.nb.reader
        # Names from the ownership index; only the stale rows are copied.
        for key, uuid in reader.owned_names(POD_PORT):
            pod = pods.get(key)
            if pod is None or not common.pod_wants_network(pod):
                row = reader.get(POD_PORT.table, uuid=uuid)
                if row is not None:
                    plan.stale(row, reason=f"pod {key} no longer exists or has no network")


class NamespaceAddressSetController:
    """Namespace address sets (and port groups, when a plugin needs them): created with the namespace,
    deleted with it, content fixed by repair."""

    def __init__(self, ctx: ControllerContext, *, namespace_port_groups: bool = False) -> None:
        self.ctx = ctx
        self.namespace_port_groups = namespace_port_groups
        self.controller = ctx.config.controller.name
        self.families = sorted({s.network.version for s in ctx.config.default.cluster_subnets})

    def reconcile(self, req: ReconcileRequest) -> None:
        namespace = self.ctx.cache(NAMESPACES).get(req.key)
        deleted = namespace is None
        obj = namespace if namespace is not None else (req.deleted or {"metadata": {"name": req.key}})
        with self.ctx.nb.transaction(reason=f"namespace {req.key}", owner="Namespace") as txn:
            for family in self.families:
                as_name, as_ids = namespace_address_set(self.controller, req.key, family)
                if deleted:
                    txn.remove("Address_Set", name=as_name)
                else:
                    txn.ensure("Address_Set", name=as_name, ids=as_ids)
            if self.namespace_port_groups:
                pg_name, pg_ids = namespace_port_group(self.controller, req.key)
                if deleted:
                    txn.remove("Port_Group", name=pg_name)
                else:
                    txn.ensure("Port_Group", name=pg_name, ids=pg_ids)
            self.ctx.pm.hook.ovnk_namespace_txn(ctx=self.ctx, txn=txn, namespace=obj, deleted=deleted)

    def repair(self, plan: RepairPlan) -> None:
        """Plan the deletion of sets of gone namespaces and the content of the others.

        Pods add and remove their own IPs; only here is a set's whole content
        compared with the pod cache (IPs of pods deleted while no controller ran).
        """
        live = set(self.ctx.cache(NAMESPACES).keys())
        nodes = self.ctx.cache(NODES)
        wanted: dict[str, set[str]] = {}
        for pod in self.ctx.cache(PODS).list():
            # A pod of a node that does not exist gets no port, so its IPs join no set either.
            if not common.pod_wants_network(pod) or pod["spec"]["nodeName"] not in nodes:
                continue
            # pod_ips is cached by annotation text (netpol's selection reads the same): the annotation
            # of every pod is not parsed again here (no IPs when it is missing or malformed).
            for ip in ann.pod_ips(pod):
                wanted.setdefault(f"{pod['metadata']['namespace']}/v{ip.version}", set()).add(str(ip))
        for row in self.ctx.nb.owned(NAMESPACE_PORT_GROUP):
            ns = row.external_ids.get("k8s.ovn.org/name", "")
            if not self.namespace_port_groups:
                plan.stale(row, reason="no enabled plugin needs namespace port groups")
            elif ns not in live:
                plan.stale(row, reason=f"namespace {ns} no longer exists")
        for row in self.ctx.nb.owned(NAMESPACE_ADDRESS_SET, columns=("addresses",)):
            ns = row.external_ids.get("k8s.ovn.org/name", "")
            if ns not in live:
                plan.stale(row, reason=f"namespace {ns} no longer exists")
                continue
            family = row.external_ids.get("ip-family", "")
            desired = sorted(wanted.get(f"{ns}/{family}", set()))
            if sorted(row["addresses"] or ()) != desired:
                plan.converge(row, columns={"addresses": desired}, reason=f"pods of namespace {ns} changed")


class PodsPlugin:
    """The runtime half of this plugin (registered by ``ovnk_configure``): controllers and their state."""

    def __init__(self) -> None:
        self.pods: PodController | None = None
        self.namespaces: NamespaceAddressSetController | None = None

    @hookimpl
    def ovnk_controllers(self, ctx: ControllerContext) -> list[ControllerSpec]:
        wanted = any(ctx.pm.hook.ovnk_namespace_port_groups(ctx=ctx))
        self.pods = PodController(ctx, namespace_port_groups=wanted)
        self.namespaces = NamespaceAddressSetController(ctx, namespace_port_groups=wanted)
        return [
            ControllerSpec(name="namespaces", watches=(Watch(NAMESPACES),), reconcile=self.namespaces.reconcile),
            # Pods also come back when their node's facts change: the nodes controller queues them.
            ControllerSpec(name=PODS_CONTROLLER, watches=(Watch(PODS, needs_update=pod_needs_update),),
                           reconcile=self.pods.reconcile, extra={"programming_kind": "pod"}),
        ]

    @hookimpl
    def ovnk_restore(self, ctx: ControllerContext) -> None:
        assert self.pods is not None
        self.pods.restore_allocations()

    @hookimpl
    def ovnk_repair(self, ctx: ControllerContext, plan: RepairPlan) -> None:
        assert self.pods is not None and self.namespaces is not None
        self.pods.plan_stale(plan)
        self.namespaces.repair(plan)


@hookimpl
def ovnk_configure(pluginmanager: OvnkPluginManager) -> None:
    pluginmanager.register_runtime("core.pods", PodsPlugin())
