"""What ``ovnk sandbox up --deploy helm`` gives the chart, checked against the chart's own rendering
(fast; the deployment itself is tests/e2e/test_chart_deploy.py)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from ovnk.core.errors import StartupError
from ovnk_lab import chartdeploy
from ovnk_lab.kubenode import NODE_MOUNTS
from ovnk_lab.ovnk_image import OvnkImage

from .conftest import render

# Read-only host facts every node may share (kernel modules of the one kernel).
SHARED_HOST_PATHS = {"/lib/modules"}


def _host_paths(values: dict[str, Any] | None = None) -> set[str]:
    rendered = render(values or {})
    found = set()
    for doc in rendered.docs:
        spec = doc.get("spec", {}).get("template", {}).get("spec", {})
        for volume in spec.get("volumes", []):
            if "hostPath" in volume:
                found.add(volume["hostPath"]["path"])
    return found


def test_every_hostpath_of_the_chart_is_private_per_sandbox_node() -> None:
    """A hostPath the sandbox does not mount per node would be shared by all nodes (and the machine)."""
    per_node = {*NODE_MOUNTS, *chartdeploy.CHART_HOST_PATHS}
    paths = _host_paths() | _host_paths({"ovnDb": {"mode": "raft"}})
    assert paths, "the chart renders hostPath volumes"
    for path in sorted(paths - SHARED_HOST_PATHS):
        resolved = "/run" + path.removeprefix("/var/run") if path.startswith("/var/run/") else path
        assert resolved in per_node, f"hostPath {path} is not a private mount of the sandbox nodes"


def test_set_arguments_are_checked_before_anything_starts() -> None:
    assert chartdeploy.set_args(["plugins.multicast.enabled=true", "a.b="]) == [
        "--set", "plugins.multicast.enabled=true", "--set", "a.b="]
    for bad in ("plugins.multicast.enabled", "=true"):
        with pytest.raises(StartupError, match="expected KEY=VALUE"):
            chartdeploy.set_args([bad])


def test_sandbox_values_are_existing_chart_values() -> None:
    """The values the sandbox passes render under the closed schema (no value was added for it)."""
    cluster = SimpleNamespace(control_plane=SimpleNamespace(server="https://172.30.0.1:6443"))
    image = OvnkImage(Path("/nonexistent.tar"), "localhost/ovnk:0.1.0-0123456789abcdef")
    values = chartdeploy.sandbox_values(cluster, image)  # type: ignore[arg-type]
    assert values["image"]["pullPolicy"] == "Never" and values["apiServer"] == {"host": "172.30.0.1", "port": 6443}
    rendered = render(values)
    assert "datapath-type = netdev" in rendered.text
    assert "localhost/ovnk:0.1.0-0123456789abcdef" in rendered.text
    assert {c["image"] for c in rendered.containers("DaemonSet", "-ovs").values()} == {image.name}
