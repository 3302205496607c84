"""The ``ovnk`` command line (click).

Global options feed the configuration (they are its highest-precedence layer).
Subcommands of installed plugins are added through ``ovnk_register_commands``
when the group resolves a name it does not know, so plain commands never pay
for plugin loading. Plugin commands do not depend on ``[plugins] enabled`` (the
command line is used from anywhere, e.g. ``ovnk sandbox`` from the lab plugin);
a command that needs its plugin's settings reads them through
:meth:`CliState.runtime`, which loads only the enabled plugins.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from typing import Any
from typing import TypeVar

import click

import ovnk
from ovnk.core.config import ConfigInputs
from ovnk.core.errors import OvnkError

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class CliState:
    """What the global options collected; builds the runtime on demand."""

    inputs: ConfigInputs
    _runtime: Any = field(default=None, repr=False)

    def runtime(self, *, configure: bool = True) -> Any:
        """Bootstrap once (plugins, settings, config, claims)."""
        if self._runtime is None:
            from ovnk.core.bootstrap import bootstrap

            self._runtime = bootstrap(self.inputs, configure=configure)
        return self._runtime


def command_settings(plugin: str) -> Any:
    """The settings of ``plugin`` for a plugin's command (the current ``ovnk`` invocation's config).

    :raises ConfigError: the plugin is not enabled in this invocation's configuration; the
        message says how to enable it.
    """
    from ovnk.core.errors import ConfigError

    config = get_state(click.get_current_context()).runtime().config
    if plugin not in config.plugin_sections:
        raise ConfigError(f"plugin {plugin!r} is not enabled here: enable it with --plugins {plugin}, "
                          f"OVNK_PLUGINS or [plugins] enabled in the config file")
    return config.plugin_settings(plugin)


def command_config() -> Any:
    """The configuration of the current ``ovnk`` invocation (config file, environment, flags), for a
    plugin's command: ``command_config().kubernetes`` gives ``KubeClient.from_settings`` what it needs."""
    return get_state(click.get_current_context()).runtime(configure=False).config


def fail(message: str) -> None:
    """Exit with status 1 and ``ovnk: error: <message>`` on stderr."""
    click.echo(f"ovnk: error: {message}", err=True)
    sys.exit(1)


class OvnkGroup(click.Group):
    """Adds installed plugins' commands lazily (datasette's ``register_commands``)."""

    _plugin_commands: dict[str, click.Command] | None = None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except OvnkError as exc:
            fail(str(exc))

    def _load_plugin_commands(self, ctx: click.Context) -> dict[str, click.Command]:
        if self._plugin_commands is None:
            from ovnk.core import introspect

            collector = click.Group()
            for problem in introspect.plugin_commands(collector):
                click.echo(f"ovnk: warning: {problem}", err=True)
            self._plugin_commands = dict(collector.commands)
        return self._plugin_commands

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            return command
        try:
            return self._load_plugin_commands(ctx).get(cmd_name)
        except OvnkError as exc:
            fail(str(exc))
            return None

    def list_commands(self, ctx: click.Context) -> list[str]:
        names = list(super().list_commands(ctx))
        try:
            names += sorted(self._load_plugin_commands(ctx))
        except OvnkError:
            pass  # help must work even when the configuration is broken
        return names


def get_state(ctx: click.Context) -> CliState:
    """The :class:`CliState` of this invocation, created from the root's global options."""
    root = ctx.find_root()
    if not isinstance(root.obj, CliState):
        root.obj = CliState(inputs=_inputs_from(root.params))
    return root.obj


def _inputs_from(params: dict[str, Any]) -> ConfigInputs:
    flags = {
        key: params.get(key)
        for key in ("plugins", "log_level", "kubeconfig", "nb_address", "sb_address", "ovs_address", "node_name")
    }
    return ConfigInputs(
        config_file=params.get("config_file"),
        assignments=tuple(params.get("assignments") or ()),
        flags=flags,
    )


@click.group(cls=OvnkGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("--config", "config_file", metavar="PATH", help="INI config file (default: $OVNK_CONFIG or /etc/ovnk/ovnk.conf).")
@click.option("--plugins", metavar="LIST", help="Comma-separated enabled plugins ([plugins] enabled).")
@click.option("--set", "assignments", multiple=True, metavar="SECTION.KEY=VALUE", help="Set any config key; repeatable.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), help="[logging] level.")
@click.option("--kubeconfig", metavar="PATH", help="[kubernetes] kubeconfig.")
@click.option("--nb-address", metavar="REMOTE", help="[ovnnorth] address.")
@click.option("--sb-address", metavar="REMOTE", help="[ovnsouth] address.")
@click.option("--ovs-address", metavar="REMOTE", help="[ovs] address.")
@click.option("--node-name", metavar="NAME", help="[node] name.")
@click.version_option(ovnk.__version__, prog_name="ovnk")
@click.pass_context
def cli(ctx: click.Context, /, **params: Any) -> None:
    """ovnk: OVN-Kubernetes as a Python plugin framework."""
    get_state(ctx)


def pass_state(f: F) -> F:
    """Decorator giving a command the :class:`CliState` as first argument."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return f(get_state(click.get_current_context()), *args, **kwargs)

    return functools.update_wrapper(wrapper, f)  # type: ignore[return-value]


# --------------------------------------------------------------------------
# config


@cli.group("config")
def config_group() -> None:
    """Inspect the configuration."""


@config_group.command("show")
@pass_state
def config_show(state: CliState) -> None:
    """Print the effective configuration and where each value came from."""
    from ovnk.core.settings import describe

    rt = state.runtime(configure=False)
    cfg = rt.config
    click.echo(f"# config file: {cfg.config_file or '(none)'}")
    for name in cfg.section_names():
        click.echo(f"[{name}]")
        for key, value, _help in describe(cfg.section(name)):
            click.echo(f"{key} = {value}    # {cfg.source_of(name, key)}")
        click.echo("")


# --------------------------------------------------------------------------
# plugins


@cli.group("plugins")
def plugins_group() -> None:
    """Inspect plugins."""


@plugins_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_state
def plugins_list(state: CliState, as_json: bool) -> None:
    """Every installed plugin: distribution, version, enabled, hooks, claims."""
    from ovnk.core import introspect

    rows = introspect.plugin_table(state.inputs)
    if as_json:
        import json

        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no plugins installed")
    for row in rows:
        status = "enabled" if row["enabled"] else "disabled"
        click.echo(f"{row['name']}  ({row['distribution']} {row['version']})  {status}")
        click.echo(f"    module:  {row['module']}")
        click.echo(f"    hooks:   {', '.join(row['hooks']) or '-'}")
        click.echo(f"    claims:  {', '.join(row['claims']) or '-'}")
        if row.get("error"):
            click.echo(f"    error:   {row['error']}")


# --------------------------------------------------------------------------
# crds


@cli.group("crds")
def crds_group() -> None:
    """CRDs claimed by the enabled plugins."""


@crds_group.command("print")
@pass_state
def crds_print(state: CliState) -> None:
    """Print the CRDs of enabled plugins as one multi-document YAML stream."""
    import yaml

    rt = state.runtime(configure=False)
    docs = [crd.document for crd, _owner in sorted(rt.claims.crds.values(), key=lambda c: c[0].name)]
    click.echo(yaml.safe_dump_all(docs, sort_keys=False), nl=False)


def _register_process_commands() -> None:
    """Long-running and tooling commands live in their own modules (imported lazily)."""
    from ovnk.core import cli_commands

    cli_commands.register(cli)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``ovnk`` console script."""
    _register_process_commands()
    cli.main(args=argv, prog_name="ovnk")
