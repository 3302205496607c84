"""The plugin manager: discovery through entry points, enablement, validation.

There is no module-level manager: :func:`get_plugin_manager` builds one per
process (and per test). Load order: core's own default plugins
(:data:`DEFAULT_PLUGINS`, always on, like pytest's), then the enabled plugins
found in the ``ovnk.plugins`` entry-point group, first-party and third-party
alike. Then ``check_pending()`` rejects hook implementations without a spec.

A plugin that is not enabled is not imported by the runtime manager, so none of
its hooks can run. ``ovnk plugins list`` builds a separate *inspection* manager
that imports every installed plugin to show what it implements and claims; that
manager never runs runtime hooks.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Iterable
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from types import ModuleType
from typing import Any

import pluggy

from ovnk.core import hookspecs
from ovnk.core.errors import PluginError

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "ovnk.plugins"

#: Core behaviour written as plugins; always registered, cannot be disabled.
DEFAULT_PLUGINS: tuple[str, ...] = (
    "ovnk.core.builtin.commit",
    "ovnk.core.builtin.network",
    "ovnk.core.builtin.pods",
    "ovnk.core.builtin.cni",
    "ovnk.core.builtin.netpol",
    "ovnk.core.builtin.services",
)

CORE_PLUGIN_PREFIX = "core."


@dataclass(frozen=True)
class DiscoveredPlugin:
    """An entry point of the ``ovnk.plugins`` group (not imported yet)."""

    name: str
    module: str
    distribution: str
    version: str

    def load(self) -> ModuleType:
        """Import the plugin module; any failure becomes a :class:`PluginError` naming the plugin."""
        try:
            return importlib.import_module(self.module)
        except Exception as exc:
            raise PluginError(
                f"plugin {self.name!r} (distribution {self.distribution} {self.version}) "
                f"failed to import {self.module}: {type(exc).__name__}: {exc}"
            ) from exc


def discover(group: str = ENTRY_POINT_GROUP) -> dict[str, DiscoveredPlugin]:
    """Every installed plugin by entry-point name, without importing any.

    Two distributions advertising the same plugin name is an error naming both.
    """
    found: dict[str, DiscoveredPlugin] = {}
    seen_dists: set[tuple[str, str]] = set()
    for dist in metadata.distributions():
        dist_name = dist.metadata["Name"] or "?"
        key = (dist_name.lower().replace("_", "-"), str(dist._path) if hasattr(dist, "_path") else "")
        if key in seen_dists:
            continue
        seen_dists.add(key)
        for ep in dist.entry_points:
            if ep.group != group:
                continue
            plugin = DiscoveredPlugin(
                name=ep.name, module=ep.value.split(":")[0], distribution=dist_name, version=dist.version
            )
            prior = found.get(ep.name)
            if prior is not None and prior.module != plugin.module:
                raise PluginError(
                    f"plugin {ep.name!r} is provided twice: by {prior.distribution} ({prior.module}) "
                    f"and by {dist_name} ({plugin.module})"
                )
            found[ep.name] = plugin
    return found


class OvnkPluginManager(pluggy.PluginManager):
    """pluggy's manager plus load order, per-plugin metadata and hook tracing.

    Only attributes whose name starts with ``ovnk_`` are considered hook
    implementations (pytest does the same to avoid probing unrelated attributes).
    """

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT)
        self.add_hookspecs(hookspecs)
        self.discovered: dict[str, DiscoveredPlugin] = {}
        self.enabled: tuple[str, ...] = ()
        # registered name of a runtime object -> the plugin it belongs to
        self._runtime_owner: dict[str, str] = {}
        if os.environ.get("OVNK_TRACE_HOOKS"):
            self.trace.root.setwriter(lambda text: logger.debug("hook: %s", text.rstrip()))
            self.enable_tracing()

    def parse_hookimpl_opts(self, plugin: object, name: str) -> Any:
        if not name.startswith("ovnk_"):
            return None
        return super().parse_hookimpl_opts(plugin, name)

    def register(self, plugin: object, name: str | None = None) -> str | None:
        try:
            registered = super().register(plugin, name)
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"plugin {name or plugin!r} is invalid: {exc}") from exc
        return registered

    # -- loading -----------------------------------------------------------

    def load_defaults(self, modules: Iterable[str] = DEFAULT_PLUGINS) -> None:
        """Register core's default plugins under ``core.<module>``."""
        for path in modules:
            module = importlib.import_module(path)
            self.register(module, name=CORE_PLUGIN_PREFIX + path.rsplit(".", 1)[-1])

    def load_enabled(self, enabled: Sequence[str], discovered: dict[str, DiscoveredPlugin]) -> None:
        """Import and register the enabled plugins, in the order given.

        :raises PluginError: a name that is not installed, or an import failure;
            the message names the plugin.
        """
        self.discovered = dict(discovered)
        seen: set[str] = set()
        for name in enabled:
            if name in seen:
                continue
            seen.add(name)
            plugin = discovered.get(name)
            if plugin is None:
                installed = ", ".join(sorted(discovered)) or "none"
                raise PluginError(
                    f"plugin {name!r} is enabled in the configuration but not installed "
                    f"(no entry point {name!r} in group {ENTRY_POINT_GROUP}; installed: {installed})"
                )
            module = plugin.load()
            self.register(module, name=name)
        self.enabled = tuple(n for n in enabled if n in seen)

    def check(self) -> None:
        """``check_pending()`` with an error that names the plugin."""
        try:
            self.check_pending()
        except pluggy.PluginValidationError as exc:
            name = self.get_name(exc.plugin) if exc.plugin is not None else "?"
            raise PluginError(f"plugin {name!r} implements an unknown hook: {exc}") from exc

    # -- runtime objects -------------------------------------------------------

    def register_runtime(self, plugin: str, obj: object) -> str:
        """Register ``obj``, the stateful half of plugin ``plugin``, as a plugin of its own.

        This is how a plugin keeps state across hooks (pytest's two-stage pattern):
        its module's ``ovnk_configure(config, pluginmanager)`` creates one object
        that implements the controller and node hooks as methods, and registers it
        here. The object is registered as ``<plugin>:runtime``; whatever it claims
        or plans is attributed to ``plugin`` (its distribution in ``ovnk plugins
        list``). ``ovnk_unconfigure`` is followed by its removal.

        :param plugin: the name of an already registered plugin (its entry-point
            name, or ``core.<module>`` for core's own).
        :param obj: the object whose ``ovnk_*`` methods are hook implementations.
        :returns: the registered name.
        :raises PluginError: ``plugin`` is not registered, or already has a runtime object.
        """
        if self.get_plugin(plugin) is None:
            raise PluginError(f"cannot register a runtime object for {plugin!r}: no such plugin is registered")
        name = f"{plugin}:runtime"
        if self.get_plugin(name) is not None:
            raise PluginError(f"plugin {plugin!r} registered its runtime object twice")
        self._runtime_owner[name] = plugin
        try:
            self.register(obj, name=name)
        except BaseException:
            del self._runtime_owner[name]
            raise
        return name

    def unregister_runtimes(self) -> None:
        """Remove every runtime object (after ``ovnk_unconfigure``)."""
        for name in list(self._runtime_owner):
            obj = self.get_plugin(name)
            if obj is not None:
                self.unregister(obj, name=name)
            del self._runtime_owner[name]

    def runtime_of(self, plugin: str) -> object | None:
        """The runtime object ``plugin`` registered, if any."""
        return self.get_plugin(f"{plugin}:runtime")

    def call_each(self, hook_name: str, **kwargs: Any) -> list[Any]:
        """Call every implementation of ``hook_name`` in call order; a failure names its plugin.

        Core uses this for start-up hooks (restore, repair, node set-up), where a
        failing plugin must stop start-up with a message saying which plugin and
        which hook, instead of a bare traceback.

        :returns: the non-``None`` results, in call order.
        :raises PluginError: chained to the plugin's exception.
        """
        results = []
        for plugin, impl in self.implementations(hook_name):
            try:
                result = self.call_impl(impl, **kwargs)
            except Exception as exc:
                raise PluginError(f"plugin {plugin!r} failed in {hook_name}: {type(exc).__name__}: {exc}") from exc
            if result is not None:
                results.append(result)
        return results

    # -- introspection -----------------------------------------------------

    def plugin_names(self) -> list[str]:
        """Registered plugin names in registration order (core's first)."""
        return [name for name, _ in self.list_name_plugin() if name is not None]

    def hooks_of(self, name: str) -> list[str]:
        """Names of the hooks plugin ``name`` implements (its module and its runtime object)."""
        names = set()
        for registered in (name, f"{name}:runtime"):
            plugin = self.get_plugin(registered)
            if plugin is not None:
                for caller in self.get_hookcallers(plugin) or []:
                    names.add(caller.name)
        return sorted(names)

    def owner_plugin(self, hookimpl_plugin_name: str) -> str:
        """The plugin a registered name belongs to: ``core`` for core's own, the plugin for a runtime object."""
        name = self._runtime_owner.get(hookimpl_plugin_name, hookimpl_plugin_name)
        if name.startswith(CORE_PLUGIN_PREFIX):
            return "core"
        return name

    def implementations(self, hook_name: str) -> list[tuple[str, Any]]:
        """(owning plugin, hookimpl) of ``hook_name`` in call order, wrappers excluded.

        Used where core must know which plugin produced what (settings, claims).
        """
        caller = getattr(self.hook, hook_name)
        return [
            (self.owner_plugin(impl.plugin_name), impl)
            for impl in reversed(caller.get_hookimpls())
            if not (impl.hookwrapper or impl.wrapper)
        ]

    @staticmethod
    def call_impl(impl: Any, **kwargs: Any) -> Any:
        """Call one hookimpl with the keyword arguments it declares."""
        return impl.function(*[kwargs[arg] for arg in impl.argnames])


def get_plugin_manager(
    *,
    enabled: Sequence[str] = (),
    discovered: dict[str, DiscoveredPlugin] | None = None,
    defaults: Iterable[str] = DEFAULT_PLUGINS,
) -> OvnkPluginManager:
    """Build a plugin manager with core's defaults and the ``enabled`` plugins.

    :param enabled: plugin names from ``[plugins] enabled``.
    :param discovered: installed plugins (default: scan entry points now).
    :param defaults: core default plugin modules.
    :raises PluginError: unknown name, import failure, invalid hook implementation.
    """
    pm = OvnkPluginManager()
    pm.load_defaults(defaults)
    if discovered is None:
        discovered = discover() if enabled else {}
    pm.load_enabled(enabled, discovered)
    pm.hook.ovnk_addhooks.call_historic(kwargs={"pluginmanager": pm})
    pm.check()
    return pm
