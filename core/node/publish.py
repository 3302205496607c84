"""The annotations the node agent publishes on its own Node (ovn-kubernetes.md §2.1).

Core's values (chassis id, primary address, gateway config, management port
MAC, host CIDRs, encap IPs) are set by the agent as it learns them; plugins
add theirs through ``ovnk_node_annotations``, each key checked against the
plugin's claims (an unclaimed key is refused with an error log, the rest is
published). ``None`` removes a key. One merge patch carries only what differs
from the Node the informer holds, so an agent restart with unchanged facts
writes nothing.

The ownership ledger (:mod:`~ovnk.core.node.owners`) records which keys each
plugin published. A key a plugin published before and no longer gives is
removed; the keys of a plugin that is switched off are removed at the next
agent start (:meth:`NodeAnnotator.release`), unless an enabled plugin claims
them now.

Failures: during start-up (:meth:`NodeAnnotator.publish` with ``strict``) a
plugin whose hook raises stops start-up with a message naming it; afterwards
the failure is logged naming the plugin, its keys are left as they are and
everybody else's are published. After start-up the annotator is a node
controller (:meth:`NodeAnnotator.spec`): it re-publishes when the Node's
annotations change (someone removed one) and every
:data:`REPUBLISH_INTERVAL` seconds (facts such as host CIDRs).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from collections.abc import Mapping
from typing import Any

from ovnk.core.claims import Claims
from ovnk.core.errors import PluginError
from ovnk.core.kube.client import KubeClient
from ovnk.core.kube.informer import Informer
from ovnk.core.kube.resources import NODES
from ovnk.core.node.context import NodeContext
from ovnk.core.node.owners import ANNOTATIONS
from ovnk.core.node.owners import Ledger
from ovnk.core.node.owners import MemoryLedger
from ovnk.core.plugins import OvnkPluginManager
from ovnk.core.reconcile.spec import ControllerSpec
from ovnk.core.reconcile.spec import ReconcileRequest
from ovnk.core.reconcile.spec import Watch

logger = logging.getLogger(__name__)

CONTROLLER = "node-annotations"
REPUBLISH_INTERVAL = 60.0
# A patch the informer has not reflected yet is not sent again before this many seconds.
PATCH_SETTLE = 5.0


def compact_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _annotations(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return (obj.get("metadata") or {}).get("annotations") or {}


def annotations_changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Watch filter of the annotator: only annotation changes matter (not status heartbeats)."""
    return _annotations(old) != _annotations(new)


