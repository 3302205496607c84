"""Node labels the controller writes on behalf of an owner, and their removal when the owner goes.

Some features label nodes from the controller (EgressService marks the node
that hosts a service, for MetalLB to announce from). A label is Kubernetes
state like a node annotation the agent publishes, so it follows the same rule:
switching the plugin off and restarting removes it. The controller cannot ask
a disabled plugin which labels it wrote, so every Node records them itself,
in the annotation ``k8s.ovn.org/ovnk-owned-labels``::

    {"egressservice": ["egress-service.k8s.ovn.org/shop-web"]}

:meth:`NodeLabels.set` changes an owner's labels and that record in one merge
patch; :meth:`NodeLabels.release` (run by the controller after repair, once it
leads) removes the labels of every recorded owner that is neither core nor an
enabled plugin, with their record. Labels nobody recorded are never touched.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from typing import Any

from ovnk.core.kube.client import KubeClient
from ovnk.core.kube.resources import NODES
from ovnk.core.node.owners import OwnershipError

logger = logging.getLogger(__name__)

#: The annotation recording which owner wrote which labels of a Node.
LEDGER = "k8s.ovn.org/ovnk-owned-labels"


def ledger_of(node: Mapping[str, Any]) -> dict[str, list[str]]:
    """The owner -> label keys record of a Node (empty when absent or unreadable)."""
    raw = ((node.get("metadata") or {}).get("annotations") or {}).get(LEDGER)
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        logger.warning("node %s: unreadable %s annotation, ignored", (node.get("metadata") or {}).get("name"), LEDGER)
        return {}
    if not isinstance(value, dict):
        return {}
    return {str(owner): sorted(str(k) for k in keys) for owner, keys in value.items() if isinstance(keys, list)}


def _ledger_value(ledger: Mapping[str, list[str]]) -> str | None:
    return json.dumps({o: sorted(k) for o, k in sorted(ledger.items()) if k}, sort_keys=True) if any(
        ledger.values()) else None


class NodeLabels:
    """``ctx.node_labels``: owned node labels (see the module docstring).

    :param kube: the API client.
    :param get_node: the cached Node by name (``None`` when unknown: read from the API server).
    :param owners: who may own labels here (core and the enabled plugins).
    """

    def __init__(self, kube: KubeClient, get_node: Callable[[str], Mapping[str, Any] | None],
                 owners: Iterable[str]) -> None:
        self.kube = kube
        self.get_node = get_node
        self.owners = frozenset(owners)

    def set(self, owner: str, node: str, labels: Mapping[str, str | None]) -> bool:
        """Set (a value) or remove (``None``) labels of ``node`` as ``owner``; ``False`` when nothing changed.

        :raises OwnershipError: ``owner`` is neither core nor an enabled plugin, or a label another
            owner recorded is given.
        """
        if owner not in self.owners:
            raise OwnershipError(f"node labels for {owner!r}: it is neither core nor an enabled plugin")
        obj = self.get_node(node) or self.kube.get(NODES, node)
        if obj is None:
            return False
        current = dict((obj.get("metadata") or {}).get("labels") or {})
        ledger = ledger_of(obj)
        for other, keys in ledger.items():
            taken = set(keys) & set(labels)
            if other != owner and taken:
                raise OwnershipError(f"node {node}: label {sorted(taken)[0]} is owned by {other!r}, not {owner!r}")
        owned = set(ledger.get(owner, ()))
        changes: dict[str, str | None] = {}
        for key, value in labels.items():
            if value is None:
                if key in current:
                    changes[key] = None
                owned.discard(key)
            else:
                if current.get(key) != value:
                    changes[key] = value
                owned.add(key)
        updated = {**ledger, owner: sorted(owned)}
        ledger_changed = _ledger_value(updated) != _ledger_value(ledger)
        if not changes and not ledger_changed:
            return False
        meta: dict[str, Any] = {}
        if changes:
            meta["labels"] = changes
        if ledger_changed:
            meta["annotations"] = {LEDGER: _ledger_value(updated)}
        self.kube.patch(NODES, node, {"metadata": meta}, subresource="status")
        return True

    def release(self, nodes: Iterable[Mapping[str, Any]], *, apply: bool = True) -> list[tuple[str, str, str]]:
        """Remove the recorded labels of every owner that may not own labels any more.

        :param nodes: the Nodes to look at (the cache's).
        :param apply: ``False`` only reports (``[controller] repair-mode = log``).
        :returns: (node, owner, label) of every label removed (or that would be).
        """
        removed: list[tuple[str, str, str]] = []
        for obj in nodes:
            name = str((obj.get("metadata") or {}).get("name", ""))
            ledger = ledger_of(obj)
            gone = {owner: keys for owner, keys in ledger.items() if owner not in self.owners}
            if not gone:
                continue
            current = (obj.get("metadata") or {}).get("labels") or {}
            labels: dict[str, str | None] = {k: None for keys in gone.values() for k in keys if k in current}
            removed += [(name, owner, key) for owner, keys in gone.items() for key in keys]
            for owner, keys in gone.items():
                logger.info("node %s: %s label(s) of %s, which is not enabled: %s", name,
                            "removing" if apply else "would remove", owner, ", ".join(keys))
            if apply:
                kept = {o: k for o, k in ledger.items() if o in self.owners}
                meta: dict[str, Any] = {"annotations": {LEDGER: _ledger_value(kept)}}
                if labels:  # never ``"labels": null``: that would drop every label of the node
                    meta["labels"] = labels
                self.kube.patch(NODES, name, {"metadata": meta}, subresource="status")
        return removed
