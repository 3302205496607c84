"""The chart deployed for real: ``ovnk sandbox up --deploy helm`` on a sandbox of its own.

The image is built here (cached by source hash, :mod:`ovnk_lab.ovnk_image`) and imported into
every node's containerd; the sandbox runs no OVS, OVN or ovnk process of its own, so everything
that networks the pods below comes from the chart's pods, under the chart's RBAC only:

* the release's pods become Ready (their probes pass) and the nodes Ready;
* the controller's and the agents' /healthz, /readyz and /metrics answer where the chart says;
* pods on two nodes reach each other and a ClusterIP service, with real packets;
* one ``helm upgrade`` switches on multicast, egressfirewall (a plugin that has CRDs) and the
  third-party ovnk-hello (an image built FROM ovnk's, its CRD given with ``--set-file``): CRDs,
  config, NB rows (read with ovn-nbctl in the chart's NB container), hello's status, port
  greeting, node bridge, flow and annotation; another switches them off and everything goes,
  while pod traffic keeps working;
* ``kubectl rollout restart`` of the OVS DaemonSet (an OVS upgrade) keeps the nodes reachable (the
  uplink goes back to the host before OVS stops), the agents are restarted and set their gateway up
  again, and pod traffic works afterwards;
* no component logs a 403 (RBAC) at any point (logs collected before every rollout);
* ``helm uninstall`` removes the release's API objects, and the sandbox goes down leaving
  no namespace, link, mount or file behind.

Costs about 7 minutes (a sandbox, two rollouts). Part of ``make test``; ``make chart-e2e`` runs
it alone, and ``OVNK_CHART_E2E=0`` skips it in a quick local run, like
tests/chart/test_image_build.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ovnk_lab import chartdeploy
from ovnk_lab import hostnet
from ovnk_lab import hostres
from ovnk_lab import ovnk_image
from ovnk_lab import paths
from ovnk_lab.sandbox import Sandbox
from ovnk_lab.sandbox import SandboxOptions

from .conftest import Cluster
from .conftest import poll_until

pytestmark = [
    pytest.mark.sandbox,
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("OVNK_CHART_E2E") == "0",
                       reason="OVNK_CHART_E2E=0: the chart deployed on its own sandbox (minutes) is skipped"),
]

NS = chartdeploy.NAMESPACE
RELEASE = chartdeploy.RELEASE
# "forbidden" is in every refusal of the API server (and urllib's "HTTP Error 403: Forbidden"); a bare 403 counts
# unless it follows "," or "." (the milliseconds of a log timestamp, "22:40:03,403").
FORBIDDEN = re.compile(r"forbidden|(?<![,.:])\b403\b", re.IGNORECASE)
TOGGLED = "multicast"  # NB rows: the node switches' mcast_* other_config keys
WITH_CRDS = "egressfirewall"  # CRDs: egressfirewalls.k8s.ovn.org
HELLO = Path(__file__).resolve().parents[1] / "thirdparty" / "ovnk-hello"
HELLO_CRD = HELLO / "ovnk_hello" / "crds" / "hellos.yaml"


#: A grant: (service account, API group, resource[/subresource], verb).
Grant = tuple[str, str, str, str]

#: Rules granted but not exercised by this test, with why they are kept (charts/ovnk/README.md, RBAC).
KEPT_UNUSED: dict[Grant, str] = {
    ("controller", "", "events", "create"): "a Warning event for bad input (none in this test)",
    ("controller", "", "events", "patch"): "the event recorder bumps a repeated event's count with a patch",
    ("node", "", "events", "create"): "a Warning event for bad input (none in this test)",
    ("node", "", "events", "patch"): "the event recorder bumps a repeated event's count with a patch",
    ("controller", "", "nodes", "get"): "node labels: a Node the informer has not delivered yet",
    ("node", "", "nodes", "get"): "the agent's own Node before its informer delivered it",
    ("node", "", "pods", "get"): "CNI ADD of a pod the watch has not delivered yet",
    ("controller", "k8s.ovn.org", "egressfirewalls", "get"): "every plugin's CRDs get the same verbs: a plugin "
                                                             "may read one object fresh",
    ("controller", "example.com", "hellos", "get"): "as above",
    ("controller", "k8s.ovn.org", "egressfirewalls", "patch"): "as above: EgressIP needs it, whose status is "
                                                               "in the object (no status subresource, as upstream)",
    ("controller", "example.com", "hellos", "patch"): "as above",
    ("controller", "k8s.ovn.org", "egressfirewalls/status", "patch"): "egressfirewall writes its status once it "
                                                                      "has a policy (none in this test)",
    ("node", "k8s.ovn.org", "egressfirewalls", "get"): "the node part of any enabled plugin may read its "
                                                        "resources; the chart cannot tell which do",
    ("node", "k8s.ovn.org", "egressfirewalls", "list"): "as above",
    ("node", "k8s.ovn.org", "egressfirewalls", "watch"): "as above",
    ("node", "example.com", "hellos", "get"): "as above (hello's node part reads through its informer)",
}


def component(service_account: str) -> str:
    """``controller``, ``node`` or ``ovn-db`` for the release's ServiceAccounts."""
    return service_account.removeprefix(f"{RELEASE}-")


