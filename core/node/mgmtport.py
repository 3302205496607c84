"""The management port ``ovn-k8s-mp0``: the host's leg on its node switch.

An internal port on ``br-int`` with ``external_ids:iface-id=k8s-<node>`` (the
LSP the controller creates once the MAC is published), the node subnet's
``.2``, MTU ``[default] mtu`` (as ``mtu_request``, so vswitchd keeps it) and
routes to every cluster subnet and service CIDR via the subnet's ``.1``
(``rtos-<node>``). Its MAC derives from its IP
(``0a:58:`` + the IPv4 bytes, as ovn-kubernetes does), so it is the same on
every restart and on a re-created port. Pod traffic to the node's own IP is
rerouted here by the cluster router's priority-1004 policy; the host answers
through the routes below. Idempotent: a restart changes nothing that matches.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable
from collections.abc import Sequence
from dataclasses import dataclass

from ovnk.core.config import Config
from ovnk.core.errors import StartupError
from ovnk.core.node.net import IPInterface
from ovnk.core.node.net import IPNetwork
from ovnk.core.node.net import NetFacade
from ovnk.core.node.ovs import INTEGRATION_BRIDGE
from ovnk.core.node.ovs import OvsFacade
from ovnk.core.node.ovs import OvsTimeout
from ovnk.core.topology import naming as n

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MgmtPortInfo:
    name: str
    mac: str
    addresses: tuple[IPInterface, ...]


def wanted_routes(config: Config, subnets: Sequence[IPNetwork]) -> list[tuple[IPNetwork, ipaddress.IPv4Address | ipaddress.IPv6Address]]:
    """(destination, via) of the management port: cluster subnets, service CIDRs, the join subnet and
    the hairpin masquerade IP via ``.1``.

    A host-network backend on this node is reached at the management port's IP
    (:mod:`ovnk.core.builtin.services.model`): connections come from the hairpin IP when the host
    itself is the client (OVN's hairpin SNAT) and from the gateway router's join IP when they
    entered through it (its ``lb_force_snat_ip``); the host answers both through the management port.
    """
    routes: list[tuple[IPNetwork, ipaddress.IPv4Address | ipaddress.IPv6Address]] = []
    for subnet in subnets:
        via = n.gateway_ip(subnet)
        destinations = [c.network for c in config.default.cluster_subnets if c.network.version == subnet.version]
        destinations += [s for s in config.kubernetes.service_cidrs if s.version == subnet.version]
        if subnet.version == 4:
            destinations.append(config.gateway.v4_join_subnet)
            destinations.append(ipaddress.ip_network(n.hairpin_ip(config.gateway.v4_masquerade_subnet)))
        routes += [(dst, via) for dst in destinations]
    return routes


#: ``(name, iface_id, mtu) -> True`` when a plugin provided the port's device (``ovnk_node_management_port``).
DeviceProvider = Callable[[str, str, int], "bool | None"]


def setup_management_port(*, config: Config, node_name: str, ovs: OvsFacade, net: NetFacade,
                          subnets: Sequence[IPNetwork], br_int_timeout: float = 120.0,
                          provider: DeviceProvider | None = None) -> MgmtPortInfo:
    """Create or fix the management port for the node's ``subnets`` (from ``k8s.ovn.org/node-subnets``).

    ``provider`` (the ``ovnk_node_management_port`` hook) may supply the device instead of core's
    internal port; core still sets its MAC, MTU, addresses and routes.
    """
    if not subnets:
        raise StartupError(f"node {node_name} has no subnet; cannot set up the management port")
    name = config.node.mgmt_port
    mac = n.mac_from_ip(n.mgmt_ip(subnets[0]))
    try:
        ovs.wait_for(f"{INTEGRATION_BRIDGE} (ovn-controller creates it)",
                     lambda: True if ovs.bridge_exists(INTEGRATION_BRIDGE) else None, timeout=br_int_timeout)
    except OvsTimeout as exc:
        raise StartupError(f"{exc}; is ovn-controller running against this OVS database?") from None
    iface_id = n.mgmt_port(node_name)
    provided = False
    if provider is not None:
        provided = bool(provider(name, iface_id, config.default.mtu))
    if provided:
        logger.info("management port %s: device provided by a plugin", name)
    else:
        # mtu_request pins the MTU: without it vswitchd resets internal ports to the smallest MTU of
        # the bridge's other ports whenever those change (pods come and go).
        ovs.ensure_port(INTEGRATION_BRIDGE, name, iface_type="internal", external_ids={"iface-id": iface_id},
                        mac=mac, mtu_request=config.default.mtu, wait_vswitchd=True)
    deadline = time.monotonic() + 10
    while net.link(name) is None:
        if time.monotonic() > deadline:
            raise StartupError(f"ovs-vswitchd did not create the management port {name}")
        time.sleep(0.02)
    net.set_link(name, mtu=config.default.mtu, mac=mac, up=True)
    if config.ovs.datapath_type == "netdev":
        net.set_tx_checksum(name, False)
    wanted = [ipaddress.ip_interface(f"{n.mgmt_ip(s)}/{s.prefixlen}") for s in subnets]
    for stale in set(net.addresses(name)) - set(wanted):
        net.delete_address(name, stale)
        logger.info("removed stale address %s from %s", stale, name)
    for address in wanted:
        if net.add_address(name, address):
            logger.info("management port %s: address %s", name, address)
    for dst, via in wanted_routes(config, subnets):
        net.ensure_route(dst, dev=name, gateway=via)
    return MgmtPortInfo(name=name, mac=mac, addresses=tuple(wanted))
