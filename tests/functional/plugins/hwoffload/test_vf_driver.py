"""The VF driver for real: two simulated nodes (ovnk_lab.ovsnode), node-1 with a stand-in SR-IOV NIC
(ovnk_lab.vfs: constructed sysfs tree, VF/representor veth pairs) and the hwoffload plugin on, node-2
with the veth path only. CNI through the installed shim and through cnitool (libcni, as a runtime).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from ovnk.core.kube.resources import NAMESPACES
from ovnk.core.kube.resources import NODES
from ovnk_lab.ovsnode import CniRun
from ovnk_lab.ovsnode import NodeLab
from ovnk_lab.ovsnode import OvsNode
from ovnk_lab.ovsnode import PodSandbox
from ovnk_lab.ovsnode import netconf
from ovnk_lab.paths import tool_bin
from ovnk_lab.procs import wait_for
from ovnk_lab.vfs import StandinNic

pytestmark = [pytest.mark.node, pytest.mark.kube, pytest.mark.ovn]

AGENT_SETTINGS = ("cni.annotation-timeout=20", "cni.ovn-installed-timeout=30")
ANNOTATION = "k8s.ovn.org/hw-offload"
LIBCNI_CACHE = Path("/var/lib/cni")


class HwLab:
    def __init__(self, lab: NodeLab, nic: StandinNic) -> None:
        self.lab = lab
        self.nic = nic
        self.node1 = lab.nodes["node-1"]
        self.node2 = lab.nodes["node-2"]

    def plugin_settings(self, root: Path | None = None) -> tuple[str, ...]:
        return (*AGENT_SETTINGS, f"hwoffload.sysfs-root={root or self.nic.root}", "hwoffload.tc-policy=skip_sw")

    def start_node1(self, *, plugin: bool = True, root: Path | None = None, wait: bool = True,
                    extra: tuple[str, ...] = ()) -> None:
        self.node1.cni_conf_file.unlink(missing_ok=True)
        self.lab.start_agent(self.node1, *(self.plugin_settings(root) if plugin else AGENT_SETTINGS), *extra,
                             plugins=("hwoffload",) if plugin else (), wait=wait)


@pytest.fixture(scope="module")
def hw() -> Iterator[HwLab]:
    workdir = Path(tempfile.mkdtemp(prefix="ovnkhw-", dir="/tmp"))
    lab = NodeLab(workdir / "w", nodes=2)
    try:
        lab.start()
        nic = StandinNic(workdir / "sys-node-1", vfs=4)
        nic.create(lab.nodes["node-1"].netns)
        hw = HwLab(lab, nic)
        hw.start_node1(wait=False)
        lab.start_agent(hw.node2, *AGENT_SETTINGS, wait=False)
        lab.wait_agent_ready(hw.node1)
        lab.wait_agent_ready(hw.node2)
        yield hw
    finally:
        lab.destroy()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def ns(hw: HwLab) -> Iterator[str]:
    assert hw.lab.client is not None
    name = f"hw-{uuid.uuid4().hex[:8]}"
    hw.lab.client.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    yield name
    hw.lab.client.delete(NAMESPACES, name)


def vf_conf(hw: HwLab, index: int | None = None, *, device: str | None = None) -> str:
    return netconf(deviceID=device or hw.nic.vf_pci(index or 0))


def ok(done: CniRun, what: str) -> dict[str, Any]:
    assert done.returncode == 0, f"{what} failed: {done.stdout} {done.stderr}"
    return done.json if done.stdout.strip() else {}


def cni_error(done: CniRun) -> dict[str, Any]:
    assert done.returncode == 1, f"expected a CNI error, got exit {done.returncode}: {done.stdout} {done.stderr}"
    error: dict[str, Any] = json.loads(done.stdout)
    return error


def pod_with_annotation(hw: HwLab, node: OvsNode, ns: str, name: str) -> PodSandbox:
    pod = hw.lab.create_pod(node, ns, name)
    hw.lab.wait_pod_annotated(pod)
    return pod


def links(node_or_pod: OvsNode | PodSandbox) -> dict[str, dict[str, Any]]:
    out = node_or_pod.exec(["ip", "-j", "link", "show"]).stdout
    return {link["ifname"]: link for link in json.loads(out)}


def addresses(pod: PodSandbox, ifname: str = "eth0") -> list[str]:
    out = pod.exec(["ip", "-j", "addr", "show", "dev", ifname]).stdout
    return [f"{a['local']}/{a['prefixlen']}" for a in json.loads(out)[0]["addr_info"] if a["scope"] == "global"]


def port_ids(node: OvsNode, port: str) -> dict[str, str] | None:
    """The Interface's external_ids, or ``None`` when there is no such Interface."""
    rows = json.loads(node.vsctl("--format=json", "--columns=external_ids", "find", "Interface", f"name={port}"))
    if not rows["data"]:
        return None
    _kind, pairs = rows["data"][0][0]
    return {str(k): str(v) for k, v in pairs}


