"""``ovnk trace`` on the 2-node sandbox: the command a user runs, against real pods, policies and services.

Every verdict is also checked with a real connection from the source pod
(``kubectl exec ... ovnk-echo send``), so the trace is compared with what the
datapath does, not only with itself. (The per-scenario NetworkPolicy matrices
of tests/e2e/test_netpol.py trace every probe with the same engine.)
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import pytest

from ovnk_lab import paths
from tests.e2e.conftest import ECHO_TCP
from tests.e2e.conftest import Cluster
from tests.e2e.conftest import poll_until

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]


def ovnk_trace(cluster: Cluster, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``ovnk --config <the sandbox controller's config> trace ...``: what a user of the sandbox runs."""
    config = cluster.sandbox.controller_config(0)
    res = subprocess.run([*cluster.sandbox_ovnk(), "--config", str(config), "trace", *args],
                         capture_output=True, text=True, timeout=180, check=False,
                         env=paths.ovn_install().env({**os.environ, "OVNK_CONFIG": ""}))
    if check:
        assert res.returncode == 0, res.stderr
    return res


def trace_json(cluster: Cluster, *args: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(ovnk_trace(cluster, *args, "--json").stdout)
    return doc


def test_trace_allow_drop_service_and_unreachable(cluster: Cluster, ns: str) -> None:
    pods = cluster.run_pods(ns, [
        {"name": "web", "node": cluster.nodes[0], "kind": "echo", "labels": {"app": "web"}},
        {"name": "cli", "node": cluster.nodes[1], "kind": "echo", "labels": {"app": "cli"}},
        {"name": "other", "node": cluster.nodes[1], "kind": "echo", "labels": {"app": "other"}},
    ])
    web_ip = pods["web"]["status"]["podIP"]
    cluster.apply({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "websvc", "namespace": ns},
                   "spec": {"selector": {"app": "web"},
                            "ports": [{"port": 80, "targetPort": ECHO_TCP, "protocol": "TCP"}]}})
    cluster_ip = json.loads(cluster.kubectl("-n", ns, "get", "service", "websvc", "-o", "json"))["spec"]["clusterIP"]

    # Service: the trace follows the load balancer to the one backend, and a real connection agrees.
    def service_traced() -> bool:
        return trace_json(cluster, f"{ns}/cli", f"{ns}/websvc")["verdict"] == "allowed"
    poll_until("the service's backend is programmed", service_traced, timeout=60, interval=1)
    doc = trace_json(cluster, f"{ns}/cli", f"{ns}/websvc")
    assert doc["backend"] == {"ip": web_ip, "port": ECHO_TCP, "pod": f"{ns}/web", "logical_port": f"{ns}_web"}, doc
    assert any(f["table"] == "Load_Balancer" and f["owner"] == f"{ns}/websvc" for f in doc["findings"]), doc
    assert cluster.probe(ns, "cli", "tcp", cluster_ip, 80) == "web"

    # A policy admitting only cli: cli is allowed by its rule, other is dropped by the default deny.
    cluster.apply({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                   "metadata": {"name": "web-from-cli", "namespace": ns},
                   "spec": {"podSelector": {"matchLabels": {"app": "web"}},
                            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "cli"}}}]}]}})
    poll_until("other is blocked", lambda: cluster.probe(ns, "other", "tcp", web_ip, ECHO_TCP, timeout=1) is None,
               timeout=60)
    assert cluster.probe(ns, "cli", "tcp", web_ip, ECHO_TCP) == "web"
    allowed = trace_json(cluster, f"{ns}/cli", f"{ns}/web", "--tcp", str(ECHO_TCP))
    assert allowed["verdict"] == "allowed" and allowed["decisive"]["owner"] == f"{ns}:web-from-cli", allowed
    dropped = ovnk_trace(cluster, f"{ns}/other", f"{ns}/websvc").stdout
    assert "DROPPED" in dropped and f"ingress default deny of namespace {ns}" in dropped, dropped
    assert f"NetworkPolicies selecting {ns}/web: {ns}/web-from-cli" in dropped, dropped

    # An address of the node subnet no pod holds: unreachable, and a real connection gets nothing.
    free = web_ip.rsplit(".", 1)[0] + ".250"
    gone = trace_json(cluster, f"{ns}/cli", free, "--udp", "53")
    assert gone["verdict"] == "unreachable" and f"no logical port has {free}" in gone["reason"], gone
    assert cluster.probe(ns, "cli", "udp", free, 53, timeout=1) is None

    # Leaving the cluster: out through the node's gateway, SNATed to the node's address.
    out = trace_json(cluster, f"{ns}/cli", "192.0.2.10")
    node_ip = json.loads(cluster.kubectl("get", "node", pods["cli"]["spec"]["nodeName"], "-o", "json"))[
        "status"]["addresses"]
    assert out["verdict"] == "allowed" and out["snat"]["router"] == f"GR_{pods['cli']['spec']['nodeName']}", out
    assert out["snat"]["external_ip"] in {a["address"] for a in node_ip}, (out["snat"], node_ip)

    # Names the cluster does not have: a clear error, exit status 1.
    missing = ovnk_trace(cluster, f"{ns}/cli", f"{ns}/nothing", check=False)
    assert missing.returncode == 1 and f"no pod or TCP service {ns}/nothing" in missing.stderr, missing.stderr
