"""The rendered manifests are accepted by the test bed's real kube-apiserver (server-side dry-run).

Server-side dry-run runs admission and validation (schemas, RBAC object checks,
API versions the server serves: 1.20 has no policy/v1) without persisting anything.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from ovnk.core.errors import StartupError

from .conftest import TEMP_PLUGIN
from .conftest import Rendered
from .conftest import first_party_plugins
from .conftest import plugin_values
from .conftest import render

pytestmark = pytest.mark.kube


def dry_run(kube_cp: Any, rendered: Rendered) -> str:
    """Apply helm's own output with --dry-run=server: CRDs first (custom objects would need them)."""
    chunks = [c for c in re.split(r"^---\s*$", rendered.text, flags=re.MULTILINE) if yaml.safe_load(c)]
    assert len(chunks) == len(rendered.docs)
    crds = [c for c in chunks if yaml.safe_load(c)["kind"] == "CustomResourceDefinition"]
    rest = [c for c in chunks if c not in crds]
    output = ""
    for batch in (crds, rest):
        if batch:
            output += kube_cp.kubectl("apply", "--dry-run=server", "-f", "-", input="\n---\n".join(batch))
    # One "... (server dry run)" line per object: nothing was skipped.
    lines = [line for line in output.splitlines() if line.endswith("(server dry run)")]
    assert len(lines) == len(rendered.docs), output
    return output


def _dump(document: dict[str, Any]) -> str:
    return yaml.safe_dump(document)


VARIANTS = {
    "defaults": {},
    "all-plugins-on": plugin_values(first_party_plugins()),
    "all-plugins-off": plugin_values([], disabled=first_party_plugins()),
    "raft-ssl-ha": {"ovnDb": {"mode": "raft", "ssl": {"enabled": True}}, "controller": {"replicas": 3},
                    "apiServer": {"host": "10.0.0.1"}, "mtu": 1300,
                    "extraConfig": {"controller": {"workers": 8}}},
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_server_side_dry_run_accepts_the_manifests(
    kube_cp: Any, namespace: str, kube_version: str, variant: str
) -> None:
    rendered = render(VARIANTS[variant], namespace=namespace, kube_version=kube_version)
    output = dry_run(kube_cp, rendered)
    assert "statefulset.apps/ovnk-ovn-db created (server dry run)" in output
    assert "daemonset.apps/ovnk-node created (server dry run)" in output


def test_server_side_dry_run_with_a_plugin_and_its_crds(
    kube_cp: Any, namespace: str, kube_version: str, chart_tree: Path
) -> None:
    rendered = render(plugin_values([TEMP_PLUGIN]), chart=chart_tree, namespace=namespace, kube_version=kube_version)
    assert len(rendered.of_kind("CustomResourceDefinition")) == 2
    output = dry_run(kube_cp, rendered)
    assert "customresourcedefinition.apiextensions.k8s.io/widgets.charttest.ovnk.example created" in output


def test_the_api_server_rejects_what_1_20_does_not_serve(kube_cp: Any, namespace: str) -> None:
    """The check above can fail: rendered for a newer Kubernetes, the PDB is policy/v1."""
    rendered = render({"ovnDb": {"mode": "raft"}}, namespace=namespace, kube_version="v1.25.0")
    [pdb] = rendered.of_kind("PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1"
    served = kube_cp.kubectl("api-versions").split()
    if "policy/v1" in served:
        pytest.skip("this API server serves policy/v1 (newer than 1.20): nothing to reject")
    with pytest.raises(StartupError, match="policy/v1"):
        kube_cp.kubectl("apply", "--dry-run=server", "-f", "-", input=_dump(pdb))
