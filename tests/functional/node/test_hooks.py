"""Every node-agent and CNI hook, exercised by a test plugin enabled in a real ``ovnk node``.

The plugin is a real distribution (dist-info with an ``ovnk.plugins`` entry
point) on the agent's ``PYTHONPATH``; node-2's agent is restarted with
``--plugins testhooks`` for this module and without it at the end, which also
shows that a switched-off plugin's node state disappears: flows (also on its
own bridge), nftables table, ip rules and routes, OVS keys and annotations.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from typing import Any

import pytest

from ovnk.core.kube.resources import NODES
from ovnk.core.kube.resources import PODS
from ovnk.core.node.flows import FlowManager
from ovnk_lab.ovsnode import NodeLab
from ovnk_lab.ovsnode import OvsNode
from ovnk_lab.ovsnode import netconf
from ovnk_lab.procs import wait_for

from .conftest import add_ok
from .conftest import dump_flows
from .conftest import iface_map
from .conftest import install_plugin
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
BRIDGE = "br-hooks"

PLUGIN_SOURCE = '''
"""A plugin that leaves a visible trace for every node-agent and CNI hook."""

import ipaddress
import json

from ovnk import PODS
from ovnk import CniNetwork
from ovnk import ControllerSpec
from ovnk import IpRule
from ovnk import NftChain
from ovnk import NftSet
from ovnk import NftTable
from ovnk import TableRoute
from ovnk import Watch
from ovnk import hookimpl
from ovnk.annotations import pod_ips
from ovnk.core.node.wiring import VethDriver

PLUGIN = "testhooks"
ANNOTATION = "k8s.ovn.org/testhooks"
STALE = "k8s.ovn.org/testhooks-stale"
BRIDGE = "br-hooks"


@hookimpl
def ovnk_claims(claims):
    claims.annotation(ANNOTATION)
    claims.annotation(STALE)


@hookimpl
def ovnk_node_setup(ctx):
    ctx.flows.set_flows(ctx.gateway_bridge, PLUGIN, ["table=0,priority=500,udp,tp_dst=9999 actions=drop"])
    # A bridge of its own, managed: core restores its flows after an ovs-vswitchd restart.
    ctx.ovs.ensure_bridge(BRIDGE, datapath_type=ctx.config.ovs.datapath_type, fail_mode="secure", owner=PLUGIN)
    ctx.flows.manage(BRIDGE)
    ctx.flows.set_flows(BRIDGE, PLUGIN, ["table=0,priority=20,arp actions=drop", "table=0,priority=10 actions=drop"])
    ctx.ovs.set_owned_keys(PLUGIN, "external_ids", {"testhooks-setup": ctx.node_name})
    ctx.ovs.set_owned_keys(PLUGIN, "other_config", {"testhooks-other": "1"})
    ctx.net.sysctl("net/ipv4/conf/breth0/accept_local", "1")
    ctx.net.set_rules(PLUGIN, [IpRule(priority=5000, src=ipaddress.ip_network("10.99.0.1/32"), table=99)])
    ctx.net.set_routes(PLUGIN, [TableRoute(dst=ipaddress.ip_network("10.99.0.0/16"), table=99,
                                           dev=ctx.gateway_bridge)])


@hookimpl
def ovnk_node_controllers(ctx):
    """The pods of this node: their IPs in an nft set, their names in an OVS key (owner testhooks.pods)."""
    selector = f"spec.nodeName={ctx.node_name}"

    def reconcile(request):
        pods = ctx.cache(PODS, field_selector=selector).list()
        ips = sorted({str(ip) for pod in pods for ip in pod_ips(pod) if ip.version == 4})
        ctx.nft.set_table(PLUGIN, NftTable(sets=(NftSet("pods-v4", type="ipv4_addr", elements=tuple(ips)),),
                                           chains=(NftChain("pods"),)))
        names = ",".join(sorted(pod["metadata"]["name"] for pod in pods))
        ctx.ovs.set_owned_keys("testhooks.pods", "external_ids", {"testhooks-pods": names or None})

    return [ControllerSpec(name="testhooks-pods", reconcile=reconcile, initial_keys=lambda: ["pods"],
                           watches=(Watch(PODS, field_selector=selector, keys=lambda pod: ("pods",)),),
                           resync_period=30.0)]


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


def ovs_map(node: OvsNode, column: str = "external_ids") -> dict[str, str]:
    """A map column of the Open_vSwitch row, read with ovs-vsctl (independent of the agent)."""
    out = node.vsctl("--format=json", f"--columns={column}", "list", "Open_vSwitch", ".")
    kind, pairs = json.loads(out)["data"][0][0]
    assert kind == "map"
    return {str(k): str(v) for k, v in pairs}


def ovs_id(node: OvsNode, key: str, column: str = "external_ids") -> str | None:
    return ovs_map(node, column).get(key)


def nft_set(node: OvsNode) -> list[Any] | None:
    """Elements of the plugin's nft set ``pods-v4`` (read with nft in the node netns); None without the table."""
    done = node.exec(["nft", "-j", "list", "table", "inet", f"ovnk-{PLUGIN}"], check=False)
    if done.returncode != 0:
        return None
    sets = [item["set"] for item in json.loads(done.stdout)["nftables"] if "set" in item]
    return list(sets[0].get("elem", [])) if sets else []


