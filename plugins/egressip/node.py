"""EgressIP on the node agent: the health service the controller checks.

The agent serves ``grpc.health.v1`` on its node's primary address
(``[egressip] node-healthcheck-port``, 9107 by default, as upstream) for as long
as it runs: a killed or hung agent stops answering, and the controller moves
the node's egress IPs elsewhere.
"""

from __future__ import annotations

import ipaddress
import logging

from ovnk import NodeContext
from ovnk import StartupError
from ovnk.plugins.egressip.health import HealthServer
from ovnk.plugins.egressip.health import address_of
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
