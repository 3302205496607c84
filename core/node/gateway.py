"""The shared gateway: the node's uplink inside an OVS bridge that the host and ``GR_<node>`` share.

Set-up (:meth:`SharedGateway.setup`, idempotent; a restart finds it done):

1. The uplink is ``[gateway] interface`` or the interface holding the IPv4
   default route. If that name is an OVS bridge already (a previous run), its
   one system port is the uplink.
2. Otherwise bridge ``br<uplink>`` (``breth0``) is created with the
   ``[ovs] datapath-type``, ``fail_mode=secure`` (no implicit NORMAL flow:
   only our flows forward) and ``other_config:hwaddr`` = the uplink's MAC, and
   the uplink becomes its port.
3. The bridge's internal port gets the uplink's MTU and, in netdev mode, TX
   checksum offload off; our flows are programmed *before* the addresses move,
   so the host never loses its path.
4. The uplink's addresses move to the internal port and the routes through the
   uplink follow them. In netdev mode the kernel still sees every frame the
   uplink receives (vswitchd reads it with a packet socket); strict
   ``rp_filter`` and ``arp_ignore=1`` on the address-less uplink make the
   kernel ignore them, so the host does not get each packet twice.
5. ovn-controller creates the patch port ``patch-<bridge>_<node>-to-br-int``
   from ``ovn-bridge-mappings=physnet:<bridge>`` once ``GR_<node>`` exists;
   the flows are rewritten when it appears: the node controller ``gateway``
   (:meth:`SharedGateway.spec`, key = the bridge) runs on every change of
   the local OVS database and writes the bridge when core's flows for the
   current ofports differ from what it holds. The periodic rewrite and the
   restore after an ovs-vswitchd restart are the flow manager's
   (:mod:`ovnk.core.node.flows`), for every managed bridge.

OpenFlow on the bridge (cookie of owner ``core``; U = uplink, P = patch port,
LOCAL = the host's internal port). Host and GR share the node's IP and MAC, so
forwarding never uses NORMAL (MAC learning would flap between LOCAL and P):

=====  ========  ========================================  ===========================================
table  priority  match                                     actions
=====  ========  ========================================  ===========================================
0      100       in_port=P, ip                             ct(commit, zone=64000, ct_mark=1), output:U
0      99        in_port=P                                 output:U  (ARP of the GR)
0      100       in_port=U, udp, tp_dst=<encap port>       LOCAL  (tunnel traffic: vswitchd decapsulates
                                                           it at the bridge's IP; no conntrack needed)
0      90        in_port=U, ip                             ct(zone=64000, table=1)
0      80        in_port=U, arp, arp_op=2                  LOCAL, output:P  (both may have asked)
0      10        in_port=U                                 LOCAL  (ARP requests and the rest: the host)
0      10        in_port=LOCAL                             output:U
1      100       ct_state=+trk+est, ct_mark=1, ip          output:P  (replies to GR connections)
1      100       ct_state=+trk+rel, ct_mark=1, ip          output:P
1      0         (anything else)                           LOCAL
=====  ========  ========================================  ===========================================

The reverse is :func:`release_uplink` (``ovnk release-uplink``), for OVS stopping:
the addresses and routes go back to the uplink and the bridge is deleted; the
agent then reports itself not alive (:meth:`SharedGateway.released`) until a
restart sets the gateway up again.

Until P exists only the host rows are written. Simplifications against
ovn-kubernetes' bridge flows: IPv4 only; new connections from outside always
reach the host (no NodePort/ExternalIP steering into OVN, no hairpin through
the masquerade subnet); host and GR connections are not kept apart if they
pick the same 5-tuple.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from dataclasses import dataclass

from ovnk.core.config import Config
from ovnk.core.errors import StartupError
from ovnk.core.node.flows import CORE_OWNER
from ovnk.core.node.flows import FlowManager
from ovnk.core.node.net import RTPROT_KERNEL
from ovnk.core.node.net import IPAddress
from ovnk.core.node.net import IPInterface
from ovnk.core.node.net import NetFacade
from ovnk.core.node.ovs import OvsFacade
from ovnk.core.reconcile.spec import ControllerSpec
from ovnk.core.reconcile.spec import ReconcileRequest
from ovnk.core.topology import naming as n
from ovnk.core.topology.annotations import GatewayConfig

logger = logging.getLogger(__name__)

CT_ZONE = 64000
OVN_CT_MARK = 0x1
MAX_IFNAME = 15
CONTROLLER = "gateway"


@dataclass(frozen=True)
class GatewayInfo:
    """What the shared gateway looks like once set up (published as ``l3-gateway-config``)."""

    bridge: str
    uplink: str
    mac: str
    addresses: tuple[IPInterface, ...]
    next_hops: tuple[IPAddress, ...]

    @property
    def primary_ipv4(self) -> ipaddress.IPv4Interface | None:
        return next((a for a in self.addresses if isinstance(a, ipaddress.IPv4Interface)), None)

    def interface_id(self, node: str) -> str:
        """The localnet port of ``ext_<node>`` (``breth0_<node>``)."""
        return n.localnet_port(self.bridge, node)

    def patch_port(self, node: str) -> str:
        """The patch port ovn-controller creates on the bridge for that localnet port."""
        return f"patch-{self.interface_id(node)}-to-br-int"

    def gateway_config(self, node: str, config: Config) -> GatewayConfig:
        v4 = [a for a in self.addresses if a.version == 4]
        return GatewayConfig(
            mode="shared", bridge_id=self.bridge, interface_id=self.interface_id(node), mac_address=self.mac,
            ip_addresses=tuple(a.network for a in v4), host_ips=tuple(a.ip for a in v4),
            next_hops=tuple(h for h in self.next_hops if h.version == 4),
            node_port_enable=config.gateway.nodeport, vlan_id=config.gateway.vlan_id,
        )


def gateway_flows(*, uplink_ofport: int, patch_ofport: int | None, encap_port: int) -> list[str]:
    """The bridge's flows (see the module docstring), in ``ovs-ofctl`` syntax without cookies."""
    u = uplink_ofport
    flows = [
        f"table=0,priority=100,in_port={u},udp,tp_dst={encap_port} actions=LOCAL",
        f"table=0,priority=90,in_port={u},ip actions=ct(zone={CT_ZONE},table=1)",
        f"table=0,priority=10,in_port={u} actions=LOCAL",
        f"table=0,priority=10,in_port=LOCAL actions=output:{u}",
        "table=1,priority=0 actions=LOCAL",
    ]
    if patch_ofport is None:
        flows.append(f"table=0,priority=80,in_port={u},arp,arp_op=2 actions=LOCAL")
        return flows
    p = patch_ofport
    flows += [
        f"table=0,priority=100,in_port={p},ip actions=ct(commit,zone={CT_ZONE},"
        f"exec(load:{OVN_CT_MARK:#x}->NXM_NX_CT_MARK[])),output:{u}",
        f"table=0,priority=99,in_port={p} actions=output:{u}",
        f"table=0,priority=80,in_port={u},arp,arp_op=2 actions=LOCAL,output:{p}",
        f"table=1,priority=100,ct_state=+trk+est,ct_mark={OVN_CT_MARK:#x},ip actions=output:{p}",
        f"table=1,priority=100,ct_state=+trk+rel,ct_mark={OVN_CT_MARK:#x},ip actions=output:{p}",
    ]
    return flows


