"""``ovnk node`` against real OVS/OVN and a real API server: what set-up leaves behind."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import pytest

from ovnk.core.config import CniSettings
from ovnk.core.kube.resources import EVENTS
from ovnk.core.kube.resources import NODES
from ovnk.core.node.flows import FlowManager
from ovnk.core.node.ovn_health import southbound_connected
from ovnk_lab.ovsnode import NodeLab
from ovnk_lab.ovsnode import OvsNode

from .conftest import dump_flows
from .conftest import node_annotations
from .conftest import restart_agent
from .conftest import shim_status
from .conftest import wait_gone

pytestmark = [pytest.mark.node, pytest.mark.kube, pytest.mark.ovn, pytest.mark.slow]


def agent_http(node: OvsNode, path: str) -> tuple[int, str]:
    """GET the agent's health endpoint from inside its netns (it binds 127.0.0.1 there)."""
    script = (
        "import sys, urllib.request, urllib.error\n"
        "try:\n"
        f"    r = urllib.request.urlopen('http://127.0.0.1:9410{path}', timeout=5); print(r.status); print(r.read().decode())\n"
        "except urllib.error.HTTPError as e:\n"
        "    print(e.code); print(e.read().decode())\n"
    )
    out = node.exec(["python3", "-c", script]).stdout
    status, _, body = out.partition("\n")
    return int(status), body


def flow_ages(dump: list[str]) -> dict[str, float]:
    """Flow (match and actions) -> seconds since it was added."""
    ages = {}
    for line in dump:
        age = float(line.split("duration=")[1].split("s,")[0])
        ages[line.split("priority=", 1)[1]] = age
    return ages


def ovnk_write(node: dict[str, Any]) -> tuple[str, dict[str, str]]:
    """When the agent last wrote the Node (managedFields of manager ovnk) and the annotations."""
    times = [f["time"] for f in node["metadata"]["managedFields"] if f["manager"] == "ovnk"]
    ours = {k: v for k, v in node["metadata"]["annotations"].items() if k.startswith("k8s.ovn.org/")}
    return ",".join(times), ours


def test_open_vswitch_external_ids(node1: OvsNode) -> None:
    raw = node1.vsctl("get", "Open_vSwitch", ".", "external_ids")
    ids = dict(item.split("=", 1) for item in raw.strip().strip("{}").replace('"', "").split(", ") if item)
    assert ids["hostname"] == "node-1"
    assert ids["ovn-encap-type"] == "geneve"
    assert ids["ovn-encap-ip"] == node1.ip
    assert ids["ovn-bridge-datapath-type"] == "netdev"
    assert "physnet:breth0" in ids["ovn-bridge-mappings"].split(",")
    assert ids["ovn-monitor-all"] == "true"
    assert ids["ovn-remote"].startswith("unix:")
    assert ids["ovn-remote-probe-interval"] == "100000"
    assert len(ids["system-id"]) == 36


def test_node_annotations_published(lab: NodeLab, node1: OvsNode) -> None:
    annotations = node_annotations(lab, "node-1")
    system_id = node1.vsctl("get", "Open_vSwitch", ".", "external_ids:system-id").strip().strip('"')
    assert annotations["k8s.ovn.org/node-chassis-id"] == system_id
    assert json.loads(annotations["k8s.ovn.org/node-primary-ifaddr"]) == {"ipv4": f"{node1.ip}/24"}
    gateway = json.loads(annotations["k8s.ovn.org/l3-gateway-config"])["default"]
    bridge_mac = json.loads(node1.exec(["ip", "-j", "link", "show", "breth0"]).stdout)[0]["address"]
    assert gateway["mode"] == "shared"
    assert gateway["bridge-id"] == "breth0"
    assert gateway["interface-id"] == "breth0_node-1"
    assert gateway["mac-address"] == bridge_mac
    assert gateway["ip-addresses"] == [f"{node1.ip}/24"]
    assert gateway["next-hops"] == [lab.underlay.ext_ip]
    subnet = ipaddress.ip_network(json.loads(annotations["k8s.ovn.org/node-subnets"])["default"][0])
    mgmt_mac = json.loads(annotations["k8s.ovn.org/node-mgmt-port-mac-addresses"])["default"]
    assert mgmt_mac == "0a:58:" + ":".join(f"{b:02x}" for b in (subnet.network_address + 2).packed)
    assert json.loads(annotations["k8s.ovn.org/host-cidrs"]) == [f"{node1.ip}/24"]
    assert json.loads(annotations["k8s.ovn.org/node-encap-ips"]) == [node1.ip]


