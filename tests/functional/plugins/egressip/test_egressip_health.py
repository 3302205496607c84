"""EgressIP node health: the agent's gRPC health service and the controller's checks, for real.

The servers listen on loopback addresses that stand in for node addresses, so
the controller's checks reach them the way they reach a node IP in the sandbox.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from ovnk.core.kube.resources import NODES
from ovnk.plugins.egressip.health import HealthServer
from ovnk.plugins.egressip.health import check
from ovnk.plugins.egressip.selection import EGRESSIPS
from ovnk_lab.procs import free_port
from tests.functional.topology.conftest import ClusterEnv

LABEL = "k8s.ovn.org/egress-assignable"


def wait_for(what: str, check_: Callable[[], Any], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check_()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {timeout:g}s"
        time.sleep(0.1)


def test_health_service_answers_serving_until_stopped() -> None:
    port = free_port()
    server = HealthServer(f"127.0.0.2:{port}")
    server.start()
    try:
        assert check(f"127.0.0.2:{port}", timeout=1.0) is True
    finally:
        server.stop()
    started = time.monotonic()
    assert check(f"127.0.0.2:{port}", timeout=1.0) is False
    assert time.monotonic() - started < 1.5, "a failed check respects its timeout"
    assert check(f"127.0.0.9:{free_port()}", timeout=0.3) is False


def loopback_node(env: ClusterEnv, name: str, address: str) -> None:
    env.client.create(NODES, {"apiVersion": "v1", "kind": "Node", "metadata": {
        "name": name, "labels": {LABEL: ""},
        "annotations": {"k8s.ovn.org/node-primary-ifaddr": json.dumps({"ipv4": f"{address}/8"})}}})
    env.client.patch(NODES, name, {"status": {"conditions": [
        {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "test",
         "lastHeartbeatTime": "2026-01-01T00:00:00Z", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}},
        subresource="status")


def status(env: ClusterEnv, name: str) -> dict[str, str]:
    obj = env.client.get(EGRESSIPS, name) or {}
    return {i["egressIP"]: i["node"] for i in (obj.get("status") or {}).get("items") or []}


@pytest.mark.kube
@pytest.mark.ovn
def test_unreachable_node_loses_its_egress_ips_and_gets_them_back(env: ClusterEnv) -> None:
    port = free_port()
    env.start_controller("plugins.enabled=egressip", "egressip.reachability-interval=0.5",
                         "egressip.reachability-total-timeout=0.3", f"egressip.node-healthcheck-port={port}")
    server = HealthServer(f"127.0.0.2:{port}")
    server.start()
    try:
        loopback_node(env, "hc-a", "127.0.0.2")
        loopback_node(env, "hc-b", "127.0.0.3")  # nobody answers for hc-b
        env.client.create(EGRESSIPS, {"apiVersion": "k8s.ovn.org/v1", "kind": "EgressIP",
                                      "metadata": {"name": "hc"},
                                      "spec": {"egressIPs": ["127.0.0.100", "127.0.0.101"],
                                               "namespaceSelector": {"matchLabels": {"x": "y"}}}})
        wait_for("only the answering node holds an IP",
                 lambda: list(status(env, "hc").values()) == ["hc-a"])
        server.stop()
        wait_for("the IPs leave the silent node", lambda: status(env, "hc") == {})
        assert env.metric("ovnk_egressip_node_unreachable_total") >= 2
        # ovn-kubernetes' name for dashboards counts the same events.
        assert env.metric("ovnkube_clustermanager_egress_ips_node_unreachable_total") == env.metric(
            "ovnk_egressip_node_unreachable_total")
        assert env.metric("ovnk_egressip_unreachable_nodes") == 2
        server = HealthServer(f"127.0.0.2:{port}")
        server.start()
        wait_for("the node answers again and gets an IP back", lambda: list(status(env, "hc").values()) == ["hc-a"])
    finally:
        server.stop()
        env.client.delete(EGRESSIPS, "hc")