class ChartCluster(Cluster):
    """The e2e helpers plus what the chart deployment needs: logs of every component, the NB, the
    RBAC grants of the release over time."""

    def __init__(self, sandbox: Sandbox) -> None:
        super().__init__(sandbox)
        self.logs: dict[str, str] = {}
        self.grants: set[Grant] = set()

    def record_grants(self) -> None:
        """Add what the release's roles grant now (plugins' rules come and go with helm upgrade)."""
        def items(*args: str) -> list[dict[str, Any]]:
            found: list[dict[str, Any]] = json.loads(self.kubectl("get", *args, "-o", "json"))["items"]
            return found
        label = f"app.kubernetes.io/instance={RELEASE}"
        roles = {("ClusterRole", r["metadata"]["name"]): r.get("rules") or [] for r in items("clusterroles", "-l", label)}
        roles |= {("Role", r["metadata"]["name"]): r.get("rules") or [] for r in items("roles", "-n", NS, "-l", label)}
        bindings = items("clusterrolebindings", "-l", label) + items("rolebindings", "-n", NS, "-l", label)
        for binding in bindings:
            rules = roles[(binding["roleRef"]["kind"], binding["roleRef"]["name"])]
            for subject in binding.get("subjects") or ():
                if subject["kind"] != "ServiceAccount" or subject.get("namespace") != NS:
                    continue
                self.grants.update((subject["name"], group, resource, verb) for rule in rules
                                   for group in rule.get("apiGroups") or () for resource in rule.get("resources") or ()
                                   for verb in rule.get("verbs") or ())

    def audited_requests(self) -> set[Grant]:
        """What the release's ServiceAccounts asked the API server for and were allowed (its audit log)."""
        control_plane = self.sandbox.cluster.control_plane
        assert control_plane is not None
        prefix = f"system:serviceaccount:{NS}:"
        requests: set[Grant] = set()
        for line in control_plane.audit_log.read_text().splitlines():
            event = json.loads(line)
            user, ref = event["user"]["username"], event.get("objectRef") or {}
            if not user.startswith(prefix) or not ref.get("resource"):
                continue
            if (event.get("responseStatus") or {}).get("code") == 403:
                continue
            resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
            requests.add((user.removeprefix(prefix), ref.get("apiGroup") or "", resource, event["verb"]))
        return requests

    def collect_logs(self) -> None:
        """Keep every container's log (and its previous instance's) before pods are replaced."""
        for previous in (False, True):
            for name, text in chartdeploy.container_logs(self.sandbox.cluster, previous=previous).items():
                key = f"{name}{' (previous)' if previous else ''}"
                if len(text) >= len(self.logs.get(key, "")):
                    self.logs[key] = text

    def nbctl(self, *args: str) -> Any:
        out = self.kubectl("-n", NS, "exec", f"{RELEASE}-ovn-db-0", "-c", "nb-ovsdb", "--", "ovn-nbctl",
                           "--db=unix:/var/run/ovn/ovnnb_db.sock", "--format=json", *args)
        return json.loads(out)

    def config(self) -> str:
        maps = json.loads(self.kubectl("-n", NS, "get", "configmap", "-o", "json"))["items"]
        [text] = [m["data"]["ovnk.conf"] for m in maps if "ovnk.conf" in m.get("data", {})]
        return str(text)

    def rollout(self) -> None:
        for kind, name in (("statefulset", f"{RELEASE}-ovn-db"), ("deployment", f"{RELEASE}-controller"),
                           ("daemonset", f"{RELEASE}-node"), ("daemonset", f"{RELEASE}-ovs")):
            self.kubectl("-n", NS, "rollout", "status", f"{kind}/{name}", "--timeout=300s", timeout=330)
        chartdeploy.wait_release_ready(self.sandbox.cluster, timeout=300)