def ip_rule_5000(node: OvsNode) -> list[str]:
    return [line for line in node.exec(["ip", "rule", "show"]).stdout.splitlines() if line.startswith("5000:")]


def table_99(node: OvsNode) -> str:
    return node.exec(["ip", "route", "show", "table", "99"]).stdout.strip()


@pytest.fixture(scope="module")
def hooked(lab: NodeLab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OvsNode]:
    """node-2's agent with the test plugin enabled (a stale annotation waits for it to remove)."""
    assert lab.client is not None
    node = lab.nodes["node-2"]
    site = tmp_path_factory.mktemp("testhooks-site")
    install_plugin(site, name=PLUGIN, source=PLUGIN_SOURCE)
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
    assert len(dump_flows(hooked, BRIDGE, f"cookie={cookie}/-1")) == 2
    assert ovs_id(hooked, "testhooks-setup") == "node-2"
    assert ovs_id(hooked, "testhooks-other", "other_config") == "1"
    assert json.loads(ovs_id(hooked, f"ovnk-owned-ovs-keys:{PLUGIN}") or "[]") == [
        "external_ids:testhooks-setup", "other_config:testhooks-other"]
    assert hooked.exec(["cat", "/proc/sys/net/ipv4/conf/breth0/accept_local"]).stdout.strip() == "1"
    assert ip_rule_5000(hooked) == ["5000:\tfrom 10.99.0.1 lookup 99"]
    assert table_99(hooked) == "10.99.0.0/16 dev breth0 proto static scope link"


def test_hook_ovnk_node_controllers_reconcile_the_pods_of_this_node(lab: NodeLab, hooked: OvsNode, ns: str) -> None:
    assert lab.client is not None
    first = lab.create_pod(hooked, ns, "ctl-a")
    second = lab.create_pod(hooked, ns, "ctl-b")
    ips = [pod_ip_of(lab.wait_pod_annotated(pod)) for pod in (first, second)]

    def pods_known() -> bool:
        names = (ovs_id(hooked, "testhooks-pods") or "").split(",")
        return {"ctl-a", "ctl-b"} <= set(names) and set(ips) <= set(nft_set(hooked) or [])

    wait_for("the node controller to see both pods", pods_known, timeout=30, interval=0.1)
    # The agent's other pods (none on node-2 but these) are of no concern here; the keys are the owner's.
    assert json.loads(ovs_id(hooked, "ovnk-owned-ovs-keys:testhooks.pods") or "[]") == ["external_ids:testhooks-pods"]

    lab.client.delete(PODS, "ctl-a", namespace=ns, grace_period_seconds=0)

    def first_gone() -> bool:
        names = (ovs_id(hooked, "testhooks-pods") or "").split(",")
        return "ctl-a" not in names and "ctl-b" in names and ips[0] not in (nft_set(hooked) or [])

    wait_for("the node controller to see ctl-a go", first_gone, timeout=30, interval=0.1)


def pod_ip_of(networks: dict[str, Any]) -> str:
    return str(networks["default"]["ip_addresses"][0]).split("/")[0]


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


def test_hook_plugin_switched_off_leaves_nothing_behind_on_the_node(lab: NodeLab, hooked: OvsNode) -> None:
    """Restarted without the plugin: its flows, its own bridge, nft table, ip rule, route, OVS keys,
    annotations and ledger entries are gone."""
    assert ANNOTATION in node_annotations(lab, "node-2")
    assert nft_set(hooked) is not None
    restart_agent(lab, hooked)
    cookie = f"{FlowManager.cookie(PLUGIN):#x}"
    assert dump_flows(hooked, "breth0", f"cookie={cookie}/-1") == []
    assert BRIDGE not in hooked.vsctl("list-br").split(), "the plugin's own bridge is deleted"
    assert nft_set(hooked) is None
    assert ip_rule_5000(hooked) == [] and table_99(hooked) == ""
    assert ovs_id(hooked, "testhooks-setup") is None and ovs_id(hooked, "testhooks-pods") is None
    assert ovs_id(hooked, "testhooks-other", "other_config") is None
    assert {k for k in ovs_map(hooked) if k.startswith("ovnk-owned-")} == {
        "ovnk-owned-ovs-keys:core", "ovnk-owned-bridge-mappings:core", "ovnk-owned-nft:core.services",
    }, "core's own entries only"
    assert ANNOTATION not in node_annotations(lab, "node-2")
    assert ovs_id(hooked, "testhooks-manager") is None  # the manager cleaned up on stop, and is not back
    time.sleep(0.5)
    assert ovs_id(hooked, "testhooks-manager") is None
