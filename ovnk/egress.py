"""Rows the egress features (EgressIP, EgressService) share (public).

The priority-102 no-reroute policies and the ``node-ips`` address set are
needed by both features and written identically by whichever is enabled; both
claim :data:`SHARED_OWNERS` with ``claims.owner_type(owner, shared=True)`` so
the rows stay while either is on. See :mod:`ovnk.core.topology.egress`.
"""

from __future__ import annotations

from ovnk.core.topology.egress import NO_REROUTE_POLICY
from ovnk.core.topology.egress import NODE_IPS
from ovnk.core.topology.egress import NODE_IPS_SET
from ovnk.core.topology.egress import POD_TO_JOIN
from ovnk.core.topology.egress import POD_TO_POD
from ovnk.core.topology.egress import REPLY_TRAFFIC
from ovnk.core.topology.egress import REPLY_TRAFFIC_MARK
from ovnk.core.topology.egress import SHARED_OWNERS
from ovnk.core.topology.egress import SharedRow
from ovnk.core.topology.egress import all_node_addresses
from ovnk.core.topology.egress import family_name
from ovnk.core.topology.egress import node_host_addresses
from ovnk.core.topology.egress import node_ip_addresses
from ovnk.core.topology.egress import node_ips_set
from ovnk.core.topology.egress import shared_rows
from ovnk.core.topology.egress import write_shared_rows

__all__ = [
    "NODE_IPS",
    "NODE_IPS_SET",
    "NO_REROUTE_POLICY",
    "POD_TO_JOIN",
    "POD_TO_POD",
    "REPLY_TRAFFIC",
    "REPLY_TRAFFIC_MARK",
    "SHARED_OWNERS",
    "SharedRow",
    "all_node_addresses",
    "family_name",
    "node_host_addresses",
    "node_ip_addresses",
    "node_ips_set",
    "shared_rows",
    "write_shared_rows",
]
