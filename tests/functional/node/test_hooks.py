"""Every node-agent and CNI hook, exercised by a test plugin enabled in a real ``ovnk node``.

The plugin is a real distribution (dist-info with an ``ovnk.plugins`` entry
point) on the agent's ``PYTHONPATH``; node-2's agent is restarted with
``--plugins testhooks`` for this module and without it at the end, which also
shows that a switched-off plugin's flows disappear.
"""

from __future__ import annotations

import json
import shutil
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ovnk.core.kube.resources import NODES
from ovnk.core.node.flows import FlowManager
from ovnk_lab.ovsnode import NodeLab
from ovnk_lab.ovsnode import OvsNode
from ovnk_lab.ovsnode import netconf
from ovnk_lab.procs import wait_for

from .conftest import add_ok
from .conftest import dump_flows
from .conftest import iface_map
from .conftest import node_annotations
from .conftest import ping
from .conftest import pod_ip
from .conftest import restart_agent
from .conftest import wired_pod

pytestmark = [pytest.mark.node, pytest.mark.kube, pytest.mark.ovn, pytest.mark.slow]

PLUGIN = "testhooks"
ANNOTATION = "k8s.ovn.org/testhooks"
STALE_ANNOTATION = "k8s.ovn.org/testhooks-stale"
UNCLAIMED_ANNOTATION = "k8s.ovn.org/testhooks-unclaimed"
FLOW = "table=0,priority=500,udp,tp_dst=9999 actions=drop"

PLUGIN_SOURCE = '''
"""A plugin that leaves a visible trace for every node-agent and CNI hook."""

import json
import threading

from ovnk import hookimpl
from ovnk.core.node.wiring import CniNetwork
from ovnk.core.node.wiring import VethDriver

ANNOTATION = "k8s.ovn.org/testhooks"
STALE = "k8s.ovn.org/testhooks-stale"


@hookimpl
def ovnk_claims(claims):
    claims.annotation(ANNOTATION)
    claims.annotation(STALE)


@hookimpl
def ovnk_node_setup(ctx):
    ctx.flows.set_flows(ctx.gateway_bridge, "testhooks", ["table=0,priority=500,udp,tp_dst=9999 actions=drop"])
    ctx.ovs.set_external_ids({"testhooks-setup": ctx.node_name})
    ctx.net.sysctl("net/ipv4/conf/breth0/accept_local", "1")


@hookimpl
def ovnk_node_annotations(ctx, annotations):
    annotations[ANNOTATION] = json.dumps({"node": ctx.node_name, "bridge": ctx.gateway_bridge})
    annotations[STALE] = None
    annotations["k8s.ovn.org/testhooks-unclaimed"] = "must not be published"


class Manager:
    name = "testhooks.manager"

    def __init__(self, ctx):
        self.ctx = ctx

    def run(self, stop):
        ticks = 0
        while not stop.wait(0.2):
            ticks += 1
            self.ctx.ovs.set_external_ids({"testhooks-manager": str(ticks)})
        self.ctx.ovs.set_external_ids({"testhooks-manager": None})


@hookimpl
def ovnk_node_managers(ctx):
    return [Manager(ctx)]


@hookimpl
def ovnk_cni_network(ctx, request):
    mtu = request.config.get("testhooksMtu")
    if mtu is None:
        return None
    return CniNetwork(annotation_key="default", iface_id=f"{request.pod_namespace}_{request.pod_name}",
                      ifname=request.ifname, mtu=int(mtu))


class DeviceDriver(VethDriver):
    """Stands in for a VF-representor driver: chosen for requests with a deviceID."""

    name = "testhooks-device"

    def add(self, ctx, request, network, pod_network):
        result = super().add(ctx, request, network, pod_network)
        ctx.ovs.set_interface_external_ids(result.interfaces[0].name, {"testhooks-device-id": request.device_id})
        return result


@hookimpl
def ovnk_cni_interface_driver(ctx, request, network):
    return DeviceDriver() if request.device_id else None


@hookimpl
def ovnk_cni_add(ctx, request, result):
    result.dns.nameservers = ["10.96.0.10"]
    result.dns.search = [f"{request.pod_namespace}.svc.cluster.local"]


@hookimpl
def ovnk_cni_del(ctx, request):
    ctx.ovs.set_external_ids({"testhooks-last-del": request.container_id})
'''


def install_plugin(site: Path) -> None:
    """A real distribution: METADATA + entry_points.txt in a dist-info, and the module."""
    info = site / "ovnk_testhooks-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ovnk-testhooks\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[ovnk.plugins]\n{PLUGIN} = ovnk_testhooks\n")
    (site / "ovnk_testhooks.py").write_text(textwrap.dedent(PLUGIN_SOURCE))


def ovs_id(node: OvsNode, key: str) -> str | None:
    out = node.vsctl("--if-exists", "get", "Open_vSwitch", ".", f"external_ids:{key}").strip()
    return out.strip('"') or None


@pytest.fixture(scope="module")
def hooked(lab: NodeLab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OvsNode]:
    """node-2's agent with the test plugin enabled (a stale annotation waits for it to remove)."""
    assert lab.client is not None
    node = lab.nodes["node-2"]
    site = tmp_path_factory.mktemp("testhooks-site")
    install_plugin(site)
    lab.client.patch(NODES, node.name, {"metadata": {"annotations": {STALE_ANNOTATION: "left by an old version"}}})
    restart_agent(lab, node, plugins=(PLUGIN,), env={"PYTHONPATH": str(site)})
    try:
        yield node
    finally:
        if PLUGIN in " ".join(node.agent.argv if node.agent else []):
            restart_agent(lab, node)
        shutil.rmtree(site, ignore_errors=True)


