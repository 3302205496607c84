"""Node state by owner against a real Open_vSwitch database (the ledger) and the kernel of a node netns:
``OvsFacade.set_owned_keys``, and the start-up clean-up of owners that are no longer enabled.

The agent-level version (a plugin switched off between two agent runs) is in ``test_hooks.py``.
"""

from __future__ import annotations

import ipaddress
import json
import random
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

from ovnk.core.node.cleanup import release_disabled_owners
from ovnk.core.node.flows import FlowManager
from ovnk.core.node.net import NetFacade
from ovnk.core.node.nft import NftChain
from ovnk.core.node.nft import NftFacade
from ovnk.core.node.nft import NftTable
from ovnk.core.node.ovs import OvsFacade
from ovnk.core.node.owners import Owners
from ovnk.core.node.owners import OwnershipError
from ovnk.core.node.publish import NodeAnnotator
from ovnk.core.node.routing import IpRule
from ovnk.core.node.routing import TableRoute
from ovnk.core.ovn.connection import OvsdbClient
from ovnk_lab import hostnet
from ovnk_lab import paths
from ovnk_lab.ovsnode import OvsNode
from ovnk_lab.procs import run

pytestmark = pytest.mark.node

BRIDGE = "br-own"


@dataclass
class Bed:
    node: OvsNode
    client: OvsdbClient

    def facades(self, *enabled: str) -> tuple[OvsFacade, NetFacade, NftFacade, FlowManager]:
        """The agent's facades as one agent run with these plugins enabled builds them."""
        ovs = OvsFacade(self.client, owners=Owners(enabled))
        net = NetFacade(str(self.node.netns_path), ledger=ovs)
        nft = NftFacade(netns=str(self.node.netns_path), ledger=ovs)
        flows = FlowManager(run_dir=str(self.node.run_dir), env=self.node.env(), ledger=ovs)
        return ovs, net, nft, flows

    def ovs_map(self, column: str) -> dict[str, str]:
        out = self.node.vsctl("--format=json", f"--columns={column}", "list", "Open_vSwitch", ".")
        kind, pairs = json.loads(out)["data"][0][0]
        assert kind == "map"
        return {str(k): str(v) for k, v in pairs}


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    netns = f"ovnk-own-{secrets.token_hex(3)}"
    run([paths.system_bin("ip"), "netns", "add", netns])
    workdir = Path(tmp_path_factory.mktemp("own", numbered=True))
    node = OvsNode(name="own-node", index=0, ip="172.31.251.5", netns=netns, dir=workdir)
    client: OvsdbClient | None = None
    try:
        node.start_ovs()
        node.exec(["ip", "link", "set", "lo", "up"])
        node.exec(["ip", "link", "add", "own0", "type", "veth", "peer", "name", "own1"])
        node.exec(["ip", "link", "set", "own0", "up"])
        node.vsctl("--may-exist", "add-br", BRIDGE, "--", "set", "bridge", BRIDGE, "datapath_type=netdev",
                   "fail_mode=secure")
        client = OvsdbClient(remote=node.ovs_address, schema="Open_vSwitch", name="ovs", leader_only=False).start()
        yield Bed(node=node, client=client)
    finally:
        if client is not None:
            client.stop()
        node.stop()
        hostnet.delete_netns(netns)


