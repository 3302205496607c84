"""Secondary networks' Prometheus metrics, read from the running networks at scrape time.

``ovnk_secondary_networks_networks{topology}``: networks running now (upstream exposes the same
through its per-network controllers' existence); ``ovnk_secondary_networks_attachments{network}``:
pod attachments programmed per network. A collector, not gauges kept up to date: the numbers are
those of the registry (:class:`~.state.Registry`) when Prometheus asks.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ovnk.plugins.secondary_networks import models
from ovnk.plugins.secondary_networks.state import Registry


class NetworksCollector(Collector):
    """Yields both gauges from whatever registry ``source`` returns (none before the controller starts)."""

    def __init__(self, source: Callable[[], Registry | None]) -> None:
        self.source = source

    def collect(self) -> Iterator[GaugeMetricFamily]:
        networks = GaugeMetricFamily("ovnk_secondary_networks_networks", "Secondary networks running now.",
                                     labels=["topology"])
        attachments = GaugeMetricFamily("ovnk_secondary_networks_attachments",
                                        "Pod attachments programmed on a secondary network.", labels=["network"])
        registry = self.source()
        running = registry.networks() if registry is not None else []
        for topology in models.TOPOLOGIES:
            networks.add_metric([topology], sum(1 for n in running if n.spec.topology == topology))
        for network in running:
            attachments.add_metric([network.spec.name], sum(len(keys) for keys in network.attached().values()))
        yield networks
        yield attachments


def register(registry: CollectorRegistry, source: Callable[[], Registry | None]) -> None:
    registry.register(NetworksCollector(source))