def ping(pod: PodSandbox, address: str) -> subprocess.CompletedProcess[str]:
    return pod.exec(["ping", "-c", "2", "-i", "0.2", "-W", "2", address], check=False, timeout=30)


def pod_ip(result: dict[str, Any]) -> str:
    return str(result["ips"][0]["address"]).split("/")[0]


def assert_vf_on_host(hw: HwLab, index: int) -> None:
    host = links(hw.node1)
    vf = hw.nic.vf_netdev(index)
    assert vf in host, f"{vf} is not back on node-1"
    assert "UP" not in host[vf]["flags"], host[vf]
    assert port_ids(hw.node1, hw.nic.representor(index)) is None


def node_annotation(hw: HwLab) -> dict[str, Any] | None:
    assert hw.lab.client is not None
    node = hw.lab.client.get(NODES, "node-1") or {}
    raw = (node.get("metadata", {}).get("annotations") or {}).get(ANNOTATION)
    return json.loads(raw) if raw else None


def other_config(node: OvsNode) -> str:
    return node.vsctl("get", "Open_vSwitch", ".", "other_config")


# -- tests -----------------------------------------------------------------------------------


def test_agent_sets_offload_keys_and_reports(hw: HwLab) -> None:
    config = other_config(hw.node1)
    assert 'hw-offload="true"' in config and "tc-policy=skip_sw" in config, config
    assert "hw-offload" not in other_config(hw.node2)
    report = _wait_annotation(hw)
    assert report["enabled"] is True and report["active"] is False and report["datapath"] == "netdev"
    assert report["pfs"] == ["pf0"] and report["tc-policy"] == "skip_sw"
    assert "only the kernel datapath" in report["reason"]
    # The annotation is published during start-up; the node controller logs its first status just
    # after the agent is ready, so the line may still be on its way.
    wait_for("node-1's offload status in its log",
             lambda: "hardware offload on node-1: not active" in hw.node1.agent_log.read_text(),
             timeout=30, interval=0.2)
    metrics = node_metrics(hw.node1)
    for line in ("ovnk_hwoffload_enabled 1.0", "ovnk_hwoffload_active 0.0",
                 'ovnk_hwoffload_tc_policy{policy="skip_sw"} 1.0', 'ovnk_hwoffload_tc_policy{policy="none"} 0.0'):
        assert line in metrics, line
    assert 'ovnk_hwoffload_vfs{state="free"}' in metrics
    # Drift: a key removed by hand comes back at once, not at the 30 s resync (the reporter watches the
    # database); the timeout is generous for a loaded machine, not a latency goal.
    hw.node1.vsctl("remove", "Open_vSwitch", ".", "other_config", "hw-offload")
    wait_for("hw-offload restored", lambda: 'hw-offload="true"' in other_config(hw.node1), timeout=15, interval=0.05)


def node_metrics(node: OvsNode) -> str:
    code = "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:9410/metrics', timeout=10).read().decode())"
    return node.exec([sys.executable, "-c", code]).stdout


