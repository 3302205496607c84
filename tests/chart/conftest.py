"""Rendering charts/ovnk with the real helm (v3, from the test bed's tools) and reading the result.

First-party plugins are discovered the way the chart's users see them: every
folder of ``plugins/`` with an ``__init__.py``; their CRDs are
``plugins/<name>/crds/*.yaml``. Nothing here knows a plugin by name.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import textwrap
from collections.abc import Iterator
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from ovnk_lab import paths

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "ovnk"
HELM_TIMEOUT = 120

# The temporary plugin of chart_tree: a name no real plugin has, two CRDs (namespaced and
# cluster-scoped) so "all of its CRDs" is not "the first file".
TEMP_PLUGIN = "ovnkcharttest"
TEMP_CRDS = {
    "widgets.yaml": """\
        # A test CRD: rendered verbatim, comments included.
        apiVersion: apiextensions.k8s.io/v1
        kind: CustomResourceDefinition
        metadata:
          name: widgets.charttest.ovnk.example
        spec:
          group: charttest.ovnk.example
          scope: Namespaced
          names: {plural: widgets, singular: widget, kind: Widget}
          versions:
            - name: v1
              served: true
              storage: true
              schema:
                openAPIV3Schema:
                  type: object
                  properties:
                    spec:
                      type: object
                      properties:
                        size: {type: integer, minimum: 1}
        """,
    "gadgets.yaml": """\
        apiVersion: apiextensions.k8s.io/v1
        kind: CustomResourceDefinition
        metadata:
          name: gadgets.charttest.ovnk.example
        spec:
          group: charttest.ovnk.example
          scope: Cluster
          names: {plural: gadgets, singular: gadget, kind: Gadget}
          versions:
            - name: v1alpha1
              served: true
              storage: true
              schema:
                openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
        """,
}


def first_party_plugins(root: Path = REPO) -> list[str]:
    """Names of the first-party plugins: folders of ``<root>/plugins`` holding ``__init__.py``."""
    base = root / "plugins"
    return sorted(p.name for p in base.iterdir() if p.is_dir() and (p / "__init__.py").is_file())


def plugin_crd_files(plugin: str, root: Path = REPO) -> list[Path]:
    return sorted((root / "plugins" / plugin / "crds").glob("*.yaml"))


def plugin_values(enabled: Sequence[str], disabled: Sequence[str] = ()) -> dict[str, Any]:
    plugins = {name: {"enabled": True} for name in enabled}
    plugins.update({name: {"enabled": False} for name in disabled})
    return {"plugins": plugins}


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run helm; its symlink notice on stderr ("found symbolic link in path") is expected."""
    proc = subprocess.run([paths.tool_bin("helm"), *args], capture_output=True, text=True,
                          timeout=HELM_TIMEOUT, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}\n{proc.stdout}")
    return proc


def _values_args(values: dict[str, Any] | None, directory: str) -> list[str]:
    if not values:
        return []
    path = Path(directory) / "values.json"
    path.write_text(json.dumps(values))  # JSON is YAML
    return ["--values", str(path)]


@dataclass
class Rendered:
    """The manifests of one ``helm template`` run."""

    text: str
    docs: list[dict[str, Any]]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["kind"] == kind]

    def one(self, kind: str, name_suffix: str = "") -> dict[str, Any]:
        found = [d for d in self.of_kind(kind) if d["metadata"]["name"].endswith(name_suffix)]
        assert len(found) == 1, f"expected one {kind} *{name_suffix}, found {[d['metadata']['name'] for d in found]}"
        return found[0]

    def crd_names(self) -> set[str]:
        return {d["metadata"]["name"] for d in self.of_kind("CustomResourceDefinition")}

    def config_text(self) -> str:
        return str(self.one("ConfigMap", "-config")["data"]["ovnk.conf"])

    def ini(self) -> dict[str, dict[str, str]]:
        import configparser

        parser = configparser.ConfigParser(interpolation=None, default_section="__none__")
        parser.read_string(self.config_text())
        return {s: dict(parser.items(s)) for s in parser.sections()}

    def enabled_plugins(self) -> list[str]:
        text = self.ini()["plugins"]["enabled"]
        return [p for p in text.split(",") if p]

    def containers(self, kind: str, name_suffix: str, *, init: bool = False) -> dict[str, dict[str, Any]]:
        spec = self.one(kind, name_suffix)["spec"]["template"]["spec"]
        return {c["name"]: c for c in spec.get("initContainers" if init else "containers") or []}


