"""Startup of every process: enabled plugins, their settings, the configuration, claims.

Order (each step fails with one clear message naming the plugin or key):

1. read ``[plugins] enabled`` alone (file, env, flags);
2. build the plugin manager: core defaults, then the enabled plugins from the
   ``ovnk.plugins`` entry points, then ``check_pending()``;
3. ``ovnk_add_settings``: each plugin declares its section;
4. parse and validate the whole configuration;
5. ``ovnk_claims``: each plugin claims its CRDs, annotations, owner types;
6. ``ovnk_configure``: stateful plugins register their runtime object here
   (``pluginmanager.register_runtime(name, obj)``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ovnk.core import config as config_mod
from ovnk.core import plugins as plugins_mod
from ovnk.core.claims import Claims
from ovnk.core.config import Config
from ovnk.core.config import ConfigInputs
from ovnk.core.errors import ConfigError
from ovnk.core.errors import PluginError
from ovnk.core.settings import SettingsRegistry


@dataclass(frozen=True)
class Runtime:
    """What bootstrap produced: configuration, plugin manager and claims."""

    config: Config
    pm: plugins_mod.OvnkPluginManager
    claims: Claims
    settings: SettingsRegistry

    def shutdown(self) -> None:
        """Run ``ovnk_unconfigure`` (in reverse registration order, pluggy's default), then drop
        the plugins' runtime objects."""
        self.pm.hook.ovnk_unconfigure(config=self.config)
        self.pm.unregister_runtimes()


def collect_settings(pm: plugins_mod.OvnkPluginManager) -> SettingsRegistry:
    registry = SettingsRegistry()
    for plugin, impl in pm.implementations("ovnk_add_settings"):
        with registry.owned_by(plugin):
            try:
                pm.call_impl(impl, settings=registry)
            except ConfigError as exc:
                raise PluginError(f"plugin {plugin!r}: {exc}") from exc
    return registry


def collect_claims(pm: plugins_mod.OvnkPluginManager) -> Claims:
    claims = Claims()
    for plugin, impl in pm.implementations("ovnk_claims"):
        claims.current = plugin
        pm.call_impl(impl, claims=claims)
    claims.current = "core"
    return claims


def bootstrap(
    inputs: ConfigInputs,
    *,
    discovered: dict[str, plugins_mod.DiscoveredPlugin] | None = None,
    defaults: Iterable[str] = plugins_mod.DEFAULT_PLUGINS,
    configure: bool = True,
) -> Runtime:
    """Build the runtime of one process from config inputs.

    :param inputs: config file path, environment and flags.
    :param discovered: installed plugins (default: scan entry points).
    :param defaults: core default plugin modules.
    :param configure: call ``ovnk_configure`` (off for read-only CLI commands).
    :raises ConfigError: an invalid value; the message names key, value and source.
    :raises PluginError: unknown, broken or conflicting plugins; the message names them.
    """
    enabled = config_mod.enabled_plugins(inputs)
    if discovered is None:
        discovered = plugins_mod.discover()
    pm = plugins_mod.get_plugin_manager(enabled=enabled, discovered=discovered, defaults=defaults)
    registry = collect_settings(pm)
    plugin_specs = [spec for spec in registry if spec.owner != "core" or spec.name not in config_mod.CORE_SECTIONS]
    config = config_mod.load(inputs, plugin_specs=plugin_specs, optional_sections=list(discovered))
    claims = collect_claims(pm)
    if configure:
        pm.hook.ovnk_configure(config=config, pluginmanager=pm)
    return Runtime(config=config, pm=pm, claims=claims, settings=registry)
