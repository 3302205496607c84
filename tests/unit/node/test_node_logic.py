"""Pure logic of the node agent (the kernel/OVS parts are in tests/functional/node)."""

from __future__ import annotations

import ipaddress
import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from ovnk.cni.types import CniRequest
from ovnk.core.bootstrap import bootstrap
from ovnk.core.builtin.cni import default_network
from ovnk.core.claims import Claims
from ovnk.core.config import ConfigInputs
from ovnk.core.errors import PluginError
from ovnk.core.hookspecs import hookimpl
from ovnk.core.node.agent import cni_config
from ovnk.core.node.agent import write_cni_config
from ovnk.core.node.flows import FlowManager
from ovnk.core.node.gateway import GatewayInfo
from ovnk.core.node.gateway import gateway_flows
from ovnk.core.node.mgmtport import wanted_routes
from ovnk.core.node.ovs_owned import parse_bridge_mappings
from ovnk.core.node.owners import MemoryLedger
from ovnk.core.node.owners import Owners
from ovnk.core.node.publish import NodeAnnotator
from ovnk.core.node.wiring import CniNetwork
from ovnk.core.node.wiring import VethDriver
from ovnk.core.node.wiring import build_result
from ovnk.core.node.wiring import host_interface_name
from ovnk.core.node.wiring import interface_external_ids
from ovnk.core.plugins import OvnkPluginManager
from ovnk.core.topology.annotations import PodNetwork
from ovnk.core.topology.annotations import PodRoute


def config(*assignments: str) -> Any:
    return bootstrap(ConfigInputs(env={}, assignments=list(assignments)), discovered={}).config


def request(command: str = "ADD", **config_extra: Any) -> CniRequest:
    env = {"CNI_COMMAND": command, "CNI_CONTAINERID": "0123456789abcdef0123", "CNI_NETNS": "/run/netns/x",
           "CNI_IFNAME": "eth0", "CNI_ARGS": "K8S_POD_NAMESPACE=web;K8S_POD_NAME=front;K8S_POD_UID=u-1"}
    conf = {"cniVersion": "1.1.0", "name": "ovn-kubernetes", "type": "ovn-k8s-cni-overlay", **config_extra}
    return CniRequest.parse(env, json.dumps(conf))


POD_NETWORK = PodNetwork(
    ip_addresses=(ipaddress.ip_interface("10.244.1.5/24"),), mac_address="0a:58:0a:f4:01:05",
    gateway_ips=(ipaddress.ip_address("10.244.1.1"),),
    routes=(PodRoute(ipaddress.ip_network("10.96.0.0/16"), ipaddress.ip_address("10.244.1.1")),),
)


# -- gateway flows ----------------------------------------------------------------


def test_gateway_flows_before_the_patch_port_exists() -> None:
    flows = gateway_flows(uplink_ofport=1, patch_ofport=None, encap_port=6081)
    assert "table=0,priority=10,in_port=LOCAL actions=output:1" in flows
    assert "table=0,priority=80,in_port=1,arp,arp_op=2 actions=LOCAL" in flows
    assert not any("ct(commit" in f for f in flows)
    assert not any("NORMAL" in f for f in flows)


def test_gateway_flows_share_the_node_ip_with_the_gateway_router() -> None:
    flows = gateway_flows(uplink_ofport=1, patch_ofport=7, encap_port=6081)
    assert ("table=0,priority=100,in_port=7,ip actions=ct(commit,zone=64000,"
            "exec(load:0x1->NXM_NX_CT_MARK[])),output:1") in flows
    assert "table=1,priority=100,ct_state=+trk+est,ct_mark=0x1,ip actions=output:7" in flows
    assert "table=1,priority=0 actions=LOCAL" in flows
    assert "table=0,priority=100,in_port=1,udp,tp_dst=6081 actions=LOCAL" in flows
    assert "table=0,priority=80,in_port=1,arp,arp_op=2 actions=LOCAL,output:7" in flows
    assert len(flows) == len(set(flows))


def test_gateway_config_of_the_node() -> None:
    info = GatewayInfo(bridge="breth0", uplink="eth0", mac="02:00:00:00:00:01",
                       addresses=(ipaddress.ip_interface("172.18.0.3/16"),),
                       next_hops=(ipaddress.ip_address("172.18.0.1"),))
    doc = info.gateway_config("worker", config()).to_json()
    assert doc["interface-id"] == "breth0_worker"
    assert doc["ip-addresses"] == ["172.18.0.3/16"] and doc["next-hops"] == ["172.18.0.1"]
    assert info.patch_port("worker") == "patch-breth0_worker-to-br-int"


# -- flows manager ------------------------------------------------------------------


