"""ovn-kubernetes' metric names from a real controller (API server, NB, northd, SB): the queries of an
upstream dashboard (pod creation latency, network programming) and alerts (leader, e2e timestamps,
retry failures) return data."""

from __future__ import annotations

import time
import urllib.request

import pytest

from ovnk.core.kube.resources import NETWORKPOLICIES
from ovnk_lab.procs import free_port
from tests.functional.topology.conftest import ClusterEnv

pytestmark = [pytest.mark.kube, pytest.mark.ovn]


def wait_for(what: str, check: object, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def scrape(port: int) -> dict[str, float]:
    """``/metrics`` as {sample line without value: value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def test_upstream_controller_metrics_are_served_with_data(env: ClusterEnv) -> None:
    port = free_port()
    env.start_controller(f"controller.metrics-bind-address=127.0.0.1:{port}",
                         "controller.e2e-timestamp-interval=1")
    env.create_node("met-a", 0)
    ns = f"t-met-{int(time.time() * 1000) % 100000}"
    env.create_namespace(ns)
    for index in range(3):
        env.create_pod(ns, f"p{index}", "met-a")
    env.client.create(NETWORKPOLICIES, {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                                        "metadata": {"name": "deny", "namespace": ns},
                                        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}, namespace=ns)
    env.wait_idle()

    def samples_ready() -> bool:
        got = scrape(port)
        return (got.get("ovnkube_controller_pod_creation_latency_seconds_count", 0) >= 3
                and got.get('ovnkube_controller_network_programming_duration_seconds_count{kind="pod"}', 0) >= 3
                and got.get('ovnkube_controller_network_programming_duration_seconds_count{kind="networkpolicy"}', 0) >= 1
                and got.get("ovnkube_controller_sb_e2e_timestamp", 0) > 0)
    wait_for("pod latency, programming and e2e timestamp samples", samples_ready)
    got = scrape(port)
    now = time.time()
    assert got["ovnkube_controller_leader"] == 1 and got["ovnk_controller_leader"] == 1
    assert 0 < got["ovnkube_controller_ready_duration_seconds"] < 120
    # Pods with spec.nodeName: latency from creation; well inside upstream's first buckets on an idle machine.
    assert got['ovnkube_controller_pod_creation_latency_seconds_bucket{le="+Inf"}'] >= 3
    assert 'ovnkube_controller_pod_creation_latency_seconds_bucket{le="0.1"}' in got  # upstream's buckets
    assert 'ovnkube_controller_network_programming_duration_seconds_bucket{kind="pod",le="0.25"}' in got
    # The probe wrote NB_Global, northd copied it to SB_Global: both are recent and agree within a round.
    nb_ts, sb_ts = got["ovnkube_controller_nb_e2e_timestamp"], got["ovnkube_controller_sb_e2e_timestamp"]
    assert now - 30 < nb_ts <= now + 1 and now - 30 < sb_ts <= nb_ts, (nb_ts, sb_ts, now)
    assert got['ovn_db_e2e_timestamp{db_name="OVN_Northbound"}'] > 0
    assert "ovnkube_resource_retry_failures_total" in got
    nb_server = env.central.nb_address
    assert got[f'ovn_db_cluster_server_role{{db_name="OVN_Northbound",server="{nb_server}",server_role="standalone"}}'] == 1
    assert got[f'ovn_db_cluster_server_connected{{db_name="OVN_Northbound",server="{nb_server}"}}'] == 1
    options = env.central.nbctl("get", "NB_Global", ".", "options:e2e_timestamp").strip().strip('"')
    assert now - 30 < float(options) <= now + 1

    # Without northd SB stops following NB: the lag the "e2e timestamp stale" alert watches grows.
    assert env.central.northd is not None
    env.central.northd.stop()
    frozen = scrape(port)["ovnkube_controller_sb_e2e_timestamp"]
    wait_for("NB to run ahead of SB", lambda: scrape(port)["ovnkube_controller_nb_e2e_timestamp"] >= frozen + 3)
    assert scrape(port)["ovnkube_controller_sb_e2e_timestamp"] == frozen