def test_ovs_owned_keys_converge_and_refuse_other_owners(bed: Bed) -> None:
    ovs = OvsFacade(bed.client, owners=Owners(["hwoffload", "other"]))
    bed.node.vsctl("set", "Open_vSwitch", ".", "other_config:by-hand=1")
    assert ovs.set_owned_keys("hwoffload", "other_config", {"hw-offload": "true", "n-handler-threads": "2"})
    config = bed.ovs_map("other_config")
    assert config["hw-offload"] == "true" and config["n-handler-threads"] == "2"
    assert json.loads(bed.ovs_map("external_ids")["ovnk-owned-ovs-keys:hwoffload"]) == [
        "other_config:hw-offload", "other_config:n-handler-threads"]
    assert ovs.set_owned_keys("hwoffload", "other_config", {"hw-offload": "true", "n-handler-threads": "2"}) is False

    # A key no longer given goes; None means "not wanted" too.
    assert ovs.set_owned_keys("hwoffload", "other_config", {"hw-offload": "true", "n-handler-threads": None})
    assert "n-handler-threads" not in bed.ovs_map("other_config")

    # Another owner may not take it; the message names the owner.
    with pytest.raises(OwnershipError, match="belongs to 'hwoffload'"):
        ovs.set_owned_keys("other", "other_config", {"hw-offload": "false"})
    assert bed.ovs_map("other_config")["hw-offload"] == "true"
    # A key nobody owns (set by hand) is taken over; the two columns are converged separately.
    assert ovs.set_owned_keys("other", "other_config", {"by-hand": "2"})
    assert ovs.set_owned_keys("other", "external_ids", {"other-id": "x"})
    assert bed.ovs_map("other_config")["by-hand"] == "2"
    with pytest.raises(OwnershipError, match="ledger"):
        ovs.set_owned_keys("other", "external_ids", {"ovnk-owned-nft:other": "[]"})
    with pytest.raises(OwnershipError, match="not-enabled"):
        ovs.set_owned_keys("not-enabled", "other_config", {"x": "1"})

    assert ovs.release_owned_keys("hwoffload") is True
    assert "hw-offload" not in bed.ovs_map("other_config")
    assert "ovnk-owned-ovs-keys:hwoffload" not in bed.ovs_map("external_ids")
    assert bed.ovs_map("other_config")["by-hand"] == "2" and bed.ovs_map("external_ids")["other-id"] == "x"
    assert ovs.release_owned_keys("other") is True
    assert "by-hand" not in bed.ovs_map("other_config") and "other-id" not in bed.ovs_map("external_ids")


def test_bridge_mappings_are_shared_by_owner(bed: Bed) -> None:
    ovs = OvsFacade(bed.client, owners=Owners(["secondary_networks", "other"]))
    bed.node.vsctl("set", "Open_vSwitch", ".", "external_ids:ovn-bridge-mappings=byhand:br-hand")
    assert ovs.set_bridge_mappings("core", {"physnet": "breth0"})
    assert ovs.set_bridge_mappings("secondary_networks", {"blue": "br-blue", "red": "br-red"})
    assert bed.ovs_map("external_ids")["ovn-bridge-mappings"] == \
        "blue:br-blue,byhand:br-hand,physnet:breth0,red:br-red"
    assert ovs.set_bridge_mappings("secondary_networks", {"blue": "br-blue", "red": "br-red"}) is False
    assert ovs.set_bridge_mappings("secondary_networks", {"blue": "br-blue2"})
    assert bed.ovs_map("external_ids")["ovn-bridge-mappings"] == "blue:br-blue2,byhand:br-hand,physnet:breth0"
    with pytest.raises(OwnershipError, match="'physnet' of ovn-bridge-mappings belongs to 'core'"):
        ovs.set_bridge_mappings("other", {"physnet": "br-other"})
    with pytest.raises(OwnershipError, match=r"shared; use OvsFacade\.set_bridge_mappings"):
        ovs.set_owned_keys("other", "external_ids", {"ovn-bridge-mappings": "x:y"})
    assert ovs.release_bridge_mappings("secondary_networks")
    assert bed.ovs_map("external_ids")["ovn-bridge-mappings"] == "byhand:br-hand,physnet:breth0"
    assert ovs.release_bridge_mappings("core")
    assert bed.ovs_map("external_ids")["ovn-bridge-mappings"] == "byhand:br-hand"
    bed.node.vsctl("remove", "Open_vSwitch", ".", "external_ids", "ovn-bridge-mappings")


def nft_tables(bed: Bed) -> set[str]:
    out = bed.node.exec([paths.system_bin("nft"), "-j", "list", "tables"]).stdout
    return {t["table"]["name"] for t in json.loads(out)["nftables"] if "table" in t}


def rule_priorities(bed: Bed) -> set[int]:
    out = bed.node.exec(["ip", "-j", "rule", "show"]).stdout
    return {int(r["priority"]) for r in json.loads(out)}