def render(
    values: dict[str, Any] | None = None,
    *,
    chart: Path = CHART,
    namespace: str = "ovn-kubernetes",
    release: str = "ovnk",
    kube_version: str | None = None,
) -> Rendered:
    with tempfile.TemporaryDirectory(prefix="ovnk-chart-") as tmp:
        args = ["template", release, str(chart), "--namespace", namespace, *_values_args(values, tmp)]
        if kube_version:
            args += ["--kube-version", kube_version]
        text = helm(*args).stdout
    docs = [d for d in yaml.safe_load_all(text) if d]
    return Rendered(text=text, docs=docs)


def render_error(values: dict[str, Any], *, chart: Path = CHART) -> str:
    """helm template's error message for values that must be rejected."""
    with tempfile.TemporaryDirectory(prefix="ovnk-chart-") as tmp:
        proc = helm("template", "ovnk", str(chart), *_values_args(values, tmp), check=False)
    assert proc.returncode != 0, f"helm accepted values {values}"
    return proc.stderr


def lint(values: dict[str, Any] | None = None, *, chart: Path = CHART) -> None:
    with tempfile.TemporaryDirectory(prefix="ovnk-chart-") as tmp:
        proc = helm("lint", "--strict", str(chart), *_values_args(values, tmp), check=False)
    assert proc.returncode == 0, f"helm lint failed:\n{proc.stdout}\n{proc.stderr}"
    assert "0 chart(s) failed" in proc.stdout


def write_temp_plugin(root: Path, name: str = TEMP_PLUGIN) -> list[Path]:
    """Create ``<root>/plugins/<name>`` like a first-party plugin with the CRDs of TEMP_CRDS."""
    crds = root / "plugins" / name / "crds"
    crds.mkdir(parents=True)
    (crds.parent / "__init__.py").write_text('"""A plugin folder made by tests/chart."""\n')
    files = []
    for file_name, text in TEMP_CRDS.items():
        path = crds / file_name
        path.write_text(textwrap.dedent(text))
        files.append(path)
    return sorted(files)


@pytest.fixture
def chart_tree(tmp_path: Path) -> Iterator[Path]:
    """A copy of the repository's chart and plugins tree with one more plugin (TEMP_PLUGIN).

    The chart is copied with its symlink ``files/plugins -> ../../../plugins`` intact,
    so it resolves to the copied ``plugins/``: exactly the repository's layout.
    Yields the copied chart directory.
    """
    root = tmp_path / "repo"
    shutil.copytree(CHART, root / "charts" / "ovnk", symlinks=True)
    shutil.copytree(REPO / "plugins", root / "plugins",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    write_temp_plugin(root)
    yield root / "charts" / "ovnk"


@pytest.fixture(scope="session")
def kube_version(kube_cp: Any) -> str:
    """The test bed API server's version (e.g. v1.20.15), for ``helm template --kube-version``."""
    info = json.loads(kube_cp.kubectl("version", "-o", "json"))
    version = str(info["serverVersion"]["gitVersion"]).split("+")[0]
    if version.startswith("v0.0.0"):
        # The test bed's build (Debian source, hack/build-kube.sh) answers /version with
        # v0.0.0-master; the binary itself knows its release.
        out = subprocess.run([paths.kube_bin("kube-apiserver"), "--version"], capture_output=True, text=True,
                             check=True, timeout=60).stdout
        version = out.split()[-1]
    assert version.startswith("v1."), version
    return version
