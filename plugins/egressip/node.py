"""EgressIP on the node agent: the health service the controller checks, and ARP for held IPs.

* The agent serves ``grpc.health.v1`` on its node's primary address
  (``[egressip] node-healthcheck-port``, 9107 by default, as upstream) for as
  long as it runs: a killed or hung agent stops answering, and the controller
  moves the node's egress IPs elsewhere.
* ARP: the gateway router of an egress node answers ARP for the egress IPs it
  SNATs to, but the shared gateway bridge gives ARP requests from the uplink
  to the host only. A node controller keeps one flow per egress IP this node
  holds (owner ``egressip`` on the gateway bridge)::

      table=0, priority=85, in_port=<uplink>, arp, arp_op=1, arp_tpa=<egress IP>
          actions=output:<patch port to br-int>

  Replies to SNATed connections need nothing more: they are replies of
  connections the gateway router committed (core's flows send them to the
  patch port), and the router's gratuitous ARPs go out like its other frames.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from collections.abc import Mapping
from typing import Any

from ovnk import ControllerSpec
from ovnk import NodeContext
from ovnk import ReconcileRequest
from ovnk import StartupError
from ovnk import Watch
from ovnk.plugins.egressip.health import HealthServer
from ovnk.plugins.egressip.health import address_of
from ovnk.plugins.egressip.selection import EGRESSIPS
from ovnk.plugins.egressip.settings import EgressIPSettings

logger = logging.getLogger(__name__)


def node_address(ctx: NodeContext) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The node's primary address: the first IPv4 address of the gateway bridge."""
    if not ctx.gateway_bridge:
        raise StartupError("EgressIP needs the shared gateway bridge: the node has none")
    for iface in ctx.net.addresses(ctx.gateway_bridge):
        if iface.ip.version == 4:
            return iface.ip
    raise StartupError(f"EgressIP: the gateway bridge {ctx.gateway_bridge} has no IPv4 address")


def health_service(ctx: NodeContext, settings: EgressIPSettings) -> HealthServer:
    """The health service of this node (run by the agent as a node manager)."""
    return HealthServer(address_of(node_address(ctx), settings.node_healthcheck_port))


FLOW_OWNER = "egressip"
ARP_PRIORITY = 85
ARP_CONTROLLER = "egressip-arp"
ARP_KEY = "arp"


def held_ips(objects: list[dict[str, object]], node: str) -> list[str]:
    """The IPv4 egress IPs ``node`` holds according to the objects' status (sorted)."""
    ips = set()
    for obj in objects:
        for item in (obj.get("status") or {}).get("items") or ():  # type: ignore[attr-defined]
            try:
                ip = ipaddress.ip_address(str(item.get("egressIP")))
            except ValueError:
                continue
            if item.get("node") == node and ip.version == 4:
                ips.add(ip)
    return [str(ip) for ip in sorted(ips)]


def arp_flows(ips: list[str], *, uplink: int, patch: int) -> list[str]:
    return [f"table=0,priority={ARP_PRIORITY},in_port={uplink},arp,arp_op=1,arp_tpa={ip} actions=output:{patch}"
            for ip in ips]


class ArpResponder:
    """The node controller keeping the ARP flows of the egress IPs this node holds."""

    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        self.bridge = ctx.gateway_bridge

    def spec(self) -> ControllerSpec:
        def status_changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
            return json.dumps(old.get("status"), sort_keys=True) != json.dumps(new.get("status"), sort_keys=True)

        # The patch port appears after the agent starts (ovn-controller creates it): OVS changes re-run.
        self.ctx.ovs.subscribe(lambda: self.ctx.enqueue(ARP_CONTROLLER, ARP_KEY))
        return ControllerSpec(name=ARP_CONTROLLER, workers=1, reconcile=self.reconcile, resync_period=15.0,
                              initial_keys=lambda: [ARP_KEY],
                              watches=(Watch(EGRESSIPS, keys=lambda _obj: [ARP_KEY], needs_update=status_changed),))

    def ports(self) -> tuple[int | None, int | None]:
        """(uplink, patch to br-int) OpenFlow ports of the gateway bridge; ``None`` while one is missing."""
        uplink = patch = None
        for iface in self.ctx.ovs.bridge_ports(self.bridge):
            if iface.ofport is None or iface.ofport <= 0:
                continue
            if iface.type == "patch":
                patch = iface.ofport
            elif iface.type in ("", "system") and iface.name != self.bridge:
                uplink = iface.ofport
        return uplink, patch

    def reconcile(self, req: ReconcileRequest) -> None:
        if not self.bridge:
            return
        uplink, patch = self.ports()
        ips = held_ips(self.ctx.cache(EGRESSIPS).list(), self.ctx.node_name)
        flows = arp_flows(ips, uplink=uplink, patch=patch) if uplink and patch else []
        if self.ctx.flows.set_flows(self.bridge, FLOW_OWNER, flows):
            self.ctx.flows.sync(self.bridge)
            logger.info("gateway %s: ARP for egress IPs %s", self.bridge, ", ".join(ips) or "(none)")