def table_routes(bed: Bed) -> set[str]:
    out = bed.node.exec(["ip", "-j", "route", "show", "table", "200"]).stdout
    return {r["dst"] for r in json.loads(out or "[]")}


def cookies(bed: Bed) -> set[int]:
    out = bed.node.ofctl("dump-flows", BRIDGE)
    return {int(line.split("cookie=")[1].split(",")[0], 16) for line in out.splitlines() if "cookie=" in line}


def create_state(bed: Bed, ovs: OvsFacade, net: NetFacade, nft: NftFacade, flows: FlowManager, owner: str,
                 *, priority: int, dst: str) -> None:
    nft.set_table(owner, NftTable(chains=(NftChain("c", type="filter", hook="input"),)))
    net.set_rules(owner, [IpRule(priority=priority, src=ipaddress.ip_network(dst), table=200)])
    net.set_routes(owner, [TableRoute(dst=ipaddress.ip_network(dst), table=200, dev="own0")])
    ovs.set_owned_keys(owner, "other_config", {f"{owner}-key": "1"})
    ovs.set_bridge_mappings(owner, {f"{owner}-net": f"br-{owner}"})
    flows.manage(BRIDGE)
    flows.set_flows(BRIDGE, owner, [f"table=0,priority={priority},ip,nw_dst={dst} actions=drop"])
    flows.sync(BRIDGE)


def test_state_of_owners_no_longer_enabled_is_released_at_start(bed: Bed) -> None:
    ovs, net, nft, flows = bed.facades("gone", "kept")
    try:
        create_state(bed, ovs, net, nft, flows, "gone", priority=7000, dst="10.70.0.0/16")
        create_state(bed, ovs, net, nft, flows, "kept", priority=7001, dst="10.71.0.0/16")
    finally:
        net.close()
    assert {"ovnk-gone", "ovnk-kept"} <= nft_tables(bed)
    assert {7000, 7001} <= rule_priorities(bed)
    assert {FlowManager.cookie("gone"), FlowManager.cookie("kept")} <= cookies(bed)
    ledger = {k for k in bed.ovs_map("external_ids") if k.startswith("ovnk-owned-") and k.endswith(":gone")}
    kinds = ("nft", "ip-rules", "ip-routes", "ovs-keys", "bridge-mappings", "flows")
    assert ledger == {f"ovnk-owned-{kind}:gone" for kind in kinds}

    # The next agent run has only "kept" enabled: "gone"'s state goes, all of it, "kept"'s stays.
    ovs, net, nft, flows = bed.facades("kept")
    annotator = NodeAnnotator(kube=SimpleNamespace(), node_name="own-node", pm=SimpleNamespace(),  # type: ignore[arg-type]
                              claims=SimpleNamespace(annotations={}), nodes=SimpleNamespace(), ledger=ovs)  # type: ignore[arg-type]
    try:
        released = release_disabled_owners(ovs=ovs, net=net, nft=nft, flows=flows, annotator=annotator)
    finally:
        net.close()
    assert released == {kind: ["gone"] for kind in kinds}
    assert "ovnk-gone" not in nft_tables(bed) and "ovnk-kept" in nft_tables(bed)
    assert 7000 not in rule_priorities(bed) and 7001 in rule_priorities(bed)
    assert table_routes(bed) == {"10.71.0.0/16"}
    config = bed.ovs_map("other_config")
    assert "gone-key" not in config and config["kept-key"] == "1"
    assert bed.ovs_map("external_ids")["ovn-bridge-mappings"] == "kept-net:br-kept"
    assert FlowManager.cookie("gone") not in cookies(bed) and FlowManager.cookie("kept") in cookies(bed)
    assert not [k for k in bed.ovs_map("external_ids") if k.endswith(":gone")]
    # Nothing left to do the next time.
    ovs, net, nft, flows = bed.facades("kept")
    try:
        assert release_disabled_owners(ovs=ovs, net=net, nft=nft, flows=flows, annotator=annotator) == {}
    finally:
        net.close()


