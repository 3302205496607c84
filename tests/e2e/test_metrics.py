"""The issue's acceptance for metrics: on the sandbox, the queries an ovn-kubernetes dashboard makes
for pod creation latency, CNI duration and network programming return data (read from the metrics
endpoints; no Prometheus needed), and the e2e-timestamp probe sees a fresh SB."""

from __future__ import annotations

import time
import urllib.request

import pytest

from ovnk_lab.sandbox import NODE_METRICS_PORT
from tests.e2e.conftest import Cluster
from tests.e2e.conftest import poll_until

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]


def scrape(address: str) -> dict[str, float]:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def series(samples: dict[str, float], prefix: str) -> dict[str, float]:
    return {k: v for k, v in samples.items() if k.startswith(prefix)}


def test_upstream_dashboard_series_have_data(cluster: Cluster, ns: str) -> None:
    box = cluster.sandbox
    leader = box.leader_controller()
    assert leader is not None, "no controller reports ovnk_controller_leader 1"
    controller = box.controller_metrics_address(leader)
    before = scrape(controller).get("ovnkube_controller_pod_creation_latency_seconds_count", 0.0)
    pods = cluster.run_pods(ns, [{"name": f"m{i}", "node": cluster.nodes[i % 2], "kind": "echo"} for i in range(2)])
    assert len(pods) == 2

    def controller_has_data() -> bool:
        got = scrape(controller)
        return (got.get("ovnkube_controller_pod_creation_latency_seconds_count", 0) >= before + 2
                and got.get('ovnkube_controller_network_programming_duration_seconds_count{kind="pod"}', 0) > 0)
    poll_until("controller samples for the new pods", controller_has_data, timeout=60, interval=1)
    got = scrape(controller)
    buckets = series(got, "ovnkube_controller_pod_creation_latency_seconds_bucket")
    assert buckets['ovnkube_controller_pod_creation_latency_seconds_bucket{le="+Inf"}'] >= 2 and len(buckets) == 16
    assert got["ovnkube_controller_leader"] == 1
    now = time.time()
    # The probe runs every 30 s: SB holds a value written at most a round (plus northd's copy) ago.
    assert now - 90 < got["ovnkube_controller_sb_e2e_timestamp"] <= got["ovnkube_controller_nb_e2e_timestamp"] + 1

    for node in box.cluster.nodes:
        node_samples = scrape(f"{node.ip}:{NODE_METRICS_PORT}")
        adds = node_samples.get('ovnkube_node_cni_request_duration_seconds_count{command="ADD",err="false"}', 0)
        assert adds >= 1, f"{node.name}: no successful CNI ADD in ovnkube_node_cni_request_duration_seconds"
        assert node_samples["ovnkube_node_ready_duration_seconds"] > 0
        assert not series(node_samples, "ovnk_controller_"), "the node agent serves the controller's names"
