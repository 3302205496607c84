"""Core plugin: the default network and the veth driver of the CNI path (both ``trylast``).

Plugins answering ``ovnk_cni_network`` or ``ovnk_cni_interface_driver``
first (secondary networks, hardware offload) take precedence; every request
nobody else claims is the default network, wired with a veth pair.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from ovnk.cni.types import CniRequest
from ovnk.core.hookspecs import hookimpl
from ovnk.core.topology import annotations as ann
from ovnk.core.topology import naming as n

if TYPE_CHECKING:
    from ovnk.core.node.context import NodeContext
    from ovnk.core.node.wiring import CniNetwork
    from ovnk.core.node.wiring import InterfaceDriver
    from ovnk.core.node.wiring import VethDriver

# The node wiring (and pyroute2 with it, ~14 MB) is imported on the node's first CNI request only:
# the controller process loads this default plugin too and never calls it.


@functools.cache
def _veth() -> VethDriver:
    from ovnk.core.node.wiring import VethDriver

    return VethDriver()


def default_network(ctx: NodeContext, request: CniRequest) -> CniNetwork:
    """The default network: annotation key ``default``, iface-id ``<ns>_<pod>``, ``[default] mtu``."""
    from ovnk.core.node.wiring import CniNetwork

    iface_id = ""
    if request.pod_namespace and request.pod_name:
        iface_id = n.pod_port(request.pod_namespace, request.pod_name)
    return CniNetwork(annotation_key=ann.DEFAULT, iface_id=iface_id, ifname=request.ifname,
                      mtu=ctx.config.default.mtu)


@hookimpl(trylast=True)
def ovnk_cni_network(ctx: NodeContext, request: CniRequest) -> CniNetwork | None:
    return default_network(ctx, request)


@hookimpl(trylast=True)
def ovnk_cni_interface_driver(ctx: NodeContext, request: CniRequest, network: CniNetwork) -> InterfaceDriver | None:
    return _veth()
