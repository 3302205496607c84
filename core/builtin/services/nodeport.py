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
        flows = self.desired_flows()
        self.ctx.flows.set_flows(self.bridge, FLOW_OWNER, flows)
        # A no-op when the bridge already holds exactly the desired flows of every owner.
        written = self.ctx.flows.sync(self.bridge)
        if written:
            logger.info("gateway %s: %d NodePort/external-IP steering flows", self.bridge, len(flows))
        self._inputs = inputs
        return written

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
