"""`ovnk cni install --portable-python`: the shim runs on a copied interpreter that needs nothing
from the host but /bin/sh, with an empty environment, through a real CniServer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ovnk.cni import install
from ovnk.cni import portable
from ovnk.core.config import CniSettings

from .conftest import SHIM_TIMEOUT
from .conftest import netconf

# The image's interpreter: Debian bookworm's python3.11 (hack/Containerfile), present on the test bed.
DEBIAN_PYTHON = "/usr/bin/python3.11"
# Debian 13 has python3.13 only: there the image's interpreter is not on the machine to copy.
needs_image_python = pytest.mark.skipif(
    not os.access(DEBIAN_PYTHON, os.X_OK),
    reason=f"the image's interpreter {DEBIAN_PYTHON} (Debian 12's) is not installed on this machine (Debian 13?)")
VERSION_REPLY = {"cniVersion": "1.1.0", "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]}


def run(argv: list[str], env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, input=stdin, env=env, capture_output=True, text=True, timeout=SHIM_TIMEOUT,
                          check=False)


@pytest.fixture
def installed(cni_dir: Path, socket_path: str, run_cli: Callable[..., Any]) -> Path:
    """The shim installed by the CLI exactly as the chart's init container does it; its path."""
    bin_dir = cni_dir / "bin"
    result = run_cli("--set", f"cni.bin-dir={bin_dir}", "--set", f"cni.socket-path={socket_path}", "--set", "cni.shim=python",
                     "cni", "install", "--portable-python", env={})
    assert result.exit_code == 0, result.output
    shim = bin_dir / "ovn-k8s-cni-overlay"
    assert f"installed {shim} (interpreter {bin_dir}/ovnk-python/python3)" in result.output
    return shim


def test_installed_shim_names_the_copy_and_runs_with_an_empty_environment(installed: Path) -> None:
    launcher = installed.parent / "ovnk-python" / "python3"
    assert installed.read_text().splitlines()[0] == f"#!{launcher} -IS"
    version = run([str(installed)], env={"CNI_COMMAND": "VERSION"})
    assert (version.returncode, version.stderr) == (0, "")
    assert json.loads(version.stdout) == VERSION_REPLY
    # Nothing at all in the environment: the shim still starts and answers with a CNI error.
    bare = run([str(installed)], env={})
    assert bare.returncode == 1
    assert json.loads(bare.stdout)["code"] == 4


@pytest.mark.usefixtures("cni_server")
def test_add_and_bad_input_through_the_copy(installed: Path, pod_env: Callable[..., dict[str, str]]) -> None:
    added = run([str(installed)], env=pod_env("ADD"), stdin=netconf())
    assert added.returncode == 0, added.stdout + added.stderr
    assert json.loads(added.stdout)["ips"] == [{"address": "10.244.1.5/24", "gateway": "10.244.1.1", "interface": 1}]
    # Invalid JSON takes the shim's fallback to the json package: it was copied too.
    bad = run([str(installed)], env=pod_env("ADD"), stdin="{not json")
    assert bad.returncode == 1
    error = json.loads(bad.stdout)
    assert error["code"] == 6
    assert "not JSON" in error["msg"]


def test_the_copy_maps_no_library_of_the_host(installed: Path) -> None:
    launcher = installed.parent / "ovnk-python" / "python3"
    root = os.path.realpath(launcher.parent)
    probe = ("import sys, _json, _socket, json, socket\n"
             "print(sys.prefix)\n"
             "print(open('/proc/self/maps').read())")
    proc = run([str(launcher), "-IS", "-c", probe], env={})
    assert proc.returncode == 0, proc.stderr
    prefix, maps = proc.stdout.split("\n", 1)
    assert prefix == str(launcher.parent)
    mapped = {line.split()[-1] for line in maps.splitlines() if len(line.split()) >= 6 and "/" in line.split()[-1]}
    libraries = {path for path in mapped if ".so" in os.path.basename(path) or path.endswith("python3.11")}
    assert libraries, maps
    outside = sorted(p for p in libraries if not os.path.realpath(p).startswith(root + os.sep))
    assert outside == []


@needs_image_python
def test_the_images_debian_interpreter_copies_too(cni_dir: Path, socket_path: str) -> None:
    bin_dir = str(cni_dir / "bin")
    launcher = portable.install_portable_python(bin_dir, python=DEBIAN_PYTHON,
                                                shim_source=install.SHIM_SOURCE.read_text())
    shim = os.path.join(bin_dir, "ovn-k8s-cni-overlay")
    install.install_shim(shim, kind="python", python=launcher, socket_path=socket_path)
    version = run([shim], env={"CNI_COMMAND": "VERSION"})
    assert (version.returncode, version.stderr) == (0, "")
    assert json.loads(version.stdout) == VERSION_REPLY
    # Debian's binary needs libexpat and zlib, which a minimal host may lack: they were copied.
    copied = os.listdir(os.path.join(bin_dir, portable.PORTABLE_DIR_NAME, portable.LIBRARY_DIR))
    assert {"libexpat.so.1", "libz.so.1", "libc.so.6"} <= set(copied)


@needs_image_python
def test_reinstall_writes_nothing_and_an_update_switches_atomically(cni_dir: Path) -> None:
    bin_dir = cni_dir / "bin"
    source = install.SHIM_SOURCE.read_text()
    portable.install_portable_python(str(bin_dir), python=sys.executable, shim_source=source)
    link = bin_dir / portable.PORTABLE_DIR_NAME
    first = os.readlink(link)
    marker = (bin_dir / first / portable.COMPLETE_MARKER).stat()
    portable.install_portable_python(str(bin_dir), python=sys.executable, shim_source=source)
    assert os.readlink(link) == first
    assert (bin_dir / first / portable.COMPLETE_MARKER).stat().st_ino == marker.st_ino
    # Another interpreter (an image upgrade): a new tree, the link switched, the old tree gone.
    portable.install_portable_python(str(bin_dir), python=DEBIAN_PYTHON, shim_source=source)
    second = os.readlink(link)
    assert second != first
    assert sorted(p.name for p in bin_dir.iterdir()) == sorted([portable.PORTABLE_DIR_NAME, second])


def test_the_node_agents_reinstall_keeps_naming_the_copy(installed: Path, socket_path: str) -> None:
    """The agent calls install_configured_shim(cfg.cni) at every start, without an interpreter."""
    settings = CniSettings(bin_dir=str(installed.parent), socket_path=socket_path, shim="python")
    before = installed.read_bytes()
    assert install.install_configured_shim(settings) == str(installed)
    assert installed.read_bytes() == before
    # An interrupted copy (no completion marker) is not used: the running interpreter is.
    (installed.parent / portable.PORTABLE_DIR_NAME / portable.COMPLETE_MARKER).unlink()
    install.install_configured_shim(settings)
    assert installed.read_text().splitlines()[0] == f"#!{sys.executable} -IS"