def test_a_plugins_port_on_a_bridge_it_does_not_own_is_released_with_it(bed: Bed) -> None:
    """``ensure_port(owner=)``: a plugin's patch port on a core bridge (the hybrid overlay's ``int`` on
    ``br-int``) is recorded, refused for an owner not enabled, and deleted when the plugin is switched off;
    interface ``options`` are set exactly."""
    ovs, net, nft, flows = bed.facades("patcher", "other")
    try:
        with pytest.raises(OwnershipError):
            ovs.ensure_port(BRIDGE, "pp-x", iface_type="patch", options={"peer": "pp-y"}, owner="unknown")
        ovs.ensure_port(BRIDGE, "pp-a", iface_type="patch", options={"peer": "pp-b"}, owner="patcher")
        ovs.ensure_port(BRIDGE, "pp-c", iface_type="patch", options={"peer": "pp-d"}, owner="patcher")
        ovs.ensure_port(BRIDGE, "pp-o", iface_type="patch", options={"peer": "pp-p"}, owner="other")
        assert ovs.owned("ports")["patcher"] == ["pp-a", "pp-c"]
        iface = ovs.interface("pp-a")
        assert iface is not None and iface.type == "patch" and dict(iface.options) == {"peer": "pp-b"}
        assert ovs.delete_owned_ports("patcher", ["pp-c"]) == ["pp-c"]
        assert ovs.owned("ports")["patcher"] == ["pp-a"] and ovs.interface("pp-c") is None
    finally:
        net.close()
    # The next run has "patcher" switched off: its port goes, the other plugins' state stays.
    ovs, net, nft, flows = bed.facades("other", "kept")
    annotator = NodeAnnotator(kube=SimpleNamespace(), node_name="own-node", pm=SimpleNamespace(),  # type: ignore[arg-type]
                              claims=SimpleNamespace(annotations={}), nodes=SimpleNamespace(), ledger=ovs)  # type: ignore[arg-type]
    try:
        released = release_disabled_owners(ovs=ovs, net=net, nft=nft, flows=flows, annotator=annotator)
    finally:
        net.close()
    assert released == {"ports": ["patcher"]}
    assert ovs.interface("pp-a") is None and ovs.interface("pp-o") is not None
    assert "patcher" not in ovs.owned("ports")


def test_an_owner_whose_flows_are_all_gone_leaves_no_ledger_entry(bed: Bed) -> None:
    """Per-remote owners (one per foreign node, say) come and go: once an owner has no flows left on a
    bridge that was written whole, its ledger entry drops the bridge, so the ledger does not grow forever."""
    ovs, net, _nft, flows = bed.facades("remote", "kept")
    try:
        flows.manage(BRIDGE)
        flows.set_flows(BRIDGE, "remote.a", ["table=0,priority=50,ip,nw_dst=10.80.0.0/24 actions=drop"])
        flows.set_flows(BRIDGE, "remote.b", ["table=0,priority=50,ip,nw_dst=10.81.0.0/24 actions=drop"])
        assert flows.sync(BRIDGE)
        assert {"remote.a", "remote.b"} <= set(ovs.owned("flows"))
        flows.set_flows(BRIDGE, "remote.a", [])
        assert flows.sync(BRIDGE)
        assert FlowManager.cookie("remote.a") not in cookies(bed) and FlowManager.cookie("remote.b") in cookies(bed)
        owned = ovs.owned("flows")
        assert "remote.a" not in owned and owned["remote.b"] == [BRIDGE]
        flows.set_flows(BRIDGE, "remote.b", [])
        assert flows.sync(BRIDGE)
    finally:
        net.close()


def test_ovs_version_and_datapath_types(bed: Bed) -> None:
    """What hardware offload checks: vswitchd's datapaths (it writes them) and ovs_version (ovs-ctl writes it)."""
    ovs = OvsFacade(bed.client, owners=Owners([]))
    assert "netdev" in ovs.datapath_types()
    bed.node.vsctl("set", "Open_vSwitch", ".", "ovs_version=3.1.0")
    try:
        ovs.wait_for("ovs_version seen", lambda: True if ovs.ovs_version() == "3.1.0" else None, timeout=10)
    finally:
        bed.node.vsctl("clear", "Open_vSwitch", ".", "ovs_version")
    ovs.wait_for("ovs_version cleared", lambda: True if ovs.ovs_version() == "" else None, timeout=10)