def _wait_annotation(hw: HwLab, predicate: Any = bool) -> dict[str, Any]:
    found: dict[str, Any] = {}

    def check() -> bool:
        report = node_annotation(hw)
        if report is not None and predicate(report):
            found.update(report)
            return True
        return False

    wait_for("node-1's hw-offload annotation", check, timeout=90, interval=0.2)
    return found


def test_vf_pod_reaches_veth_pods_on_both_nodes_and_del_returns_the_vf(hw: HwLab, ns: str) -> None:
    lab = hw.lab
    vf_pod = pod_with_annotation(hw, hw.node1, ns, "vf")
    local = pod_with_annotation(hw, hw.node1, ns, "local")
    remote = pod_with_annotation(hw, hw.node2, ns, "remote")
    result = ok(lab.cni(vf_pod, "ADD", config=vf_conf(hw, 0)), "ADD vf")
    local_ip = pod_ip(ok(lab.cni(local, "ADD"), "ADD local"))
    remote_ip = pod_ip(ok(lab.cni(remote, "ADD"), "ADD remote"))

    annotation = lab.wait_pod_annotated(vf_pod)["default"]
    assert result["interfaces"][0]["name"] == "pf0r0"
    assert result["interfaces"][1] == {"name": "eth0", "mac": annotation["mac_address"], "sandbox": vf_pod.netns_path,
                                       "mtu": 1400}
    inside = links(vf_pod)["eth0"]
    assert inside["address"] == annotation["mac_address"] and "UP" in inside["flags"] and inside["mtu"] == 1400
    assert addresses(vf_pod) == annotation["ip_addresses"]
    assert "pf0v0" not in links(hw.node1), "the VF netdev left the host namespace"
    ids = port_ids(hw.node1, "pf0r0")
    assert ids is not None
    assert ids["iface-id"] == f"{ns}_vf" and ids["sandbox"] == vf_pod.container_id
    assert ids["vf-netdev-name"] == "pf0v0" and ids["k8s.ovn.org/vf-pci-address"] == hw.nic.vf_pci(0)
    assert ids["ovn-installed"] == "true"

    assert ping(vf_pod, local_ip).returncode == 0, "VF pod -> veth pod on the same node"
    assert ping(vf_pod, remote_ip).returncode == 0, "VF pod -> veth pod across the tunnel"
    assert ping(remote, pod_ip(result)).returncode == 0, "veth pod on node-2 -> VF pod"

    # CHECK with ADD's result, ADD again (idempotent: same MAC, same port), DEL twice.
    ok(lab.cni(vf_pod, "CHECK", config=netconf(deviceID=hw.nic.vf_pci(0), prevResult=result)), "CHECK")
    again = ok(lab.cni(vf_pod, "ADD", config=vf_conf(hw, 0)), "ADD again")
    assert again["interfaces"] == result["interfaces"]
    ok(lab.cni(vf_pod, "DEL", config=vf_conf(hw, 0)), "DEL")
    assert "eth0" not in links(vf_pod)
    assert_vf_on_host(hw, 0)
    ok(lab.cni(vf_pod, "DEL", config=vf_conf(hw, 0)), "DEL again")
    # The VF is free again: another pod gets it.
    other = pod_with_annotation(hw, hw.node1, ns, "vf-again")
    ok(lab.cni(other, "ADD", config=vf_conf(hw, 0)), "ADD of the freed VF")
    # A DEL whose netconf has no deviceID (a runtime not repeating it) still returns the VF.
    ok(lab.cni(other, "DEL"), "DEL without deviceID")
    assert_vf_on_host(hw, 0)
    for pod in (local, remote):
        ok(lab.cni(pod, "DEL"), "DEL veth pod")


