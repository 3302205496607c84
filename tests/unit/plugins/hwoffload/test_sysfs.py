"""VF, PF and representor discovery against constructed sysfs trees (the lab's stand-in writer)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ovnk.plugins.hwoffload.status import offload_keys
from ovnk.plugins.hwoffload.status import offload_status
from ovnk.plugins.hwoffload.status import ovs_problem
from ovnk.plugins.hwoffload.status import parse_version
from ovnk.plugins.hwoffload.status import pf_problem
from ovnk.plugins.hwoffload.sysfs import DeviceError
from ovnk.plugins.hwoffload.sysfs import Sysfs
from ovnk_lab.vfs import StandinNic


@pytest.fixture
def nic(tmp_path: Path) -> StandinNic:
    nic = StandinNic(tmp_path / "sys", vfs=3)
    nic.write_sysfs()
    return nic


def test_vf_resolves_to_its_pf_index_netdev_and_representor(nic: StandinNic) -> None:
    sysfs = Sysfs(nic.root)
    vf = sysfs.virtual_function(nic.vf_pci(1))
    assert (vf.pci, vf.index, vf.netdev) == ("0000:03:00.3", 1, "pf0v1")
    assert (vf.pf.name, vf.pf.pci, vf.pf.switch_id, vf.pf.num_vfs) == ("pf0", "0000:03:00.0", nic.switch_id, 3)
    assert sysfs.representor(vf) == "pf0r1"
    assert [v.netdev for v in sysfs.virtual_functions(vf.pf)] == ["pf0v0", "pf0v1", "pf0v2"]


def test_vf_pci_addresses_roll_over_to_the_next_device(tmp_path: Path) -> None:
    nic = StandinNic(tmp_path / "sys", vfs=8)
    assert [nic.vf_pci(i) for i in (0, 5, 6, 7)] == ["0000:03:00.2", "0000:03:00.7", "0000:03:01.0", "0000:03:01.1"]
    nic.write_sysfs()
    sysfs = Sysfs(nic.root)
    assert sysfs.representor(sysfs.virtual_function("0000:03:01.1")) == "pf0r7"


@pytest.mark.parametrize(("device", "message"), [
    ("0000:03:00", "is not a PCI address"),
    ("0000:09:00.2", "no such PCI device"),
    ("0000:03:00.0", "is not an SR-IOV virtual function"),
])
def test_bad_device_ids_are_named(nic: StandinNic, device: str, message: str) -> None:
    with pytest.raises(DeviceError, match=message):
        Sysfs(nic.root).virtual_function(device)


def test_a_vf_without_representor_is_refused(nic: StandinNic) -> None:
    os.unlink(nic.root / "class" / "net" / "pf0r2")
    sysfs = Sysfs(nic.root)
    with pytest.raises(DeviceError, match="no representor found for VF 2 of pf0"):
        sysfs.representor(sysfs.virtual_function(nic.vf_pci(2)))


def test_representors_of_another_switch_or_pf_do_not_match(nic: StandinNic) -> None:
    rep = nic.root / "class" / "net" / "pf0r0"
    (rep / "phys_port_name").write_text("pf1vf0\n")
    sysfs = Sysfs(nic.root)
    with pytest.raises(DeviceError, match="no representor"):
        sysfs.representor(sysfs.virtual_function(nic.vf_pci(0)))
    # Older kernels name the port by the VF index alone.
    (rep / "phys_port_name").write_text("0\n")
    assert sysfs.representor(sysfs.virtual_function(nic.vf_pci(0))) == "pf0r0"
    (rep / "phys_switch_id").write_text("ffff\n")
    with pytest.raises(DeviceError, match="no representor"):
        sysfs.representor(sysfs.virtual_function(nic.vf_pci(0)))


def test_legacy_mode_pf_is_no_switchdev_pf(tmp_path: Path) -> None:
    nic = StandinNic(tmp_path / "sys", switchdev=False)
    nic.write_sysfs()
    sysfs = Sysfs(nic.root)
    pfs = sysfs.physical_functions()
    assert [(pf.name, pf.switchdev) for pf in pfs] == [("pf0", False)]
    problem = pf_problem(pfs, str(nic.root))
    assert problem is not None and "no PF is in switchdev mode (pf0" in problem
    with pytest.raises(DeviceError, match="not in switchdev mode"):
        sysfs.representor(sysfs.virtual_function(nic.vf_pci(0)))


def test_pf_preconditions(nic: StandinNic, tmp_path: Path) -> None:
    assert pf_problem(Sysfs(nic.root).physical_functions(), str(nic.root)) is None
    empty = tmp_path / "empty"
    empty.mkdir()
    problem = pf_problem(Sysfs(empty).physical_functions(), str(empty))
    assert problem is not None and "no SR-IOV capable network device" in problem
    (nic.root / "bus" / "pci" / "devices" / nic.pf_pci / "sriov_numvfs").write_text("0\n")
    problem = pf_problem(Sysfs(nic.root).physical_functions(), str(nic.root))
    assert problem is not None and "have no VFs" in problem


@pytest.mark.parametrize(("version", "ok"), [("3.1.0", True), ("2.13.0", True), ("2.12.1", False),
                                             ("2.17.9-1", True), ("", True), ("x", False)])
def test_ovs_version_precondition(version: str, ok: bool) -> None:
    assert (ovs_problem(version, ["netdev", "system"]) is None) is ok


def test_ovs_that_reported_no_datapaths_is_refused() -> None:
    problem = ovs_problem("3.1.0", [])
    assert problem is not None and "is it running" in problem


def test_parse_version() -> None:
    assert parse_version("3.1.0~git") == (3, 1, 0)
    assert parse_version("x") == ()


def test_status_says_why_offload_is_not_active(nic: StandinNic) -> None:
    pfs = Sysfs(nic.root).physical_functions()
    keys = {k: v for k, v in offload_keys("skip_sw").items() if v is not None}
    netdev = offload_status(other_config=keys, datapath="netdev", pfs=pfs, vfs_free=2, vfs_in_use=1)
    assert (netdev.enabled, netdev.active, netdev.tc_policy) == (True, False, "skip_sw")
    assert "only the kernel datapath" in netdev.reason
    report = json.loads(netdev.annotation())
    assert report["vfs"] == {"free": 2, "in-use": 1} and report["pfs"] == ["pf0"]
    system = offload_status(other_config=keys, datapath="system", pfs=pfs, vfs_free=3, vfs_in_use=0)
    assert system.active
    off = offload_status(other_config={}, datapath="system", pfs=pfs, vfs_free=3, vfs_in_use=0)
    assert not off.active and "hw-offload is not true" in off.reason


def test_node_selector() -> None:
    from ovnk.plugins.hwoffload.settings import parse_node_selector
    from ovnk.plugins.hwoffload.settings import selector_problem
    from ovnk.plugins.hwoffload.settings import selects

    assert parse_node_selector(" a=b, c ,") == {"a": "b", "c": None}
    assert selects("", {})
    assert selects("a=b,c", {"a": "b", "c": "", "d": "x"})
    assert not selects("a=b,c", {"a": "b"})
    assert not selects("a=b", {"a": "x"})
    assert selector_problem("a=b,c") is None
    assert selector_problem("a=b=c") is not None and selector_problem("=x") is not None


def test_cli_rows_and_format() -> None:
    from ovnk.plugins.hwoffload.cli import format_row
    from ovnk.plugins.hwoffload.cli import status_rows

    report = {"active": False, "enabled": True, "pfs": ["pf0"], "vfs": {"free": 1, "in-use": 1}, "tc-policy": "none",
              "reason": "why", "datapath": "netdev"}
    nodes = [{"metadata": {"name": "b", "annotations": {"k8s.ovn.org/hw-offload": json.dumps(report)}}},
             {"metadata": {"name": "a"}},
             {"metadata": {"name": "c", "annotations": {"k8s.ovn.org/hw-offload": "{"}}}]
    rows = status_rows(nodes)
    assert [r["node"] for r in rows] == ["b", "c"] and "unreadable" in rows[1]["reason"]
    assert format_row(rows[0], 1) == "b  not active  PFs pf0  VFs free 1 in use 1  tc-policy none  (why)"
