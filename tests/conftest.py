"""Shared fixtures: fresh plugin managers and the real components of the test bed.

The test bed really runs: an OVN central (NB/SB ovsdb-server + ovn-northd) per
test that asks for it, and one Kubernetes control plane (etcd, kube-apiserver,
kube-controller-manager, kube-scheduler) per session. A missing binary fails
the test; nothing is skipped silently.
"""

from __future__ import annotations

import os
import sys
import textwrap
import uuid
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path

import pytest

from ovnk.core import plugins as plugins_mod

REPO = Path(__file__).resolve().parent.parent


def pytest_configure(config: pytest.Config) -> None:
    # Lab daemons and their sockets live under one directory per run.
    os.environ.setdefault("OVNK_LAB_DIR", f"/tmp/ovnk-tests-{os.getpid()}")


@pytest.fixture
def pm() -> plugins_mod.OvnkPluginManager:
    """A fresh plugin manager with core's default plugins and no others."""
    return plugins_mod.get_plugin_manager(enabled=(), discovered={})


@pytest.fixture(scope="session")
def lab_dir() -> Iterator[Path]:
    path = Path(os.environ["OVNK_LAB_DIR"])
    path.mkdir(parents=True, exist_ok=True)
    yield path


@pytest.fixture
def ovn_central(lab_dir: Path) -> Iterator[object]:
    """A fresh standalone OVN central for one test."""
    from ovnk_lab.ovn import OvnCentral

    central = OvnCentral(lab_dir / f"ovn-{uuid.uuid4().hex[:8]}", tcp=False)
    central.start()
    yield central
    central.destroy()


@pytest.fixture(scope="session")
def kube_cp(lab_dir: Path) -> Iterator[object]:
    """The session's Kubernetes control plane (real etcd + kube-apiserver + controllers)."""
    from ovnk_lab.kube import KubeControlPlane

    cp = KubeControlPlane(lab_dir / "kube")
    cp.start()
    yield cp
    cp.stop()


@pytest.fixture
def kubeconfig(kube_cp: object) -> str:
    return str(kube_cp.kubeconfig)  # type: ignore[attr-defined]


@pytest.fixture
def namespace(kube_cp: object) -> Iterator[str]:
    """A unique namespace for one test, deleted afterwards."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    kube_cp.kubectl("create", "namespace", name)  # type: ignore[attr-defined]
    yield name
    kube_cp.kubectl("delete", "namespace", name, "--wait=false", check=False)  # type: ignore[attr-defined]


class FakeDistributions:
    """Writes real ``*.dist-info`` folders (METADATA + entry_points.txt) and modules into a
    directory on ``sys.path``, so ``importlib.metadata`` discovers them like installed plugins."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        monkeypatch.syspath_prepend(str(root))
        self._monkeypatch = monkeypatch

    def add(self, dist: str, *, plugins: dict[str, str], modules: dict[str, str], version: str = "1.0") -> None:
        """Install distribution ``dist`` with entry points ``plugins`` (name -> module) and module sources."""
        info = self.root / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        eps = "[ovnk.plugins]\n" + "".join(f"{n} = {m}\n" for n, m in plugins.items())
        (info / "entry_points.txt").write_text(eps)
        for module, source in modules.items():
            path = self.root / (module.replace(".", "/") + ".py")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(source))
            self._monkeypatch.delitem(sys.modules, module, raising=False)


@pytest.fixture
def fake_dists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeDistributions:
    return FakeDistributions(tmp_path / "site", monkeypatch)


@pytest.fixture
def run_cli() -> Callable[..., object]:
    """Invoke the ``ovnk`` click group in-process and return click's Result."""
    from click.testing import CliRunner

    from ovnk.core import cli as cli_mod

    cli_mod._register_process_commands()

    def invoke(*args: str, env: dict[str, str] | None = None) -> object:
        cli_mod.cli._plugin_commands = None  # type: ignore[attr-defined]
        return CliRunner().invoke(cli_mod.cli, list(args), env=env, catch_exceptions=False)

    return invoke