def test_bad_device_ids_are_cni_errors_and_leave_nothing(hw: HwLab, ns: str) -> None:
    lab = hw.lab
    holder = pod_with_annotation(hw, hw.node1, ns, "holder")
    ok(lab.cni(holder, "ADD", config=vf_conf(hw, 1)), "ADD holder")
    pod = pod_with_annotation(hw, hw.node1, ns, "bad")
    rep = hw.nic.root / "class" / "net" / hw.nic.representor(3)
    target = os.readlink(rep)
    before = set(links(hw.node1))
    try:
        os.unlink(rep)
        cases = {
            "0000:77:00.2": "no such PCI device",
            hw.nic.pf_pci: "is not an SR-IOV virtual function",
            "pci-0": "is not a PCI address",
            hw.nic.vf_pci(3): "no representor found for VF 3",
            hw.nic.vf_pci(1): "the VF is already in use",
        }
        for device, message in cases.items():
            error = cni_error(lab.cni(pod, "ADD", config=netconf(deviceID=device)))
            assert error["code"] == 7 and message in error["msg"], (device, error)
            assert links(pod).keys() == {"lo"}, f"{device}: something was moved into the pod"
            assert set(links(hw.node1)) == before, f"{device}: host links changed"
            assert port_ids(hw.node1, hw.nic.representor(3)) is None
    finally:
        os.symlink(target, rep)
    ids = port_ids(hw.node1, hw.nic.representor(1))
    assert ids is not None and ids["sandbox"] == holder.container_id, "the holder's VF was not disturbed"
    ok(lab.cni(holder, "DEL", config=vf_conf(hw, 1)), "DEL holder")
    assert_vf_on_host(hw, 1)


