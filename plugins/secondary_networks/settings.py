"""The ``[secondary_networks]`` settings section (upstream's ``enable-multi-network`` world).

* ``attachments``: who turns a pod's ``k8s.v1.cni.cncf.io/networks`` into CNI
  requests. ``multus`` (the default): Multus does, as on any cluster running
  ovn-kubernetes' multi-homing; it calls ``ovn-k8s-cni-overlay`` once per
  attachment with the NetworkAttachmentDefinition's config and writes
  ``k8s.v1.cni.cncf.io/network-status``. ``agent``: for clusters without
  Multus, the node agent does the same itself when the runtime asks for the
  pod's default network (see :mod:`.node`).
* ``bridge-mappings``: ``<physical network>:<OVS bridge>`` pairs the node
  agent adds to ``ovn-bridge-mappings`` on every node (localnet networks name
  the physical network with ``physicalNetworkName``, by default their name).
* ``bridge-uplinks``: ``<OVS bridge>:<interface>`` pairs: the node agent creates
  the bridge with that interface as its port to the physical network. A mapped
  bridge without an uplink entry must exist already (made by the operator).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from ovnk import names
from ovnk import setting

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
MAX_IFNAME = 15

Pairs = tuple[tuple[str, str], ...]


def parse_pairs(text: str) -> Pairs:
    """``a:b, c:d`` -> ``(("a", "b"), ("c", "d"))``; raises ``ValueError`` naming a bad item."""
    pairs = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        left, sep, right = item.partition(":")
        if not sep or not left.strip() or not right.strip() or ":" in right:
            raise ValueError(f"{item!r} is not <name>:<name>")
        pairs.append((left.strip(), right.strip()))
    return tuple(pairs)


def _check_mappings(value: Pairs) -> str | None:
    seen = set()
    for physnet, bridge in value:
        if not _NAME.match(physnet) or not _NAME.match(bridge) or len(bridge) > MAX_IFNAME:
            return f"{physnet}:{bridge}: names are letters, digits, '_', '.', '-'; a bridge at most {MAX_IFNAME}"
        if physnet == names.PHYSNET:
            return f"{physnet!r} is the default network's physical network (core maps it to the gateway bridge)"
        if physnet in seen:
            return f"physical network {physnet!r} is mapped twice"
        seen.add(physnet)
    return None


def _check_uplinks(value: Pairs) -> str | None:
    seen = set()
    for bridge, interface in value:
        if not _NAME.match(bridge) or not _NAME.match(interface) or max(len(bridge), len(interface)) > MAX_IFNAME:
            return f"{bridge}:{interface}: names are letters, digits, '_', '.', '-', at most {MAX_IFNAME}"
        if bridge in seen:
            return f"bridge {bridge!r} has two uplinks"
        seen.add(bridge)
    return None


@dataclass(frozen=True)
class SecondaryNetworksSettings:
    """How attachments reach the CNI server, and the nodes' physical networks for localnet."""

    attachments: Literal["multus", "agent"] = setting(
        "multus",
        help="who performs a pod's network attachments: multus (Multus calls ovn-k8s-cni-overlay per "
             "NetworkAttachmentDefinition) or agent (the node agent does, for clusters without Multus)")
    bridge_mappings: Pairs = setting(
        (), parse=parse_pairs, check=_check_mappings,
        help="physical networks of localnet networks: <physical network>:<OVS bridge>, comma separated; "
             "added to every node's ovn-bridge-mappings")
    bridge_uplinks: Pairs = setting(
        (), parse=parse_pairs, check=_check_uplinks,
        help="<OVS bridge>:<interface>, comma separated: the node agent creates the bridge with that "
             "interface as its port to the physical network (a mapped bridge without one must exist)")

    def validate(self) -> None:
        mapped = {bridge for _, bridge in self.bridge_mappings}
        stray = sorted(bridge for bridge, _ in self.bridge_uplinks if bridge not in mapped)
        if stray:
            raise ValueError(f"bridge-uplinks names bridge(s) {', '.join(stray)} that no bridge-mappings entry maps")

    def mappings(self) -> dict[str, str]:
        return dict(self.bridge_mappings)

    def uplinks(self) -> dict[str, str]:
        return dict(self.bridge_uplinks)
