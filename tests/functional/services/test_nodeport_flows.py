"""The node side of services against a real ovs-vswitchd (netdev, in its own netns) and a real API server:
the ``nodeport`` node controller steers NodePort and external-IP traffic from the uplink to the patch port."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from ovnk.core.bootstrap import bootstrap
from ovnk.core.config import ConfigInputs
from ovnk.core.kube.client import KubeClient
from ovnk.core.kube.events import EventRecorder
from ovnk.core.kube.informer import InformerFactory
from ovnk.core.kube.resources import NAMESPACES
from ovnk.core.kube.resources import SERVICES
from ovnk.core.node.context import NodeContext
from ovnk.core.node.flows import CORE_OWNER
from ovnk.core.node.flows import FlowManager
from ovnk.core.node.gateway import gateway_flows
from ovnk.core.node.net import NetFacade
from ovnk.core.node.nft import NftFacade
from ovnk.core.node.ovs import OvsFacade
from ovnk.core.ovn.connection import OvsdbClient
from ovnk.core.reconcile.runner import ControllerRunner
from ovnk_lab import hostnet
from ovnk_lab import paths
from ovnk_lab.kube import KubeControlPlane
from ovnk_lab.ovsnode import OvsNode
from ovnk_lab.procs import run
from tests.functional.services.conftest import eventually

NODE = "np-node"
BRIDGE = "brnp"
UPLINK = "npup"
PATCH = f"patch-{BRIDGE}_{NODE}-to-br-int"
OWNER = "core.services"
NODE_IP = "172.31.250.5"

pytestmark = [pytest.mark.kube, pytest.mark.node]


@dataclass
class GatewayBed:
    node: OvsNode
    ctx: NodeContext
    runner: ControllerRunner
    uplink: int
    patch: int

    def trace(self, flow: str) -> str:
        return run([self.node.install.bin("ovs-appctl"), "-t", str(self.node.run_dir / "ovs-vswitchd.ctl"),
                    "ofproto/trace", BRIDGE, flow], env=self.node.env()).stdout


@pytest.fixture
def bed(module_kube: KubeControlPlane, lab_dir: Path) -> Iterator[GatewayBed]:
    """A gateway bridge as core's node agent sets it up: uplink, patch port to br-int, core's flows."""
    netns = f"svcnp-{secrets.token_hex(3)}"
    run([paths.system_bin("ip"), "netns", "add", netns])
    node = OvsNode(name=NODE, index=0, ip=NODE_IP, netns=netns, dir=lab_dir / f"np-{secrets.token_hex(3)}")
    client: OvsdbClient | None = None
    net: NetFacade | None = None
    informers: InformerFactory | None = None
    runner: ControllerRunner | None = None
    try:
        node.start_ovs()
        node.exec(["ip", "link", "add", UPLINK, "type", "veth", "peer", "name", "npext"])
        for link in (UPLINK, "npext"):
            node.exec(["ip", "link", "set", link, "up"])
        node.vsctl("--may-exist", "add-br", BRIDGE, "--", "set", "bridge", BRIDGE, "datapath_type=netdev",
                   "fail_mode=secure")
        node.vsctl("--may-exist", "add-br", "br-int", "--", "set", "bridge", "br-int", "datapath_type=netdev")
        node.vsctl("--may-exist", "add-port", BRIDGE, UPLINK)
        node.vsctl("--may-exist", "add-port", BRIDGE, PATCH, "--", "set", "interface", PATCH, "type=patch",
                   "options:peer=patch-br-int-to-gw")
        node.vsctl("--may-exist", "add-port", "br-int", "patch-br-int-to-gw", "--", "set", "interface",
                   "patch-br-int-to-gw", "type=patch", f"options:peer={PATCH}")
        node.exec(["ip", "addr", "add", f"{NODE_IP}/24", "dev", BRIDGE])
        node.exec(["ip", "link", "set", BRIDGE, "up"])
        client = OvsdbClient(remote=node.ovs_address, schema="Open_vSwitch", name="ovs", leader_only=False).start()
        ovs = OvsFacade(client)
        ofports = {i.name: i.ofport for i in ovs.bridge_ports(BRIDGE)}
        uplink, patch = ofports[UPLINK], ofports[PATCH]
        assert uplink and patch
        flows = FlowManager(run_dir=str(node.run_dir), env=node.env())
        flows.manage(BRIDGE)
        flows.set_flows(BRIDGE, CORE_OWNER, gateway_flows(uplink_ofport=uplink, patch_ofport=patch, encap_port=6081))
        flows.sync(BRIDGE)
        runtime = bootstrap(ConfigInputs(env={}, flags={"kubeconfig": str(module_kube.kubeconfig)},
                                         assignments=[f"node.name={NODE}"]))
        kube = KubeClient(kubeconfig=str(module_kube.kubeconfig))
        net = NetFacade(netns=str(hostnet.netns_path(netns)))
        informers = InformerFactory(kube)
        informers.start()
        events = EventRecorder(kube, component="test")
        runner = ControllerRunner(informers=informers, workers=1, events=events)
        ctx = NodeContext(config=runtime.config, pm=runtime.pm, kube=kube, node_name=NODE, ovs=ovs, flows=flows,
                          net=net, nft=NftFacade(netns=str(hostnet.netns_path(netns))), registry=CollectorRegistry(),
                          events=events, informers=informers, controllers=runner, gateway_bridge=BRIDGE)
        yield GatewayBed(node=node, ctx=ctx, runner=runner, uplink=uplink, patch=patch)
    finally:
        if runner is not None:
            runner.stop()
        if informers is not None:
            informers.stop()
        if net is not None:
            net.close()
        if client is not None:
            client.stop()
        node.stop()
        hostnet.delete_netns(netns)


def test_hook_ovnk_node_setup_and_ovnk_node_controllers_steer_nodeports_and_external_ips_to_the_patch_port(
        bed: GatewayBed) -> None:
    kube = bed.ctx.kube
    ns = f"t-np-{secrets.token_hex(3)}"
    kube.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    svc = kube.create(SERVICES, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": ns},
                                 "spec": {"type": "NodePort", "externalIPs": ["192.0.2.44"], "ports": [
                                     {"name": "http", "port": 80, "protocol": "TCP"},
                                     {"name": "dns", "port": 53, "protocol": "UDP"}]}})
    tcp_np, udp_np = (int(p["nodePort"]) for p in svc["spec"]["ports"])
    # Set-up declares the flows before core rewrites the table (an agent restart keeps steering).
    bed.ctx.pm.hook.ovnk_node_setup(ctx=bed.ctx)
    assert len(bed.ctx.flows.flows_of(BRIDGE, OWNER)) == 4
    assert not bed.ctx.flows.dump(BRIDGE, OWNER), "declared, written by core's next sync"

    specs = [spec for found in bed.ctx.pm.hook.ovnk_node_controllers(ctx=bed.ctx) for spec in found]
    assert [spec.name for spec in specs] == ["nodeport"]
    for spec in specs:
        bed.runner.add(spec)
    bed.runner.start_watches()
    assert bed.runner.wait_for_sync(30)
    bed.runner.start_workers()
    try:
        match = f"in_port={bed.uplink},nw_dst="
        expected = {f"priority=95,tcp,{match}{NODE_IP},tp_dst={tcp_np}",
                    f"priority=95,udp,{match}{NODE_IP},tp_dst={udp_np}",
                    f"priority=95,tcp,{match}192.0.2.44,tp_dst=80", f"priority=95,udp,{match}192.0.2.44,tp_dst=53"}
        action = f"actions=ct(commit,zone=64000,exec(load:0x1->NXM_NX_CT_MARK[])),output:{bed.patch}"

        def steered() -> bool:
            dumped = bed.ctx.flows.dump(BRIDGE, OWNER)
            return {line.split(", ", 1)[1].split(" ")[0] for line in dumped} == expected
        eventually(steered, timeout=30, what="steering flows")
        assert all(line.endswith(action) for line in bed.ctx.flows.dump(BRIDGE, OWNER))
        assert bed.ctx.flows.dump(BRIDGE, CORE_OWNER), "core's flows are untouched"

        # A new connection to <nodeIP>:<nodePort> from the uplink goes to OVN (the GR); others to the host.
        to_ovn = bed.trace(f"in_port={bed.uplink},tcp,nw_src=172.31.250.99,nw_dst={NODE_IP},tp_dst={tcp_np}")
        assert "ct(commit,zone=64000" in to_ovn and f"output:{bed.patch}" in to_ovn, to_ovn
        other = bed.trace(f"in_port={bed.uplink},tcp,nw_src=172.31.250.99,nw_dst={NODE_IP},tp_dst=22")
        assert f"output:{bed.patch}" not in other and "ct(table=1,zone=64000)" in other, other

        # The service goes: so do its flows (core's stay).
        kube.delete(SERVICES, "web", namespace=ns)
        eventually(lambda: not bed.ctx.flows.dump(BRIDGE, OWNER), timeout=30, what="flows removed")
        assert bed.ctx.flows.dump(BRIDGE, CORE_OWNER)
    finally:
        bed.runner.stop()
        kube.delete(NAMESPACES, ns)