@contextlib.contextmanager
def cnitool_env(hw: HwLab, ns: str) -> Iterator[tuple[Path, dict[str, str]]]:
    conf_dir = Path(tempfile.mkdtemp(prefix="hwcnitool-"))
    base = json.loads(hw.node1.cni_conf_file.read_text())
    name = base["name"]
    try:
        yield conf_dir, {"NETCONFPATH": str(conf_dir), "CNI_PATH": str(hw.node1.cni_bin_dir),
                         "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    finally:
        shutil.rmtree(conf_dir, ignore_errors=True)
        for leftover in LIBCNI_CACHE.glob(f"results/{name}-*"):
            leftover.unlink()


def test_cnitool_concurrent_add_check_del_for_different_vfs(hw: HwLab, ns: str) -> None:
    """libcni (cnitool) drives ADD, CHECK (with its cached prevResult) and DEL, for three VFs at once."""
    base = json.loads(hw.node1.cni_conf_file.read_text())
    indexes = (0, 2, 3)
    pods = {i: pod_with_annotation(hw, hw.node1, ns, f"tool-{i}") for i in indexes}

    with cnitool_env(hw, ns) as (conf_dir, env):
        def cnitool(index: int, command: str) -> subprocess.CompletedProcess[str]:
            # One conf dir per VF: the network's config carries that VF's deviceID, as Multus writes it.
            vf_dir = conf_dir / str(index)
            if not vf_dir.exists():
                vf_dir.mkdir()
                (vf_dir / "10-vf.conf").write_text(json.dumps({**base, "deviceID": hw.nic.vf_pci(index)}))
            pod = pods[index]
            call_env = {**env, "NETCONFPATH": str(vf_dir), "CNI_ARGS": pod.cni_env("ADD")["CNI_ARGS"]}
            return subprocess.run([tool_bin("cnitool"), command, base["name"], pod.netns_path], env=call_env,
                                  capture_output=True, text=True, timeout=120, check=False)

        def run_all(command: str) -> dict[int, subprocess.CompletedProcess[str]]:
            with ThreadPoolExecutor(max_workers=len(indexes)) as pool:
                futures = {i: pool.submit(cnitool, i, command) for i in indexes}
                return {i: f.result() for i, f in futures.items()}

        for index, done in run_all("add").items():
            assert done.returncode == 0, f"add VF {index}: {done.stdout} {done.stderr}"
            assert json.loads(done.stdout)["interfaces"][0]["name"] == hw.nic.representor(index)
        for index in indexes:
            assert "UP" in links(pods[index])["eth0"]["flags"]
            assert port_ids(hw.node1, hw.nic.representor(index)) is not None
        for index, done in run_all("check").items():
            assert done.returncode == 0, f"check VF {index}: {done.stdout} {done.stderr}"
        # CHECK fails once the pod side drifts (its address gone).
        victim = pods[indexes[0]]
        address = addresses(victim)[0]
        victim.exec(["ip", "addr", "del", address, "dev", "eth0"])
        drifted = cnitool(indexes[0], "check")
        assert drifted.returncode != 0 and "lacks" in drifted.stdout + drifted.stderr
        for index, done in run_all("del").items():
            assert done.returncode == 0, f"del VF {index}: {done.stdout} {done.stderr}"
    for index in indexes:
        assert_vf_on_host(hw, index)
        assert "eth0" not in links(pods[index])


def test_agent_restart_keeps_the_vf_pod_working(hw: HwLab, ns: str) -> None:
    lab = hw.lab
    vf_pod = pod_with_annotation(hw, hw.node1, ns, "vf-restart")
    remote = pod_with_annotation(hw, hw.node2, ns, "remote-restart")
    ok(lab.cni(vf_pod, "ADD", config=vf_conf(hw, 2)), "ADD vf")
    remote_ip = pod_ip(ok(lab.cni(remote, "ADD"), "ADD remote"))
    lab.stop_agent(hw.node1)
    hw.start_node1()
    assert ping(vf_pod, remote_ip).returncode == 0, "VF pod after the agent restarted"
    ids = port_ids(hw.node1, hw.nic.representor(2))
    assert ids is not None and ids["sandbox"] == vf_pod.container_id
    ok(lab.cni(vf_pod, "DEL", config=vf_conf(hw, 2)), "DEL after the restart")
    assert_vf_on_host(hw, 2)
    ok(lab.cni(remote, "DEL"), "DEL remote")


def refused(hw: HwLab, root: Path | None = None) -> str:
    """Start node-1's agent with the plugin; it must exit non-zero. Its log."""
    hw.start_node1(root=root, wait=False)
    agent = hw.node1.agent
    assert agent is not None and agent.proc is not None
    assert agent.proc.wait(timeout=90) != 0
    hw.lab.stop_agent(hw.node1)
    return hw.node1.agent_log.read_text()


def test_refused_without_offload_preconditions_and_keys_cleared_when_switched_off(hw: HwLab, tmp_path: Path) -> None:
    lab = hw.lab
    legacy = StandinNic(tmp_path / "legacy", switchdev=False).write_sysfs()
    lab.stop_agent(hw.node1)
    try:
        log = refused(hw, legacy)
        assert "plugin 'hwoffload' failed in ovnk_node_setup" in log and "no PF is in switchdev mode (pf0" in log
        hw.node1.vsctl("set", "Open_vSwitch", ".", "ovs_version=2.12.0")
        try:
            log = refused(hw)
        finally:
            hw.node1.vsctl("clear", "Open_vSwitch", ".", "ovs_version")
        assert "Open vSwitch 2.12.0 is older than 2.13" in log
        # Switched off: the agent removes the keys and the annotation it owned.
        hw.start_node1(plugin=False)
        assert "hw-offload" not in other_config(hw.node1) and "tc-policy" not in other_config(hw.node1)
        wait_for("node-1's hw-offload annotation removed", lambda: node_annotation(hw) is None, timeout=30,
                 interval=0.2)
    finally:
        lab.stop_agent(hw.node1)
        hw.start_node1()
    wait_for("hw-offload set again", lambda: 'hw-offload="true"' in other_config(hw.node1), timeout=30, interval=0.2)


def rx_packets(node: OvsNode, name: str) -> int:
    """The kernel's receive counter of a link (live, unlike OVS's statistics column)."""
    out = node.exec(["ip", "-s", "-j", "link", "show", "dev", name]).stdout
    return int(json.loads(out)[0]["stats64"]["rx"]["packets"])


def mgmt_port(node: OvsNode) -> dict[str, Any]:
    out = node.exec(["ip", "-d", "-j", "addr", "show", "dev", "ovn-k8s-mp0"]).stdout
    link: dict[str, Any] = json.loads(out)[0]
    return link


def test_hook_ovnk_node_management_port_on_a_vf(hw: HwLab, ns: str) -> None:
    """``mgmt-port-netdev``: the management port is VF 3 renamed, its representor the br-int port; an empty
    setting gives it back and core's internal port returns. Pods reach the node through it either way."""
    lab = hw.lab
    pod = pod_with_annotation(hw, hw.node1, ns, "to-host")
    ok(lab.cni(pod, "ADD"), "ADD veth pod")
    internal = mgmt_port(hw.node1)
    mgmt_ip = next(a["local"] for a in internal["addr_info"] if a["family"] == "inet")
    try:
        for _ in range(2):  # the second start finds the VF in place
            lab.stop_agent(hw.node1)
            hw.start_node1(extra=("hwoffload.mgmt-port-netdev=pf0v3",))
            port = mgmt_port(hw.node1)
            assert port["linkinfo"]["info_kind"] == "veth", port
            assert port["address"] == internal["address"] and port["mtu"] == internal["mtu"]
            assert mgmt_ip in [a["local"] for a in port["addr_info"]]
            assert "pf0v3" not in links(hw.node1)
            ids = port_ids(hw.node1, "pf0r3")
            assert ids is not None and ids["iface-id"] == "k8s-node-1"
            # Pod -> node IP: the cluster router reroutes it to the management port (policy 1004), the
            # node answers through its routes via the management port; ovn-controller binds the management
            # LSP to the new port first. (Not the management IP itself: the node's kernel answers ARP for
            # its own addresses on the pod's veth host end.)
            before = rx_packets(hw.node1, "ovn-k8s-mp0")
            wait_for("pod -> node IP through the VF management port", lambda: ping(pod, hw.node1.ip).returncode == 0,
                     timeout=30, interval=0.5)
            assert rx_packets(hw.node1, "ovn-k8s-mp0") > before, "nothing came in through the VF management port"
    finally:
        lab.stop_agent(hw.node1)
        hw.start_node1()
    port = mgmt_port(hw.node1)
    assert port["linkinfo"]["info_kind"] != "veth" and mgmt_ip in [a["local"] for a in port["addr_info"]]
    assert "pf0v3" in links(hw.node1) and port_ids(hw.node1, "pf0r3") is None
    assert "ovnk-hwoffload-mgmt-vf" not in hw.node1.vsctl("get", "Open_vSwitch", ".", "external_ids")
    wait_for("pod -> node IP through core's internal port again", lambda: ping(pod, hw.node1.ip).returncode == 0,
             timeout=30, interval=0.5)
    ok(lab.cni(pod, "DEL"), "DEL")


def test_node_selector_leaves_other_nodes_alone(hw: HwLab, tmp_path: Path) -> None:
    """One cluster-wide configuration: node-2 has no NIC and no matching label, so the plugin does nothing
    there (no refusal, no keys, no annotation), and its pods keep the veth path."""
    lab = hw.lab
    empty = tmp_path / "no-nic"
    empty.mkdir()
    lab.stop_agent(hw.node2)
    try:
        hw.node2.cni_conf_file.unlink(missing_ok=True)
        lab.start_agent(hw.node2, *AGENT_SETTINGS, f"hwoffload.sysfs-root={empty}",
                        "hwoffload.node-selector=example.com/smartnic=true", plugins=("hwoffload",))
        assert "hw-offload" not in other_config(hw.node2)
        assert "does not match node-selector" in hw.node2.agent_log.read_text()
        assert lab.client is not None
        node = lab.client.get(NODES, "node-2") or {}
        assert ANNOTATION not in (node.get("metadata", {}).get("annotations") or {})
    finally:
        lab.stop_agent(hw.node2)
        hw.node2.cni_conf_file.unlink(missing_ok=True)
        lab.start_agent(hw.node2, *AGENT_SETTINGS)