class NodeAnnotator:
    """Computes and publishes this node's annotations (see the module docstring)."""

    name = "core.annotations"

    def __init__(self, *, kube: KubeClient, node_name: str, pm: OvnkPluginManager, claims: Claims,
                 nodes: Informer, ledger: Ledger | None = None) -> None:
        self.kube = kube
        self.node_name = node_name
        self.pm = pm
        self.claims = claims
        self.nodes = nodes
        self.ledger: Ledger = ledger if ledger is not None else MemoryLedger()
        self.ctx: NodeContext | None = None
        self._core: dict[str, str | None] = {}
        self._sources: list[Callable[[], Mapping[str, str | None]]] = []
        self._lock = threading.Lock()
        self._publish_lock = threading.Lock()
        self._last_patch: dict[str, str | None] = {}
        self._last_patch_at = 0.0

    def set_core(self, values: Mapping[str, str | None]) -> None:
        with self._lock:
            self._core.update(values)

    def add_source(self, source: Callable[[], Mapping[str, str | None]]) -> None:
        """``source()`` is evaluated at every publish (facts that may change, e.g. host CIDRs)."""
        with self._lock:
            self._sources.append(source)

    def attach(self, ctx: NodeContext) -> None:
        """From now on plugins contribute (``ovnk_node_annotations`` needs the context)."""
        self.ctx = ctx

    def spec(self) -> ControllerSpec:
        """The node controller: key = this node, on changes of its annotations and every REPUBLISH_INTERVAL."""
        return ControllerSpec(
            name=CONTROLLER,
            watches=(Watch(NODES, field_selector=f"metadata.name={self.node_name}",
                           needs_update=annotations_changed),),
            reconcile=self._reconcile, initial_keys=lambda: [self.node_name], resync_period=REPUBLISH_INTERVAL,
            workers=1,
        )

    def _reconcile(self, _request: ReconcileRequest) -> None:
        self.publish()

    # -- what to publish ---------------------------------------------------------------

    def plugin_annotations(self, *, strict: bool = False) -> tuple[dict[str, str | None], dict[str, list[str]]]:
        """What the plugins want published, and per plugin that answered the keys it gives a value
        (for the ledger; a plugin whose hook failed is not in it, so its record stays).

        :param strict: a plugin whose hook raises stops the publish (start-up).
        :raises PluginError: with ``strict``, naming the plugin.
        """
        if self.ctx is None:
            return {}, {}
        wanted: dict[str, str | None] = {}
        given: dict[str, list[str]] = {}
        failed: set[str] = set()
        for plugin, impl in self.pm.implementations("ovnk_node_annotations"):
            contributed: dict[str, str | None] = {}
            try:
                self.pm.call_impl(impl, ctx=self.ctx, annotations=contributed)
            except Exception as exc:
                if strict:
                    raise PluginError(f"plugin {plugin!r} failed in ovnk_node_annotations: "
                                      f"{type(exc).__name__}: {exc}") from exc
                logger.exception("plugin %s: ovnk_node_annotations failed; its annotations stay as they are",
                                 plugin)
                failed.add(plugin)
                continue
            given.setdefault(plugin, [])
            for key, value in contributed.items():
                owner = self.claims.annotations.get(key)
                if owner != plugin:
                    logger.error("plugin %s wants to publish annotation %s, which %s; not published", plugin, key,
                                 f"plugin {owner!r} claims" if owner else "it did not claim")
                    continue
                if value is not None and not isinstance(value, str):
                    logger.error("plugin %s: annotation %s must be a string or None, not %s", plugin, key,
                                 type(value).__name__)
                    continue
                wanted[key] = value
                if value is not None:
                    given[plugin].append(key)
        # Keys an enabled plugin published before and gives no more go (also when it stopped
        # implementing the hook), unless someone else claims them now.
        for plugin, keys in self.ledger.owned(ANNOTATIONS).items():
            if plugin in failed or not self.ledger.owners.allows(plugin):
                continue
            given.setdefault(plugin, [])
            for key in keys:
                if key not in wanted and self.claims.annotations.get(key) in (plugin, None):
                    wanted[key] = None
        given.pop("core", None)
        return wanted, given

    def desired(self, *, strict: bool = False) -> dict[str, str | None]:
        return self._desired(strict=strict)[0]

    def _desired(self, *, strict: bool) -> tuple[dict[str, str | None], dict[str, list[str]]]:
        with self._lock:
            core = dict(self._core)
            sources = list(self._sources)
        for source in sources:
            core.update(source())
        plugins, given = self.plugin_annotations(strict=strict)
        return {**plugins, **core}, given

    # -- writing -----------------------------------------------------------------------

    def _node(self) -> dict[str, Any] | None:
        node = self.nodes.store.get(self.node_name)
        if node is None:
            node = self.kube.get(NODES, self.node_name)
        return node

    def publish(self, *, strict: bool = False) -> dict[str, str | None]:
        """Patch what differs from the cached Node; returns the patch (empty when in sync).

        :param strict: start-up: a failing plugin raises instead of being skipped.
        :raises PluginError: with ``strict``, a plugin's hook failed (the message names it).
        """
        with self._publish_lock:
            node = self._node()
            if node is None:
                logger.warning("node %s does not exist; nothing published", self.node_name)
                return {}
            current = _annotations(node)
            desired, given = self._desired(strict=strict)
            patch: dict[str, str | None] = {}
            for key, value in desired.items():
                if value is None:
                    if key in current:
                        patch[key] = None
                elif current.get(key) != value:
                    patch[key] = value
            now = time.monotonic()
            if patch and not (patch == self._last_patch and now - self._last_patch_at < PATCH_SETTLE):
                self.kube.patch(NODES, self.node_name, {"metadata": {"annotations": patch}}, subresource="status")
                self._last_patch, self._last_patch_at = patch, now
                logger.info("published on node %s: %s", self.node_name,
                            ", ".join(f"{k}={'(removed)' if v is None else v}" for k, v in sorted(patch.items())))
            elif patch:
                patch = {}  # sent a moment ago; the watch has not brought it back yet
            self._record(given)
            return patch

    def _record(self, given: Mapping[str, list[str]]) -> None:
        """The ledger holds, per plugin, the keys it gives a value now (written only on change)."""
        recorded = self.ledger.owned(ANNOTATIONS)
        for plugin, keys in given.items():
            if sorted(set(keys)) != sorted(recorded.get(plugin, [])):
                self.ledger.record(ANNOTATIONS, plugin, sorted(set(keys)))

    def release(self, owner: str) -> list[str]:
        """Remove from the Node the annotations ``owner`` published (start-up, for a plugin switched off),
        except keys an enabled plugin claims now; drops its ledger entry. Returns the keys removed."""
        keys = [str(k) for k in self.ledger.owned(ANNOTATIONS).get(owner, [])]
        node = self._node()
        current = _annotations(node) if node is not None else {}
        patch: dict[str, str | None] = {key: None for key in keys
                                        if key in current and self.claims.annotations.get(key) is None}
        if patch:
            self.kube.patch(NODES, self.node_name, {"metadata": {"annotations": patch}}, subresource="status")
            logger.info("removed from node %s the annotations of %s (not enabled): %s", self.node_name, owner,
                        ", ".join(sorted(patch)))
        self.ledger.record(ANNOTATIONS, owner, [])
        return sorted(patch)
