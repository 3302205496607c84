"""``ovnk trace`` against a real API server, a real controller and a real OVN central (NB, northd, SB).

Policies and services go through the API server; the command reads NB and SB
and runs the real ``ovn-trace``. Each case checks the verdict and that the
decisive row is the right object and rule (from its ``external_ids``), and
cross-checks the verdict with the netpol tests' own ovn-trace prober.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from ovnk.core.kube.resources import SERVICES
from tests.functional.netpol.conftest import NetpolCluster
from tests.functional.netpol.conftest import wait_for
from tests.functional.netpol.probes import Probe
from tests.functional.netpol.probes import TraceProber
from tests.functional.services.conftest import create_slice
from tests.functional.services.conftest import endpoint

pytestmark = [pytest.mark.kube, pytest.mark.ovn, pytest.mark.slow]


def ovnk_trace(cluster: NetpolCluster, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """The real command line, pointed at this cluster's NB and SB."""
    central = cluster.central
    # ovn-trace must come from the OVN this central runs (its SB pipeline changes between releases);
    # a deployment has one OVN, the lab may have two.
    res = subprocess.run([sys.executable, "-m", "ovnk", "--config", "/dev/null",
                          "--nb-address", central.nb_address, "--sb-address", central.sb_address, "trace", *args],
                         capture_output=True, text=True, timeout=180, check=False, env=central.install.env())
    if check:
        assert res.returncode == 0, res.stderr
    return res


