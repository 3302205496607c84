"""helm lint / helm template of charts/ovnk: defaults, every plugin on, every plugin off, HA and SSL."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml

from .conftest import CHART
from .conftest import REPO
from .conftest import first_party_plugins
from .conftest import lint
from .conftest import plugin_crd_files
from .conftest import plugin_values
from .conftest import render
from .conftest import render_error


def _all_on() -> dict[str, object]:
    return plugin_values(first_party_plugins())


def _all_off() -> dict[str, object]:
    return plugin_values([], disabled=first_party_plugins())


@pytest.mark.parametrize("values", [None, _all_on(), _all_off()], ids=["defaults", "all-plugins-on", "all-plugins-off"])
def test_lint_and_template_pass(values: dict[str, object] | None) -> None:
    lint(values)
    rendered = render(values)
    expected = set(first_party_plugins()) if values == _all_on() else set()
    assert set(rendered.enabled_plugins()) == expected
    crds = {f for p in expected for f in plugin_crd_files(p)}
    assert len(rendered.crd_names()) == len(crds)


def test_each_first_party_plugin_alone_brings_exactly_its_crds_and_config() -> None:
    plugins = first_party_plugins()
    for plugin in plugins:
        rendered = render(plugin_values([plugin], disabled=[p for p in plugins if p != plugin]))
        own = {yaml.safe_load(f.read_text())["metadata"]["name"] for f in plugin_crd_files(plugin)}
        assert rendered.crd_names() == own, plugin
        assert rendered.enabled_plugins() == [plugin]
        assert plugin in rendered.ini(), f"[{plugin}] section missing"
    # With none on, there is no CRD and no plugin section at all.
    off = render(_all_off())
    assert off.crd_names() == set()
    assert off.enabled_plugins() == []
    assert not set(off.ini()) & set(plugins)


def test_defaults_render_every_component() -> None:
    rendered = render(namespace="net-system")
    assert {d["metadata"].get("namespace") for d in rendered.docs if d["kind"] not in (
        "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition")} == {"net-system"}

    # The databases: one standalone member, ovsdb-server for NB and SB plus northd, on the host network.
    sts = rendered.one("StatefulSet", "-ovn-db")
    assert sts["spec"]["replicas"] == 1
    pod = sts["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    assert [c["name"] for c in pod["containers"]] == ["nb-ovsdb", "sb-ovsdb", "northd"]
    assert {s["metadata"]["name"] for s in rendered.of_kind("Service")} == {
        "ovnk-ovn-db", "ovnk-ovn-nb", "ovnk-ovn-sb", "ovnk-controller-metrics", "ovnk-node-metrics"}
    assert rendered.one("Service", "-ovn-db")["spec"]["publishNotReadyAddresses"] is True

    # The controller: leader election on, probes on the metrics port 9409.
    deployment = rendered.one("Deployment", "-controller")
    [controller] = rendered.containers("Deployment", "-controller").values()
    assert controller["command"][-1] == "controller"
    assert controller["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": 9409}
    assert controller["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": 9409}
    assert deployment["spec"]["template"]["spec"]["hostNetwork"] is True
    ini = rendered.ini()
    assert ini["controller"]["leader-election"] == "true"
    assert ini["controller"]["lease-namespace"] == "net-system"
    assert ini["controller"]["metrics-bind-address"] == "0.0.0.0:9409"

    # The node DaemonSet: ovn-controller and the agent; the CNI installer first. OVS in a DaemonSet of
    # its own, without the config checksum: a configuration change does not restart it.
    containers = rendered.containers("DaemonSet", "-node")
    assert list(containers) == ["ovn-controller", "node"]
    assert list(rendered.containers("DaemonSet", "-ovs")) == ["ovsdb-server", "ovs-vswitchd"]
    ovs_template = rendered.one("DaemonSet", "-ovs")["spec"]["template"]
    assert not (ovs_template["metadata"].get("annotations") or {})
    assert rendered.one("DaemonSet", "-node")["spec"]["template"]["metadata"]["annotations"]
    assert ovs_template["spec"]["hostNetwork"] is True
    assert ovs_template["spec"]["automountServiceAccountToken"] is False
    agent = containers["node"]
    assert agent["securityContext"]["privileged"] is True
    # Probes go to the agent's loopback listener (the kubelet shares the host network); /metrics on the
    # node's address (the pod's OVNK_NODE_METRICS_BIND_ADDRESS), as ovn-kubernetes serves it.
    assert agent["livenessProbe"]["httpGet"] == {"host": "127.0.0.1", "path": "/healthz", "port": 9410}
    assert agent["readinessProbe"]["httpGet"] == {"host": "127.0.0.1", "path": "/readyz", "port": 9410}
    assert agent["ports"] == [{"name": "metrics", "containerPort": 9410, "protocol": "TCP"}]
    assert (ini["node"]["health-bind-address"], ini["node"]["metrics-bind-address"]) == ("127.0.0.1:9410",) * 2
    assert {"name": "OVNK_NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}} in agent["env"]
    ds_spec = rendered.one("DaemonSet", "-node")["spec"]["template"]["spec"]
    assert ds_spec["hostNetwork"] is True
    [installer] = rendered.containers("DaemonSet", "-node", init=True).values()
    assert installer["command"][-1] == "cni-install"
    # The installer writes into the host's CNI bin directory at the same path.
    bin_mount = next(m for m in installer["volumeMounts"] if m["name"] == "cni-bin")
    bin_volume = next(v for v in ds_spec["volumes"] if v["name"] == "cni-bin")
    assert bin_mount["mountPath"] == bin_volume["hostPath"]["path"] == ini["cni"]["bin-dir"] == "/opt/cni/bin"

    # Every ovnk process reads the rendered configuration at /etc/ovnk/ovnk.conf.
    for owner, name in [("Deployment", "controller"), ("DaemonSet", "node")]:
        container = rendered.containers(owner, f"-{name}")[name]
        assert {"name": "config", "mountPath": "/etc/ovnk/ovnk.conf", "subPath": "ovnk.conf",
                "readOnly": True} in container["volumeMounts"]
    assert rendered.one("ConfigMap", "-config")["metadata"]["name"] == "ovnk-config"


def test_rbac_is_least_privilege() -> None:
    rendered = render()
    controller = rendered.one("ClusterRole", "-controller")["rules"]
    node = rendered.one("ClusterRole", "-node")["rules"]

    def verbs(rules: list[dict[str, object]], group: str, resource: str) -> set[str]:
        return {v for r in rules if group in r["apiGroups"] and resource in r["resources"]  # type: ignore[operator]
                for v in r["verbs"]}  # type: ignore[attr-defined]

    # Annotations are written through the status subresources (as upstream): nobody writes a spec.
    # Reads are what the chart e2e's audit log shows used (tests/e2e/test_chart_deploy.py).
    assert verbs(controller, "", "nodes") == {"get", "list", "watch"}
    assert verbs(controller, "", "pods") == {"list", "watch"}
    assert verbs(controller, "", "nodes/status") == {"patch"}
    assert verbs(controller, "", "pods/status") == {"patch"}
    assert verbs(controller, "", "events") == {"create", "patch"}
    assert verbs(controller, "networking.k8s.io", "networkpolicies") == {"list", "watch"}
    assert verbs(controller, "discovery.k8s.io", "endpointslices") == {"list", "watch"}
    assert verbs(node, "", "nodes") == {"get", "list", "watch"}
    assert verbs(node, "", "nodes/status") == {"patch"}
    assert verbs(node, "", "pods") == {"get", "list", "watch"}  # the agent never writes pods
    assert verbs(node, "", "pods/status") == set()  # ... unless a plugin says so (below)
    assert verbs(node, "", "services") == {"list", "watch"}
    assert verbs(node, "discovery.k8s.io", "endpointslices") == set()  # ... only with egressservice
    assert verbs(render(plugin_values(["egressservice"])).one("ClusterRole", "-node")["rules"],
                 "discovery.k8s.io", "endpointslices") == {"list", "watch"}
    # A standalone database reads nothing from the API (only RAFT members look their peers up).
    assert not [r for r in rendered.of_kind("Role") if r["metadata"]["name"].endswith("-ovn-db")]
    raft = render({"ovnDb": {"mode": "raft"}})
    [db_role] = [r for r in raft.of_kind("Role") if r["metadata"]["name"].endswith("-ovn-db")]
    assert db_role["rules"] == [{"apiGroups": [""], "resources": ["endpoints"], "resourceNames": ["ovnk-ovn-db"],
                                 "verbs": ["get"]}]
    for rules in (controller, node):
        assert all("*" not in r["verbs"] and "*" not in r["resources"] for r in rules)
        assert verbs(rules, "", "secrets") == set()
    lease_rules = rendered.one("Role", "-controller")["rules"]
    assert verbs(lease_rules, "coordination.k8s.io", "leases") == {"get", "update", "create"}
    assert next(r for r in lease_rules if "update" in r["verbs"])["resourceNames"] == ["ovnk-controller"]


def test_tls_is_the_default_with_a_generated_pki_and_plain_tcp_only_when_asked() -> None:
    rendered = render()
    secrets = {d["metadata"]["name"]: d for d in rendered.of_kind("Secret")}
    assert set(secrets) == {"ovnk-ovn-ca", "ovnk-ovn-ca-key", "ovnk-ovn-server", "ovnk-ovn-client", "ovnk-ovn-node-ca"}
    assert set(secrets["ovnk-ovn-ca"]["data"]) == {"ca.crt"}  # the central CA's key lives apart
    for name in ("ovnk-ovn-ca-key", "ovnk-ovn-server", "ovnk-ovn-client", "ovnk-ovn-node-ca"):
        assert secrets[name]["type"] == "kubernetes.io/tls" and set(secrets[name]["data"]) == {"tls.crt", "tls.key"}
    for container in rendered.containers("StatefulSet", "-ovn-db").values():
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        assert container["name"] == "northd" or env["OVN_DB_SCHEME"] == "ssl"
    assert rendered.ini()["ovnnorth"]["client-cert"] == "/etc/ovnk/ssl/cert/tls.crt"

    def secret_volumes(kind: str, suffix: str) -> dict[str, dict[str, object]]:
        spec = rendered.one(kind, suffix)["spec"]["template"]["spec"]
        return {v["secret"]["secretName"]: v["secret"] for v in spec["volumes"] if "secret" in v}

    # Who may read what: no pod mounts the central CA's key; nodes get the node CA, never the
    # controller's certificate; everyone gets only ca.crt of the CA Secret.
    db, controller, node = (secret_volumes("StatefulSet", "-ovn-db"), secret_volumes("Deployment", "-controller"),
                            secret_volumes("DaemonSet", "-node"))
    assert set(db) == {"ovnk-ovn-ca", "ovnk-ovn-server", "ovnk-ovn-node-ca"}
    assert db["ovnk-ovn-node-ca"]["items"] == [{"key": "tls.crt", "path": "tls.crt"}]
    assert set(controller) == {"ovnk-ovn-ca", "ovnk-ovn-client"}
    assert set(node) == {"ovnk-ovn-ca", "ovnk-ovn-node-ca"}
    for volumes in (db, controller, node):
        assert volumes["ovnk-ovn-ca"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}]
    # ovn-controller gets no certificate of its own: it reads the chassis certificate from OVS.
    ovn_controller = rendered.containers("DaemonSet", "-node")["ovn-controller"]
    assert "env" not in ovn_controller

    plain = render({"ovnDb": {"ssl": {"enabled": False}}})
    assert plain.of_kind("Secret") == []
    assert "client-cert" not in plain.ini()["ovnnorth"] and "chassis-ca-cert" not in plain.ini()["node"]
    nb = plain.containers("StatefulSet", "-ovn-db")["nb-ovsdb"]
    assert {e["name"]: e.get("value") for e in nb["env"]}["OVN_DB_SCHEME"] == "tcp"


def test_node_metrics_where_configured() -> None:
    rendered = render({"node": {"metricsBindHost": "0.0.0.0", "metricsPort": 9476}})
    agent = rendered.containers("DaemonSet", "-node")["node"]
    assert agent["ports"] == [{"name": "metrics", "containerPort": 9476, "protocol": "TCP"}]
    assert rendered.ini()["node"]["metrics-bind-address"] == "0.0.0.0:9476"
    assert rendered.ini()["node"]["health-bind-address"] == "127.0.0.1:9410"


def test_raft_and_ssl() -> None:
    rendered = render({"ovnDb": {"mode": "raft", "ssl": {"enabled": True}}, "controller": {"replicas": 3}},
                      kube_version="v1.20.15")
    sts = rendered.one("StatefulSet", "-ovn-db")
    assert sts["spec"]["replicas"] == 3
    nb = rendered.containers("StatefulSet", "-ovn-db")["nb-ovsdb"]
    env = {e["name"]: e.get("value") for e in nb["env"]}
    assert (env["OVN_DB_MODE"], env["OVN_DB_SCHEME"], env["OVN_DB_REPLICAS"]) == ("raft", "ssl", "3")
    assert {p["containerPort"] for p in nb["ports"]} == {6641, 6643}
    volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    assert volumes["ssl-cert"]["secret"]["secretName"] == "ovnk-ovn-server"
    ds_volumes = {v["name"]: v for v in rendered.one("DaemonSet", "-node")["spec"]["template"]["spec"]["volumes"]}
    assert "ssl-cert" not in ds_volumes and ds_volumes["ssl-node-ca"]["secret"]["secretName"] == "ovnk-ovn-node-ca"
    ini = rendered.ini()
    for section in ("ovnnorth", "ovnsouth"):
        assert ini[section] == {"client-privkey": "/etc/ovnk/ssl/cert/tls.key",
                                "client-cert": "/etc/ovnk/ssl/cert/tls.crt",
                                "client-cacert": "/etc/ovnk/ssl/ca/ca.crt"}
    # Kubernetes 1.20 has no policy/v1 PodDisruptionBudget.
    assert {(d["apiVersion"], d["metadata"]["name"]) for d in rendered.of_kind("PodDisruptionBudget")} == {
        ("policy/v1beta1", "ovnk-ovn-db"), ("policy/v1beta1", "ovnk-controller")}
    assert rendered.one("Deployment", "-controller")["spec"]["replicas"] == 3
    newer = render({"ovnDb": {"mode": "raft"}}, kube_version="v1.25.0")
    assert {d["apiVersion"] for d in newer.of_kind("PodDisruptionBudget")} == {"policy/v1"}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"ovnDb": {"mode": "active-backup"}}, "ovnDb/mode"),
        ({"ovnDb": {"mode": "raft", "raft": {"replicas": 4}}}, "must be odd and at least 3"),
        ({"extraConfig": {"controller": {"lease-name": "x"}}}, "extraConfig.controller.lease-name is already set"),
        ({"plugins": {"p": {"enabled": True, "settings": {"k": {"nested": 1}}}}}, "/plugins/p/settings/k"),
        ({"plugins": {"default": {"enabled": True}}}, "also a core configuration section"),
        ({"mtu": 100}, "/mtu"),
        ({"controller": {"leaderElection": {"leaseDuration": 10, "renewDeadline": 10, "retryPeriod": 2}}},
         "retryPeriod < renewDeadline < leaseDuration"),
        ({"gatewayMode": "local"}, "/gatewayMode"),
        # A mistyped key renders nothing and must not pass silently: the error names it.
        ({"enableMulticast": True}, "'enableMulticast' not allowed"),
        ({"controller": {"leaderElection": {"leaseDuraton": 30}}}, "'leaseDuraton' not allowed"),
        ({"node": {"resources": {"agent": {"limit": {"cpu": "1"}}}}}, "'limit' not allowed"),
        ({"node": {"resources": {"ovs": {"requests": {"cpu": "1"}}}}}, "'ovs' not allowed"),
        ({"plugins": {"multicast": {"enable": True}}}, "'enable' not allowed"),
    ],
)
def test_bad_values_are_rejected_with_a_message(values: dict[str, object], message: str) -> None:
    assert message in render_error(values)


def test_plugin_crds_have_a_single_source() -> None:
    """The chart reads the plugins' CRD files through one symlink; it holds no copy of any CRD."""
    link = CHART / "files" / "plugins"
    assert link.is_symlink()
    assert os.readlink(link) == "../../../plugins"
    assert link.resolve() == (REPO / "plugins").resolve()
    crd_document = re.compile(r"^\s*kind:\s*[\"']?CustomResourceDefinition", re.MULTILINE)
    copies = [
        Path(directory, name)
        for directory, _dirs, files in os.walk(CHART)  # does not descend into the symlink
        for name in files
        if crd_document.search(Path(directory, name).read_text(errors="replace"))
    ]
    assert copies == []