def test_cookies_are_stable_and_per_owner() -> None:
    assert FlowManager.cookie("core") == FlowManager.cookie("core")
    assert FlowManager.cookie("core") != FlowManager.cookie("egressip")
    assert FlowManager.cookie("core") >> 32 == 0x6F766E6B


def test_set_flows_adds_the_owner_cookie_and_reports_changes() -> None:
    flows = FlowManager(run_dir="/nonexistent")
    with pytest.raises(ValueError, match="not managed"):
        flows.set_flows("breth0", "core", ["priority=1 actions=drop"])
    flows.manage("breth0")
    assert flows.set_flows("breth0", "plug", ["priority=1  actions=drop"]) is True
    assert flows.set_flows("breth0", "plug", ["priority=1 actions=drop"]) is False
    assert flows.flows_of("breth0", "plug") == [f"cookie={FlowManager.cookie('plug'):#x},priority=1 actions=drop"]
    with pytest.raises(ValueError, match="cookie"):
        flows.set_flows("breth0", "plug", ["cookie=0x1,priority=1 actions=drop"])
    assert flows.set_flows("breth0", "plug", []) is True
    assert flows.flows_of("breth0", "plug") == []


# -- CNI config, bridge mappings ------------------------------------------------------


def test_cni_config_is_written_atomically_and_only_when_changed(tmp_path: Path) -> None:
    settings = config(f"cni.conf-dir={tmp_path}").cni
    assert json.loads(cni_config(settings)) == {"cniVersion": settings.conf_version, "name": "ovn-kubernetes",
                                                "type": "ovn-k8s-cni-overlay"}
    assert json.loads(cni_config(config("cni.conf-version=1.1.0").cni))["cniVersion"] == "1.1.0"
    assert write_cni_config(settings) is True
    path = tmp_path / "10-ovn-kubernetes.conf"
    inode = os.stat(path).st_ino
    assert write_cni_config(settings) is False
    assert os.stat(path).st_ino == inode
    assert [p.name for p in tmp_path.iterdir()] == ["10-ovn-kubernetes.conf"]  # no temp file left


def test_bridge_mappings_keep_other_networks() -> None:
    assert parse_bridge_mappings("blue:br-blue, physnet:breth0") == {"blue": "br-blue", "physnet": "breth0"}
    assert parse_bridge_mappings("") == {}


# -- management port --------------------------------------------------------------------


def test_management_port_routes() -> None:
    routes = wanted_routes(config("default.cluster-subnets=10.244.0.0/16/24", "kubernetes.service-cidrs=10.96.0.0/16"),
                           [ipaddress.ip_network("10.244.3.0/24")])
    assert routes == [(ipaddress.ip_network("10.244.0.0/16"), ipaddress.ip_address("10.244.3.1")),
                      (ipaddress.ip_network("10.96.0.0/16"), ipaddress.ip_address("10.244.3.1")),
                      (ipaddress.ip_network("100.64.0.0/16"), ipaddress.ip_address("10.244.3.1")),
                      (ipaddress.ip_network("169.254.0.5/32"), ipaddress.ip_address("10.244.3.1"))]


# -- wiring -------------------------------------------------------------------------------


def test_default_network_of_a_request() -> None:
    ctx = SimpleNamespace(config=config("default.mtu=1300"))
    network = default_network(ctx, request())  # type: ignore[arg-type]
    assert network == CniNetwork(annotation_key="default", iface_id="web_front", ifname="eth0", mtu=1300)
    env_without_pod = {"CNI_COMMAND": "DEL", "CNI_CONTAINERID": "abc", "CNI_IFNAME": "eth0"}
    bare = CniRequest.parse(env_without_pod, '{"cniVersion":"1.1.0","name":"n","type":"t"}')
    assert default_network(ctx, bare).iface_id == ""  # type: ignore[arg-type]


def test_interface_external_ids_and_result() -> None:
    req = request()
    network = CniNetwork(annotation_key="default", iface_id="web_front", ifname="eth0", mtu=1400, pod_uid="u-1")
    assert interface_external_ids(req, network, POD_NETWORK) == {
        "iface-id": "web_front", "iface-id-ver": "u-1", "sandbox": req.container_id,
        "attached_mac": "0a:58:0a:f4:01:05", "ip_addresses": "10.244.1.5/24", "pod-if-name": "eth0",
    }
    host = host_interface_name(req.container_id)
    assert host == "0123456789abcde"
    result = build_result(host=host, host_mac="aa:bb:cc:dd:ee:ff", request=req, network=network,
                          pod_network=POD_NETWORK).to_dict("1.1.0")
    assert result["interfaces"] == [{"name": host, "mac": "aa:bb:cc:dd:ee:ff", "mtu": 1400},
                                    {"name": "eth0", "mac": "0a:58:0a:f4:01:05", "sandbox": "/run/netns/x",
                                     "mtu": 1400}]
    assert result["ips"] == [{"address": "10.244.1.5/24", "gateway": "10.244.1.1", "interface": 1}]
    assert result["routes"] == [{"dst": "0.0.0.0/0", "gw": "10.244.1.1"}, {"dst": "10.96.0.0/16", "gw": "10.244.1.1"}]


