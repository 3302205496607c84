"""The hybrid overlay's Prometheus metrics.

Upstream has no hybrid-overlay-specific metrics; these mirror the meaning of its
host-subnet ones (``ovnkube_clustermanager_num_v4_host_subnets`` /
``…_allocated_v4_host_subnets``) for the hybrid subnets, plus what a node
tunnels to.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client import Counter
from prometheus_client import Gauge


@dataclass(frozen=True)
class HybridOverlayMetrics:
    """The collectors, created once per process on its registry (controller ones stay 0 on a node and
    the other way round)."""

    foreign_nodes: Gauge
    subnets: Gauge
    allocated_subnets: Gauge
    allocation_failures: Counter
    tunnels: Gauge
    flows: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry) -> HybridOverlayMetrics:
        return cls(
            foreign_nodes=Gauge("ovnk_hybrid_overlay_foreign_nodes",
                                "Nodes the node selector makes foreign (no OVN, no host subnet).", registry=registry),
            subnets=Gauge("ovnk_hybrid_overlay_subnets",
                          "Foreign-node subnets the hybrid cluster subnets hold in all.", registry=registry),
            allocated_subnets=Gauge("ovnk_hybrid_overlay_allocated_subnets",
                                    "Foreign-node subnets allocated now.", registry=registry),
            allocation_failures=Counter("ovnk_hybrid_overlay_allocation_failures_total",
                                        "Foreign nodes that could not get a subnet, or OVN nodes a DR IP.",
                                        registry=registry),
            tunnels=Gauge("ovnk_hybrid_overlay_tunnels",
                          "Foreign nodes this node has VXLAN flows to (node agent).", registry=registry),
            flows=Gauge("ovnk_hybrid_overlay_flows", "Flows of the hybrid overlay on br-ext (node agent).",
                        registry=registry),
        )
