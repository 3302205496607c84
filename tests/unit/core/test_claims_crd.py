"""CRD files a plugin claims: the ``ovnk/crd-install: if-missing`` annotation (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ovnk.core.claims import read_crd

PLUGINS = Path(__file__).resolve().parents[3] / "plugins"


def crd_file(tmp_path: Path, annotations: dict[str, str] | None) -> Path:
    doc = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": "things.example.com", **({"annotations": annotations} if annotations else {})},
           "spec": {"group": "example.com", "scope": "Namespaced",
                    "names": {"kind": "Thing", "plural": "things", "singular": "thing"},
                    "versions": [{"name": "v1", "served": True, "storage": True}]}}
    path = tmp_path / "things.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_claims_crd_if_missing_annotation_is_read(tmp_path: Path) -> None:
    assert read_crd(crd_file(tmp_path, {"ovnk/crd-install": "if-missing"})).if_missing is True
    assert read_crd(crd_file(tmp_path, None)).if_missing is False
    assert read_crd(PLUGINS / "secondary_networks" / "crds" / "network-attachment-definitions.yaml").if_missing
    assert not read_crd(PLUGINS / "egressip" / "crds" / "egressips.yaml").if_missing


def test_claims_crd_install_annotation_with_another_value_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="must be 'if-missing'"):
        read_crd(crd_file(tmp_path, {"ovnk/crd-install": "always"}))
