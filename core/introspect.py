"""Read-only views of installed plugins: ``ovnk plugins list`` and plugin commands.

This builds a throw-away *inspection* plugin manager per plugin, imports it and
calls only ``ovnk_claims`` (to learn what it would claim) or
``ovnk_register_commands`` (to learn its subcommands) on it. It is never the
runtime manager: nothing is configured and no controller or node hook runs.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING
from typing import Any

from ovnk.core import config as config_mod
from ovnk.core import plugins as plugins_mod
from ovnk.core.claims import Claims
from ovnk.core.config import ConfigInputs
from ovnk.core.errors import OvnkError

if TYPE_CHECKING:
    import click

logger = logging.getLogger(__name__)


def _claims_of(pm: plugins_mod.OvnkPluginManager, owner: str) -> list[str]:
    claims = Claims()
    for plugin, impl in pm.implementations("ovnk_claims"):
        if plugin != owner:
            continue
        claims.current = plugin
        pm.call_impl(impl, claims=claims)
    return claims.by_plugin(owner)


def plugin_table(inputs: ConfigInputs) -> list[dict[str, Any]]:
    """One row per plugin (core first): name, distribution, version, enabled, hooks, claims."""
    import ovnk

    try:
        enabled = set(config_mod.enabled_plugins(inputs))
    except OvnkError:
        enabled = set()
    rows: list[dict[str, Any]] = []
    core_pm = plugins_mod.get_plugin_manager(enabled=(), discovered={})
    core_hooks = sorted({h for n in core_pm.plugin_names() for h in core_pm.hooks_of(n)})
    rows.append(
        {
            "name": "core",
            "distribution": "ovnk",
            "version": ovnk.__version__,
            "module": "ovnk.core.builtin",
            "enabled": True,
            "hooks": core_hooks,
            "claims": _claims_of(core_pm, "core"),
        }
    )
    for name, plugin in sorted(plugins_mod.discover().items()):
        row: dict[str, Any] = {
            "name": name,
            "distribution": plugin.distribution,
            "version": plugin.version,
            "module": plugin.module,
            "enabled": name in enabled,
            "hooks": [],
            "claims": [],
        }
        try:
            pm = plugins_mod.OvnkPluginManager()
            pm.register(plugin.load(), name=name)
            row["hooks"] = _hooks_with_runtime(name, plugin) or pm.hooks_of(name)
            row["claims"] = _claims_of(pm, name)
        except OvnkError as exc:
            row["error"] = str(exc)
        rows.append(row)
    return rows


def _hooks_with_runtime(name: str, plugin: plugins_mod.DiscoveredPlugin) -> list[str]:
    """The hooks of the plugin and of the runtime object its ``ovnk_configure`` registers.

    Bootstraps a process with only this plugin and default settings (configure
    only creates objects; no controller or node hook runs). Empty when that
    fails (a plugin whose settings have no usable defaults): its module's hooks
    are listed then.
    """
    from ovnk.core.bootstrap import bootstrap

    try:
        runtime = bootstrap(ConfigInputs(env={}, flags={"plugins": name}), discovered={name: plugin}, defaults=())
    except Exception:
        return []
    try:
        return runtime.pm.hooks_of(name)
    finally:
        runtime.shutdown()


def plugin_commands(cli: click.Group) -> list[str]:
    """Add the subcommands of every *installed* plugin to ``cli``; returns the problems met.

    Commands do not depend on ``[plugins] enabled``: that list decides what the
    controller and the node agent run, while the command line is used from
    anywhere (an operator's shell, the sandbox). A plugin that fails to import
    or to register its commands is reported and skipped; the others still load.
    """
    problems: list[str] = []
    for name, plugin in sorted(plugins_mod.discover().items()):
        try:
            pm = plugins_mod.OvnkPluginManager()
            pm.register(plugin.load(), name=name)
            pm.hook.ovnk_register_commands(cli=cli)
        except Exception as exc:  # a broken plugin must not break the whole command line
            problems.append(f"plugin {name!r}: its commands are unavailable: {exc}")
    return problems
