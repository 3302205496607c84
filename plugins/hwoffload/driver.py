"""The VF interface driver: an SR-IOV VF moved into the pod, its representor plugged into br-int.

ADD (ovn-kubernetes.md §6.6, ``setupSriovInterface``), under a lock per VF:

1. resolve the ``deviceID`` (a VF's PCI address) from sysfs: the VF, its PF, its index
   and its representor; a device that is not there, not a VF, without representor or
   already wired into another sandbox is a CNI error before anything moves;
2. move the VF netdev into the pod's namespace renamed to ``CNI_IFNAME`` (one netlink
   request), then set the annotation's MAC, the network's MTU, the addresses and the
   routes (default via the gateway, plus the annotation's routes) and bring it up;
3. add the representor to ``br-int`` with the veth driver's Interface ``external_ids``
   (``iface-id``, ``sandbox``, ``attached_mac``...) plus upstream's ``vf-netdev-name``
   (the VF's name on the host, to return it under) and ``k8s.ovn.org/vf-pci-address``,
   then set its MTU and bring it up (upstream's order: the port first).

Any failure puts the VF back on the host under its name and removes the port, so a failed
ADD leaves nothing behind. ADD again for the same container finds the VF wired and only
re-asserts its configuration.

DEL removes the port, moves the VF back to the host namespace under ``vf-netdev-name``
(the kernel drops its addresses and routes on the way) and leaves it and its representor
down; it succeeds when nothing is left (unknown container, namespace gone). CHECK compares
the pod interface and the port with ADD's result.
"""

from __future__ import annotations

import errno
import logging
import threading
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from ovnk import CniError
from ovnk import CniNetwork
from ovnk import CniRequest
from ovnk import CniResult
from ovnk import NetFacade
from ovnk import NodeContext
from ovnk import OvnkError
from ovnk import PodNetwork
from ovnk.plugins.hwoffload.selection import VF_PCI
from ovnk.plugins.hwoffload.sysfs import DeviceError
from ovnk.plugins.hwoffload.sysfs import Sysfs
from ovnk.plugins.hwoffload.sysfs import VirtualFunction
from ovnk.wiring import ERR_INVALID_NETWORK_CONFIG
from ovnk.wiring import ERR_IO_FAILURE
from ovnk.wiring import ERR_UNKNOWN_CONTAINER
from ovnk.wiring import ERR_WIRING_MISMATCH
from ovnk.wiring import build_result
from ovnk.wiring import interface_external_ids
from ovnk.wiring import pod_routes

if TYPE_CHECKING:
    from ovnk.plugins.hwoffload.metrics import HwOffloadMetrics

logger = logging.getLogger(__name__)

#: Interface external_ids: the VF's netdev name on the host (upstream's key); the PCI address is
#: :data:`~ovnk.plugins.hwoffload.selection.VF_PCI`.
VF_NETDEV = "vf-netdev-name"