def test_gateway_bridge_took_over_the_uplink(lab: NodeLab, node1: OvsNode) -> None:
    addresses = {link["ifname"]: [a["local"] for a in link["addr_info"] if a["family"] == "inet"]
                 for link in json.loads(node1.exec(["ip", "-j", "addr", "show"]).stdout)}
    assert addresses["breth0"] == [node1.ip]
    assert addresses["eth0"] == []
    route = node1.exec(["ip", "route", "show", "default"]).stdout
    assert f"via {lab.underlay.ext_ip} dev breth0" in route
    ports = node1.vsctl("list-ports", "breth0").split()
    assert "eth0" in ports
    assert "patch-breth0_node-1-to-br-int" in ports  # ovn-controller made it from the bridge mapping
    assert node1.vsctl("get", "Bridge", "breth0", "fail_mode").strip() == "secure"
    # TX checksum offload off on the internal port (netdev datapath).
    assert "tx-checksumming: off" in node1.exec(["ethtool", "-k", "breth0"]).stdout
    # Host TCP through the bridge: the agent itself talks to the API server; so does this.
    assert lab.kube is not None
    url = f"https://{lab.underlay.host_ip}:{lab.kube.api_port}/healthz"
    script = ("import ssl, urllib.request; "
              f"print(urllib.request.urlopen({url!r}, context=ssl._create_unverified_context(), timeout=5).read().decode())")
    assert node1.exec(["python3", "-c", script]).stdout.strip() == "ok"


def test_gateway_flows_belong_to_core(node1: OvsNode) -> None:
    flows = dump_flows(node1, "breth0", "--no-stats")
    core = f"cookie={FlowManager.cookie('core'):#x}"
    assert flows and all(core in f for f in flows), flows
    text = "\n".join(flows)
    assert "ct(commit,zone=64000,exec(load:0x1->NXM_NX_CT_MARK[]))" in text
    assert "ct_state=+est+trk,ct_mark=0x1" in text
    assert "actions=NORMAL" not in text


def test_management_port(lab: NodeLab, node1: OvsNode) -> None:
    annotations = node_annotations(lab, "node-1")
    subnet = ipaddress.ip_network(json.loads(annotations["k8s.ovn.org/node-subnets"])["default"][0])
    link = json.loads(node1.exec(["ip", "-j", "addr", "show", "ovn-k8s-mp0"]).stdout)[0]
    assert link["mtu"] == 1400
    assert [f"{a['local']}/{a['prefixlen']}" for a in link["addr_info"] if a["family"] == "inet"] == \
        [f"{subnet.network_address + 2}/{subnet.prefixlen}"]
    routes = node1.exec(["ip", "route", "show", "dev", "ovn-k8s-mp0"]).stdout
    assert f"10.244.0.0/16 via {subnet.network_address + 1}" in routes
    assert f"10.96.0.0/16 via {subnet.network_address + 1}" in routes
    iface = node1.vsctl("get", "Interface", "ovn-k8s-mp0", "external_ids:iface-id").strip().strip('"')
    assert iface == "k8s-node-1"
    assert node1.vsctl("port-to-br", "ovn-k8s-mp0").strip() == "br-int"


def test_cni_config_shim_status_and_readiness(node1: OvsNode) -> None:
    conf = json.loads(node1.cni_conf_file.read_text())
    assert conf == {"cniVersion": CniSettings().conf_version, "name": "ovn-kubernetes", "type": "ovn-k8s-cni-overlay"}
    assert node1.shim.exists()
    assert shim_status(node1).returncode == 0
    assert agent_http(node1, "/readyz")[0] == 200
    status, metrics = agent_http(node1, "/metrics")
    assert status == 200
    assert 'ovnk_build_info{component="node"' in metrics
    assert "ovnk_cni_ovn_installed_wait_seconds_bucket" in metrics
    assert "ovnk_cni_request_duration_seconds" in metrics
    # ovn-kubernetes' names for dashboards; the node's own controllers are ovnk_node_controller_*,
    # not ovnk_controller_* (which is the controller process's).
    assert "# TYPE ovnkube_node_cni_request_duration_seconds histogram" in metrics
    ready = next(line for line in metrics.splitlines() if line.startswith("ovnkube_node_ready_duration_seconds "))
    assert float(ready.split()[-1]) > 0
    assert "ovnk_node_controller_reconcile_total{" in metrics and "ovnk_controller_reconcile_total" not in metrics
    assert "ovnkube_resource_retry_failures_total" in metrics
    # ovn-controller's SB connection, asked through its control socket at scrape time.
    assert "\novn_controller_southbound_database_connected 1.0\n" in metrics
    assert southbound_connected(str(node1.run_dir)) == 1.0
    assert southbound_connected(str(node1.run_dir / "nowhere")) == 0.0