class SharedGateway:
    """Sets up the gateway bridge and keeps core's flows on it (the ``gateway`` node controller)."""

    def __init__(self, *, config: Config, node_name: str, ovs: OvsFacade, net: NetFacade, flows: FlowManager) -> None:
        self.config = config
        self.node_name = node_name
        self.ovs = ovs
        self.net = net
        self.flows = flows
        self.info: GatewayInfo | None = None
        self._ports: tuple[int | None, int | None] | None = None

    @property
    def netdev(self) -> bool:
        return self.config.ovs.datapath_type == "netdev"

    # -- set-up ------------------------------------------------------------------

    def detect(self) -> tuple[str, str]:
        """(bridge, uplink) from ``[gateway] interface`` or the default route."""
        name = self.config.gateway.interface
        if not name:
            route = self.net.default_route()
            if route is not None and route.dev is not None:
                name = route.dev
            else:
                # A previous run's bridge, found through the mapping it configured.
                mappings = self.ovs.external_ids().get("ovn-bridge-mappings", "")
                mapped = dict(m.split(":", 1) for m in mappings.split(",") if ":" in m).get(n.PHYSNET, "")
                if not mapped or not self.ovs.bridge_exists(mapped):
                    raise StartupError("the node has no IPv4 default route; set [gateway] interface to the uplink")
                logger.warning("no IPv4 default route; using gateway bridge %s from ovn-bridge-mappings", mapped)
                name = mapped
        if self.ovs.bridge_exists(name):
            return name, self._uplink_of(name)
        holder = self.ovs.interface(name)
        if holder is not None and holder.bridge and holder.bridge != name:
            return holder.bridge, name  # the uplink is a port already (restart after a partial set-up)
        bridge = f"br{name}"
        if len(bridge) > MAX_IFNAME:
            raise StartupError(f"gateway bridge name {bridge!r} is longer than {MAX_IFNAME} characters; "
                               f"create the bridge yourself and set [gateway] interface to it")
        return bridge, name

    def _uplink_of(self, bridge: str) -> str:
        candidates = [i.name for i in self.ovs.bridge_ports(bridge) if i.type in ("", "system") and i.name != bridge]
        if len(candidates) != 1:
            raise StartupError(f"OVS bridge {bridge} has {len(candidates)} system ports ({', '.join(candidates) or '-'}); "
                               f"exactly one uplink is needed")
        return candidates[0]

    def setup(self) -> GatewayInfo:
        bridge, uplink = self.detect()
        uplink_link = self.net.require_link(uplink)
        bridge_link = self.net.link(bridge)
        mac = bridge_link.mac if bridge_link is not None and not self.net.addresses(uplink) else uplink_link.mac
        created = self.ovs.ensure_bridge(bridge, datapath_type=self.config.ovs.datapath_type, hwaddr=mac,
                                         fail_mode="secure")
        self.ovs.ensure_port(bridge, uplink)
        if created:
            logger.info("created gateway bridge %s (%s datapath) for uplink %s, MAC %s", bridge,
                        self.config.ovs.datapath_type, uplink, mac)
        self._wait_link(bridge)
        self.net.set_link(bridge, mtu=uplink_link.mtu, up=True)
        if self.netdev:
            self.net.set_tx_checksum(bridge, False)
        self.flows.manage(bridge)
        self.info = GatewayInfo(bridge=bridge, uplink=uplink, mac=mac, addresses=(), next_hops=())
        if created or self.net.addresses(uplink):
            # The host's path must exist before its addresses move. On a restart the bridge already
            # forwards; its table is rewritten only after the plugins declared their flows, so
            # no plugin flow disappears for a moment.
            self.sync_flows(force=True)
        else:
            self._ports = self._ofports()
        self._move_addresses(uplink, bridge)
        if self.netdev:
            self.net.set_sysctls([(f"net/ipv4/conf/{uplink}/rp_filter", "1"),
                                  (f"net/ipv4/conf/{uplink}/arp_ignore", "1")])
        addresses = tuple(self.net.addresses(bridge))
        if not any(a.version == 4 for a in addresses):
            raise StartupError(f"gateway bridge {bridge} has no IPv4 address (uplink {uplink} had none to move)")
        self.info = GatewayInfo(bridge=bridge, uplink=uplink, mac=mac, addresses=addresses,
                                next_hops=self._next_hops(bridge))
        logger.info("shared gateway: bridge %s, uplink %s, %s, next hops %s", bridge, uplink,
                    ", ".join(map(str, addresses)), ", ".join(map(str, self.info.next_hops)) or "-")
        return self.info

    def _wait_link(self, name: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.net.link(name) is None:
            if time.monotonic() > deadline:
                raise StartupError(f"ovs-vswitchd did not create the interface {name} within {timeout:.0f}s")
            time.sleep(0.02)

    def _move_addresses(self, uplink: str, bridge: str) -> None:
        addresses = self.net.addresses(uplink)
        if not addresses:
            return
        routes = [r for r in self.net.routes(dev=uplink) if r.proto != RTPROT_KERNEL]
        for address in addresses:
            self.net.add_address(bridge, address)
        for address in addresses:
            self.net.delete_address(uplink, address)
        for route in routes:
            self.net.replace_route(route.dst, dev=bridge, gateway=route.gateway, mtu=route.mtu,
                                   priority=route.priority)
        logger.info("moved %s and %d routes from %s to %s", ", ".join(map(str, addresses)), len(routes),
                    uplink, bridge)

    def _next_hops(self, bridge: str) -> tuple[IPAddress, ...]:
        if self.config.gateway.next_hop:
            return (ipaddress.ip_address(self.config.gateway.next_hop),)
        route = self.net.default_route()
        if route is not None and route.gateway is not None and route.dev == bridge:
            return (route.gateway,)
        return ()

    # -- flows -------------------------------------------------------------------

    def _ofports(self) -> tuple[int | None, int | None]:
        assert self.info is not None
        uplink = self.ovs.interface(self.info.uplink)
        patch = self.ovs.interface(self.info.patch_port(self.node_name))
        return (uplink.ofport if uplink is not None and (uplink.ofport or 0) > 0 else None,
                patch.ofport if patch is not None and (patch.ofport or 0) > 0 else None)

    def sync_flows(self, *, force: bool = False) -> bool:
        """Rewrite core's flows for the current ofports; ``True`` when the bridge was written."""
        assert self.info is not None
        ports = self._ofports()
        uplink, patch = ports
        if uplink is None:
            raise StartupError(f"uplink {self.info.uplink} has no OpenFlow port on {self.info.bridge} "
                               f"(see ovs-vswitchd's log)")
        changed = self.flows.set_flows(self.info.bridge, CORE_OWNER,
                                       gateway_flows(uplink_ofport=uplink, patch_ofport=patch,
                                                     encap_port=self.config.default.encap_port))
        if changed and self._ports is not None and ports != self._ports:
            logger.info("gateway %s: ports changed (uplink %s, patch %s); rewriting flows", self.info.bridge,
                        uplink, patch if patch is not None else "-")
        self._ports = ports
        return self.flows.sync(self.info.bridge, force=force or changed)

    def sync_all_flows(self) -> None:
        """Start-up: core's flows for the current ofports, then every managed bridge written whole (the
        gateway's and those plugins declared; also where a switched-off plugin's flows disappear)."""
        self.sync_flows()
        self.flows.sync_all(force=True)

    def released(self) -> str | None:
        """Why the gateway is gone (the liveness check of the agent), or ``None`` while it is in place.

        :func:`release_uplink` (the chart runs it before ovs-vswitchd stops) deletes the bridge and
        gives its addresses back to the uplink; only a new start of the agent sets it up again, so
        the agent reports itself not alive until the kubelet restarts it.
        """
        if self.info is None or not self.ovs.client.connected:
            return None  # not set up yet, or OVS away: the "ovs" check says so
        if not self.ovs.bridge_exists(self.info.bridge):
            return f"gateway bridge {self.info.bridge} was deleted (uplink released); a restart sets it up again"
        return None

    def spec(self) -> ControllerSpec:
        """The ``gateway`` node controller (key: the bridge); queue it on OVS changes
        (``ovs.subscribe``), which is how a new patch port or ofport is noticed."""
        assert self.info is not None
        bridge = self.info.bridge

        def reconcile(request: ReconcileRequest) -> None:
            if request.key == bridge:
                self.sync_flows()

        return ControllerSpec(name=CONTROLLER, watches=(), reconcile=reconcile, initial_keys=lambda: [bridge],
                              workers=1)


# Written into ovs-vswitchd's run directory once the uplink is back on the host (the chart's
# ovsdb-server container waits for it before stopping, so the release can still transact).
RELEASED_MARKER = "ovnk-uplink-released"


def release_uplink(*, ovs: OvsFacade, net: NetFacade) -> tuple[str, str, list[IPInterface]] | None:
    """Give the node's uplink back to the host: the reverse of :meth:`SharedGateway.setup`.

    The gateway bridge (``ovn-bridge-mappings`` of ``physnet``) loses its addresses and its routes
    to its one system port, the uplink, and is deleted with its ports. For OVS stopping, for good
    (``helm uninstall``) or for an upgrade: without it the host keeps its address on an interface
    that nothing forwards for, and is cut off (kubelet included). The node agent sets the gateway
    up again when it next starts. Returns ``(bridge, uplink, addresses)``, or ``None`` when there
    is no gateway bridge (nothing to do, so running it twice is harmless).
    """
    mappings = ovs.external_ids().get("ovn-bridge-mappings", "")
    bridge = dict(m.split(":", 1) for m in mappings.split(",") if ":" in m).get(n.PHYSNET, "")
    if not bridge or not ovs.bridge_exists(bridge):
        return None
    ports = [i.name for i in ovs.bridge_ports(bridge) if i.type in ("", "system") and i.name != bridge]
    if len(ports) != 1:
        raise StartupError(f"OVS bridge {bridge} has {len(ports)} system ports ({', '.join(ports) or '-'}); "
                           f"cannot tell which one is the uplink to give the addresses back to")
    [uplink] = ports
    addresses = net.addresses(bridge)
    routes = [r for r in net.routes(dev=bridge) if r.proto != RTPROT_KERNEL]
    for address in addresses:
        net.add_address(uplink, address)
    # Before the bridge loses its addresses: the kernel flushes the routes of a device that
    # loses its last one, and a default route needs its gateway reachable through the uplink.
    for route in routes:
        net.replace_route(route.dst, dev=uplink, gateway=route.gateway, mtu=route.mtu, priority=route.priority)
    for address in addresses:
        net.delete_address(bridge, address)
    ovs.delete_bridge(bridge)
    if net.link(bridge) is not None:
        net.delete_link(bridge)  # ovs-vswitchd was not running to remove its internal port
    logger.info("released uplink %s: moved %s and %d routes back from %s and deleted the bridge", uplink,
                ", ".join(map(str, addresses)) or "no addresses", len(routes), bridge)
    return bridge, uplink, addresses
