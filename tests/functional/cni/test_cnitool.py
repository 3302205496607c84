"""The CNI project's reference client (cnitool, libcni 1.1) drives the installed shim and our server.

libcni does what a container runtime does: finds the binary in CNI_PATH, sets
the CNI_* environment, caches the ADD result and hands it to CHECK as
``prevResult``, and parses our output with its own result types.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ovnk_lab.paths import tool_bin

from .conftest import SHIM_TIMEOUT
from .conftest import RecordingHandler

NETWORK = "ovnk-cnitool"
# libcni's result cache; cnitool has no option to move it.
LIBCNI_CACHE = Path("/var/lib/cni")


@pytest.fixture
def libcni_cache() -> Iterator[Path]:
    """Remove what cnitool cached for our network, and the cache folders if they are left empty."""
    yield LIBCNI_CACHE
    for leftover in LIBCNI_CACHE.glob(f"results/{NETWORK}-*"):
        leftover.unlink()
    for folder in (LIBCNI_CACHE / "results", LIBCNI_CACHE):
        with contextlib.suppress(OSError):  # not empty: someone else uses it
            folder.rmdir()


@pytest.mark.usefixtures("cni_server", "libcni_cache")
@pytest.mark.parametrize("version", ["1.0.0", "0.4.0"])
def test_cnitool_add_check_del(
    version: str, cni_dir: Path, shim_path: str, netns: str, handler: RecordingHandler
) -> None:
    conf_dir = cni_dir / "net.d"
    conf_dir.mkdir()
    (conf_dir / "10-ovnk.conf").write_text(
        json.dumps({"cniVersion": version, "name": NETWORK, "type": os.path.basename(shim_path)})
    )
    env = {
        "NETCONFPATH": str(conf_dir),
        "CNI_PATH": os.path.dirname(shim_path),
        "CNI_ARGS": "K8S_POD_NAMESPACE=web;K8S_POD_NAME=cnitool-pod",
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
    }

    def cnitool(command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [tool_bin("cnitool"), command, NETWORK, netns],
            env=env, capture_output=True, text=True, timeout=SHIM_TIMEOUT, check=False,
        )

    added = cnitool("add")
    assert added.returncode == 0, added.stderr
    result = json.loads(added.stdout)
    assert result["cniVersion"] == version
    assert result["interfaces"][1] == {"name": "eth0", "mac": "0a:58:0a:f4:01:05", "sandbox": netns}
    expected_ip = {"address": "10.244.1.5/24", "gateway": "10.244.1.1", "interface": 1}
    if version == "0.4.0":
        expected_ip = {"version": "4", **expected_ip}
    assert result["ips"] == [expected_ip]

    checked = cnitool("check")
    assert checked.returncode == 0, checked.stderr
    deleted = cnitool("del")
    assert deleted.returncode == 0, deleted.stderr

    assert handler.commands() == ["ADD", "CHECK", "DEL"]
    add, check, delete = handler.calls
    assert add.container_id == check.container_id == delete.container_id
    assert add.container_id.startswith("cnitool-")
    assert (add.netns, add.ifname, add.pod_key) == (netns, "eth0", "web/cnitool-pod")
    assert add.path == (os.path.dirname(shim_path),)
    # libcni fed our own ADD result back as CHECK's prevResult.
    assert check.prev_result is not None
    assert check.prev_result["ips"] == result["ips"]
    assert delete.prev_result is not None and delete.prev_result["interfaces"] == result["interfaces"]


@pytest.mark.usefixtures("cni_server", "libcni_cache")
def test_cnitool_reports_our_error_object(cni_dir: Path, shim_path: str, handler: RecordingHandler) -> None:
    conf_dir = cni_dir / "net.d"
    conf_dir.mkdir()
    (conf_dir / "10-ovnk.conf").write_text(
        json.dumps({"cniVersion": "1.0.0", "name": NETWORK, "type": os.path.basename(shim_path)})
    )
    missing = str(cni_dir / "no-such-netns")
    proc = subprocess.run(
        [tool_bin("cnitool"), "add", NETWORK, missing],
        env={"NETCONFPATH": str(conf_dir), "CNI_PATH": os.path.dirname(shim_path)},
        capture_output=True, text=True, timeout=SHIM_TIMEOUT, check=False,
    )
    assert proc.returncode != 0
    assert f"network namespace {missing} does not exist" in proc.stderr
    assert handler.calls == []