@pytest.fixture(scope="module")
def chart() -> Iterator[ChartCluster]:
    pid = os.getpid()
    workdir = Path(os.environ.get("OVNK_E2E_DIR", "/var/lib/ovnk/sandbox")) / f"chart-{pid}"
    subnet = hostnet.free_underlay_subnet([f"172.29.{(pid + i) % 250}.0/24" for i in range(250)])
    prefix = f"chart{pid % 10000}"
    box = Sandbox(workdir, prefix=prefix, subnet=subnet)
    box.up(SandboxOptions(nodes=2, deploy="helm"))
    cluster = ChartCluster(box)
    cluster.record_grants()
    try:
        yield cluster
    finally:
        logs = os.environ.get("OVNK_E2E_LOGS")
        if logs:
            from ovnk_lab.sandbox import copy_logs

            copy_logs(box, Path(logs) / "chart")
        if box.cluster.status().running:
            box.down()


# -- deployment --------------------------------------------------------------------------


def test_release_pods_and_nodes_ready_with_no_ovnk_of_the_sandbox(chart: ChartCluster) -> None:
    image = ovnk_image.cached_image()
    assert image is not None
    nodes = json.loads(chart.kubectl("get", "nodes", "-o", "json"))["items"]
    assert len(nodes) == 2
    for node in nodes:
        assert {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"] == "True"
    pods = chartdeploy.release_pods(chart.sandbox.cluster)
    kinds = sorted(p["metadata"]["labels"].get("app.kubernetes.io/component", "") for p in pods)
    assert kinds == sorted(["ovn-db", "controller", "node", "node", "ovs", "ovs"]), kinds
    for pod in pods:
        for container in [*pod["spec"].get("initContainers", []), *pod["spec"]["containers"]]:
            assert container["image"] == image.name
            assert container["imagePullPolicy"] == "Never"
        assert pod["spec"]["hostNetwork"] is True
    # The sandbox itself started only the control plane, containerd and kubelets.
    names = [name for name, _pid, _alive in chart.sandbox.cluster.status().processes]
    assert not [n for n in names if re.search(r"ovs|ovn|ovnk", n)], names
    # The CNI config on each node is the one the chart's agent wrote.
    for node in chart.sandbox.cluster.nodes:
        assert list(node.cni_conf_dir.glob("*ovn*")), f"no ovnk CNI config on {node.name}"


def test_probes_and_metrics_answer(chart: ChartCluster) -> None:
    nodes = {n.name: n for n in chart.sandbox.cluster.nodes}
    controller = chart.kubectl("-n", NS, "get", "pods", "-l", "app.kubernetes.io/component=controller",
                               "-o", "jsonpath={.items[0].status.hostIP}")
    for path in ("/healthz", "/readyz", "/metrics"):
        with urllib.request.urlopen(f"http://{controller}:9409{path}", timeout=10) as resp:
            assert resp.status == 200
            body = resp.read().decode()
    assert "ovnk_controller_leader 1.0" in body
    for node in nodes.values():
        # Health on the node's loopback (where the kubelet probes), metrics on the node's address.
        script = ("import sys, urllib.request as u\n"
                  "for url in sys.argv[1:]:\n"
                  "    print(url, u.urlopen(url, timeout=10).status)\n")
        out = subprocess.run(
            [paths.system_bin("nsenter"), f"--net={node.netns_path}", "--", sys.executable, "-c", script,
             "http://127.0.0.1:9410/healthz", "http://127.0.0.1:9410/readyz"],
            capture_output=True, text=True, timeout=60, check=True).stdout
        assert out.count(" 200") == 2, out
        with urllib.request.urlopen(f"http://{node.ip}:9410/metrics", timeout=10) as resp:
            assert 'component="node"' in resp.read().decode()


def _echo_pods(chart: ChartCluster, namespace: str) -> tuple[dict[str, Any], str]:
    n1, n2 = chart.nodes
    pods = chart.run_pods(namespace, [
        {"name": "echo-1", "node": n1, "kind": "echo", "labels": {"app": "echo"}},
        {"name": "echo-2", "node": n2, "kind": "echo", "labels": {"app": "echo"}},
        {"name": "client", "node": n2, "kind": "client"},
    ])
    chart.apply({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "echo", "namespace": namespace},
                 "spec": {"selector": {"app": "echo"},
                          "ports": [{"name": "tcp", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}})
    service_ip = chart.kubectl("-n", namespace, "get", "service", "echo", "-o", "jsonpath={.spec.clusterIP}")
    return pods, service_ip


def _check_traffic(chart: ChartCluster, namespace: str, pods: dict[str, Any], service_ip: str) -> None:
    echo1 = pods["echo-1"]["status"]["podIP"]
    poll_until("client reaches echo-1 on the other node",
               lambda: chart.probe(namespace, "client", "tcp", echo1, 8080) == "echo-1", timeout=60)
    assert chart.ping(namespace, "client", echo1)
    seen: set[str] = set()

    def both_backends() -> bool:
        reply = chart.probe(namespace, "client", "tcp", service_ip, 80)
        if reply:
            seen.add(reply)
        return seen == {"echo-1", "echo-2"}

    poll_until(f"the ClusterIP {service_ip} reaches both backends (seen {seen})", both_backends, timeout=90,
               interval=0.2)


def test_pods_reach_each_other_and_a_service(chart: ChartCluster) -> None:
    namespace = chart.namespace()
    pods, service_ip = _echo_pods(chart, namespace)
    _check_traffic(chart, namespace, pods, service_ip)
    chart.kubectl("delete", "namespace", namespace, "--wait=false")


# -- helm upgrade: a plugin on and off ---------------------------------------------------------


def _plugin_state(chart: ChartCluster) -> dict[str, Any]:
    config = chart.config()
    enabled = re.search(r"^enabled\s*=\s*(.*)$", config.split("[plugins]", 1)[1], flags=re.MULTILINE)
    crds = json.loads(chart.kubectl("get", "crd", "-o", "json"))["items"]
    switches = chart.nbctl("--columns=name,other_config", "list", "Logical_Switch")["data"]
    mcast = {name: sorted(k for k, _v in other[1] if k.startswith("mcast_")) for name, other in switches}
    return {
        "enabled": sorted(p.strip() for p in (enabled.group(1) if enabled else "").split(",") if p.strip()),
        "crds": sorted(c["metadata"]["name"] for c in crds if c["metadata"]["name"].endswith(".k8s.ovn.org")),
        "node_switch_mcast": {n: keys for n, keys in mcast.items() if n in chart.nodes},
    }


def _ovs(chart: ChartCluster, node: str, *argv: str) -> str:
    """An OVS command in the chart's OVS pod on ``node`` (its ovs-vswitchd container)."""
    pod = chart.kubectl("-n", NS, "get", "pods", "-l", "app.kubernetes.io/component=ovs",
                        "--field-selector", f"spec.nodeName={node}", "-o", "jsonpath={.items[0].metadata.name}")
    return chart.kubectl("-n", NS, "exec", pod, "-c", "ovs-vswitchd", "--", *argv)


def _ovs_map(value: Any) -> dict[str, str]:
    return dict(value[1]) if isinstance(value, list) and value and value[0] == "map" else {}


def _ovs_set(value: Any) -> list[Any]:
    return list(value[1]) if isinstance(value, list) and value and value[0] == "set" else [value]


def _hello_state(chart: ChartCluster, namespace: str) -> dict[str, Any]:
    """What the third-party plugin made: its CR's status, its NB address sets, its greeting on the pods'
    ports, its bridge and drop flow on each node, its node annotation."""
    crds = chart.kubectl("get", "crd", "-o", "name").split()
    selected = None
    if "customresourcedefinition.apiextensions.k8s.io/hellos.example.com" in crds:
        found = chart.kubectl("-n", namespace, "get", "hellos.example.com", "-o", "json", check=False)
        items = json.loads(found)["items"] if found.strip() else []
        selected = [(h.get("status") or {}).get("selectedPods") for h in items]
    sets = chart.nbctl("--columns=external_ids,addresses", "list", "Address_Set")["data"]
    ports = chart.nbctl("--columns=name,external_ids", "list", "Logical_Switch_Port")["data"]
    nodes = {}
    for node in chart.nodes:
        bridges = _ovs(chart, node, "ovs-vsctl", "list-br").split()
        flows = _ovs(chart, node, "ovs-ofctl", "dump-flows", "br-hello") if "br-hello" in bridges else ""
        annotations = json.loads(chart.kubectl("get", "node", node, "-o", "json"))["metadata"].get("annotations") or {}
        nodes[node] = {"br-hello": "br-hello" in bridges, "drop-7777": "tp_dst=7777 actions=drop" in flows,
                       "annotation": annotations.get("example.com/hello")}
    return {
        "crd": "customresourcedefinition.apiextensions.k8s.io/hellos.example.com" in crds,
        "selected": selected,
        "sets": {_ovs_map(ids)["k8s.ovn.org/name"]: sorted(_ovs_set(addresses)) for ids, addresses in sets
                 if _ovs_map(ids).get("k8s.ovn.org/owner-type") == "Hello"},
        "greetings": {name: _ovs_map(ids)["example.com/greeting"] for name, ids in ports
                      if name.startswith(f"{namespace}_") and "example.com/greeting" in _ovs_map(ids)},
        "nodes": nodes,
    }


def test_helm_upgrade_switches_plugins_on_and_off(chart: ChartCluster) -> None:
    """Two first-party plugins and a third-party one (ovnk-hello in an image built FROM ovnk's, its CRD
    given with --set-file) switched on by one ``helm upgrade`` and off by another."""
    namespace = chart.namespace()
    pods, service_ip = _echo_pods(chart, namespace)
    _check_traffic(chart, namespace, pods, service_ip)
    before = _plugin_state(chart)
    assert before["enabled"] == [] and before["crds"] == []
    assert all(keys == [] for keys in before["node_switch_mcast"].values()), before

    hello_image = ovnk_image.ensure_plugin_image(HELLO, repository="localhost/ovnk-hello")
    chartdeploy.load_image(chart.sandbox.cluster, hello_image)
    hello_sets = [*chartdeploy.image_sets(hello_image), "plugins.hello.settings.greeting=bonjour"]
    hello_files = [f"plugins.hello.crds.hellos={HELLO_CRD}"]

    chart.collect_logs()
    started = time.monotonic()
    chartdeploy.upgrade(chart.sandbox.cluster, [*hello_sets, f"plugins.{TOGGLED}.enabled=true",
                                                f"plugins.{WITH_CRDS}.enabled=true", "plugins.hello.enabled=true"],
                        set_files=hello_files)
    chart.rollout()
    chart.record_grants()
    on: dict[str, Any] = {}

    def switched_on() -> bool:
        on.update(_plugin_state(chart))
        return bool(on["node_switch_mcast"]) and all("mcast_snoop" in keys for keys in on["node_switch_mcast"].values())

    poll_until(f"{TOGGLED}'s NB rows after helm upgrade (state {on})", switched_on, timeout=120, interval=1)
    print(f"plugins on: upgrade to NB rows in {time.monotonic() - started:.0f}s")
    assert on["enabled"] == sorted([TOGGLED, WITH_CRDS, "hello"])
    assert "egressfirewalls.k8s.ovn.org" in on["crds"]
    ovnk = ovnk_image.cached_image()
    assert ovnk is not None
    for pod in chartdeploy.release_pods(chart.sandbox.cluster):
        ovs = pod["metadata"]["labels"].get("app.kubernetes.io/component") == "ovs"  # pinned: ovs.image
        assert {c["image"] for c in pod["spec"]["containers"]} == {ovnk.name if ovs else hello_image.name}
    _check_traffic(chart, namespace, pods, service_ip)

    # The third-party plugin does what it does on the process sandbox (tests/e2e/test_thirdparty_hello.py).
    chart.apply({"apiVersion": "example.com/v1", "kind": "Hello", "metadata": {"name": "greeter", "namespace": namespace},
                 "spec": {"greeting": "hi", "podSelector": {"matchLabels": {"app": "echo"}}, "port": 7777}})
    echo_ips = sorted(pods[name]["status"]["podIP"] for name in ("echo-1", "echo-2"))
    hello: dict[str, Any] = {}

    def hello_works() -> bool:
        hello.update(_hello_state(chart, namespace))
        return (hello["selected"] == [2] and hello["sets"].get(f"{namespace}/greeter") == echo_ips
                and hello["greetings"] == {f"{namespace}_echo-1": "hi", f"{namespace}_echo-2": "hi"}
                and all(n["drop-7777"] for n in hello["nodes"].values()))

    poll_until(f"ovnk-hello's status, NB rows and node flows (state {hello})", hello_works, timeout=120, interval=1)
    for node, state in hello["nodes"].items():
        assert state["annotation"] is not None and json.loads(state["annotation"]) == {"greeting": "bonjour"}, node

    chart.collect_logs()
    started = time.monotonic()
    chartdeploy.upgrade(chart.sandbox.cluster, [*hello_sets, f"plugins.{TOGGLED}.enabled=false",
                                                f"plugins.{WITH_CRDS}.enabled=false", "plugins.hello.enabled=false"],
                        set_files=hello_files)
    chart.rollout()
    off: dict[str, Any] = {}

    def switched_off() -> bool:
        off.update(_plugin_state(chart))
        return all(keys == [] for keys in off["node_switch_mcast"].values()) and off["crds"] == []

    poll_until(f"{TOGGLED}'s NB rows and the CRDs removed after helm upgrade (state {off})", switched_off,
               timeout=120, interval=1)
    print(f"plugins off: upgrade to NB rows removed in {time.monotonic() - started:.0f}s")
    assert off["enabled"] == []
    hello_off: dict[str, Any] = {}

    def hello_gone() -> bool:
        hello_off.update(_hello_state(chart, namespace))
        return (not hello_off["crd"] and hello_off["sets"] == {} and hello_off["greetings"] == {}
                and not any(n["br-hello"] or n["annotation"] for n in hello_off["nodes"].values()))

    poll_until(f"everything of ovnk-hello gone (state {hello_off})", hello_gone, timeout=120, interval=1)
    _check_traffic(chart, namespace, pods, service_ip)
    chart.kubectl("delete", "namespace", namespace, "--wait=false")


# -- OVS restarted (an OVS upgrade) ----------------------------------------------------------------


def _restarts(chart: ChartCluster, container: str) -> dict[str, int]:
    pods = json.loads(chart.kubectl("-n", NS, "get", "pods", "-l", "app.kubernetes.io/component=node", "-o", "json"))
    return {p["spec"]["nodeName"]: sum(s["restartCount"] for s in p["status"].get("containerStatuses", [])
                                       if s["name"] == container) for p in pods["items"]}


def test_an_ovs_restart_keeps_the_nodes_and_the_agents_set_the_gateway_up_again(chart: ChartCluster) -> None:
    """``kubectl rollout restart`` of the OVS DaemonSet, as an OVS upgrade does: ovs-vswitchd's preStop gives
    each node's uplink back to the host (``ovnk release-uplink``), so the kubelet keeps its API server while
    the new OVS pod starts (without it the node kept its address on a bridge nothing forwards for, and
    never saw its new OVS pod); the node agent, not alive without its bridge, is restarted by the kubelet
    and sets the gateway up again; pods reach each other and the service afterwards."""
    namespace = chart.namespace()
    pods, service_ip = _echo_pods(chart, namespace)
    _check_traffic(chart, namespace, pods, service_ip)
    before = _restarts(chart, "node")
    chart.collect_logs()
    chart.kubectl("-n", NS, "rollout", "restart", f"daemonset/{RELEASE}-ovs")
    chart.rollout()
    restarted: dict[str, int] = {}

    def gateways_back() -> bool:
        restarted.update(_restarts(chart, "node"))
        return (all(restarted[node] > before[node] for node in before)
                and all("breth0" in _ovs(chart, node, "ovs-vsctl", "list-br").split() for node in chart.nodes))

    poll_until(f"every agent restarted and its breth0 back (restarts {before} -> {restarted})", gateways_back,
               timeout=180, interval=2)
    chartdeploy.wait_release_ready(chart.sandbox.cluster, timeout=120)
    _check_traffic(chart, namespace, pods, service_ip)
    chart.kubectl("delete", "namespace", namespace, "--wait=false")


# -- RBAC -------------------------------------------------------------------------------------


def test_no_component_was_refused_by_rbac(chart: ChartCluster) -> None:
    chart.collect_logs()
    assert chart.logs, "no logs collected"
    refused = {name: [line for line in text.splitlines() if FORBIDDEN.search(line)][:3]
               for name, text in chart.logs.items()}
    refused = {name: lines for name, lines in refused.items() if lines}
    assert not refused, f"403s in the components' logs: {json.dumps(refused, indent=1)}"
    # The logs are real: the controller and every agent said something.
    assert any("controller" in name and text.strip() for name, text in chart.logs.items())
    assert sum(1 for name, text in chart.logs.items() if name.endswith("/node") and text.strip()) >= 2


def test_every_rbac_rule_was_used_or_is_listed_as_kept(chart: ChartCluster) -> None:
    """Least privilege, shown: every (account, group, resource, verb) the release granted at any point
    of this module was used by its account (the API server's audit log), or is in KEPT_UNUSED with
    the reason it stays. Rules limited by resourceNames count as used when the verb was."""
    requests = chart.audited_requests()
    assert requests, "the audit log holds the components' requests"

    def used(grant: Grant) -> bool:
        account, group, resource, verb = grant
        return any(account == a and group in ("*", g) and resource in ("*", r) and verb in ("*", v)
                   for a, g, r, v in requests)

    unused = {grant for grant in chart.grants if not used(grant)}
    unexplained = sorted(g for g in unused if (component(g[0]), *g[1:]) not in KEPT_UNUSED)
    assert not unexplained, f"granted, never used, not listed as kept: {unexplained}"
    print("kept, unused here:", sorted((component(g[0]), *g[1:]) for g in unused))


# -- uninstall and down ----------------------------------------------------------------------------


def test_uninstall_and_down_leave_nothing(chart: ChartCluster) -> None:
    cluster = chart.sandbox.cluster
    chartdeploy.helm(cluster.kubeconfig, "uninstall", RELEASE, "--namespace", NS, "--wait", "--timeout", "300s",
                     timeout=330)

    def release_gone() -> bool:
        pods = chart.kubectl("-n", NS, "get", "pods", "-o", "name")
        cluster_scoped = chart.kubectl("get", "clusterroles,clusterrolebindings,crd", "-o", "name",
                                       "-l", f"app.kubernetes.io/instance={RELEASE}")
        namespaced = chart.kubectl("-n", NS, "get", "all,configmaps,secrets,serviceaccounts,roles,rolebindings",
                                   "-o", "name", "-l", f"app.kubernetes.io/instance={RELEASE}")
        return not pods.strip() and not cluster_scoped.strip() and not namespaced.strip()

    poll_until("the release's objects gone after helm uninstall", release_gone, timeout=180, interval=1)
    assert not [c for c in chart.kubectl("get", "crd", "-o", "name").split() if c.endswith(".k8s.ovn.org")]

    prefix, workdir = chart.sandbox.prefix, chart.sandbox.workdir
    chart.sandbox.down()
    assert not hostnet.netns_with_prefix(prefix)
    assert not workdir.exists()
    assert not hostres.mounts_under(workdir)
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    assert prefix not in links
    assert not list(Path("/sys/fs/cgroup").glob(f"*{prefix}*")) and not list(Path("/sys/fs/cgroup").glob(f"*/{prefix}*"))

