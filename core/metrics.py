"""Prometheus registry factory, core metric definitions and the upstream-compatible names.

Every process creates its own :class:`prometheus_client.CollectorRegistry`
(never the library's global one) and passes it to ``ovnk_register_metrics``.
ovnk's own names follow ``ovnk_<subsystem>_<name>_<unit>``; labels come from a
small fixed set (``controller``, ``plugin``, ``owner``, ``result``, ``command``).

Next to them each process serves the ovn-kubernetes names an operator's
dashboards and alerts query (``ovnkube_controller_*``, ``ovnkube_node_*``,
``ovnkube_resource_retry_failures_total``, ``ovn_db_e2e_timestamp``), with
upstream's labels and buckets where the meaning is the same; docs/metrics.md
lists which are kept, renamed or not applicable. They are created once per
registry (:func:`controller_metrics`, :func:`node_metrics`,
:func:`retry_failures`), so any part of a process can observe them.
"""

from __future__ import annotations

import datetime
import platform
import threading
import weakref
from collections.abc import Callable
from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client import Counter
from prometheus_client import Gauge
from prometheus_client import Histogram

import ovnk

#: Upstream's ``prometheus.ExponentialBuckets(.1, 2, 15)``: 0.1 s to about 27 min.
EXPONENTIAL_BUCKETS = tuple(round(0.1 * 2 ** i, 4) for i in range(15))
#: Upstream's network programming buckets: 0.25 s, 0.5 s, every second to 59 s, every 5 s to
#: 115 s, every 30 s to 7 min.
NETWORK_PROGRAMMING_BUCKETS = (0.25, 0.5, *(float(s) for s in range(1, 60)), *(float(s) for s in range(60, 120, 5)),
                               *(float(s) for s in range(120, 421, 30)))

_lock = threading.Lock()
_controller: weakref.WeakKeyDictionary[CollectorRegistry, ControllerMetrics] = weakref.WeakKeyDictionary()
_node: weakref.WeakKeyDictionary[CollectorRegistry, NodeMetrics] = weakref.WeakKeyDictionary()
_retry: weakref.WeakKeyDictionary[CollectorRegistry, Counter] = weakref.WeakKeyDictionary()


def new_registry(*, component: str) -> CollectorRegistry:
    """A fresh registry carrying ``ovnk_build_info{version, python, component} 1``."""
    registry = CollectorRegistry(auto_describe=True)
    info = Gauge(
        "ovnk_build_info",
        "Build information of this ovnk process (always 1).",
        ["version", "python", "component"],
        registry=registry,
    )
    info.labels(version=ovnk.__version__, python=platform.python_version(), component=component).set(1)
    return registry


class ControllerMetrics:
    """ovn-kubernetes' ``ovnkube_controller_*`` metrics of the controller process."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.leader = Gauge("ovnkube_controller_leader",
                            "Identifies whether this instance of the controller is the leader (1) or not (0).",
                            registry=registry)
        self.ready_duration = Gauge("ovnkube_controller_ready_duration_seconds",
                                    "The duration for the controller to get to ready state (start to workers running).",
                                    registry=registry)
        self.pod_creation_latency = Histogram(
            "ovnkube_controller_pod_creation_latency_seconds",
            "The duration between a pod being scheduled and completing its logical switch port configuration.",
            buckets=EXPONENTIAL_BUCKETS, registry=registry)
        self.network_programming = Histogram(
            "ovnkube_controller_network_programming_duration_seconds",
            "The duration to apply network configuration for a kind (pod, service, networkpolicy...): from the "
            "Kubernetes event to its NB transaction committed.",
            ["kind"], buckets=NETWORK_PROGRAMMING_BUCKETS, registry=registry)
        self.nb_e2e_timestamp = Gauge("ovnkube_controller_nb_e2e_timestamp",
                                      "The current e2e-timestamp value as written to the northbound database.",
                                      registry=registry)
        self.sb_e2e_timestamp = Gauge("ovnkube_controller_sb_e2e_timestamp",
                                      "The current e2e-timestamp value as observed in the southbound database.",
                                      registry=registry)
        self.db_e2e_timestamp = Gauge("ovn_db_e2e_timestamp",
                                      "The current e2e-timestamp value as observed in this instance of the database.",
                                      ["db_name"], registry=registry)
        self.db_server_role = Gauge("ovn_db_cluster_server_role",
                                    "1 for the role each NB/SB server has (leader, follower, standalone, relay, "
                                    "unreachable), read from its _Server database by the leading controller.",
                                    ["db_name", "server", "server_role"], registry=registry)
        self.db_server_connected = Gauge("ovn_db_cluster_server_connected",
                                         "1 while the NB/SB server answers and (clustered) is connected to its cluster.",
                                         ["db_name", "server"], registry=registry)


class NodeMetrics:
    """ovn-kubernetes' ``ovnkube_node_*`` metrics of the node agent."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.cni_request_duration = Histogram("ovnkube_node_cni_request_duration_seconds",
                                              "The duration of CNI server requests.", ["command", "err"],
                                              buckets=EXPONENTIAL_BUCKETS, registry=registry)
        self.ready_duration = Gauge("ovnkube_node_ready_duration_seconds",
                                    "The duration for the node to get to ready state.", registry=registry)
        self.sb_connected = Gauge("ovn_controller_southbound_database_connected",
                                  "Whether this node's ovn-controller is connected to the Southbound database (1) "
                                  "or not (0), asked at scrape time.", registry=registry)


def _once(table: weakref.WeakKeyDictionary[CollectorRegistry, Any], registry: CollectorRegistry,
          make: Callable[[CollectorRegistry], Any]) -> Any:
    with _lock:
        found = table.get(registry)
        if found is None:
            found = table[registry] = make(registry)
        return found


def controller_metrics(registry: CollectorRegistry) -> ControllerMetrics:
    """The controller's upstream-compatible collectors on ``registry`` (created on first use)."""
    metrics: ControllerMetrics = _once(_controller, registry, ControllerMetrics)
    return metrics


def node_metrics(registry: CollectorRegistry) -> NodeMetrics:
    """The node agent's upstream-compatible collectors on ``registry`` (created on first use)."""
    metrics: NodeMetrics = _once(_node, registry, NodeMetrics)
    return metrics


def retry_failures(registry: CollectorRegistry) -> Counter:
    """``ovnkube_resource_retry_failures_total``: keys given up after the last retry (controller and node)."""
    def make(reg: CollectorRegistry) -> Counter:
        return Counter("ovnkube_resource_retry_failures_total",
                       "The total number of times processing a Kubernetes resource reached the maximum retry limit "
                       "and was no longer processed.", registry=reg)
    counter: Counter = _once(_retry, registry, make)
    return counter


def k8s_time(text: str | None) -> float | None:
    """Seconds since the epoch of a Kubernetes RFC 3339 timestamp (``2026-12-03T09:00:00Z``); ``None`` if absent."""
    if not text:
        return None
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def pod_scheduled_at(pod: Mapping[str, Any]) -> float | None:
    """When the pod was bound to its node: the ``PodScheduled`` condition, else its creation time.

    Pods created with ``spec.nodeName`` skip the scheduler and have no ``PodScheduled`` condition
    until the kubelet reports: for them the creation time is when they were bound.
    """
    for condition in (pod.get("status") or {}).get("conditions") or ():
        if condition.get("type") == "PodScheduled":
            if condition.get("status") != "True":
                return None
            return k8s_time(condition.get("lastTransitionTime"))
    return k8s_time(pod.get("metadata", {}).get("creationTimestamp"))
