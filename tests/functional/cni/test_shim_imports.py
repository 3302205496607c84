"""The installed Python shim starts with the bare interpreter and imports nothing heavy."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable

import pytest

from .conftest import SHIM_TIMEOUT
from .conftest import netconf

FORBIDDEN = ("ovnk", "pluggy", "kubernetes", "pyroute2", "prometheus_client", "yaml", "click", "ovs", "ovsdbapp")


@pytest.fixture
def shim_kind() -> str:
    """Only the Python shim has imports (the native one is covered by test_native_shim.py)."""
    return "python"


def imported_modules(importtime_stderr: str) -> set[str]:
    """Module names from ``-X importtime`` output (``import time: self | cumulative | name``)."""
    names = set()
    for line in importtime_stderr.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            name = line.rsplit("|", 1)[1].strip()
            if name != "imported package":  # the header line
                names.add(name)
    return names


def run_with_importtime(shim_path: str, env: dict[str, str], stdin: str) -> subprocess.CompletedProcess[str]:
    # Exactly what the shebang does, plus -X importtime.
    return subprocess.run(
        [sys.executable, "-I", "-S", "-X", "importtime", shim_path],
        input=stdin, env=env, capture_output=True, text=True, timeout=SHIM_TIMEOUT, check=False,
    )


def test_bare_interpreter_runs_the_installed_shim(shim_path: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-I", "-S", shim_path], env={"CNI_COMMAND": "VERSION"},
        capture_output=True, text=True, timeout=SHIM_TIMEOUT, check=True,
    )
    assert json.loads(proc.stdout) == {
        "cniVersion": "1.1.0", "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
    }


def test_version_imports_neither_json_nor_socket(shim_path: str) -> None:
    proc = run_with_importtime(shim_path, {"CNI_COMMAND": "VERSION"}, "")
    assert proc.returncode == 0
    modules = imported_modules(proc.stderr)
    assert "__future__" in modules  # the parser did see the shim's imports
    assert not modules & {"json", "socket", "typing", "re", "os"}, sorted(modules)


@pytest.mark.usefixtures("cni_server")
def test_full_add_round_trip_imports_only_light_stdlib(
    shim_path: str, pod_env: Callable[..., dict[str, str]]
) -> None:
    proc = run_with_importtime(shim_path, pod_env("ADD"), netconf())
    assert proc.returncode == 0, proc.stdout
    assert json.loads(proc.stdout)["ips"]
    modules = imported_modules(proc.stderr)
    assert {"_json", "_socket"} <= modules
    heavy = sorted(m for m in modules if m.split(".")[0] in FORBIDDEN)
    assert heavy == []
    # The packages around the C halves pull in re and enum, and os costs ~1 ms: what the shim avoids.
    assert not modules & {"json", "socket", "re", "enum", "typing", "http", "os"}, sorted(modules)
