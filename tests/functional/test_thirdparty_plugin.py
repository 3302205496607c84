"""A third-party plugin distribution, installed with pip like any other, against the real API server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ovnk.core.errors import StartupError

REPO = Path(__file__).resolve().parents[2]
HELLO = REPO / "tests" / "thirdparty" / "ovnk-hello"


@pytest.fixture(scope="module")
def hello_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """pip-install the ovnk-hello distribution into a private target directory."""
    target = tmp_path_factory.mktemp("hello-site")
    build = tmp_path_factory.mktemp("hello-build")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(HELLO)],
        check=True, cwd=build, capture_output=True,
    )
    assert (target / "ovnk_hello" / "plugin.py").exists()
    return target


def ovnk(site: Path, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("OVNK_PLUGINS", None)
    return subprocess.run([str(Path(sys.executable).parent / "ovnk"), *args], env=env, text=True, check=False,
                          capture_output=True, input=input, timeout=60)


def test_thirdparty_plugin_discovered_listed_and_enabled(hello_site: Path) -> None:
    listed = ovnk(hello_site, "plugins", "list")
    assert listed.returncode == 0, listed.stderr
    assert "hello  (ovnk-hello 0.4.0)  disabled" in listed.stdout
    enabled = ovnk(hello_site, "--plugins", "hello", "plugins", "list")
    assert "hello  (ovnk-hello 0.4.0)  enabled" in enabled.stdout
    # The module's bootstrap hooks and its runtime object's controller and node hooks.
    assert ("ovnk_add_settings, ovnk_claims, ovnk_configure, ovnk_controllers, ovnk_node_annotations, "
            "ovnk_node_controllers, ovnk_node_setup, ovnk_pod_lsp, ovnk_register_commands, "
            "ovnk_register_metrics, ovnk_repair") in enabled.stdout
    assert "CRD hellos.example.com" in enabled.stdout
    assert "owner type Hello (Address_Set)" in enabled.stdout


def test_thirdparty_plugin_command_and_settings_hooks_run(hello_site: Path) -> None:
    res = ovnk(hello_site, "--plugins", "hello", "--set", "hello.greeting=bonjour", "--set", "hello.repeat=2", "hello")
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["bonjour", "bonjour"]
    disabled = ovnk(hello_site, "hello")
    assert disabled.returncode == 1
    assert "ovnk: error: plugin 'hello' is not enabled here: enable it with --plugins hello" in disabled.stderr
    bad = ovnk(hello_site, "--plugins", "hello", "--set", "hello.repeat=12", "hello")
    assert bad.returncode == 1
    assert "invalid value for [hello] repeat: '12' (from flag:--set hello.repeat): must be 1..9" in bad.stderr


@pytest.mark.kube
def test_thirdparty_plugin_crd_accepted_by_real_api_server(hello_site: Path, kube_cp, namespace: str) -> None:
    crds = ovnk(hello_site, "--plugins", "hello", "crds", "print")
    assert crds.returncode == 0, crds.stderr
    assert "name: hellos.example.com" in crds.stdout
    kube_cp.kubectl("apply", "-f", "-", input=crds.stdout)
    kube_cp.kubectl("wait", "--for=condition=Established", "crd/hellos.example.com", "--timeout=30s")
    good = "apiVersion: example.com/v1\nkind: Hello\nmetadata: {name: h1}\nspec: {greeting: hi}\n"
    kube_cp.kubectl("-n", namespace, "apply", "-f", "-", input=good)
    assert "h1" in kube_cp.kubectl("-n", namespace, "get", "hellos")
    bad = "apiVersion: example.com/v1\nkind: Hello\nmetadata: {name: h2}\nspec: {greeting: " + "x" * 30 + "}\n"
    with pytest.raises(StartupError, match=r"spec.greeting.*20"):
        kube_cp.kubectl("-n", namespace, "apply", "-f", "-", input=bad)
    assert "h2" not in kube_cp.kubectl("-n", namespace, "get", "hellos")