def test_crd_shared_with_other_projects_is_kept_on_uninstall() -> None:
    """A CRD annotated ovnk/crd-install: if-missing (NetworkAttachmentDefinition, which Multus installs
    too) always carries helm.sh/resource-policy: keep; the others only with keepCrds."""
    plugins = first_party_plugins()
    rendered = render(plugin_values(["secondary_networks", "egressip"],
                                    disabled=[p for p in plugins if p not in ("secondary_networks", "egressip")]))
    crds = {c["metadata"]["name"]: c for c in rendered.of_kind("CustomResourceDefinition")}
    nad = crds["network-attachment-definitions.k8s.cni.cncf.io"]
    assert nad["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert nad["metadata"]["annotations"]["ovnk/crd-install"] == "if-missing"
    assert "helm.sh/resource-policy" not in (crds["egressips.k8s.ovn.org"]["metadata"].get("annotations") or {})


def test_a_third_party_plugins_crds_come_from_values() -> None:
    """plugins.<name>.crds (--set-file ...=hellos.yaml): rendered verbatim and granted like a first-party
    plugin's CRDs while the plugin is enabled; nothing of them when it is off."""
    crd_file = REPO / "tests" / "thirdparty" / "ovnk-hello" / "ovnk_hello" / "crds" / "hellos.yaml"
    text = crd_file.read_text()
    for given in (text, yaml.safe_load(text)):
        rendered = render({"plugins": {"hello": {"enabled": True, "crds": {"hellos": given}}}})
        [crd] = rendered.of_kind("CustomResourceDefinition")
        assert crd == yaml.safe_load(text)
        if isinstance(given, str):
            assert text.strip() in rendered.text  # verbatim, comments included
        for role, verbs in (("-controller", ["get", "list", "watch", "patch"]),
                            ("-node", ["get", "list", "watch"])):
            rules = rendered.one("ClusterRole", role)["rules"]
            assert {"apiGroups": ["example.com"], "resources": ["hellos"], "verbs": verbs} in rules
            status = {"apiGroups": ["example.com"], "resources": ["hellos/status"], "verbs": ["patch"]}
            assert (status in rules) == (role == "-controller")
        assert rendered.enabled_plugins() == ["hello"]
    off = render({"plugins": {"hello": {"enabled": False, "crds": {"hellos": text}}}})
    assert off.of_kind("CustomResourceDefinition") == []
    assert "hellos" not in off.text


def test_a_plugins_own_rbac_file_adds_rules_while_it_is_enabled() -> None:
    """plugins/<name>/rbac.yaml: secondary_networks' agent writes the network-status annotation of the
    pods it wires, so with it (and only with it) the node role may patch pods/status."""
    plugins = first_party_plugins()
    rbac_files = sorted(p.parent.name for p in (REPO / "plugins").glob("*/rbac.yaml"))
    assert "secondary_networks" in rbac_files
    on = render(plugin_values(["secondary_networks"]))
    off = render(plugin_values([], disabled=plugins))
    rule = {"apiGroups": [""], "resources": ["pods/status"], "verbs": ["patch"]}
    assert rule in on.one("ClusterRole", "-node")["rules"]
    assert rule not in off.one("ClusterRole", "-node")["rules"]
    for name in rbac_files:
        spec = yaml.safe_load((REPO / "plugins" / name / "rbac.yaml").read_text())
        assert set(spec) <= {"controller", "node"}, name


def test_ovs_keeps_its_image_when_asked() -> None:
    """ovs.image: OVS' pods keep their image when image.* names another (a plugin author's)."""
    default = render({"image": {"repository": "r/ovnk", "tag": "t1", "pullPolicy": "IfNotPresent"}})
    assert {c["image"] for c in default.containers("DaemonSet", "-ovs").values()} == {"r/ovnk:t1"}
    pinned = render({"image": {"repository": "r/ovnk-hello", "tag": "t2", "pullPolicy": "IfNotPresent"},
                     "ovs": {"image": {"repository": "r/ovnk", "tag": "t1"}}})
    assert {c["image"] for c in pinned.containers("DaemonSet", "-ovs").values()} == {"r/ovnk:t1"}
    assert {c["image"] for c in pinned.containers("DaemonSet", "-node").values()} == {"r/ovnk-hello:t2"}
