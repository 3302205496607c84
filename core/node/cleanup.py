"""Start-up clean-up: remove the node state of owners that are no longer enabled.

Runs once per agent start, after the plugins are loaded and before
``ovnk_node_setup`` (:meth:`~ovnk.core.node.agent.NodeAgent.start`). For each
owner the ownership ledger (:mod:`~ovnk.core.node.owners`) lists that is
neither core nor an enabled plugin, what it created goes: its nftables table,
its ip rules and routes, its ``Open_vSwitch`` keys and bridge mappings, its flows (by cookie, on
every bridge it had flows on), the annotations it published on the Node, the ports it added to
bridges it does not own and the bridges it created; then its ledger entries. nftables tables named ``ovnk-<owner>`` of such owners
go too when the ledger does not know them (an OVS database that was
recreated; skipped on a node without ``nft``). This is how "switching a plugin off removes what it created"
holds on the node.
"""

from __future__ import annotations

import logging

from ovnk.core.node.flows import FlowManager
from ovnk.core.node.net import NetFacade
from ovnk.core.node.nft import NftFacade
from ovnk.core.node.ovs import OvsFacade
from ovnk.core.node.owners import ANNOTATIONS
from ovnk.core.node.owners import BRIDGE_MAPPINGS
from ovnk.core.node.owners import BRIDGES
from ovnk.core.node.owners import FLOWS
from ovnk.core.node.owners import IP_ROUTES
from ovnk.core.node.owners import IP_RULES
from ovnk.core.node.owners import NFT_TABLES
from ovnk.core.node.owners import OVS_KEYS
from ovnk.core.node.owners import PORTS
from ovnk.core.node.publish import NodeAnnotator

logger = logging.getLogger(__name__)


def release_disabled_owners(*, ovs: OvsFacade, net: NetFacade, nft: NftFacade, flows: FlowManager,
                            annotator: NodeAnnotator) -> dict[str, list[str]]:
    """Remove what owners that are not enabled here left on the node (module docstring).

    :returns: kind of state -> the owners whose state of that kind was released.
    """
    allowed = ovs.owners.allows
    released: dict[str, list[str]] = {}

    def gone(kind: str) -> list[str]:
        owners = sorted(owner for owner in ovs.owned(kind) if not allowed(owner))
        if owners:
            released[kind] = owners
        return owners

    for owner in gone(NFT_TABLES):
        nft.release(owner)
    kernel_tables = nft.tables() if nft.available() else {}
    for owner, family in sorted(kernel_tables.items()):
        if not allowed(owner):
            nft.release(owner, family=family)
            released.setdefault(NFT_TABLES, []).append(owner)
    for owner in sorted(set(gone(IP_RULES)) | set(gone(IP_ROUTES))):
        net.release_routing(owner)
    for owner in gone(OVS_KEYS):
        ovs.release_owned_keys(owner)
    for owner in gone(BRIDGE_MAPPINGS):
        ovs.release_bridge_mappings(owner)
    if flow_owners := gone(FLOWS):
        bridges = ovs.bridges()
        for owner in flow_owners:
            flows.release(owner, bridges=bridges)
    for owner in gone(ANNOTATIONS):
        annotator.release(owner)
    for owner in gone(PORTS):
        ovs.release_ports(owner)
    for owner in gone(BRIDGES):
        ovs.release_bridges(owner)
    for kind, owners in sorted(released.items()):
        logger.info("removed the %s state of owners that are not enabled: %s", kind, ", ".join(sorted(set(owners))))
    return released