def test_restart_writes_nothing(lab: NodeLab, node2: OvsNode) -> None:
    """A restart with unchanged facts: no Node write, same OVS rows, same flows (never re-added)."""
    assert lab.client is not None
    node = lab.client.get(NODES, "node-2")
    assert node is not None
    before_write = ovnk_write(node)
    bridges = node2.vsctl("--columns=_uuid,name", "list", "Bridge")
    mp0 = node2.vsctl("get", "Interface", "ovn-k8s-mp0", "_uuid", "ofport", "mac_in_use")
    system_id = node2.vsctl("get", "Open_vSwitch", ".", "external_ids:system-id")
    flows_before = dump_flows(node2, "breth0")
    restart_agent(lab, node2)
    node = lab.client.get(NODES, "node-2")
    assert node is not None
    # Other writers (kube-controller-manager) may touch the Node; ours did not.
    assert ovnk_write(node) == before_write
    assert node2.vsctl("--columns=_uuid,name", "list", "Bridge") == bridges
    assert node2.vsctl("get", "Interface", "ovn-k8s-mp0", "_uuid", "ofport", "mac_in_use") == mp0
    assert node2.vsctl("get", "Open_vSwitch", ".", "external_ids:system-id") == system_id
    flows_after = dump_flows(node2, "breth0")
    # Unchanged flows keep their age: replace-flows left them alone (never deleted and re-added).
    before, after = flow_ages(flows_before), flow_ages(flows_after)
    assert set(before) == set(after)
    assert all(after[flow] >= age for flow, age in before.items())
    assert shim_status(node2).returncode == 0


def test_status_while_agent_down(lab: NodeLab, node2: OvsNode) -> None:
    lab.stop_agent(node2)
    try:
        down = shim_status(node2)
        assert down.returncode == 1
        error = json.loads(down.stdout)
        assert error["code"] == 50
        assert "node agent" in error["msg"] or str(node2.cni_socket) in error["msg"]
    finally:
        restart_agent(lab, node2)
    assert shim_status(node2).returncode == 0



def test_startup_failure_is_reported(lab: NodeLab, node2: OvsNode) -> None:
    """A bad uplink stops start-up before anything is touched: exit status, log line and a Node event."""
    assert lab.client is not None
    lab.stop_agent(node2)
    try:
        agent = lab.start_agent(node2, "gateway.interface=nosuch0", wait=False)
        assert agent.proc is not None
        assert agent.proc.wait(timeout=60) != 0
        log = node2.agent_log.read_text()
        assert "setting up the shared gateway bridge failed: interface nosuch0 does not exist" in log
        events = lab.client.list(EVENTS, namespace="default", field_selector="involvedObject.name=node-2")[0]
        assert any(e["reason"] == "NodeAgentStartFailed" and "nosuch0" in e["message"] for e in events)
        lab.stop_agent(node2)
    finally:
        restart_agent(lab, node2)
    assert shim_status(node2).returncode == 0


def test_cni_config_removed_on_exit_only_when_configured(lab: NodeLab, node2: OvsNode) -> None:
    lab.stop_agent(node2)
    assert node2.cni_conf_file.exists()  # default: kept, the runtime keeps using it across restarts
    try:
        restart_agent(lab, node2, "cni.remove-conf-on-exit=true")
        lab.stop_agent(node2)
        assert not node2.cni_conf_file.exists()
    finally:
        restart_agent(lab, node2)
    assert node2.cni_conf_file.exists()


def http_get(node: OvsNode, url: str) -> int | str:
    """Status of GET ``url`` from inside ``node``'s netns, or the connection error's text."""
    script = (
        "import sys, urllib.request, urllib.error\n"
        "try:\n"
        f"    print(urllib.request.urlopen({url!r}, timeout=5).status)\n"
        "except urllib.error.HTTPError as e:\n"
        "    print(e.code)\n"
        "except OSError as e:\n"
        "    print(type(e).__name__, e)\n"
    )
    out = node.exec(["python3", "-c", script]).stdout.strip()
    return int(out) if out.isdigit() else out


def test_health_on_loopback_only_metrics_where_configured(lab: NodeLab, node1: OvsNode, node2: OvsNode) -> None:
    """/healthz and /readyz answer on the node's loopback only (the kubelet probes from the host network);
    /metrics is served on the address configured for it, which pods and other nodes may reach, and
    nothing else is (issue 24, secure defaults)."""
    metrics = f"{node1.ip}:9476"
    restart_agent(lab, node1, f"node.metrics-bind-address={metrics}", "node.health-bind-address=127.0.0.1:9410")
    try:
        wait_gone("node-1 ready", lambda: http_get(node1, "http://127.0.0.1:9410/readyz") == 200)
        for path in ("/healthz", "/readyz"):
            assert agent_http(node1, path)[0] == 200
            assert http_get(node2, f"http://{metrics}{path}") == 404  # from another node
            assert http_get(node2, f"http://{node1.ip}:9410{path}") != 200
        assert http_get(node2, f"http://{metrics}/metrics") == 200
        assert agent_http(node1, "/metrics")[0] == 404  # the loopback listener serves health only
    finally:
        restart_agent(lab, node1)
    # Defaults: one loopback listener for all three.
    for path in ("/healthz", "/readyz", "/metrics"):
        assert agent_http(node1, path)[0] == 200
