"""The annotations the node agent publishes on its own Node (ovn-kubernetes.md §2.1).

Core's values (chassis id, primary address, gateway config, management port
MAC, host CIDRs, encap IPs) are set by the agent as it learns them; plugins
add theirs through ``ovnk_node_annotations``, each key checked against the
plugin's claims (an unclaimed key is refused with an error log, the rest is
published). ``None`` removes a key. One merge patch carries only what differs
from the Node the informer holds, so an agent restart with unchanged facts
writes nothing. :meth:`NodeAnnotator.run` re-publishes when the Node changes
(someone removed an annotation) and on a timer (facts such as host CIDRs).
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
from ovnk.core.kube.client import KubeClient
from ovnk.core.kube.informer import Informer
from ovnk.core.kube.resources import NODES
from ovnk.core.node.context import NodeContext
from ovnk.core.plugins import OvnkPluginManager

logger = logging.getLogger(__name__)

REPUBLISH_INTERVAL = 60.0
# A patch the informer has not reflected yet is not sent again before this many seconds.
PATCH_SETTLE = 5.0


def compact_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


class NodeAnnotator:
    """Computes and publishes this node's annotations (see the module docstring)."""

    name = "core.annotations"

    def __init__(self, *, kube: KubeClient, node_name: str, pm: OvnkPluginManager, claims: Claims,
                 nodes: Informer) -> None:
        self.kube = kube
        self.node_name = node_name
        self.pm = pm
        self.claims = claims
        self.nodes = nodes
        self.ctx: NodeContext | None = None
        self._core: dict[str, str | None] = {}
        self._sources: list[Callable[[], Mapping[str, str | None]]] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
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

    def wake(self) -> None:
        self._wake.set()

    def plugin_annotations(self) -> dict[str, str | None]:
        if self.ctx is None:
            return {}
        wanted: dict[str, str | None] = {}
        for plugin, impl in self.pm.implementations("ovnk_node_annotations"):
            contributed: dict[str, str | None] = {}
            try:
                self.pm.call_impl(impl, ctx=self.ctx, annotations=contributed)
            except Exception:
                logger.exception("plugin %s: ovnk_node_annotations failed; its annotations are not published",
                                 plugin)
                continue
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
        return wanted

    def desired(self) -> dict[str, str | None]:
        with self._lock:
            core = dict(self._core)
            sources = list(self._sources)
        for source in sources:
            core.update(source())
        return {**self.plugin_annotations(), **core}

    def publish(self) -> dict[str, str | None]:
        """Patch what differs from the cached Node; returns the patch (empty when in sync)."""
        node = self.nodes.store.get(self.node_name)
        if node is None:
            node = self.kube.get(NODES, self.node_name)
            if node is None:
                logger.warning("node %s does not exist; nothing published", self.node_name)
                return {}
        current = (node.get("metadata") or {}).get("annotations") or {}
        patch: dict[str, str | None] = {}
        for key, value in self.desired().items():
            if value is None:
                if key in current:
                    patch[key] = None
            elif current.get(key) != value:
                patch[key] = value
        if not patch:
            return {}
        now = time.monotonic()
        if patch == self._last_patch and now - self._last_patch_at < PATCH_SETTLE:
            return {}  # sent a moment ago; the watch has not brought it back yet
        self.kube.patch(NODES, self.node_name, {"metadata": {"annotations": patch}})
        self._last_patch, self._last_patch_at = patch, now
        logger.info("published on node %s: %s", self.node_name,
                    ", ".join(f"{k}={'(removed)' if v is None else v}" for k, v in sorted(patch.items())))
        return patch

    def run(self, stop: threading.Event) -> None:
        """Re-publish on Node changes and every REPUBLISH_INTERVAL until ``stop``."""
        while not stop.is_set():
            self._wake.wait(REPUBLISH_INTERVAL)
            self._wake.clear()
            if stop.is_set():
                return
            try:
                self.publish()
            except Exception:
                logger.exception("publishing the annotations of node %s failed; retrying", self.node_name)
                stop.wait(1.0)
                self._wake.set()
