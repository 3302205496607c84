"""EgressService's Prometheus metrics (upstream has none of its own; these say what an operator asks:
how many services have a host, how often hosts move, how long a service was without one)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client import Counter
from prometheus_client import Gauge
from prometheus_client import Histogram

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64)


@dataclass(frozen=True)
class EgressServiceMetrics:
    """The collectors, created once per process on its registry."""

    allocated: Gauge
    host_moves: Counter
    unallocated_seconds: Histogram

    @classmethod
    def create(cls, registry: CollectorRegistry) -> EgressServiceMetrics:
        return cls(
            allocated=Gauge("ovnk_egressservice_allocated_services",
                            "EgressServices with sourceIPBy LoadBalancerIP that have a host node now.",
                            registry=registry),
            host_moves=Counter("ovnk_egressservice_host_moves_total",
                               "EgressServices moved from one host node to another.", registry=registry),
            unallocated_seconds=Histogram(
                "ovnk_egressservice_unallocated_seconds",
                "From an EgressService losing its host (or having none) to a new host written in its status.",
                registry=registry, buckets=_LATENCY_BUCKETS),
        )