def test_hook_ovnk_node_setup_programs_flows_ovs_and_sysctls(hooked: OvsNode) -> None:
    cookie = f"{FlowManager.cookie(PLUGIN):#x}"
    flows = dump_flows(hooked, "breth0", f"cookie={cookie}/-1", "--no-stats")
    assert len(flows) == 1 and "udp,tp_dst=9999 actions=drop" in flows[0] and f"cookie={cookie}" in flows[0]
    # Core's flows are still all there beside it.
    core = dump_flows(hooked, "breth0", f"cookie={FlowManager.cookie('core'):#x}/-1")
    assert len(core) >= 10
    assert ovs_id(hooked, "testhooks-setup") == "node-2"
    assert hooked.exec(["cat", "/proc/sys/net/ipv4/conf/breth0/accept_local"]).stdout.strip() == "1"


def test_hook_ovnk_node_annotations_published_removed_and_claims_enforced(lab: NodeLab, hooked: OvsNode) -> None:
    wait_for("testhooks annotation", lambda: ANNOTATION in node_annotations(lab, "node-2"), timeout=30)
    annotations = node_annotations(lab, "node-2")
    assert json.loads(annotations[ANNOTATION]) == {"node": "node-2", "bridge": "breth0"}
    assert STALE_ANNOTATION not in annotations  # None removes
    assert UNCLAIMED_ANNOTATION not in annotations  # not claimed by the plugin: refused
    assert f"plugin {PLUGIN} wants to publish annotation {UNCLAIMED_ANNOTATION}" in hooked.agent_log.read_text()


def test_hook_ovnk_node_managers_run_in_a_thread(hooked: OvsNode) -> None:
    wait_for("manager ticks", lambda: int(ovs_id(hooked, "testhooks-manager") or 0) > 0, timeout=30)
    first = int(ovs_id(hooked, "testhooks-manager") or 0)
    wait_for("more manager ticks", lambda: int(ovs_id(hooked, "testhooks-manager") or 0) > first, timeout=30)


def test_hook_ovnk_cni_network_sets_the_mtu(lab: NodeLab, hooked: OvsNode, ns: str) -> None:
    pod = lab.create_pod(hooked, ns, "mtu")
    lab.wait_pod_annotated(pod)
    result = add_ok(lab, pod, config=netconf(testhooksMtu=1300))
    assert result["interfaces"][1]["mtu"] == 1300
    link = json.loads(pod.exec(["ip", "-j", "link", "show", "eth0"]).stdout)[0]
    assert link["mtu"] == 1300
    host = json.loads(hooked.exec(["ip", "-j", "link", "show", pod.container_id[:15]]).stdout)[0]
    assert host["mtu"] == 1300


def test_hook_ovnk_cni_interface_driver_for_device_requests(lab: NodeLab, hooked: OvsNode, ns: str) -> None:
    pod, plain = wired_pod(lab, hooked, ns, "plain")
    assert "testhooks-device-id" not in iface_map(hooked, pod.container_id[:15], "external_ids")
    device = lab.create_pod(hooked, ns, "device")
    lab.wait_pod_annotated(device)
    result = add_ok(lab, device, config=netconf(deviceID="0000:03:00.1"))
    ids = iface_map(hooked, device.container_id[:15], "external_ids")
    assert ids["testhooks-device-id"] == "0000:03:00.1"
    assert ids["ovn-installed"] == "true"
    assert ping(device, pod_ip(plain)).returncode == 0
    assert result["interfaces"][1]["sandbox"] == device.netns_path


def test_hook_ovnk_cni_add_amends_the_result(lab: NodeLab, hooked: OvsNode, ns: str) -> None:
    pod = lab.create_pod(hooked, ns, "dns")
    lab.wait_pod_annotated(pod)
    result = add_ok(lab, pod)
    assert result["dns"] == {"nameservers": ["10.96.0.10"], "search": [f"{ns}.svc.cluster.local"]}


def test_hook_ovnk_cni_del_is_notified(lab: NodeLab, hooked: OvsNode, ns: str) -> None:
    pod, _ = wired_pod(lab, hooked, ns, "deleted")
    assert lab.cni(pod, "DEL").returncode == 0
    assert ovs_id(hooked, "testhooks-last-del") == pod.container_id
    # Also for a container nobody knows (DEL must not fail there).
    assert lab.cni(pod, "DEL", env={"CNI_CONTAINERID": "unknown-container-42"}).returncode == 0
    assert ovs_id(hooked, "testhooks-last-del") == "unknown-container-42"


def test_hook_plugin_switched_off_leaves_no_flows_or_manager(lab: NodeLab, hooked: OvsNode) -> None:
    restart_agent(lab, hooked)
    cookie = f"{FlowManager.cookie(PLUGIN):#x}"
    assert dump_flows(hooked, "breth0", f"cookie={cookie}/-1") == []
    assert ovs_id(hooked, "testhooks-manager") is None  # the manager cleaned up on stop, and is not back
    time.sleep(0.5)
    assert ovs_id(hooked, "testhooks-manager") is None