class VfLocks:
    """One lock per VF PCI address: concurrent requests for different VFs run in parallel."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)

    @contextmanager
    def held(self, pci: str) -> Iterator[None]:
        with self._guard:
            lock = self._locks[pci]
        with lock:
            yield


def _net_error_code(exc: OvnkError) -> int:
    return int(getattr(exc, "code", 0) or 0)


class VfDriver:
    """The ``InterfaceDriver`` for one request naming ``device_id`` (see the module docstring)."""

    name = "sriov-vf"

    def __init__(self, sysfs: Sysfs, device_id: str, *, locks: VfLocks,
                 metrics: HwOffloadMetrics | None = None) -> None:
        self.sysfs = sysfs
        self.device_id = device_id
        self.locks = locks
        self.metrics = metrics

    # -- helpers -----------------------------------------------------------------------

    def _fail(self, reason: str, code: int, message: str) -> CniError:
        if self.metrics is not None:
            self.metrics.errors.labels(reason=reason).inc()
        logger.warning("deviceID %s: %s", self.device_id, message)
        return CniError(code, message)

    def _resolve(self) -> tuple[VirtualFunction, str]:
        try:
            vf = self.sysfs.virtual_function(self.device_id)
            return vf, self.sysfs.representor(vf)
        except DeviceError as exc:
            raise self._fail("bad_device", ERR_INVALID_NETWORK_CONFIG, str(exc)) from None

    @staticmethod
    def _host_name(vf: VirtualFunction, recorded: str | None) -> str:
        """The name the VF has (or gets back) on the host: what ADD recorded, else sysfs's,
        else the mlx5-style ``<pf>v<index>``."""
        return recorded or vf.netdev or f"{vf.pf.name}v{vf.index}"

    # -- ADD -------------------------------------------------------------------------------

    def add(self, ctx: NodeContext, request: CniRequest, network: CniNetwork, pod_network: PodNetwork) -> CniResult:
        vf, representor = self._resolve()
        with self.locks.held(vf.pci):
            port = ctx.ovs.interface(representor)
            sandbox = port.external_ids.get("sandbox") if port is not None and port.bridge else None
            if sandbox and sandbox != request.container_id:
                raise self._fail("in_use", ERR_INVALID_NETWORK_CONFIG,
                                 f"deviceID {vf.pci}: the VF is already in use (its representor {representor} "
                                 f"is wired for container {sandbox[:12]}, iface-id {port.iface_id if port else ''})")
            host_name = self._host_name(vf, port.external_ids.get(VF_NETDEV) if port is not None else None)
            if ctx.net.link(representor) is None:
                raise self._fail("no_representor", ERR_INVALID_NETWORK_CONFIG,
                                 f"deviceID {vf.pci}: its representor {representor} is not in the node's network "
                                 f"namespace")
            if sandbox == request.container_id and self._wired(request, pod_network):
                moved = False
            elif ctx.net.link(host_name) is None:
                raise self._fail("in_use", ERR_INVALID_NETWORK_CONFIG,
                                 f"deviceID {vf.pci}: the VF is in use or gone (its netdev {host_name} is not in "
                                 f"the node's network namespace)")
            else:
                moved = True
            try:
                if moved:
                    self._move_in(ctx, request, host_name)
                self._configure_pod_side(ctx, request, network, pod_network)
                ids = {**interface_external_ids(request, network, pod_network), VF_NETDEV: host_name, VF_PCI: vf.pci}
                evicted = ctx.ovs.ensure_port(network.bridge, representor, external_ids=ids,
                                              other_config={"transient": "true"}, evict_iface_id=network.iface_id,
                                              wait_vswitchd=False)
                for stale in evicted:
                    logger.info("pod %s: removed stale OVS port %s of an earlier sandbox", request.pod_key, stale)
                ctx.net.set_link(representor, mtu=network.mtu, up=True)
                host_mac = ctx.net.require_link(representor).mac
            except CniError:
                if moved:
                    self._undo(ctx, request, representor=representor, host_name=host_name)
                raise
            except OvnkError as exc:
                if moved:
                    self._undo(ctx, request, representor=representor, host_name=host_name)
                code = ERR_UNKNOWN_CONTAINER if _net_error_code(exc) == errno.ENOENT else ERR_IO_FAILURE
                raise self._fail("wiring", code, f"wiring VF {vf.pci} into pod {request.pod_key} failed: {exc}") \
                    from None
        if self.metrics is not None and moved:
            self.metrics.wired.labels(operation="add").inc()
        logger.info("pod %s: VF %s (%s) is %s, representor %s on %s", request.pod_key, vf.pci, host_name,
                    request.ifname, representor, network.bridge)
        return build_result(host=representor, host_mac=host_mac, request=request, network=network,
                            pod_network=pod_network)

    @staticmethod
    def _wired(request: CniRequest, pod_network: PodNetwork) -> bool:
        """This container's interface is in its namespace already (a repeated ADD)."""
        try:
            with NetFacade(request.netns) as pod_net:
                link = pod_net.link(request.ifname)
        except OvnkError:
            return False
        return link is not None and link.mac.lower() == pod_network.mac_address.lower()

    @staticmethod
    def _move_in(ctx: NodeContext, request: CniRequest, host_name: str) -> None:
        try:
            ctx.net.move_link(host_name, netns=request.netns, new_name=request.ifname)
        except OvnkError as exc:
            if _net_error_code(exc) == errno.EEXIST:
                raise CniError(ERR_IO_FAILURE, f"interface {request.ifname} already exists in {request.netns}") \
                    from None
            raise

    @staticmethod
    def _configure_pod_side(ctx: NodeContext, request: CniRequest, network: CniNetwork,
                            pod_network: PodNetwork) -> None:
        with NetFacade(request.netns) as pod_net:
            pod_net.set_link(request.ifname, mac=pod_network.mac_address, mtu=network.mtu)
            pod_net.setup_interface(
                request.ifname, addresses=pod_network.ip_addresses,
                routes=[(r.dst, r.gw) for r in pod_routes(pod_network)],
                # The userspace datapath drops TCP/UDP whose checksum was left to an offload (lab.md);
                # a property of the datapath, not of the device, as for core's veth driver.
                tx_checksum=False if ctx.config.ovs.datapath_type == "netdev" else None)

    def _undo(self, ctx: NodeContext, request: CniRequest, *, representor: str, host_name: str) -> None:
        try:
            ctx.ovs.delete_ports([representor])
            ctx.net.set_link(representor, up=False)
        except OvnkError:
            logger.warning("could not remove the port of representor %s", representor, exc_info=True)
        try:
            self._move_out(ctx, request, host_name)
        except OvnkError:
            logger.warning("could not return VF %s to the host", host_name, exc_info=True)

    @staticmethod
    def _move_out(ctx: NodeContext, request: CniRequest, host_name: str) -> bool:
        """Move the pod's ``ifname`` back to the host as ``host_name``, down; ``False`` when it is not there.

        When ``host_name`` is on the host, the VF never left it and the pod's ``ifname`` (if any) is
        not this VF: it stays where it is.
        """
        if ctx.net.link(host_name) is not None:
            return False
        try:
            pod_net = NetFacade(request.netns)
        except OvnkError:
            return False  # the namespace is gone: a real VF is back on the host already
        with pod_net:
            if pod_net.link(request.ifname) is None:
                return False
            pod_net.set_link(request.ifname, up=False)
            pod_net.move_link(request.ifname, netns=None, new_name=host_name)
        ctx.net.set_link(host_name, up=False)
        return True

    # -- DEL, CHECK ------------------------------------------------------------------------

    def _recorded(self, ctx: NodeContext, request: CniRequest) -> list[tuple[str, str | None]]:
        """(representor, recorded host name) of this container's VF ports."""
        return [(i.name, i.external_ids.get(VF_NETDEV)) for i in ctx.ovs.interfaces(
            lambda i: i.external_ids.get("sandbox") == request.container_id and VF_PCI in i.external_ids
            and i.external_ids.get("pod-if-name", request.ifname) == request.ifname)]

    def delete(self, ctx: NodeContext, request: CniRequest, network: CniNetwork) -> None:
        recorded = self._recorded(ctx, request)
        try:
            vf: VirtualFunction | None = self.sysfs.virtual_function(self.device_id)
        except DeviceError:
            vf = None
        if vf is None and not recorded:
            return  # nothing of ours: a DEL for a device that never was wired
        lock = self.locks.held(vf.pci if vf is not None else self.device_id)
        with lock:
            try:
                representors = [name for name, _ in recorded]
                if representors:
                    ctx.ovs.delete_ports(representors)
                for name in representors:
                    if ctx.net.link(name) is not None:
                        ctx.net.set_link(name, up=False)
                host_name = next((h for _, h in recorded if h), None)
                if vf is not None:
                    host_name = self._host_name(vf, host_name)
                returned = bool(host_name) and self._move_out(ctx, request, str(host_name))
            except OvnkError as exc:
                raise CniError(ERR_IO_FAILURE, f"returning VF {self.device_id} of container "
                                               f"{request.container_id[:12]} failed: {exc}") from None
        if returned:
            if self.metrics is not None:
                self.metrics.wired.labels(operation="del").inc()
            logger.info("container %s: VF %s returned to the host as %s", request.container_id[:12],
                        self.device_id, host_name)

    def check(self, ctx: NodeContext, request: CniRequest, network: CniNetwork, expected: CniResult) -> None:
        _vf, representor = self._resolve()
        want = next((i for i in expected.interfaces if i.sandbox and i.name == request.ifname), None)
        if want is None:
            raise CniError(ERR_WIRING_MISMATCH, f"the previous result lists no interface {request.ifname} in a sandbox")
        try:
            with NetFacade(request.netns) as pod_net:
                link = pod_net.link(request.ifname)
                present = set(pod_net.addresses(request.ifname)) if link is not None else set()
        except OvnkError as exc:
            raise CniError(ERR_UNKNOWN_CONTAINER, f"cannot enter the pod's network namespace: {exc}") from None
        if link is None:
            raise CniError(ERR_WIRING_MISMATCH, f"interface {request.ifname} is missing from {request.netns}")
        if want.mac and link.mac.lower() != want.mac.lower():
            raise CniError(ERR_WIRING_MISMATCH, f"interface {request.ifname} has MAC {link.mac}, expected {want.mac}")
        if not link.up:
            raise CniError(ERR_WIRING_MISMATCH, f"interface {request.ifname} is down")
        missing = [str(ip.address) for ip in expected.ips if ip.address not in present]
        if missing:
            raise CniError(ERR_WIRING_MISMATCH, f"interface {request.ifname} lacks {', '.join(missing)}")
        iface = ctx.ovs.interface(representor)
        if iface is None or iface.bridge != network.bridge:
            raise CniError(ERR_WIRING_MISMATCH, f"representor {representor} is not a port of {network.bridge}")
        if iface.external_ids.get("sandbox") != request.container_id:
            raise CniError(ERR_WIRING_MISMATCH, f"representor {representor} is wired for another container")
        if network.iface_id and iface.iface_id != network.iface_id:
            raise CniError(ERR_WIRING_MISMATCH, f"representor {representor} has iface-id {iface.iface_id!r}, "
                                                f"expected {network.iface_id!r}")
        if not iface.ovn_installed:
            raise CniError(ERR_WIRING_MISMATCH, f"representor {representor} is not marked ovn-installed")
