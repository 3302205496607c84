"""The node agent's :class:`~ovnk.cni.server.CniHandler`: ADD, DEL, CHECK, STATUS and GC.

ADD (ovn-kubernetes.md §3.2):

1. ``ovnk_cni_network`` resolves the network (first result; core's default
   network answers last).
2. Wait, bounded by ``[cni] annotation-timeout``, for the pod's
   ``k8s.ovn.org/pod-networks[<key>]``, with the pod UID equal to
   ``K8S_POD_UID`` when given. The pods of this node come from an informer
   (``spec.nodeName=<node>``), so the wait ends on the watch event that brings
   the annotation; a pod the informer has not seen yet is read with a GET.
   A pod deleted (or marked for deletion) or re-created meanwhile ends the
   wait at once with error 103 (not a timeout).
3. ``ovnk_cni_interface_driver`` picks the driver (core: veth), which wires.
4. Wait, bounded by ``[cni] ovn-installed-timeout``, for
   ``external_ids:ovn-installed=true`` on the Interface, woken by OVSDB
   updates and pod events; abort when the pod goes or another sandbox takes
   the ``iface-id`` over. The wait is observed in
   ``ovnk_cni_ovn_installed_wait_seconds``.
5. ``ovnk_cni_add`` may amend the result. Any failure after wiring removes
   the wiring again, so a failed ADD leaves nothing behind.

DEL removes what is there and succeeds when nothing is (also for unknown
containers and vanished namespaces), then ``ovnk_cni_del``. CHECK compares the
pod's interface and OVS port with ADD's result (``prevResult``). STATUS is
error 50 until the agent finished its set-up. GC removes the pod ports of this
network whose (container id, ifname) the runtime no longer lists.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any
from typing import TypeVar

from prometheus_client import CollectorRegistry
from prometheus_client import Histogram

from ovnk.cni.types import ERR_INTERNAL
from ovnk.cni.types import ERR_INVALID_ENVIRONMENT
from ovnk.cni.types import ERR_IO_FAILURE
from ovnk.cni.types import ERR_KUBE_API
from ovnk.cni.types import ERR_NOT_AVAILABLE
from ovnk.cni.types import ERR_OVN_INSTALLED_TIMEOUT
from ovnk.cni.types import ERR_POD_ANNOTATION_TIMEOUT
from ovnk.cni.types import ERR_POD_CHANGED
from ovnk.cni.types import ERR_TRY_AGAIN_LATER
from ovnk.cni.types import CniError
from ovnk.cni.types import CniRequest
from ovnk.cni.types import CniResult
from ovnk.core.kube.client import KubeClient
from ovnk.core.kube.errors import KubeError
from ovnk.core.kube.informer import CallbackHandler
from ovnk.core.kube.informer import Informer
from ovnk.core.kube.resources import PODS
from ovnk.core.node.changes import ChangeSignal
from ovnk.core.node.context import NodeContext
from ovnk.core.node.net import NetError
from ovnk.core.node.ovs import InterfaceInfo
from ovnk.core.node.ovs import OvsAborted
from ovnk.core.node.ovs import OvsError
from ovnk.core.node.ovs import OvsTimeout
from ovnk.core.node.wiring import CniNetwork
from ovnk.core.node.wiring import InterfaceDriver
from ovnk.core.node.wiring import host_interface_name
from ovnk.core.topology import annotations as ann
from ovnk.core.topology.annotations import PodNetwork

logger = logging.getLogger(__name__)

T = TypeVar("T")

WAIT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Deleted pod UIDs remembered so that a wait can tell "gone" from "not seen yet".
DELETED_UIDS_KEPT = 4096


class PodGone(Exception):
    """The pod an ADD waits for was deleted or replaced."""


class PodCache:
    """The pods of this node (the agent's shared informer on ``spec.nodeName``), with change notification
    for waiters.

    :param informer: the informer of this node's pods (started by the agent's informer factory).
    :param on_change: also called on every pod event (the agent passes
        ``ovs.wake`` so OVS waits notice pod deletions at once).
    """

    def __init__(self, informer: Informer, *, kube: KubeClient, on_change: Callable[[], None] | None = None) -> None:
        self.kube = kube
        self.informer = informer
        self._on_change = on_change
        self._changes = ChangeSignal()
        self._deleted_lock = threading.Lock()
        self._deleted: OrderedDict[str, None] = OrderedDict()
        self.informer.add_handler(CallbackHandler(on_add=lambda _o: self._bump(),
                                                  on_update=lambda _o, _n: self._bump(),
                                                  on_delete=self._deleted_pod))

    def wait_for_sync(self, timeout: float) -> bool:
        return self.informer.wait_for_sync(timeout)

    def _deleted_pod(self, obj: dict[str, Any]) -> None:
        uid = (obj.get("metadata") or {}).get("uid")
        if uid:
            with self._deleted_lock:
                self._deleted[uid] = None
                while len(self._deleted) > DELETED_UIDS_KEPT:
                    self._deleted.popitem(last=False)
        self._bump()

    def _bump(self) -> None:
        self._changes.bump()
        if self._on_change is not None:
            self._on_change()

    def was_deleted(self, uid: str) -> bool:
        with self._deleted_lock:
            return uid in self._deleted

    def cached(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.informer.store.get(f"{namespace}/{name}")

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        """From the cache, else from the API server (a pod the watch has not delivered yet)."""
        pod = self.cached(namespace, name)
        if pod is not None:
            return pod
        try:
            return self.kube.get(PODS, name, namespace=namespace)
        except KubeError as exc:
            raise CniError(ERR_KUBE_API, f"cannot read pod {namespace}/{name}: {exc}") from None

    def wait_for(self, check: Callable[[], T | None], *, timeout: float) -> T | None:
        """``check()``'s first non-None value, re-checked on every pod event; ``None`` on timeout."""
        return self._changes.wait_for(check, timeout=timeout)


