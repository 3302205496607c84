"""Pod interface wiring: the network of a CNI request, the driver protocol and core's veth driver.

:class:`CniNetwork` is what ``ovnk_cni_network`` resolves a request to;
:class:`InterfaceDriver` is what ``ovnk_cni_interface_driver`` picks (core's
:class:`VethDriver` unless a plugin answers first, e.g. a VF-representor
driver for requests carrying a ``deviceID``). The CNI handler waits for the
pod annotation before ``add`` and for ``ovn-installed`` after it, so drivers
only wire.

The veth driver (ovn-kubernetes.md §3.2, step 5-6):

* a veth pair created with its peer directly inside the pod netns (lab.md),
  in one netlink request: host side ``<containerID[:15]>`` (up, with a MAC we
  choose, so nothing is read back), container side ``CNI_IFNAME`` with the
  annotation's MAC, both with the network's MTU;
* in the pod, in one netlink batch: link up, the annotation's addresses, a
  default route via the gateway of each family plus the annotation's routes;
  TX checksum offload off when the datapath is netdev (the userspace datapath
  drops TCP/UDP whose checksum was left to an offload);
* with the netdev datapath, strict ``rp_filter`` and ``arp_ignore=1`` on the
  host end (:func:`host_side_sysctls`): the node's kernel sees the pod's frames
  too and must not answer them;
* on ``br-int``: ports holding the same ``iface-id`` are removed (a previous
  sandbox of the pod, with its host veth end) and the host end is added with Interface
  ``external_ids`` ``iface-id``, ``iface-id-ver`` (pod UID), ``sandbox``
  (container id), ``attached_mac``, ``ip_addresses``, ``pod-if-name`` and
  ``other_config:transient=true``, all in one transaction.

ADD twice for one container reuses the pair (same MAC, same OVS row and
ofport). Any failure removes what this ADD created.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from typing import TYPE_CHECKING
from typing import Protocol

from ovnk.cni.types import ERR_IO_FAILURE
from ovnk.cni.types import ERR_UNKNOWN_CONTAINER
from ovnk.cni.types import ERR_WIRING_MISMATCH
from ovnk.cni.types import CniError
from ovnk.cni.types import CniInterface
from ovnk.cni.types import CniIPConfig
from ovnk.cni.types import CniRequest
from ovnk.cni.types import CniResult
from ovnk.cni.types import CniRoute
from ovnk.core.node.net import NetError
from ovnk.core.node.net import NetFacade
from ovnk.core.node.netbatch import configure_pod_interface
from ovnk.core.node.netbatch import random_mac
from ovnk.core.node.ovs import INTEGRATION_BRIDGE
from ovnk.core.node.ovs import OvsError
from ovnk.core.topology.annotations import PodNetwork

if TYPE_CHECKING:
    from ovnk.core.node.context import NodeContext

logger = logging.getLogger(__name__)

MAX_IFNAME = 15
DEFAULT_V4 = ipaddress.ip_network("0.0.0.0/0")
DEFAULT_V6 = ipaddress.ip_network("::/0")


@dataclass(frozen=True)
class CniNetwork:
    """The network a CNI request is for.

    :ivar annotation_key: key of ``k8s.ovn.org/pod-networks`` (``default``, ``<ns>/<nad>``).
    :ivar iface_id: the logical switch port / OVS ``iface-id`` (``<ns>_<pod>``); empty
        when the request does not name a pod (a DEL without ``CNI_ARGS``).
    :ivar ifname: the interface inside the pod (``CNI_IFNAME``).
    :ivar mtu: MTU of both ends.
    :ivar nad: ``<namespace>/<name>`` of the NetworkAttachmentDefinition; ``None`` for the default network.
    :ivar bridge: the integration bridge the host end joins.
    :ivar external_ids: extra Interface ``external_ids`` (secondary networks add ``k8s.ovn.org/network``...).
    :ivar pod_uid: the pod's UID; the CNI handler fills it in once it found the pod.
    :ivar host_ifname: the host end's name; empty means the default network's
        ``<containerID[:15]>`` (a pod's second interface needs another name).
    :ivar ipam: whether the network hands out addresses; an IPAM-less network's
        annotation carries a MAC only, and ADD then wires the interface without any.
    """

    annotation_key: str
    iface_id: str
    ifname: str
    mtu: int
    nad: str | None = None
    bridge: str = INTEGRATION_BRIDGE
    external_ids: Mapping[str, str] = field(default_factory=dict)
    pod_uid: str = ""
    host_ifname: str = ""
    ipam: bool = True


class InterfaceDriver(Protocol):
    """Wires one pod interface; chosen per request by ``ovnk_cni_interface_driver``."""

    name: str

    def add(self, ctx: NodeContext, request: CniRequest, network: CniNetwork, pod_network: PodNetwork) -> CniResult:
        """Create the interface and its OVS port; idempotent for the same container; raise ``CniError``."""
        ...

    def delete(self, ctx: NodeContext, request: CniRequest, network: CniNetwork) -> None:
        """Remove the OVS port and the interface when present; succeed when nothing is left."""
        ...

    def check(self, ctx: NodeContext, request: CniRequest, network: CniNetwork, expected: CniResult) -> None:
        """Raise ``CniError`` unless the interface still matches ``expected`` (ADD's result)."""
        ...


def host_interface_name(container_id: str, network: CniNetwork | None = None) -> str:
    """Host end of a pod's veth: the network's ``host_ifname`` when it names one, else the first 15
    characters of the container id (ovn-kubernetes' choice for the default network)."""
    if network is not None and network.host_ifname:
        return network.host_ifname
    return container_id[:MAX_IFNAME]


def interface_external_ids(request: CniRequest, network: CniNetwork, pod_network: PodNetwork) -> dict[str, str]:
    ids = {
        "iface-id": network.iface_id,
        "iface-id-ver": network.pod_uid or request.pod_uid or "",
        "sandbox": request.container_id,
        "attached_mac": pod_network.mac_address,
        "ip_addresses": ",".join(str(a) for a in pod_network.ip_addresses),
        "pod-if-name": request.ifname,
    }
    ids.update(network.external_ids)
    return ids


def pod_routes(pod_network: PodNetwork) -> list[CniRoute]:
    """Default route via the gateway of each family, then the annotation's routes."""
    routes = []
    for gateway in pod_network.gateway_ips:
        routes.append(CniRoute(dst=DEFAULT_V4 if gateway.version == 4 else DEFAULT_V6, gw=gateway))
    routes += [CniRoute(dst=r.dest, gw=r.next_hop) for r in pod_network.routes]
    return routes


def build_result(*, host: str, host_mac: str, request: CniRequest, network: CniNetwork,
                 pod_network: PodNetwork) -> CniResult:
    gateways = {g.version: g for g in pod_network.gateway_ips}
    return CniResult(
        interfaces=[CniInterface(name=host, mac=host_mac, mtu=network.mtu),
                    CniInterface(name=request.ifname, mac=pod_network.mac_address, sandbox=request.netns,
                                 mtu=network.mtu)],
        ips=[CniIPConfig(address=a, gateway=gateways.get(a.version), interface=1) for a in pod_network.ip_addresses],
        routes=pod_routes(pod_network),
    )


def _open_netns(netns: str) -> NetFacade:
    try:
        return NetFacade(netns)
    except NetError as exc:
        raise CniError(ERR_UNKNOWN_CONTAINER, f"cannot enter the pod's network namespace: {exc}") from None


def host_side_sysctls(host: str) -> list[tuple[str, str]]:
    """What keeps the node's kernel out of a pod's traffic on the host end of its veth (netdev).

    ovs-vswitchd's userspace datapath reads the host end with a packet socket, so the kernel receives
    every frame too. It would take a pod's packets for the node's own addresses a second time, raw:
    a backend's SYN-ACK to the node's ClusterIP connection arrived there before OVN's un-DNATed
    copy, and the node answered it with a RST. It would also answer ARP for the node's addresses with
    the veth's MAC. Strict reverse-path filtering (the pod's subnet routes through the management
    port, not this veth) and ``arp_ignore=1`` (the veth has no address) make it ignore them, as the
    gateway's uplink does. The kernel datapath takes the frames away from the stack; nothing needed.
    """
    return [(f"net/ipv4/conf/{host}/rp_filter", "1"), (f"net/ipv4/conf/{host}/arp_ignore", "1")]


class VethDriver:
    """Core's driver: a veth pair between the pod netns and ``br-int`` (see the module docstring)."""

    name = "veth"

    def add(self, ctx: NodeContext, request: CniRequest, network: CniNetwork, pod_network: PodNetwork) -> CniResult:
        host = host_interface_name(request.container_id, network)
        created = False
        try:
            created, host_mac = self._ensure_pair(ctx, host=host, request=request, network=network,
                                                  pod_network=pod_network)
            if ctx.config.ovs.datapath_type == "netdev":
                ctx.net.set_sysctls(host_side_sysctls(host))
            configure_pod_interface(
                request.netns, request.ifname, addresses=pod_network.ip_addresses,
                routes=[(r.dst, r.gw) for r in pod_routes(pod_network)],
                tx_checksum=False if ctx.config.ovs.datapath_type == "netdev" else None,
            )
            # Last: the port makes ovn-controller and vswitchd busy (on the same cores), and the
            # pod side is complete before OVN may mark the port installed.
            evicted = ctx.ovs.ensure_port(
                network.bridge, host, external_ids=interface_external_ids(request, network, pod_network),
                other_config={"transient": "true"}, evict_iface_id=network.iface_id, wait_vswitchd=False,
            )
            for stale in evicted:
                logger.info("pod %s: removed stale OVS port %s of an earlier sandbox", request.pod_key, stale)
                self._remove_stale_link(ctx, stale)
        except CniError:
            if created:
                self._remove(ctx, host)
            raise
        except (NetError, OvsError) as exc:
            if created:
                self._remove(ctx, host)
            if isinstance(exc, NetError) and exc.code == errno.ENOENT:
                raise CniError(ERR_UNKNOWN_CONTAINER, f"wiring pod {request.pod_key} failed: {exc}") from None
            raise CniError(ERR_IO_FAILURE, f"wiring pod {request.pod_key} failed: {exc}") from None
        return build_result(host=host, host_mac=host_mac, request=request, network=network, pod_network=pod_network)

    def _ensure_pair(self, ctx: NodeContext, *, host: str, request: CniRequest, network: CniNetwork,
                     pod_network: PodNetwork) -> tuple[bool, str]:
        """Create the pair unless this container's pair exists already; (created, host MAC)."""
        mac = pod_network.mac_address.lower()
        host_mac = random_mac()
        try:
            # The common case first: nothing exists yet (one netlink request).
            ctx.net.create_veth(host, peer=request.ifname, peer_netns=request.netns, mtu=network.mtu, mac=host_mac,
                                peer_mac=mac, up=True)
            return True, host_mac
        except NetError as exc:
            if exc.code != errno.EEXIST:
                raise
        existing_host = ctx.net.link(host)
        with _open_netns(request.netns) as pod_net:
            existing_pod = pod_net.link(request.ifname)
            if existing_host is not None and existing_pod is not None and existing_pod.kind == "veth" \
                    and existing_pod.peer_index == existing_host.index and existing_pod.mac.lower() == mac:
                ctx.net.set_link(host, mtu=network.mtu, up=True)
                pod_net.set_link(request.ifname, mtu=network.mtu)
                return False, existing_host.mac
        if existing_pod is not None:
            raise CniError(ERR_IO_FAILURE, f"interface {request.ifname} already exists in {request.netns} "
                                           f"and is not this container's veth")
        if existing_host is not None:
            # A leftover of an earlier ADD of this container that did not finish.
            ctx.net.delete_link(host)
        ctx.net.create_veth(host, peer=request.ifname, peer_netns=request.netns, mtu=network.mtu, mac=host_mac,
                            peer_mac=mac, up=True)
        return True, host_mac

    @staticmethod
    def _remove_stale_link(ctx: NodeContext, host: str) -> None:
        """The host end of an evicted sandbox's veth (its peer goes with it). A runtime that lost the
        sandbox (containerd killed during its ADD) never sends DEL for it; nothing else would."""
        try:
            ctx.net.delete_link(host)
        except NetError:
            logger.warning("could not delete link %s of an earlier sandbox", host, exc_info=True)

    def _remove(self, ctx: NodeContext, host: str) -> None:
        try:
            ctx.ovs.delete_ports([host])
        except OvsError:
            logger.warning("could not delete OVS port %s", host, exc_info=True)
        try:
            ctx.net.delete_link(host)
        except NetError:
            logger.warning("could not delete link %s", host, exc_info=True)

    def delete(self, ctx: NodeContext, request: CniRequest, network: CniNetwork) -> None:
        host = host_interface_name(request.container_id, network)
        ports = {i.port for i in ctx.ovs.interfaces(
            lambda i: i.name == host or (i.external_ids.get("sandbox") == request.container_id
                                         and i.external_ids.get("pod-if-name", request.ifname) == request.ifname))
            if i.port}
        try:
            if ports:
                ctx.ovs.delete_ports(sorted(ports))
            ctx.net.delete_link(host)
        except (NetError, OvsError) as exc:
            raise CniError(ERR_IO_FAILURE, f"removing the interface of container {request.container_id[:12]} "
                                           f"failed: {exc}") from None

    def check(self, ctx: NodeContext, request: CniRequest, network: CniNetwork, expected: CniResult) -> None:
        host = host_interface_name(request.container_id, network)
        want = next((i for i in expected.interfaces if i.sandbox and i.name == request.ifname), None)
        if want is None:
            raise CniError(ERR_WIRING_MISMATCH, f"the previous result lists no interface {request.ifname} "
                                                f"in a sandbox")
        with _open_netns(request.netns) as pod_net:
            link = pod_net.link(request.ifname)
            if link is None:
                raise CniError(ERR_WIRING_MISMATCH, f"interface {request.ifname} is missing from {request.netns}")
            if want.mac and link.mac.lower() != want.mac.lower():
                raise CniError(ERR_WIRING_MISMATCH, f"interface {request.ifname} has MAC {link.mac}, "
                                                    f"expected {want.mac}")
            if not link.up:
                raise CniError(ERR_WIRING_MISMATCH, f"interface {request.ifname} is down")
            present = set(pod_net.addresses(request.ifname))
        missing = [str(ip.address) for ip in expected.ips if ip.address not in present]
        if missing:
            raise CniError(ERR_WIRING_MISMATCH, f"interface {request.ifname} lacks {', '.join(missing)}")
        iface = ctx.ovs.interface(host)
        if iface is None or iface.bridge != network.bridge:
            raise CniError(ERR_WIRING_MISMATCH, f"OVS port {host} is missing from {network.bridge}")
        if network.iface_id and iface.iface_id != network.iface_id:
            raise CniError(ERR_WIRING_MISMATCH, f"OVS port {host} has iface-id {iface.iface_id!r}, "
                                                f"expected {network.iface_id!r}")
        if not iface.ovn_installed:
            raise CniError(ERR_WIRING_MISMATCH, f"OVS port {host} is not marked ovn-installed")
