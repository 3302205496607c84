"""EgressFirewall's Prometheus metrics (upstream: ``ovnkube_controller_num_egress_firewalls``,
``ovnkube_controller_num_egress_firewall_rules``; the DNS ones are this implementation's)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client import Counter
from prometheus_client import Gauge
from prometheus_client import Histogram

_DNS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5)


@dataclass(frozen=True)
class EgressFirewallMetrics:
    """The collectors, created once per process on its registry."""

    firewalls: Gauge
    rules: Gauge
    # The same two counts under upstream's names, so ovn-kubernetes dashboards and alerts work.
    upstream_firewalls: Gauge
    upstream_rules: Gauge
    dns_names: Gauge
    dns_resolution: Histogram
    dns_failures: Counter

    def set_counts(self, *, firewalls: int, rules: int) -> None:
        """Applied objects and their rules, under both names."""
        for gauge in (self.firewalls, self.upstream_firewalls):
            gauge.set(firewalls)
        for gauge in (self.rules, self.upstream_rules):
            gauge.set(rules)

    @classmethod
    def create(cls, registry: CollectorRegistry) -> EgressFirewallMetrics:
        return cls(
            firewalls=Gauge("ovnk_egressfirewall_firewalls", "EgressFirewall objects whose rules are applied.",
                            registry=registry),
            rules=Gauge("ovnk_egressfirewall_rules", "Rules of the applied EgressFirewall objects.",
                        registry=registry),
            upstream_firewalls=Gauge("ovnkube_controller_num_egress_firewalls",
                                     "EgressFirewall objects whose rules are applied (upstream name).",
                                     registry=registry),
            upstream_rules=Gauge("ovnkube_controller_num_egress_firewall_rules",
                                 "Rules of the applied EgressFirewall objects (upstream name).", registry=registry),
            dns_names=Gauge("ovnk_egressfirewall_dns_names", "Distinct DNS names the rules resolve.",
                            registry=registry),
            dns_resolution=Histogram("ovnk_egressfirewall_dns_resolution_seconds",
                                     "Time one resolution of a rule's DNS name took (every query of the name).",
                                     registry=registry, buckets=_DNS_BUCKETS),
            dns_failures=Counter("ovnk_egressfirewall_dns_resolution_failures_total",
                                 "Resolutions of a rule's DNS name that failed, by reason "
                                 "(timeout, servfail, nxdomain, error).", ["reason"], registry=registry),
        )
