"""hack/kind.sh (and the image's scripts): shellcheck-clean, options checked before anything runs,
and the chart values it would install render and pass the API server's dry-run."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import REPO
from .conftest import first_party_plugins
from .conftest import lint
from .conftest import render

KIND_SH = REPO / "hack" / "kind.sh"
SCRIPTS = [KIND_SH, REPO / "hack" / "image" / "ovnk-entrypoint"]


def kind_sh(*args: str) -> subprocess.CompletedProcess[str]:
    # No docker, kind or helm on PATH here: --dry-run and option errors must not need them.
    return subprocess.run(["bash", str(KIND_SH), *args], capture_output=True, text=True, timeout=60, check=False,
                          env={"PATH": "/usr/bin:/bin"})


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shellcheck_clean(script: Path) -> None:
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck (Debian package shellcheck) is part of the test bed"
    proc = subprocess.run([shellcheck, "--severity=style", str(script)], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout
    assert subprocess.run(["bash", "-n", str(script)], check=False, timeout=60).returncode == 0


def test_help_and_bad_options() -> None:
    helped = kind_sh("--help")
    assert helped.returncode == 0
    for option in ("-wk", "--plugin", "-mtu", "--ovn-db-raft", "--ssl", "--image", "--delete"):
        assert option in helped.stdout
    unknown = kind_sh("--frobnicate")
    assert unknown.returncode == 1
    assert "unknown option '--frobnicate'" in unknown.stderr
    not_a_number = kind_sh("-wk", "two")
    assert not_a_number.returncode == 1
    assert "--num-workers needs a number" in not_a_number.stderr
    missing = kind_sh("--plugin", "no-such-plugin", "--dry-run")
    assert missing.returncode == 1
    assert "no first-party plugin 'no-such-plugin' (plugins/no-such-plugin/)" in missing.stderr


def dry_run_output(*args: str) -> tuple[dict[str, Any], dict[str, Any]]:
    proc = kind_sh("--dry-run", *args)
    assert proc.returncode == 0, proc.stderr
    kind_part, values_part = proc.stdout.split("# chart values\n")
    return yaml.safe_load(kind_part), yaml.safe_load(values_part)


def test_dry_run_cluster_has_no_default_cni_and_no_kube_proxy() -> None:
    kind_config, values = dry_run_output("-wk", "3")
    assert kind_config["networking"]["disableDefaultCNI"] is True
    assert kind_config["networking"]["kubeProxyMode"] == "none"
    assert [n["role"] for n in kind_config["nodes"]] == ["control-plane", "worker", "worker", "worker"]
    assert values["ovnDb"]["mode"] == "standalone"
    assert values["controller"]["replicas"] == 1
    assert values["plugins"] == {}
    # The cluster's pod network is the chart's, with a host prefix.
    assert values["clusterSubnets"].startswith(kind_config["networking"]["podSubnet"] + "/")
    assert values["serviceCIDR"] == kind_config["networking"]["serviceSubnet"]


def test_dry_run_values_render_for_every_option() -> None:
    plugin_args = [arg for name in first_party_plugins() for arg in ("-p", name)]
    kind_config, values = dry_run_output("-wk", "1", "--ovn-db-raft", "--ssl", "-mtu", "1300",
                                         "--image", "registry.example:5000/ovnk:v9", *plugin_args)
    assert [n["role"] for n in kind_config["nodes"]].count("control-plane") == 3
    assert values["image"] == {"repository": "registry.example:5000/ovnk", "tag": "v9", "pullPolicy": "IfNotPresent"}
    lint(values)
    rendered = render(values)
    assert rendered.one("StatefulSet", "-ovn-db")["spec"]["replicas"] == 3
    assert rendered.one("Deployment", "-controller")["spec"]["replicas"] == 3
    assert rendered.ini()["default"]["mtu"] == "1300"
    assert rendered.enabled_plugins() == first_party_plugins()
    assert rendered.containers("DaemonSet", "-node")["node"]["image"] == "registry.example:5000/ovnk:v9"


@pytest.mark.kube
def test_dry_run_values_pass_the_api_servers_dry_run(kube_cp: Any, namespace: str, kube_version: str) -> None:
    from .test_apiserver import dry_run

    _kind_config, values = dry_run_output("--ovn-db-raft", "--ssl")
    dry_run(kube_cp, render(values, namespace=namespace, kube_version=kube_version))


def test_daemonless_uses_the_sandboxs_image_build() -> None:
    """--daemonless names the image hack/build-image.sh builds (the one the chart e2e deploys)."""
    from ovnk_lab import ovnk_image

    _kind, values = dry_run_output("--daemonless")
    assert f"{values['image']['repository']}:{values['image']['tag']}" == ovnk_image.image_name()
    both = kind_sh("--daemonless", "--image", "x/y:z", "--dry-run")
    assert both.returncode == 1 and "--daemonless builds the image" in both.stderr
    assert "--daemonless" in kind_sh("--help").stdout