def trace_json(cluster: NetpolCluster, src: str, dst: str, *extra: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(ovnk_trace(cluster, src, dst, "--json", *extra).stdout)
    return doc


def settle(cluster: NetpolCluster) -> None:
    cluster.settle()
    cluster.central.wait_northd()


def test_policy_allow_and_drop_name_the_policy_and_rule(cluster: NetpolCluster) -> None:
    ns = cluster.namespace("tr")
    cluster.pod(ns, "a", node="np-a", labels={"app": "a"})
    cluster.pod(ns, "b", node="np-b", labels={"app": "b"})
    cluster.pod(ns, "c", node="np-a", labels={"app": "c"})
    pods = cluster.pods(ns, 3)
    settle(cluster)
    a, b, c = f"{ns}/a", f"{ns}/b", f"{ns}/c"

    # No policy: allowed, and no ACL of ours is met.
    doc = trace_json(cluster, a, b)
    assert doc["verdict"] == "allowed", doc
    assert doc["decisive"] is None and not [f for f in doc["findings"] if f["table"] == "ACL"], doc
    assert doc["destination"]["logical_port"] == f"{ns}_b" and doc["datapath"] == "np-a"

    cluster.policy(ns, "deny-all", {"podSelector": {}, "policyTypes": ["Ingress"]})
    cluster.policy(ns, "b-from-a", {"podSelector": {"matchLabels": {"app": "b"}}, "ingress": [
        {"ports": [{"protocol": "TCP", "port": 8080}]},
        {"from": [{"podSelector": {"matchLabels": {"app": "a"}}}]}]})
    settle(cluster)

    allowed = trace_json(cluster, a, b)
    assert allowed["verdict"] == "allowed", allowed
    rule = allowed["decisive"]
    assert rule["owner_type"] == "NetworkPolicy" and rule["owner"] == f"{ns}:b-from-a", rule
    assert rule["keys"]["direction"] == "Ingress" and rule["keys"]["gress-index"] == "1", rule
    assert f"NetworkPolicy {ns}/b-from-a, ingress rule 1" in rule["text"]

    # c is not a peer of rule 1, but rule 0 lets anyone in on TCP 8080.
    dropped = trace_json(cluster, c, b)
    assert dropped["verdict"] == "dropped", dropped
    deny = dropped["decisive"]
    assert deny["owner_type"] == "NetpolNamespace" and deny["owner"] == ns, deny
    assert deny["keys"]["direction"] == "Ingress" and deny["keys"]["type"] == "defaultDeny", deny
    assert f"{ns}/b-from-a" in dropped["reason"] and f"{ns}/deny-all" in dropped["reason"], dropped["reason"]
    by_port = trace_json(cluster, c, b, "--tcp", "8080")
    assert by_port["verdict"] == "allowed" and by_port["decisive"]["keys"]["gress-index"] == "0", by_port
    assert by_port["decisive"]["keys"]["port-policy-protocol"] == "tcp"
    assert trace_json(cluster, c, b, "--udp", "8080")["verdict"] == "dropped"

    # The verdicts agree with the netpol tests' own ovn-trace prober.
    prober = TraceProber(cluster, {p.label: p for p in pods.values()})
    for src, dst, port, verdict in ((a, b, 80, "allowed"), (c, b, 80, "dropped"), (c, b, 8080, "allowed")):
        assert prober.reachable(Probe(src, dst, "tcp", port)) == (verdict == "allowed")

    # Egress: a may only talk to b; the trace names the egress default deny for c, and both rules for b.
    cluster.policy(ns, "a-egress", {"podSelector": {"matchLabels": {"app": "a"}}, "policyTypes": ["Egress"],
                                    "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "b"}}}]}]})
    settle(cluster)
    out = trace_json(cluster, a, c)
    assert out["verdict"] == "dropped" and out["decisive"]["keys"] == {
        "direction": "Egress", "type": "defaultDeny"}, out["decisive"]
    assert f"NetworkPolicies selecting {a}: {ns}/a-egress" in out["reason"], out["reason"]
    ok = trace_json(cluster, a, b)
    assert ok["verdict"] == "allowed", ok
    assert [(f["owner"], f["keys"]["direction"]) for f in ok["findings"] if f["table"] == "ACL"] == [
        (f"{ns}:a-egress", "Egress"), (f"{ns}:b-from-a", "Ingress")], ok["findings"]

    # The human form says the same.
    text = ovnk_trace(cluster, c, b).stdout
    assert "DROPPED" in text and f"ingress default deny of namespace {ns}" in text, text


def test_ip_block_rule_and_unreachable_targets(cluster: NetpolCluster) -> None:
    ns = cluster.namespace("trb")
    cluster.pod(ns, "srv", node="np-b", labels={"app": "srv"})
    cluster.pod(ns, "near", node="np-a")
    pods = cluster.pods(ns, 2)
    cluster.policy(ns, "ipblock", {"podSelector": {"matchLabels": {"app": "srv"}}, "ingress": [
        {"from": [{"ipBlock": {"cidr": f"{pods['near'].ip}/32"}}]}]})
    settle(cluster)
    doc = trace_json(cluster, f"{ns}/near", pods["srv"].ip)
    assert doc["verdict"] == "allowed" and doc["destination"]["kind"] == "ip", doc
    assert doc["decisive"]["keys"]["ip-block-index"] == "-2" and "ipBlock peers" in doc["decisive"]["text"]

    # An address in a node subnet that no pod holds, and a pod that does not exist.
    free = pods["srv"].ip.rsplit(".", 1)[0] + ".250"
    gone = trace_json(cluster, f"{ns}/near", free)
    assert gone["verdict"] == "unreachable" and f"no logical port has {free}" in gone["reason"], gone
    missing = ovnk_trace(cluster, f"{ns}/near", f"{ns}/nothing", check=False)
    assert missing.returncode == 1 and f"no pod or TCP service {ns}/nothing" in missing.stderr, missing.stderr
    no_source = ovnk_trace(cluster, f"{ns}/ghost", f"{ns}/srv", check=False)
    assert no_source.returncode == 1 and f"no logical port for pod {ns}/ghost" in no_source.stderr


def test_service_names_the_load_balancer_backend_and_the_policy_behind_it(cluster: NetpolCluster) -> None:
    ns = cluster.namespace("trs")
    cluster.pod(ns, "web", node="np-b", labels={"app": "web"})
    cluster.pod(ns, "cli", node="np-a", labels={"app": "cli"})
    cluster.pod(ns, "other", node="np-a", labels={"app": "other"})
    pods = cluster.pods(ns, 3)
    cluster.client.create(SERVICES, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "websvc", "namespace": ns},
                                     "spec": {"ports": [{"name": "http", "protocol": "TCP", "port": 80,
                                                         "targetPort": 8080}]}}, namespace=ns)
    create_slice(cluster.env, ns, "websvc-1", "websvc", ports=[{"name": "http", "protocol": "TCP", "port": 8080}],
                 endpoints=[endpoint(pods["web"].ip, "np-b")])
    svc = cluster.client.get(SERVICES, "websvc", namespace=ns)
    assert svc is not None
    cluster_ip = svc["spec"]["clusterIP"]
    wait_for("the service's load balancer", lambda: any(
        f"{cluster_ip}:80" in str(r["vips"]) for r in cluster.env.nb_rows("Load_Balancer")))
    settle(cluster)

    # "web" names both the pod and the service: the pod wins; the ClusterIP or "websvc" name the service.
    assert trace_json(cluster, f"{ns}/cli", f"{ns}/web")["destination"]["kind"] == "pod"
    for target in (cluster_ip, f"{ns}/websvc"):
        svc_doc = trace_json(cluster, f"{ns}/cli", target)
        assert svc_doc["verdict"] == "allowed" and svc_doc["destination"]["kind"] == "service", svc_doc
        assert svc_doc["backend"] == {"ip": pods["web"].ip, "port": 8080, "pod": f"{ns}/web",
                                      "logical_port": f"{ns}_web"}, svc_doc
        lbs = [f for f in svc_doc["findings"] if f["table"] == "Load_Balancer"]
        assert lbs and lbs[0]["owner"] == f"{ns}/websvc", lbs
        assert f"Service {ns}/websvc load balancer" in lbs[0]["text"], lbs
    wrong_port = ovnk_trace(cluster, f"{ns}/cli", f"{ns}/websvc", "--tcp", "81", check=False)
    assert wrong_port.returncode == 1 and "has no tcp/81 (it serves tcp/80)" in wrong_port.stderr, wrong_port.stderr

    cluster.policy(ns, "web-from-cli", {"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [
        {"from": [{"podSelector": {"matchLabels": {"app": "cli"}}}], "ports": [{"protocol": "TCP", "port": 8080}]}]})
    settle(cluster)
    allowed = trace_json(cluster, f"{ns}/cli", f"{ns}/websvc")
    assert allowed["verdict"] == "allowed" and allowed["decisive"]["owner"] == f"{ns}:web-from-cli", allowed
    dropped = trace_json(cluster, f"{ns}/other", f"{ns}/websvc")
    assert dropped["verdict"] == "dropped" and dropped["decisive"]["keys"]["type"] == "defaultDeny", dropped
    assert any(f["table"] == "Load_Balancer" for f in dropped["findings"]), dropped["findings"]
    # The pod the default deny protects is the backend the load balancer chose.
    assert f"NetworkPolicies selecting {ns}/web: {ns}/web-from-cli" in dropped["reason"], dropped["reason"]
