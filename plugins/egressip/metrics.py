"""EgressIP's Prometheus metrics (meanings as upstream's ``ovnkube_clustermanager_*egress_ips*`` and
``ovnkube_controller_egress_ips_*_latency_seconds``).

Where the meaning is the same, every observation also goes to ovn-kubernetes' own name (with its
buckets), so upstream dashboards and alerts work: ``ovnkube_controller_egress_ips_{assign,unassign}_latency_seconds``,
``ovnkube_clustermanager_egress_ips_rebalance_total`` and ``..._egress_ips_node_unreachable_total``
(docs/metrics.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client import Counter
from prometheus_client import Gauge
from prometheus_client import Histogram

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32)
#: Upstream's ``prometheus.ExponentialBuckets(.001, 2, 15)`` for the egress IP latencies.
_UPSTREAM_LATENCY_BUCKETS = tuple(round(0.001 * 2 ** i, 6) for i in range(15))


class _Both:
    """Forwards each observation to ovnk's collector and ovn-kubernetes' one."""

    def __init__(self, ours: Any, upstream: Any) -> None:
        self.ours = ours
        self.upstream = upstream

    def observe(self, value: float) -> None:
        self.ours.observe(value)
        self.upstream.observe(value)

    def inc(self, amount: float = 1) -> None:
        self.ours.inc(amount)
        self.upstream.inc(amount)


@dataclass(frozen=True)
class EgressIPMetrics:
    """The collectors, created once per process on its registry."""

    assigned: Gauge
    assign_latency: Any  # Histogram-like (observe)
    unassign_latency: Any
    reassignments: Any  # Counter-like (inc)
    unreachable_nodes: Gauge
    node_unreachable: Any

    @classmethod
    def create(cls, registry: CollectorRegistry) -> EgressIPMetrics:
        return cls(
            assigned=Gauge("ovnk_egressip_assigned_ips", "Egress IPs held by a node right now.",
                           registry=registry),
            assign_latency=_Both(Histogram(
                "ovnk_egressip_assign_latency_seconds",
                "From a change that assigns an egress IP to its reroute and SNAT rows committed to NB.",
                registry=registry, buckets=_LATENCY_BUCKETS), Histogram(
                "ovnkube_controller_egress_ips_assign_latency_seconds",
                "The latency of egress IP assignment to ovn nb database.",
                registry=registry, buckets=_UPSTREAM_LATENCY_BUCKETS)),
            unassign_latency=_Both(Histogram(
                "ovnk_egressip_unassign_latency_seconds",
                "From a change that unassigns an egress IP to its rows removed from NB.",
                registry=registry, buckets=_LATENCY_BUCKETS), Histogram(
                "ovnkube_controller_egress_ips_unassign_latency_seconds",
                "The latency of egress IP unassignment from ovn nb database.",
                registry=registry, buckets=_UPSTREAM_LATENCY_BUCKETS)),
            reassignments=_Both(
                Counter("ovnk_egressip_reassignments_total", "Egress IPs moved from one node to another.",
                        registry=registry),
                Counter("ovnkube_clustermanager_egress_ips_rebalance_total",
                        "The total number of times assigned egress IP(s) needed to be moved to a different node.",
                        registry=registry)),
            unreachable_nodes=Gauge("ovnk_egressip_unreachable_nodes",
                                    "Egress-assignable nodes whose health check fails now.", registry=registry),
            node_unreachable=_Both(
                Counter("ovnk_egressip_node_unreachable_total",
                        "Times an egress-assignable node stopped answering its health check.", registry=registry),
                Counter("ovnkube_clustermanager_egress_ips_node_unreachable_total",
                        "The total number of times assigned egress IP(s) were unreachable.", registry=registry)),
        )
