"""Node side of services: NodePort and external-IP traffic arriving on the uplink goes to OVN.

Core's gateway flows (:mod:`ovnk.core.node.gateway`) send new connections from
the uplink to the host and only replies of OVN-originated connections to the
patch port. ``GR_<node>`` holds the NodePort load balancers, so new
connections to ``<nodeIP>:<nodePort>`` (and to a service's ExternalIPs and
LoadBalancer ingress IPs on its ports) must reach the patch port instead. This
manager adds, in its own cookie space (owner ``services``), one flow per
(IP, protocol, port) between core's priority 100 (tunnel traffic) and 90
(everything IP from the uplink goes through conntrack to table 1)::

    table=0, priority=95, in_port=<uplink>, tcp, nw_dst=<node IP>, tp_dst=<nodePort>
        actions=ct(commit, zone=64000, exec(load:0x1->NXM_NX_CT_MARK[])), output:<patch>

The connection is committed with the OVN mark in the gateway's zone, so it is
an OVN connection for core's flows from its first packet on: the GR's replies
(committed again by core's patch-port flow) and later packets keep their path
even while these flows are being rewritten. IPv4 only, as the gateway is.

The node's own processes never reach those flows: a connection to the node's
own ``IP:nodePort`` is delivered locally by the kernel, and one to an external
IP leaves through the uplink. The same controller keeps an nftables table
(owner ``core.services``, :func:`host_nat_table`) that DNATs them, in the
host's OUTPUT path, to the ClusterIP, which the host reaches through the
management port, and SNATs them to the management port's IP on their way out,
as ovn-kubernetes does with its ``OVN-KUBE-NODEPORT`` and
``OVN-KUBE-SNAT-MGMTPORT`` chains.

It is a node controller (``nodeport``, key = the gateway bridge): a watch of
the Services in the agent's shared informers, a subscription to OVS changes
(the patch port appears when ``GR_<node>`` exists; ofports change) and a
resync every :data:`RESYNC_INTERVAL` seconds (the node's IPs, read from the
gateway bridge, change without an event). Each reconcile computes the flows
and writes the bridge only when they differ from what it holds.
``ovnk_node_setup`` declares them once from the synced cache, so the table
core writes whole after set-up already holds them.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

from ovnk.core.builtin.services import model
from ovnk.core.kube.resources import SERVICES
from ovnk.core.node.context import NodeContext
from ovnk.core.node.gateway import CT_ZONE
from ovnk.core.node.gateway import OVN_CT_MARK
from ovnk.core.node.nft import NftChain
from ovnk.core.node.nft import NftError
from ovnk.core.node.nft import NftRule
from ovnk.core.node.nft import NftTable
from ovnk.core.reconcile.spec import ControllerSpec
from ovnk.core.reconcile.spec import ReconcileRequest
from ovnk.core.reconcile.spec import Watch
from ovnk.core.topology import naming as n

logger = logging.getLogger(__name__)

CONTROLLER = "nodeport"
FLOW_OWNER = "core.services"
PRIORITY = 95
RESYNC_INTERVAL = 30.0
CACHE_SYNC_TIMEOUT = 60.0


def patch_port_name(bridge: str, node: str) -> str:
    """The patch port ovn-controller creates for the localnet port (as ``GatewayInfo.patch_port``)."""
    return f"patch-{n.localnet_port(bridge, node)}-to-br-int"


def steering_targets(services: Iterable[Mapping[str, Any]],
                     node_ips: Sequence[ipaddress.IPv4Address]) -> list[tuple[str, str, int]]:
    """Sorted unique (IPv4, ovs protocol, port) of every NodePort and external VIP to send to OVN."""
    targets: set[tuple[str, str, int]] = set()
    for service in services:
        if not model.wants_load_balancers(service):
            continue
        external: list[str] = []
        for raw in model.spec(service).get("externalIPs") or ():
            external.append(str(raw))
        external += model.ingress_ips(service)
        external_v4 = []
        for raw in external:
            try:
                ip = ipaddress.ip_address(raw)
            except ValueError:
                continue
            if ip.version == 4:
                external_v4.append(str(ip))
        for port in model.service_ports(service):
            protocol = model.PROTOCOLS.get(port.protocol)
            if protocol is None:
                continue
            if port.node_port is not None:
                targets.update((str(ip), protocol, port.node_port) for ip in node_ips)
            targets.update((ip, protocol, port.port) for ip in external_v4)
    return sorted(targets, key=lambda t: (ipaddress.IPv4Address(t[0]), t[1], t[2]))


def steering_flows(targets: Iterable[tuple[str, str, int]], *, uplink_ofport: int, patch_ofport: int) -> list[str]:
    """The flows for :func:`steering_targets`, in ``ovs-ofctl`` syntax without cookies."""
    commit = f"ct(commit,zone={CT_ZONE},exec(load:{OVN_CT_MARK:#x}->NXM_NX_CT_MARK[]))"
    return [f"table=0,priority={PRIORITY},in_port={uplink_ofport},{protocol},nw_dst={ip},tp_dst={port} "
            f"actions={commit},output:{patch_ofport}" for ip, protocol, port in targets]


def host_nat_targets(services: Iterable[Mapping[str, Any]]) -> list[tuple[str, str | None, int, str, int]]:
    """Sorted unique (protocol, external IP or ``None`` for "any local address", port, cluster IPv4,
    service port): what a process on the node reaches through :func:`host_nat_table`."""
    targets: set[tuple[str, str | None, int, str, int]] = set()
    for service in services:
        if not model.wants_load_balancers(service):
            continue
        s = model.spec(service)
        cluster_v4 = next((ip for ip in (s.get("clusterIPs") or [s.get("clusterIP")]) if ip and _is_v4(ip)), None)
        if cluster_v4 is None:
            continue
        external = [ip for ip in [*(s.get("externalIPs") or ()), *model.ingress_ips(service)] if _is_v4(str(ip))]
        for port in model.service_ports(service):
            protocol = model.PROTOCOLS.get(port.protocol)
            if protocol is None:
                continue
            if port.node_port is not None:
                targets.add((protocol, None, port.node_port, cluster_v4, port.port))
            targets.update((protocol, str(ip), port.port, cluster_v4, port.port) for ip in external)
    return sorted(targets, key=lambda t: (t[0], t[1] or "", t[2], t[3], t[4]))


def _is_v4(raw: str) -> bool:
    try:
        return ipaddress.ip_address(raw).version == 4
    except ValueError:
        return False


def _match(left: Mapping[str, Any], right: Any, op: str = "==") -> dict[str, Any]:
    return {"match": {"op": op, "left": left, "right": right}}


def host_nat_table(targets: Iterable[tuple[str, str | None, int, str, int]], *, mgmt_port: str,
                   mgmt_ip: str | None) -> NftTable:
    """The node's own connections to its NodePorts and to external IPs, DNATed to the ClusterIP.

    A process on the node that connects to ``<its own IP>:<nodePort>`` never reaches the gateway
    bridge (the kernel delivers the packet locally, and nothing listens), and one connecting to a
    service's external IP would leave through the uplink; ovn-kubernetes DNATs both in the host's
    OUTPUT path to the ClusterIP, which the host reaches through the management port. Those
    connections still carry the node's address as source: SNAT them to the management port's IP
    as they leave through it, so that a backend on another node answers through the cluster
    router and not through its own gateway router (which would SNAT the reply to its node's IP).
    """
    payload_daddr = {"payload": {"protocol": "ip", "field": "daddr"}}
    rules = []
    for protocol, ip, port, cluster_ip, service_port in targets:
        where = ([_match({"fib": {"result": "type", "flags": ["daddr"]}}, "local"),
                  _match(payload_daddr, {"prefix": {"addr": "127.0.0.0", "len": 8}}, "!=")]
                 if ip is None else [_match(payload_daddr, ip)])
        rules.append(NftRule(expr=(*where, _match({"meta": {"key": "l4proto"}}, protocol),
                                   _match({"payload": {"protocol": "th", "field": "dport"}}, port),
                                   {"dnat": {"addr": cluster_ip, "port": service_port}})))
    chains = [NftChain(name="host-to-services", rules=tuple(rules), type="nat", hook="output", priority=-100)]
    if mgmt_ip is not None:
        chains.append(NftChain(name="host-to-services-snat", type="nat", hook="postrouting", priority=100, rules=(
            NftRule(expr=(_match({"meta": {"key": "oifname"}}, mgmt_port),
                          _match({"ct": {"key": "status"}}, "dnat", "in"),
                          _match({"payload": {"protocol": "ip", "field": "saddr"}}, mgmt_ip, "!="),
                          {"snat": {"addr": mgmt_ip}})),)))
    return NftTable(chains=tuple(chains), family="ip")


def _steering_fields(service: Mapping[str, Any]) -> Any:
    spec = model.spec(service)
    return (spec.get("type"), spec.get("ports"), spec.get("externalIPs"), spec.get("clusterIP"),
            (service.get("status") or {}).get("loadBalancer"), model.wants_load_balancers(service))


def steering_changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Watch filter: only what :func:`steering_targets` reads."""
    return bool(_steering_fields(old) != _steering_fields(new))


class NodePortSteering:
    """The ``nodeport`` node controller (see the module docstring)."""

    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        self.bridge = ctx.gateway_bridge
        # Bumped by every Service event the watch maps (see _service_keys): together with the ports
        # and IPs it tells a reconcile queued by an unrelated OVS change (a pod port) to do nothing.
        self._services_seen = 0
        self._inputs: tuple[Any, ...] | None = None
        self._warned_no_nft = False

    @property
    def services(self) -> Any:
        """The shared Services cache of the agent."""
        return self.ctx.cache(SERVICES)

    def ports(self) -> tuple[int | None, int | None]:
        """(uplink, patch) OpenFlow ports of the gateway bridge; ``None`` while a port is missing."""
        patch_name = patch_port_name(self.bridge, self.ctx.node_name)
        uplink: int | None = None
        patch: int | None = None
        for iface in self.ctx.ovs.bridge_ports(self.bridge):
            ofport = iface.ofport if iface.ofport is not None and iface.ofport > 0 else None
            if iface.name == patch_name:
                patch = ofport
            elif iface.type in ("", "system") and iface.name != self.bridge:
                uplink = ofport
        return uplink, patch

    def node_ips(self) -> list[ipaddress.IPv4Address]:
        return sorted({a.ip for a in self.ctx.net.addresses(self.bridge)
                       if isinstance(a.ip, ipaddress.IPv4Address)})

    def desired_flows(self, services: Iterable[Mapping[str, Any]] | None = None) -> list[str]:
        """The flows for ``services`` (default: the cache) and the current ports and IPs."""
        uplink, patch = self.ports()
        if uplink is None or patch is None:
            return []  # no GR on this node yet: nothing could take the traffic
        targets = steering_targets(self.services.list() if services is None else services, self.node_ips())
        return steering_flows(targets, uplink_ofport=uplink, patch_ofport=patch)

    def declare(self) -> None:
        """Set the flows from the synced cache, without writing them (``ovnk_node_setup``).

        On an agent restart core rewrites the bridge's table right after set-up; declaring the
        flows first keeps new NodePort connections flowing to OVN through the restart.
        """
        informer = self.ctx.informers.informer(SERVICES)
        if not informer.wait_for_sync(CACHE_SYNC_TIMEOUT):
            raise TimeoutError(f"the Services could not be listed within {CACHE_SYNC_TIMEOUT:.0f}s")
        self.ctx.flows.set_flows(self.bridge, FLOW_OWNER, self.desired_flows())

    def sync(self) -> bool:
        """Set and write this owner's flows; ``True`` when the bridge was written.

        Skipped when neither the Services nor the ports changed since the last successful sync (most
        OVS changes are pod ports). The node's IPs change without an event: the resync maps every
        Service through the watch again, which counts as a change, so they are read anew then.
        """
        inputs = (self._services_seen, self.ports())
        if inputs == self._inputs:
            return False
        self.sync_host_nat()
        flows = self.desired_flows()
        self.ctx.flows.set_flows(self.bridge, FLOW_OWNER, flows)
        # A no-op when the bridge already holds exactly the desired flows of every owner.
        written = self.ctx.flows.sync(self.bridge)
        if written:
            logger.info("gateway %s: %d NodePort/external-IP steering flows", self.bridge, len(flows))
        self._inputs = inputs
        return written

    def sync_host_nat(self) -> None:
        """The nftables table of :func:`host_nat_table` for the cached Services (a no-op when unchanged)."""
        if not self.ctx.nft.available():
            if not self._warned_no_nft:
                logger.warning("no nft binary: processes on this node cannot reach its NodePorts")
                self._warned_no_nft = True
            return
        mgmt_port = self.ctx.config.node.mgmt_port
        mgmt_ip = next((str(a.ip) for a in self.ctx.net.addresses(mgmt_port) if a.version == 4), None)
        table = host_nat_table(host_nat_targets(self.services.list()), mgmt_port=mgmt_port, mgmt_ip=mgmt_ip)
        try:
            self.ctx.nft.set_table(FLOW_OWNER, table)
        except NftError as exc:
            raise RuntimeError(f"host NodePort DNAT table: {exc}") from None

    def _service_keys(self, _service: Mapping[str, Any]) -> tuple[str]:
        self._services_seen += 1
        return (self.bridge,)

    def spec(self) -> ControllerSpec:
        """The node controller; the caller also queues it on OVS changes (:meth:`subscribe`)."""
        bridge = self.bridge

        def reconcile(_request: ReconcileRequest) -> None:
            self.sync()

        return ControllerSpec(
            name=CONTROLLER,
            watches=(Watch(SERVICES, keys=self._service_keys, needs_update=steering_changed),),
            reconcile=reconcile, initial_keys=lambda: [bridge], resync_period=RESYNC_INTERVAL, workers=1,
        )

    def subscribe(self) -> None:
        """Re-check on every change of the local OVS database (the patch port, ofports)."""
        bridge = self.bridge
        self.ctx.ovs.subscribe(lambda: self.ctx.enqueue(CONTROLLER, bridge))
