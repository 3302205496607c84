"""The ``[hybrid_overlay]`` settings section (ovn-kubernetes' ``[hybridoverlay]`` and ``no-hostsubnet-nodes``)."""

from __future__ import annotations

from dataclasses import dataclass

from ovnk import setting
from ovnk.plugins.hybrid_overlay.models import HybridOverlayError
from ovnk.plugins.hybrid_overlay.models import HybridSubnet
from ovnk.plugins.hybrid_overlay.models import parse_cluster_subnets
from ovnk.plugins.hybrid_overlay.models import parse_node_selector


def _port(value: int) -> str | None:
    return None if 0 < value < 65536 else "must be a UDP port (1-65535)"


def _selector(value: str) -> str | None:
    try:
        parse_node_selector(value)
    except HybridOverlayError as exc:
        return str(exc)
    return None


def _subnets(text: str) -> tuple[HybridSubnet, ...]:
    try:
        return parse_cluster_subnets(text)
    except HybridOverlayError as exc:
        raise ValueError(str(exc)) from exc


@dataclass(frozen=True)
class HybridOverlaySettings:
    """Where foreign nodes' pod subnets come from, which nodes are foreign, and the VXLAN port.

    Upstream: ``[hybridoverlay] cluster-subnets`` and ``hybrid-overlay-vxlan-port``,
    ``[kubernetes] no-hostsubnet-nodes``.
    """

    cluster_subnets: tuple[HybridSubnet, ...] = setting(
        (), parse=_subnets,
        help="foreign nodes' pod subnets as CIDR/hostPrefix, comma separated (10.132.0.0/14/23); "
             "empty: each foreign node's k8s.ovn.org/hybrid-overlay-node-subnet is set by someone else")
    vxlan_port: int = setting(4789, check=_port, help="UDP port of the VXLAN tunnels to foreign nodes")
    node_selector: str = setting(
        "kubernetes.io/os=windows", check=_selector,
        help="label selector of the foreign nodes (no OVN, no host subnet), e.g. kubernetes.io/os=windows")
