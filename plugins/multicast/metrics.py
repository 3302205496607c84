"""Multicast's Prometheus metrics (upstream has none of its own; what an operator asks first)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client import Gauge


@dataclass(frozen=True)
class MulticastMetrics:
    """The collectors, created once per process on its registry."""

    enabled_namespaces: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry, *, enabled_namespaces: Callable[[], float]) -> MulticastMetrics:
        """``enabled_namespaces`` is called when the registry is scraped (0 before the caches exist)."""
        gauge = Gauge("ovnk_multicast_enabled_namespaces",
                      "Namespaces whose k8s.ovn.org/multicast-enabled annotation is \"true\".", registry=registry)
        gauge.set_function(enabled_namespaces)
        return cls(enabled_namespaces=gauge)
