"""hwoffload's Prometheus metrics on the node agent (meanings as upstream's ``ovs_vswitchd_hw_offload``
and ``ovs_vswitchd_tc_policy``, plus the VFs this agent wires)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client import Counter
from prometheus_client import Gauge

TC_POLICIES = ("none", "skip_sw", "skip_hw")


@dataclass(frozen=True)
class HwOffloadMetrics:
    """The collectors, created once per process on its registry."""

    enabled: Gauge
    active: Gauge
    tc_policy: Gauge
    vfs: Gauge
    wired: Counter
    errors: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> HwOffloadMetrics:
        return cls(
            enabled=Gauge("ovnk_hwoffload_enabled",
                          "1 when Open_vSwitch other_config:hw-offload is true in the local database.",
                          registry=registry),
            active=Gauge("ovnk_hwoffload_active",
                         "1 when offload is in effect: hw-offload set and a datapath that offloads (system).",
                         registry=registry),
            tc_policy=Gauge("ovnk_hwoffload_tc_policy", "Open_vSwitch other_config:tc-policy (1 for the one set).",
                            ["policy"], registry=registry),
            vfs=Gauge("ovnk_hwoffload_vfs", "VFs of the switchdev PFs by state (free: on the host; in_use: "
                                            "wired into a pod).", ["state"], registry=registry),
            wired=Counter("ovnk_hwoffload_vf_operations_total", "VF pod interfaces wired (add) and returned (del).",
                          ["operation"], registry=registry),
            errors=Counter("ovnk_hwoffload_cni_errors_total",
                           "CNI requests with a deviceID that failed, by reason.", ["reason"], registry=registry),
        )