def _uid(pod: dict[str, Any]) -> str:
    return str((pod.get("metadata") or {}).get("uid") or "")


def _deleting(pod: dict[str, Any]) -> bool:
    """The API server accepted the pod's deletion (it lingers until its containers stopped)."""
    return bool((pod.get("metadata") or {}).get("deletionTimestamp"))


class CniHandler:
    """Serves the CNI server's requests for this node (see the module docstring).

    :param ctx: the node context (available once OVS is connected).
    :param pods: the node's pod cache.
    :param setup_pending: ``None`` once the agent finished set-up, else what it is still doing.
    """

    def __init__(self, ctx: NodeContext, pods: PodCache, *, registry: CollectorRegistry,
                 setup_pending: Callable[[], str | None]) -> None:
        self.ctx = ctx
        self.pods = pods
        self.setup_pending = setup_pending
        self.ovn_installed_wait = Histogram(
            "ovnk_cni_ovn_installed_wait_seconds",
            "Time CNI ADD waited for ovn-controller to mark the pod's OVS interface ovn-installed.",
            buckets=WAIT_BUCKETS, registry=registry,
        )

    # -- resolution ----------------------------------------------------------------

    def _network(self, request: CniRequest) -> CniNetwork:
        network = self.ctx.pm.hook.ovnk_cni_network(ctx=self.ctx, request=request)
        if network is None:
            raise CniError(ERR_INTERNAL, f"no plugin resolved network {request.network_name!r} for this request")
        if not isinstance(network, CniNetwork):
            raise CniError(ERR_INTERNAL, f"ovnk_cni_network returned {type(network).__name__}, not CniNetwork")
        return network

    def _driver(self, request: CniRequest, network: CniNetwork) -> InterfaceDriver:
        driver = self.ctx.pm.hook.ovnk_cni_interface_driver(ctx=self.ctx, request=request, network=network)
        if driver is None:
            raise CniError(ERR_INTERNAL, "no plugin chose an interface driver for this request")
        return driver  # type: ignore[no-any-return]

    # -- ADD -------------------------------------------------------------------------

    def add(self, request: CniRequest) -> CniResult:
        pending = self.setup_pending()
        if pending:
            raise CniError(ERR_TRY_AGAIN_LATER, f"the node agent is still setting up ({pending})")
        namespace, name = request.pod_namespace, request.pod_name
        if not namespace or not name:
            raise CniError(ERR_INVALID_ENVIRONMENT,
                           "CNI_ARGS must carry K8S_POD_NAMESPACE and K8S_POD_NAME (the pod to wire)")
        network = self._network(request)
        pod_uid, pod_network = self._wait_for_annotation(request, network, namespace, name)
        network = dataclasses.replace(network, pod_uid=pod_uid)
        driver = self._driver(request, network)
        started = time.monotonic()
        result = driver.add(self.ctx, request, network, pod_network)
        wired = time.monotonic()
        try:
            self._wait_ovn_installed(request, network, namespace, name, pod_uid)
            installed = time.monotonic()
            self.ctx.pm.hook.ovnk_cni_add(ctx=self.ctx, request=request, result=result)
        except BaseException:
            self._undo(driver, request, network)
            raise
        logger.info("ADD %s/%s: wired in %.1f ms (driver %s), ovn-installed after %.1f ms", namespace, name,
                    (wired - started) * 1000, getattr(driver, "name", type(driver).__name__),
                    (installed - wired) * 1000)
        return result

    def _undo(self, driver: InterfaceDriver, request: CniRequest, network: CniNetwork) -> None:
        try:
            driver.delete(self.ctx, request, network)
        except Exception:
            logger.exception("ADD %s failed and its wiring could not be removed", request.pod_key)

    def _wait_for_annotation(self, request: CniRequest, network: CniNetwork, namespace: str,
                             name: str) -> tuple[str, PodNetwork]:
        key = f"{namespace}/{name}"
        wanted_uid = request.pod_uid
        first = self.pods.get(namespace, name)
        if first is None:
            raise CniError(ERR_POD_CHANGED, f"pod {key} does not exist (deleted before its sandbox was wired?)")
        expected_uid = wanted_uid or _uid(first)
        if _uid(first) != expected_uid:
            raise CniError(ERR_POD_CHANGED, f"pod {key} has UID {_uid(first)}, but this sandbox is for UID "
                                            f"{expected_uid} (the pod was re-created)")

        def check() -> PodNetwork | None:
            if self.pods.was_deleted(expected_uid):
                raise PodGone(f"pod {key} (UID {expected_uid}) was deleted while ADD waited for its annotation")
            # The GET's copy stands in until the watch delivers the pod.
            pod = self.pods.cached(namespace, name) or first
            if _deleting(pod):
                raise PodGone(f"pod {key} is being deleted (deletionTimestamp is set)")
            if _uid(pod) != expected_uid:
                raise PodGone(f"pod {key} was re-created (UID {_uid(pod)}, this sandbox is for {expected_uid})")
            try:
                return ann.pod_network(pod, network.annotation_key)
            except ann.AnnotationError as exc:
                raise CniError(ERR_INTERNAL, f"pod {key}: {exc}") from None

        try:
            pod_network = self.pods.wait_for(check, timeout=self.ctx.config.cni.annotation_timeout)
        except PodGone as exc:
            raise CniError(ERR_POD_CHANGED, str(exc)) from None
        if pod_network is None:
            raise CniError(ERR_POD_ANNOTATION_TIMEOUT,
                           f"pod {key} got no {ann.POD_NETWORKS}[{network.annotation_key!r}] within "
                           f"{self.ctx.config.cni.annotation_timeout:g}s; is the ovnk controller running and does "
                           f"node {self.ctx.node_name} have a subnet?")
        if not pod_network.ip_addresses and network.ipam:
            raise CniError(ERR_INTERNAL, f"pod {key}: {ann.POD_NETWORKS}[{network.annotation_key!r}] has no IP")
        return expected_uid, pod_network

    def _wait_ovn_installed(self, request: CniRequest, network: CniNetwork, namespace: str, name: str,
                            pod_uid: str) -> InterfaceInfo:
        key = f"{namespace}/{name}"
        ovs = self.ctx.ovs
        taken_over: list[str] = []

        def mine() -> InterfaceInfo | None:
            for iface in ovs.interfaces_with_iface_id(network.iface_id):
                if iface.external_ids.get("sandbox") == request.container_id:
                    return iface
            return None

        def check() -> InterfaceInfo | None:
            iface = mine()
            if iface is None:
                taken_over.append("gone")
                return None
            return iface if iface.ovn_installed else None

        def abort() -> str | None:
            if self.pods.was_deleted(pod_uid):
                return f"pod {key} was deleted"
            cached = self.pods.cached(namespace, name)
            if cached is not None and _uid(cached) != pod_uid:
                return f"pod {key} was re-created (UID {_uid(cached)})"
            if cached is not None and _deleting(cached):
                return f"pod {key} is being deleted"
            if taken_over:
                return f"iface-id {network.iface_id} was taken over by another sandbox"
            return None

        started = time.monotonic()
        timeout = self.ctx.config.cni.ovn_installed_timeout
        try:
            return ovs.wait_for(f"ovn-installed on the OVS interface of {key}", check, timeout=timeout, abort=abort)
        except OvsAborted as exc:
            raise CniError(ERR_POD_CHANGED, str(exc)) from None
        except OvsTimeout:
            raise CniError(ERR_OVN_INSTALLED_TIMEOUT,
                           f"ovn-controller did not mark the OVS interface of pod {key} (iface-id "
                           f"{network.iface_id}) ovn-installed within {timeout:g}s; check ovn-controller and "
                           f"the logical port's requested-chassis") from None
        finally:
            self.ovn_installed_wait.observe(time.monotonic() - started)

    # -- DEL, CHECK ------------------------------------------------------------------

    def delete(self, request: CniRequest) -> None:
        network = self._network(request)
        driver = self._driver(request, network)
        driver.delete(self.ctx, request, network)
        self.ctx.pm.hook.ovnk_cni_del(ctx=self.ctx, request=request)

    def check(self, request: CniRequest) -> None:
        if request.prev_result is None:
            raise CniError(ERR_INVALID_ENVIRONMENT, "CHECK needs the ADD result as prevResult in the network config")
        expected = CniResult.from_dict(request.prev_result)
        network = self._network(request)
        self._driver(request, network).check(self.ctx, request, network, expected)

    # -- STATUS, GC ------------------------------------------------------------------

    def status(self, request: CniRequest) -> None:
        pending = self.setup_pending()
        if pending:
            raise CniError(ERR_NOT_AVAILABLE, f"the node agent is still setting up: {pending}")
        if not self.ctx.ovs.client.connected:
            raise CniError(ERR_NOT_AVAILABLE, "the node agent lost its connection to the local OVS database")

    def gc(self, request: CniRequest) -> None:
        valid = {(a.container_id, a.ifname) for a in request.valid_attachments or ()}

        def stale(iface: InterfaceInfo) -> bool:
            ids = iface.external_ids
            sandbox = ids.get("sandbox")
            if not sandbox or not ids.get("iface-id") or iface.bridge is None:
                return False
            if ids.get("k8s.ovn.org/network", "default") != "default":
                return False  # another network's attachment: its own GC decides
            return (sandbox, ids.get("pod-if-name", "eth0")) not in valid

        ports = [i for i in self.ctx.ovs.interfaces(stale) if i.port]
        if not ports:
            return
        try:
            self.ctx.ovs.delete_ports([i.port for i in ports if i.port])
            for iface in ports:
                # Only the veth driver's host ends: another driver's port (a VF representor) is a
                # device of the node, not something this pod created.
                if iface.name != host_interface_name(iface.external_ids.get("sandbox", "")):
                    continue
                link = self.ctx.net.link(iface.name)
                if link is not None and link.kind == "veth":
                    self.ctx.net.delete_link(iface.name)
        except (OvsError, NetError) as exc:
            raise CniError(ERR_IO_FAILURE, f"GC could not remove stale attachments: {exc}") from None
        logger.info("GC removed %d stale pod ports: %s", len(ports), ", ".join(i.name for i in ports))

