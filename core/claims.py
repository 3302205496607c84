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

#: Annotation of a CRD file whose CRD other projects ship too (``if-missing``): see :attr:`CrdClaim.if_missing`.
CRD_INSTALL_ANNOTATION = "ovnk/crd-install"
CRD_INSTALL_IF_MISSING = "if-missing"


@dataclass(frozen=True)
class CrdClaim:
    """A CRD file shipped by a plugin and what it defines.

    :ivar if_missing: the file carries ``ovnk/crd-install: if-missing``: the CRD
        belongs to a wider ecosystem (NetworkAttachmentDefinition, which Multus
        installs), so it is created only where the cluster lacks it and an
        existing one is never replaced.
    """

    path: Path
    name: str  # <plural>.<group>
    group: str
    kind: str
    plural: str
    versions: tuple[str, ...]
    scope: str
    document: dict[str, Any] = field(compare=False, hash=False, repr=False)
    if_missing: bool = False


def read_crd(path: str | Path) -> CrdClaim:
    """Parse a CRD YAML file; raises ``ValueError`` if it is not a CustomResourceDefinition."""
    p = Path(path)
    doc = yaml.safe_load(p.read_text(encoding="utf-8"))
    if not isinstance(doc, dict) or doc.get("kind") != "CustomResourceDefinition":
        raise ValueError(f"{p} is not a CustomResourceDefinition")
    spec = doc["spec"]
    names = spec["names"]
    install = ((doc["metadata"].get("annotations") or {}).get(CRD_INSTALL_ANNOTATION) or "").strip()
    if install not in ("", CRD_INSTALL_IF_MISSING):
        raise ValueError(f"{p}: annotation {CRD_INSTALL_ANNOTATION} must be {CRD_INSTALL_IF_MISSING!r}, not {install!r}")
    return CrdClaim(
        path=p,
        name=doc["metadata"]["name"],
        group=spec["group"],
        kind=names["kind"],
        plural=names["plural"],
        versions=tuple(v["name"] for v in spec["versions"]),
        scope=spec.get("scope", "Namespaced"),
        document=doc,
        if_missing=install == CRD_INSTALL_IF_MISSING,
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
        # claim key -> every plugin sharing it
        self._shared: dict[str, set[str]] = {}

    def _claim(self, key: str, what: str, *, shared: bool = False) -> None:
        prior = self._claims.get(key)
        if prior is not None and prior[0] != self.current:
            if shared and key in self._shared:
                self._shared[key].add(self.current)
                return
            raise PluginError(
                f"plugin {self.current!r} claims {what}, which plugin {prior[0]!r} already claims"
                + (" (a shared claim must be shared by every claimant)" if shared or key in self._shared else "")
            )
        if prior is not None and (key in self._shared) != shared:
            raise PluginError(f"plugin {self.current!r} claims {what} both shared and exclusively")
        self._claims[key] = (self.current, what)
        if shared:
            self._shared.setdefault(key, set()).add(self.current)

    def crd(self, path: str | Path) -> CrdClaim:
        """Claim the CRD defined in the YAML file at ``path`` (usually ``<plugin>/crds/<name>.yaml``)."""
        try:
            crd = read_crd(path)
        except (OSError, ValueError, KeyError, yaml.YAMLError) as exc:
            raise PluginError(f"plugin {self.current!r} claims an unreadable CRD {path}: {exc}") from exc
        self._claim(f"crd:{crd.name}", f"CRD {crd.name}")
        self.crds[crd.name] = (crd, self.current)
        return crd

    def owner_type(self, owner: OwnerType, *, shared: bool = False) -> OwnerType:
        """Claim an OVN owner type (one table, one ``k8s.ovn.org/owner-type`` value).

        ``shared=True`` lets several plugins claim the identical owner type, each
        saying so: rows that more than one feature needs and writes identically
        (the egress features' default no-reroute policies). Such rows stay while
        any claimant is enabled and are removed by repair when none is.
        """
        key = f"owner:{owner.table}:{owner.name}"
        if shared and key in self._shared:
            existing = self.owners.get(owner.table, owner.name)
            if existing is not None and existing != owner:
                raise PluginError(f"plugin {self.current!r} shares owner type {owner.name} ({owner.table}) "
                                  f"with other keys ({owner.keys}) than its other claimants ({existing.keys})")
        self._claim(key, f"owner type {owner.name} ({owner.table})" + (" (shared)" if shared else ""), shared=shared)
        if owner not in self.owners:
            self.owners.add(owner, plugin=self.current)
        return owner

    def sharers(self, owner: OwnerType) -> set[str]:
        """Every plugin claiming ``owner`` (one, unless it is shared)."""
        key = f"owner:{owner.table}:{owner.name}"
        if key in self._shared:
            return set(self._shared[key])
        prior = self._claims.get(key)
        return {prior[0]} if prior else set()

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
        return sorted(what for key, (owner, what) in self._claims.items()
                      if owner == plugin or plugin in self._shared.get(key, ()))

    def crds_of(self, plugin: str) -> list[CrdClaim]:
        return [crd for crd, owner in self.crds.values() if owner == plugin]

    def __iter__(self) -> Iterator[tuple[str, str]]:
        """(plugin, description) of every claim."""
        return iter(self._claims.values())