def test_core_picks_the_default_network_and_the_veth_driver(pm: OvnkPluginManager) -> None:
    ctx = SimpleNamespace(config=config())
    req = request()
    network = pm.hook.ovnk_cni_network(ctx=ctx, request=req)
    assert network.iface_id == "web_front"
    assert isinstance(pm.hook.ovnk_cni_interface_driver(ctx=ctx, request=req, network=network), VethDriver)


# -- annotations ----------------------------------------------------------------------------


class _Plugin:
    @hookimpl
    def ovnk_claims(self, claims: Claims) -> None:
        claims.annotation("k8s.ovn.org/mine")

    @hookimpl
    def ovnk_node_annotations(self, ctx: Any, annotations: dict[str, str | None]) -> None:
        annotations["k8s.ovn.org/mine"] = "yes"
        annotations["k8s.ovn.org/node-chassis-id"] = "hijacked"  # core's: refused
        annotations["k8s.ovn.org/nobody"] = "x"  # unclaimed: refused


def test_plugin_annotations_must_be_claimed_by_the_plugin(pm: OvnkPluginManager) -> None:
    pm.register(_Plugin(), name="mine")
    claims = Claims()
    for plugin, impl in pm.implementations("ovnk_claims"):
        claims.current = plugin
        pm.call_impl(impl, claims=claims)
    annotator = NodeAnnotator(kube=None, node_name="n1", pm=pm, claims=claims, nodes=None)  # type: ignore[arg-type]
    annotator.set_core({"k8s.ovn.org/node-chassis-id": "chassis-1"})
    assert annotator.desired() == {"k8s.ovn.org/node-chassis-id": "chassis-1"}  # plugins only once attached
    annotator.attach(SimpleNamespace())  # type: ignore[arg-type]
    assert annotator.desired() == {"k8s.ovn.org/node-chassis-id": "chassis-1", "k8s.ovn.org/mine": "yes"}


class _Changing:
    """Publishes ``k8s.ovn.org/mine`` while ``give`` holds, raises while ``fail`` does."""

    def __init__(self) -> None:
        self.give = True
        self.fail = False

    @hookimpl
    def ovnk_claims(self, claims: Claims) -> None:
        claims.annotation("k8s.ovn.org/mine")

    @hookimpl
    def ovnk_node_annotations(self, ctx: Any, annotations: dict[str, str | None]) -> None:
        if self.fail:
            raise RuntimeError("boom")
        if self.give:
            annotations["k8s.ovn.org/mine"] = "yes"


def test_annotations_a_plugin_no_longer_gives_are_removed_but_not_after_a_failure(pm: OvnkPluginManager) -> None:
    plugin = _Changing()
    pm.register(plugin, name="mine")
    claims = Claims()
    for name, impl in pm.implementations("ovnk_claims"):
        claims.current = name
        pm.call_impl(impl, claims=claims)
    ledger = MemoryLedger(Owners(["mine"]))
    annotator = NodeAnnotator(kube=None, node_name="n1", pm=pm, claims=claims, nodes=None,  # type: ignore[arg-type]
                              ledger=ledger)
    annotator.attach(SimpleNamespace())  # type: ignore[arg-type]
    wanted, given = annotator.plugin_annotations()
    assert wanted == {"k8s.ovn.org/mine": "yes"} and given == {"mine": ["k8s.ovn.org/mine"]}
    annotator._record(given)
    assert ledger.owned("annotations") == {"mine": ["k8s.ovn.org/mine"]}

    plugin.fail = True
    wanted, given = annotator.plugin_annotations()
    assert wanted == {} and given == {}, "a failing plugin's keys stay, and so does its record"
    with pytest.raises(PluginError, match="plugin 'mine' failed in ovnk_node_annotations: RuntimeError: boom"):
        annotator.plugin_annotations(strict=True)

    plugin.fail, plugin.give = False, False
    wanted, given = annotator.plugin_annotations()
    assert wanted == {"k8s.ovn.org/mine": None} and given == {"mine": []}
    annotator._record(given)
    assert ledger.owned("annotations") == {}
