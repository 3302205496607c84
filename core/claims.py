"""Claims: which plugin owns which CRD, annotation, label and OVN owner type.

Filled through the ``ovnk_claims`` hook. Core claims its own things the same
way (``ovnk.core.builtin``). Two plugins claiming one thing is a startup error
that names both, so ownership is never ambiguous: repair deletes rows of an
owner type only on behalf of the plugin that claimed it, and rows of owner types
nobody claims are stale.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

import yaml

from ovnk.core.errors import PluginError
from ovnk.core.ovn.ids import OwnerRegistry
from ovnk.core.ovn.ids import OwnerType


@dataclass(frozen=True)
class CrdClaim:
    """A CRD file shipped by a plugin and what it defines."""

    path: Path
    name: str  # <plural>.<group>
    group: str
    kind: str
    plural: str
    versions: tuple[str, ...]
    scope: str
    document: dict[str, Any] = field(compare=False, hash=False, repr=False)


def read_crd(path: str | Path) -> CrdClaim:
    """Parse a CRD YAML file; raises ``ValueError`` if it is not a CustomResourceDefinition."""
    p = Path(path)
    doc = yaml.safe_load(p.read_text(encoding="utf-8"))
    if not isinstance(doc, dict) or doc.get("kind") != "CustomResourceDefinition":
        raise ValueError(f"{p} is not a CustomResourceDefinition")
    spec = doc["spec"]
    names = spec["names"]
    return CrdClaim(
        path=p,
        name=doc["metadata"]["name"],
        group=spec["group"],
        kind=names["kind"],
        plural=names["plural"],
        versions=tuple(v["name"] for v in spec["versions"]),
        scope=spec.get("scope", "Namespaced"),
        document=doc,
    )


class Claims:
    """The claim registry handed to ``ovnk_claims``.

    Core calls each plugin's implementation with :attr:`current` set to that
    plugin, so a claim always knows its owner.
    """

    def __init__(self) -> None:
        self.current = "core"
        self._claims: dict[str, tuple[str, str]] = {}  # key -> (plugin, description)
        self.crds: dict[str, tuple[CrdClaim, str]] = {}
        self.owners = OwnerRegistry()
        self.annotations: dict[str, str] = {}
        self.labels: dict[str, str] = {}

    def _claim(self, key: str, what: str) -> None:
        prior = self._claims.get(key)
        if prior is not None and prior[0] != self.current:
            raise PluginError(
                f"plugin {self.current!r} claims {what}, which plugin {prior[0]!r} already claims"
            )
        self._claims[key] = (self.current, what)

    def crd(self, path: str | Path) -> CrdClaim:
        """Claim the CRD defined in the YAML file at ``path`` (usually ``<plugin>/crds/<name>.yaml``)."""
        try:
            crd = read_crd(path)
        except (OSError, ValueError, KeyError, yaml.YAMLError) as exc:
            raise PluginError(f"plugin {self.current!r} claims an unreadable CRD {path}: {exc}") from exc
        self._claim(f"crd:{crd.name}", f"CRD {crd.name}")
        self.crds[crd.name] = (crd, self.current)
        return crd

    def owner_type(self, owner: OwnerType) -> OwnerType:
        """Claim an OVN owner type (one table, one ``k8s.ovn.org/owner-type`` value)."""
        self._claim(f"owner:{owner.table}:{owner.name}", f"owner type {owner.name} ({owner.table})")
        if owner not in self.owners:
            self.owners.add(owner, plugin=self.current)
        return owner

    def annotation(self, key: str) -> None:
        """Claim an annotation key this plugin writes."""
        self._claim(f"annotation:{key}", f"annotation {key}")
        self.annotations[key] = self.current

    def label(self, key: str) -> None:
        """Claim a label key this plugin writes."""
        self._claim(f"label:{key}", f"label {key}")
        self.labels[key] = self.current

    def by_plugin(self, plugin: str) -> list[str]:
        """Human-readable claims of one plugin (for ``ovnk plugins list``)."""
        return sorted(what for owner, what in self._claims.values() if owner == plugin)

    def crds_of(self, plugin: str) -> list[CrdClaim]:
        return [crd for crd, owner in self.crds.values() if owner == plugin]

    def __iter__(self) -> Iterator[tuple[str, str]]:
        """(plugin, description) of every claim."""
        return iter(self._claims.values())
