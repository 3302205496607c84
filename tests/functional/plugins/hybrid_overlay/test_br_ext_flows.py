"""The flows of ``br-ext`` on a real ovs-vswitchd (netdev, in its own netns), checked with ``ofproto/trace``.

The bridge and ports are made with core's OVS facade as the agent makes them
(``br-ext`` fail-secure, patch pair ``ext``/``int`` to ``br-int``, ``ext-vxlan``
with ``remote_ip=flow, key=flow``) and the flows written by core's flow manager:
what :mod:`ovnk.plugins.hybrid_overlay.flows` builds must be accepted by OVS and
do what its table says.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ovnk.core.node.flows import FlowManager
from ovnk.core.node.ovs import OvsFacade
from ovnk.core.ovn.connection import OvsdbClient
from ovnk.plugins.hybrid_overlay import flows as fl
from ovnk_lab import hostnet
from ovnk_lab import paths
from ovnk_lab.ovsnode import OvsNode
from ovnk_lab.procs import run

pytestmark = [pytest.mark.node]

OWNER = "hybrid_overlay"
FACTS = fl.LocalFacts(subnet=ipaddress.IPv4Network("10.244.1.0/24"), dr_ip=ipaddress.IPv4Address("10.244.1.3"),
                      dr_mac="0a:58:0a:f4:01:03", mgmt_ip=ipaddress.IPv4Address("10.244.1.2"),
                      mgmt_mac="0a:58:0a:f4:01:02", gateway_mac="0a:58:0a:f4:01:01",
                      gr_join_ip=ipaddress.IPv4Address("100.64.0.3"))
POD = fl.LocalPod(ip=ipaddress.IPv4Address("10.244.1.7"), mac="0a:58:0a:f4:01:07")
REMOTE = fl.Remote(name="win-1", subnet=ipaddress.IPv4Network("10.132.0.0/23"),
                   address=ipaddress.IPv4Address("172.31.251.50"), dr_mac="0a:58:64:00:00:01")


@dataclass
class Bed:
    node: OvsNode
    ovs: OvsFacade
    flows: FlowManager
    ofports: dict[str, int]

    def trace(self, flow: str) -> str:
        return run([paths.ovs_bin("ovs-appctl"), "-t", str(self.node.run_dir / "ovs-vswitchd.ctl"),
                    "ofproto/trace", fl.BRIDGE, flow], env=self.node.env()).stdout


@pytest.fixture
def bed(lab_dir: Path) -> Iterator[Bed]:
    netns = f"hoflows-{secrets.token_hex(3)}"
    run([paths.system_bin("ip"), "netns", "add", netns])
    node = OvsNode(name="ho-node", index=0, ip="172.31.251.11", netns=netns, dir=lab_dir / f"ho-{secrets.token_hex(3)}")
    client: OvsdbClient | None = None
    try:
        node.start_ovs()
        client = OvsdbClient(remote=node.ovs_address, schema="Open_vSwitch", name="ovs", leader_only=False).start()
        ovs = OvsFacade(client)
        ovs.ensure_bridge("br-int", datapath_type="netdev", fail_mode="secure")
        ovs.ensure_bridge(fl.BRIDGE, datapath_type="netdev", fail_mode="secure")
        ovs.ensure_port(fl.BRIDGE, fl.PATCH_EXT, iface_type="patch", options={"peer": fl.PATCH_INT})
        ovs.ensure_port("br-int", fl.PATCH_INT, iface_type="patch", options={"peer": fl.PATCH_EXT},
                        external_ids={"iface-id": "int-ho-node"})
        ovs.ensure_port(fl.BRIDGE, fl.VXLAN_PORT, iface_type="vxlan",
                        options={"remote_ip": "flow", "key": "flow", "dst_port": "4789"})
        # The underlay: a bridge holding the node IP, through which OVS's userspace tunnels leave.
        ovs.ensure_bridge("br-phy", datapath_type="netdev", fail_mode="standalone")
        node.exec(["ip", "addr", "add", f"{node.ip}/24", "dev", "br-phy"])
        node.exec(["ip", "link", "set", "br-phy", "up"])
        node.exec(["ip", "link", "add", "phy0", "type", "veth", "peer", "name", "phy1"])
        for link in ("phy0", "phy1"):
            node.exec(["ip", "link", "set", link, "up"])
        ovs.ensure_port("br-phy", "phy0")
        run([paths.ovs_bin("ovs-appctl"), "-t", str(node.run_dir / "ovs-vswitchd.ctl"), "tnl/neigh/set", "br-phy",
             str(REMOTE.address), "0a:00:00:00:00:50"], env=node.env())
        flows = FlowManager(run_dir=str(node.run_dir), env=node.env())
        flows.manage(fl.BRIDGE)
        flows.set_flows(fl.BRIDGE, OWNER, fl.local_flows(FACTS, [POD]))
        flows.set_flows(fl.BRIDGE, f"{OWNER}.win-1", fl.remote_flows(REMOTE, dr_ip=FACTS.dr_ip,
                                                                      gr_join_ip=FACTS.gr_join_ip))
        assert flows.sync(fl.BRIDGE)
        ofports = {i.name: int(i.ofport or 0) for i in ovs.bridge_ports(fl.BRIDGE)}
        yield Bed(node=node, ovs=ovs, flows=flows, ofports=ofports)
    finally:
        if client is not None:
            client.stop()
        node.stop()
        hostnet.delete_netns(netns)


def test_ports_are_what_the_agent_declares(bed: Bed) -> None:
    vxlan = bed.ovs.interface(fl.VXLAN_PORT)
    assert vxlan is not None and vxlan.type == "vxlan" and vxlan.bridge == fl.BRIDGE
    assert dict(vxlan.options) == {"remote_ip": "flow", "key": "flow", "dst_port": "4789"}
    patch = bed.ovs.interface(fl.PATCH_INT)
    assert patch is not None and patch.bridge == "br-int" and patch.external_ids["iface-id"] == "int-ho-node"
    # ensure_port with the same options writes nothing new; different options replace them.
    bed.ovs.ensure_port(fl.BRIDGE, fl.VXLAN_PORT, iface_type="vxlan",
                        options={"remote_ip": "flow", "key": "flow", "dst_port": "4790"})
    changed = bed.ovs.interface(fl.VXLAN_PORT)
    assert changed is not None and changed.options["dst_port"] == "4790"


def test_arp_for_the_dr_ip_is_answered_on_the_patch_port(bed: Bed) -> None:
    trace = bed.trace(f"in_port={fl.PATCH_EXT},arp,arp_op=1,dl_src={FACTS.mgmt_mac},dl_dst=ff:ff:ff:ff:ff:ff,"
                      f"arp_spa={FACTS.mgmt_ip},arp_tpa={FACTS.dr_ip},arp_sha={FACTS.mgmt_mac}")
    assert "load:0x2->NXM_OF_ARP_OP[]" in trace and "IN_PORT" in trace, trace
    assert f"mod_dl_src:{FACTS.dr_mac}" in trace or f"set_field:{FACTS.dr_mac}->eth_src" in trace, trace


def test_traffic_to_a_foreign_subnet_is_tunnelled_to_its_node(bed: Bed) -> None:
    trace = bed.trace(f"in_port={fl.PATCH_EXT},ip,dl_src={POD.mac},dl_dst={FACTS.dr_mac},nw_src={POD.ip},"
                      "nw_dst=10.132.0.10,nw_ttl=63")
    assert f"set_field:{REMOTE.address}->tun_dst" in trace and f"set_field:{REMOTE.dr_mac}->eth_dst" in trace, trace
    assert "load:0x1001->NXM_NX_TUN_ID[0..31]" in trace and f"output:{bed.ofports[fl.VXLAN_PORT]}" in trace, trace
    # OVS encapsulates in userspace and sends it out of the underlay bridge: VXLAN, VNI 4097, UDP 4789.
    actions = trace.split("Datapath actions:")[1]
    assert "tnl_push" in actions and "vni=0x1001" in actions and "dst=4789" in actions, trace
    assert f"dst={REMOTE.address}" in actions and f"src={bed.node.ip}" in actions, trace
    assert "nw_src" not in trace.split("Final flow")[0].split("set_field:")[-1], "pod sources are not rewritten"
    # What the gateway router sends on (its join IP) leaves with the DR IP, so the reply comes back here.
    gr = bed.trace(f"in_port={fl.PATCH_EXT},ip,dl_src={FACTS.gateway_mac},dl_dst={FACTS.dr_mac},"
                   f"nw_src={FACTS.gr_join_ip},nw_dst=10.132.0.10,nw_ttl=63")
    assert f"set_field:{FACTS.dr_ip}->ip_src" in gr or f"mod_nw_src:{FACTS.dr_ip}" in gr, gr
    # Anything else is dropped (fail-secure, table 0's default).
    other = bed.trace(f"in_port={fl.PATCH_EXT},ip,nw_src={POD.ip},nw_dst=192.0.2.1")
    assert "Datapath actions: drop" in other, other


def test_arp_for_a_foreign_address_is_answered_with_its_dr_mac(bed: Bed) -> None:
    trace = bed.trace(f"in_port={fl.PATCH_EXT},arp,arp_op=1,dl_src={POD.mac},dl_dst=ff:ff:ff:ff:ff:ff,"
                      f"arp_spa={POD.ip},arp_tpa=10.132.0.10,arp_sha={POD.mac}")
    assert "load:0x2->NXM_OF_ARP_OP[]" in trace and "IN_PORT" in trace, trace
    assert f"set_field:{REMOTE.dr_mac}->eth_src" in trace and f"{hex(int(REMOTE.dr_mac.replace(':', ''), 16))}->NXM_NX_ARP_SHA[]" in trace, trace
    assert "NXM_OF_ARP_SPA[] is now 10.132.0.10" in trace and f"NXM_OF_ARP_TPA[] is now {POD.ip}" in trace, trace


def test_tunnel_traffic_for_local_pods_is_dispatched_to_them(bed: Bed) -> None:
    tunnel = f"in_port={fl.VXLAN_PORT},tun_id=0x1001,tun_src={REMOTE.address},tun_dst=172.31.251.11"
    trace = bed.trace(f"{tunnel},ip,dl_src=0a:00:00:00:00:99,dl_dst={FACTS.dr_mac},nw_src=10.132.0.10,"
                      f"nw_dst={POD.ip},nw_ttl=64")
    assert "goto_table:10" in trace, trace
    assert f"set_field:{POD.mac}->eth_dst" in trace and f"output:{bed.ofports[fl.PATCH_EXT]}" in trace, trace
    # The host (management port) is reachable too; a pod this node's agent does not know yet gets the MAC
    # core gives every pod that asks for no other (0a:58:<IP>).
    mgmt = bed.trace(f"{tunnel},ip,dl_dst={FACTS.dr_mac},nw_src=10.132.0.10,nw_dst={FACTS.mgmt_ip}")
    assert f"mod_dl_dst:{FACTS.mgmt_mac}" in mgmt or f"set_field:{FACTS.mgmt_mac}->eth_dst" in mgmt, mgmt
    new_pod = bed.trace(f"{tunnel},ip,dl_dst={FACTS.dr_mac},nw_src=10.132.0.10,nw_dst=10.244.1.99")
    assert "dl_dst=0a:58:0a:f4:01:63" in new_pod.split("Final flow:")[1] and f"output:{bed.ofports[fl.PATCH_EXT]}" in new_pod, new_pod
    outside = bed.trace(f"{tunnel},ip,dl_dst={FACTS.dr_mac},nw_src=10.132.0.10,nw_dst=10.244.2.9")
    assert "Datapath actions: drop" in outside, outside
    # ARP from the foreign node for a local address: answered through the tunnel it came from.
    arp = bed.trace(f"{tunnel},arp,arp_op=1,dl_src={REMOTE.dr_mac},dl_dst=ff:ff:ff:ff:ff:ff,arp_spa=10.132.0.1,"
                    f"arp_tpa={POD.ip},arp_sha={REMOTE.dr_mac}")
    assert "NXM_NX_TUN_IPV4_SRC[]->NXM_NX_TUN_IPV4_DST[]" in arp and "IN_PORT" in arp, arp


def test_a_foreign_node_leaving_removes_only_its_cookie(bed: Bed) -> None:
    before = bed.node.ofctl("dump-flows", fl.BRIDGE)
    assert str(REMOTE.address) in before
    bed.flows.set_flows(fl.BRIDGE, f"{OWNER}.win-1", [])
    assert bed.flows.sync(fl.BRIDGE)
    after = bed.node.ofctl("dump-flows", fl.BRIDGE)
    assert str(REMOTE.address) not in after and "10.132.0.0/23" not in after
    assert f"arp_tpa={FACTS.dr_ip}" in after, "the node's own flows stay"
    trace = bed.trace(f"in_port={fl.PATCH_EXT},ip,nw_src={POD.ip},nw_dst=10.132.0.10")
    assert "Datapath actions: drop" in trace, trace
