"""EgressIP's Prometheus metrics (meanings as upstream's ``ovnkube_clustermanager_*egress_ips*`` and
``ovnkube_controller_egress_ips_*_latency_seconds``)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client import Counter
from prometheus_client import Gauge
from prometheus_client import Histogram

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32)


@dataclass(frozen=True)
class EgressIPMetrics:
    """The collectors, created once per process on its registry."""

    assigned: Gauge
    assign_latency: Histogram
    unassign_latency: Histogram
    reassignments: Counter
    unreachable_nodes: Gauge
    node_unreachable: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> EgressIPMetrics:
        return cls(
            assigned=Gauge("ovnk_egressip_assigned_ips", "Egress IPs held by a node right now.",
                           registry=registry),
            assign_latency=Histogram(
                "ovnk_egressip_assign_latency_seconds",
                "From a change that assigns an egress IP to its reroute and SNAT rows committed to NB.",
                registry=registry, buckets=_LATENCY_BUCKETS),
            unassign_latency=Histogram(
                "ovnk_egressip_unassign_latency_seconds",
                "From a change that unassigns an egress IP to its rows removed from NB.",
                registry=registry, buckets=_LATENCY_BUCKETS),
            reassignments=Counter("ovnk_egressip_reassignments_total",
                                  "Egress IPs moved from one node to another.", registry=registry),
            unreachable_nodes=Gauge("ovnk_egressip_unreachable_nodes",
                                    "Egress-assignable nodes whose health check fails now.", registry=registry),
            node_unreachable=Counter("ovnk_egressip_node_unreachable_total",
                                     "Times an egress-assignable node stopped answering its health check.",
                                     registry=registry),
        )