def test_interface_lookups_name_port_and_bridge_without_a_full_scan(bed: Bed) -> None:
    """``interface``, ``bridge_ports`` and ``interfaces_with_iface_id`` read one port (by the interface's
    name) or one bridge; a bond's members, whose port is named otherwise, still find their port."""
    ovs, net, _nft, _flows = bed.facades()
    try:
        ovs.ensure_port(BRIDGE, "lk-a", iface_type="internal", external_ids={"iface-id": "lookup-pod"})
        bed.node.vsctl("--may-exist", "add-br", "br-lk2", "--", "set", "bridge", "br-lk2", "datapath_type=netdev")
        bed.node.vsctl("add-bond", "br-lk2", "lk-bond", "lk-m1", "lk-m2", "--", "set", "Interface", "lk-m1",
                       "type=internal", "--", "set", "Interface", "lk-m2", "type=internal")
        # ovs-vsctl's writes reach the facade's IDL copy a moment later.
        ovs.wait_for("the bond in the IDL", lambda: ovs.interface("lk-m2"), timeout=10)
        found = ovs.interface("lk-a")
        assert found is not None and (found.port, found.bridge) == ("lk-a", BRIDGE)
        member = ovs.interface("lk-m2")
        assert member is not None and (member.port, member.bridge) == ("lk-bond", "br-lk2")
        assert [(i.name, i.port) for i in ovs.interfaces_with_iface_id("lookup-pod")] == [("lk-a", "lk-a")]
        ports = {(i.name, i.port, i.bridge) for i in ovs.bridge_ports("br-lk2")}
        assert {("lk-m1", "lk-bond", "br-lk2"), ("lk-m2", "lk-bond", "br-lk2")} <= ports
        assert all(i.bridge == "br-lk2" for i in ovs.bridge_ports("br-lk2"))
        assert {i.name for i in ovs.bridge_ports(BRIDGE)} >= {"lk-a"} and ovs.bridge_ports("br-none") == []
        # The same answers as the full scan.
        everything = {i.name: (i.port, i.bridge) for i in ovs.interfaces()}
        assert everything["lk-m1"] == ("lk-bond", "br-lk2") and everything["lk-a"] == ("lk-a", BRIDGE)
    finally:
        bed.node.vsctl("--if-exists", "del-br", "br-lk2")
        ovs.delete_ports(["lk-a"])
        net.close()


def test_a_bridge_created_concurrently_by_another_client_is_adopted_not_an_error(bed: Bed) -> None:
    """ovn-controller creates br-int itself when it starts before the agent: ensure_bridge racing
    another client's add-br must end with the one bridge, set up as asked (what once failed CI)."""
    ovs = OvsFacade(bed.client, owners=Owners([]))
    name = "br-race"
    try:
        for round_ in range(25):
            bed.node.vsctl("--if-exists", "del-br", name)
            other = subprocess.Popen(  # the other client, as ovn-controller would
                [bed.node.install.bin("ovs-vsctl"), f"--db={bed.node.ovs_address}", "--no-wait", "add-br", name],
                env=bed.node.env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            time.sleep(random.uniform(0, 0.01))
            ovs.ensure_bridge(name, datapath_type="netdev", fail_mode="secure")
            _, err = other.communicate(timeout=30)
            # add-br refuses a bridge it sees already: that is the other side of the same race.
            assert other.returncode == 0 or b"already exists" in err, err
            assert bed.node.vsctl("list-br").split().count(name) == 1, f"round {round_}"
            assert bed.node.vsctl("get", "Bridge", name, "fail_mode").strip() == "secure", f"round {round_}"
            assert bed.node.vsctl("get", "Bridge", name, "datapath_type").strip() == "netdev", f"round {round_}"
    finally:
        bed.node.vsctl("--if-exists", "del-br", name)
