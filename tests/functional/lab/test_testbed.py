"""The test bed's own software: one OVS/OVN installation for everything, and the Kubernetes build.

docs/testbed.md describes what is installed where; these tests hold the lab to it on the
machine they run on (Debian 12: OVS 3.5/OVN 25.03 from hack/get-ovn.sh beside Debian's
3.1/23.03; Debian 13: the packages).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ovnk_lab import paths
from ovnk_lab.procs import Daemon
from ovnk_lab.procs import run
from ovnk_lab.procs import wait_for

OVS_PROGRAMS = ("ovsdb-server", "ovsdb-tool", "ovsdb-client", "ovs-vswitchd", "ovs-vsctl", "ovs-ofctl", "ovs-appctl")
OVN_PROGRAMS = ("ovn-northd", "ovn-controller", "ovn-nbctl", "ovn-sbctl", "ovn-trace")


def version_of(program: str) -> tuple[int, ...]:
    first = subprocess.run([program, "--version"], capture_output=True, text=True, timeout=30,
                           check=True).stdout.splitlines()[0]
    return paths.parse_version(first)


def test_every_program_and_schema_comes_from_the_chosen_installation() -> None:
    install = paths.ovn_install()
    for name in OVS_PROGRAMS:
        program = install.bin(name)
        assert Path(program).parent in install.bin_dirs
        assert version_of(program)[:2] == install.ovs_version[:2], program
    for name in OVN_PROGRAMS:
        assert version_of(install.bin(name))[:2] == install.ovn_version[:2], name
    for schema in ("ovn-nb", "ovn-sb", "vswitch"):
        assert Path(paths.ovn_schema(schema)).is_relative_to(install.ovs_share if schema == "vswitch"
                                                              else install.ovn_share)
    with pytest.raises(Exception, match="ovs_bin"):
        paths.system_bin("ovs-vsctl")


def test_the_default_is_a_current_ovs_and_ovn() -> None:
    """What issue 21 asked for: OVS >= 3.3 and OVN >= 24.03 in the test bed, on Debian 12 and 13."""
    install = paths.ovn_install()
    if os.environ.get(paths.OVN_PREFIX_ENV):
        pytest.skip(f"{paths.OVN_PREFIX_ENV} chooses {install.label}")
    assert install.ovs_version >= (3, 3) and install.ovn_version >= (24, 3), install.label
    assert not install.old_ovs and install.acl_tiers
    system = paths.system_install()
    assert system is not None
    assert (install.ovn_version, install.ovs_version) >= (system.ovn_version, system.ovs_version)


def test_processes_the_lab_starts_find_the_chosen_programs_first_on_path(tmp_path: Path) -> None:
    install = paths.ovn_install()
    found = run(["sh", "-c", "command -v ovs-ofctl; command -v ovn-nbctl; echo $OVN_PKGDATADIR"]).stdout.split()
    assert found == [install.bin("ovs-ofctl"), install.bin("ovn-nbctl"), str(install.ovn_share)]
    daemon = Daemon("path-probe", ["sh", "-c", "command -v ovs-vsctl"], log_path=tmp_path / "probe.log").start()
    wait_for("the probe to exit", lambda: not daemon.alive(), timeout=30)
    assert (tmp_path / "probe.log").read_text().strip() == install.bin("ovs-vsctl")


def choose(env: dict[str, str]) -> dict[str, Any]:
    """The installation a fresh process chooses under ``env``."""
    code = ("import json; from ovnk_lab import paths; i = paths.ovn_install(); "
            "print(json.dumps({'name': i.name, 'ovs': i.ovs_version, 'ovn': i.ovn_version}))")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True,
                         timeout=60, check=True).stdout
    result: dict[str, Any] = json.loads(out)
    return result


def test_ovnk_ovn_prefix_picks_the_packages_or_a_prefix() -> None:
    system = paths.system_install()
    assert system is not None
    picked = choose({paths.OVN_PREFIX_ENV: "system"})
    assert (picked["name"], tuple(picked["ovn"])) == ("system", system.ovn_version)
    cached = paths.cached_install()
    if cached is None:
        pytest.skip("no hack/get-ovn.sh installation on this machine (its OVS/OVN packages are current)")
    picked = choose({paths.OVN_PREFIX_ENV: str(paths.cache_dir() / "ovn" / "current")})
    assert (picked["name"], tuple(picked["ovs"])) == (cached.name, cached.ovs_version)
    bad = subprocess.run([sys.executable, "-c", "from ovnk_lab import paths; paths.ovn_install()"],
                         env={**os.environ, paths.OVN_PREFIX_ENV: "/nonexistent"}, capture_output=True, text=True,
                         timeout=60, check=False)
    assert bad.returncode != 0 and "/nonexistent holds no OVS/OVN installation" in bad.stderr


def test_the_private_prefix_loads_nothing_from_the_host() -> None:
    """hack/get-ovn.sh's binaries run on the prefix's own C library and libraries only."""
    cached = paths.cached_install()
    if cached is None:
        pytest.skip("no hack/get-ovn.sh installation on this machine (its OVS/OVN packages are current)")
    prefix = Path(cached.name)
    manifest = (prefix / "ovnk-install").read_text()
    assert "suite=trixie" in manifest and "package=libc6=" in manifest
    for program in (cached.bin("ovs-vswitchd"), cached.bin("ovn-controller"), cached.bin("ovsdb-server")):
        maps = subprocess.run([program], env={**os.environ, "LD_TRACE_LOADED_OBJECTS": "1"},
                              capture_output=True, text=True, timeout=30, check=True).stdout
        libraries = [line.split("=>")[-1].split("(")[0].strip() for line in maps.splitlines() if "/" in line]
        assert libraries and all(lib.startswith(str(prefix / "lib")) for lib in libraries), maps


@pytest.mark.kube
def test_the_api_server_reports_its_version(kube_cp: Any) -> None:
    """hack/build-kube.sh sets client-go's version too: /version said v0.0.0-master before."""
    version = json.loads(kube_cp.kubectl("get", "--raw", "/version"))
    assert (version["gitVersion"], version["major"], version["minor"]) == ("v1.20.2", "1", "20")
