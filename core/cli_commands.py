"""Registers the process and tooling subcommands on the ``ovnk`` group.

Each command imports its implementation only when invoked, so ``ovnk --help``
stays fast.
"""

from __future__ import annotations

import sys

import click

from ovnk.core.cli import CliState
from ovnk.core.cli import pass_state


def _setup_logging(state: CliState) -> None:
    from ovnk.core import logs

    cfg = state.runtime().config
    logs.setup(cfg.logging.level, cfg.logging.file)


@click.command("controller")
@pass_state
def controller_command(state: CliState) -> None:
    """Run the cluster-wide controller (Kubernetes -> OVN Northbound)."""
    from ovnk.core import controller

    _setup_logging(state)
    sys.exit(controller.run(state.runtime()))


@click.command("node")
@pass_state
def node_command(state: CliState) -> None:
    """Run the node agent (shared gateway, management port, CNI server)."""
    from ovnk.core.node import agent

    _setup_logging(state)
    sys.exit(agent.run(state.runtime()))


def register(cli: click.Group) -> None:
    """Add every core subcommand that lives outside :mod:`ovnk.core.cli`."""
    cli.add_command(controller_command)
    cli.add_command(node_command)
    from ovnk.core import cni_cli

    cni_cli.register(cli)
    from ovnk.core.trace import cli as trace_cli

    trace_cli.register(cli)
