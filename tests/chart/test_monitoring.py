"""The chart's monitoring objects: a metrics Service per component (always), the Prometheus operator's
ServiceMonitor and PrometheusRule (off by default), validated server-side by the test API server with
the operator's CRDs installed, and the metrics endpoints bound to the node's address."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ovnk.core import config as config_mod
from ovnk.core.config import ConfigInputs

from .conftest import render
from .test_apiserver import dry_run

OPERATOR_CRDS = Path(__file__).parent / "crds" / "prometheus-operator.yaml"
ON = {"monitoring": {"serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus"}},
                     "prometheusRule": {"enabled": True, "e2eStaleSeconds": 90}}}
ALERTS = {"OVNKNoLeader", "OVNKReconcileFailuresRising", "OVNKNorthboundDisconnected", "OVNKCNIErrors",
          "OVNKE2ETimestampStale"}


def matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels, matchExpressions with In) against labels."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        assert expr["operator"] == "In", expr
        if labels.get(expr["key"]) not in expr["values"]:
            return False
    return True


def test_metrics_services_select_each_components_pods_and_port() -> None:
    rendered = render()
    assert not rendered.of_kind("ServiceMonitor") and not rendered.of_kind("PrometheusRule")
    for component, kind, suffix, port in (("controller", "Deployment", "-controller", 9409),
                                          ("node", "DaemonSet", "-node", 9410)):
        service = rendered.one("Service", f"-{component}-metrics")
        assert service["spec"]["clusterIP"] == "None"
        workload = rendered.one(kind, suffix)
        pod_labels = workload["spec"]["template"]["metadata"]["labels"]
        assert all(pod_labels.get(k) == v for k, v in service["spec"]["selector"].items())
        [svc_port] = service["spec"]["ports"]
        assert svc_port["port"] == port and svc_port["targetPort"] == "metrics"
        container = next(c for c in workload["spec"]["template"]["spec"]["containers"]
                         if any(p.get("name") == "metrics" for p in c.get("ports", [])))
        assert {"name": "metrics", "containerPort": port, "protocol": "TCP"} in container["ports"]


def test_metrics_bind_to_the_nodes_address_unless_overridden(tmp_path: Path) -> None:
    rendered = render()
    for kind, suffix, container, key, port in (("Deployment", "-controller", "controller", "CONTROLLER", 9409),
                                               ("DaemonSet", "-node", "node", "NODE", 9410)):
        env = rendered.containers(kind, suffix)[container]["env"]
        names = [e["name"] for e in env]
        bind = next(e for e in env if e["name"] == f"OVNK_{key}_METRICS_BIND_ADDRESS")
        # $(POD_IP) is only expanded when POD_IP comes first; with hostNetwork it is the node's address.
        assert bind["value"] == f"$(POD_IP):{port}" and names.index("POD_IP") < names.index(bind["name"])
        assert rendered.one(kind, suffix)["spec"]["template"]["spec"]["hostNetwork"] is True
    # What the kubelet expands it to wins over the config file's fallback.
    path = tmp_path / "ovnk.conf"
    path.write_text(rendered.config_text())
    cfg = config_mod.load(ConfigInputs(config_file=str(path), env={
        "OVNK_CONTROLLER_METRICS_BIND_ADDRESS": "10.0.0.5:9409", "OVNK_NODE_METRICS_BIND_ADDRESS": "10.0.0.5:9410"}))
    assert (cfg.controller.metrics_bind_address, cfg.node.metrics_bind_address) == ("10.0.0.5:9409", "10.0.0.5:9410")
    everywhere = render({"controller": {"metricsBindHost": "0.0.0.0"}, "node": {"metricsBindHost": "192.0.2.7"}})
    assert {"name": "OVNK_CONTROLLER_METRICS_BIND_ADDRESS", "value": "0.0.0.0:9409"} in everywhere.containers(
        "Deployment", "-controller")["controller"]["env"]
    assert everywhere.ini()["node"]["metrics-bind-address"] == "192.0.2.7:9410"


def test_service_monitor_and_rules_when_enabled() -> None:
    rendered = render(ON)
    monitor = rendered.one("ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus"
    services = [s for s in rendered.of_kind("Service")]
    picked = {s["metadata"]["name"] for s in services if matches(monitor["spec"]["selector"], s["metadata"]["labels"])}
    assert picked == {"ovnk-controller-metrics", "ovnk-node-metrics"}, picked  # not the OVN database Services
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]
    rules = rendered.one("PrometheusRule")["spec"]["groups"][0]["rules"]
    assert {r["alert"] for r in rules} == ALERTS
    by_name = {r["alert"]: r for r in rules}
    assert "> 90" in by_name["OVNKE2ETimestampStale"]["expr"]
    assert "ovnkube_controller_sb_e2e_timestamp" in by_name["OVNKE2ETimestampStale"]["expr"]
    assert 'err="true"' in by_name["OVNKCNIErrors"]["expr"]
    # Prometheus templating reaches the rule as text, not consumed by helm.
    assert "{{ $labels.pod }}" in by_name["OVNKNorthboundDisconnected"]["annotations"]["description"]


@pytest.mark.kube
def test_server_side_dry_run_with_the_prometheus_operator_crds(kube_cp: Any, namespace: str, kube_version: str) -> None:
    kube_cp.kubectl("apply", "-f", str(OPERATOR_CRDS))
    try:
        for crd in ("servicemonitors", "prometheusrules"):
            kube_cp.kubectl("wait", "--for=condition=Established", f"crd/{crd}.monitoring.coreos.com",
                            "--timeout=60s")
        rendered = render(ON, namespace=namespace, kube_version=kube_version)
        output = dry_run(kube_cp, rendered)
        assert "servicemonitor.monitoring.coreos.com/ovnk created (server dry run)" in output
        assert "prometheusrule.monitoring.coreos.com/ovnk created (server dry run)" in output
        # Nothing the chart sets was pruned as unknown: the server returns what was sent.
        for kind in ("ServiceMonitor", "PrometheusRule"):
            sent = rendered.one(kind)
            stored = json.loads(kube_cp.kubectl("apply", "--dry-run=server", "-o", "json", "-f", "-",
                                                input=json.dumps(sent)))
            assert stored["spec"] == sent["spec"], kind
        # And the schema is enforced: a rule without expr is refused.
        bad = rendered.one("PrometheusRule")
        del bad["spec"]["groups"][0]["rules"][0]["expr"]
        with pytest.raises(Exception, match="expr"):
            kube_cp.kubectl("apply", "--dry-run=server", "-f", "-", input=json.dumps(bad))
    finally:
        kube_cp.kubectl("delete", "-f", str(OPERATOR_CRDS), "--wait=false", check=False)
