"""Registers the process and tooling subcommands on the ``ovnk`` group.

Each command imports its implementation only when invoked, so ``ovnk --help``
stays fast.
"""

from __future__ import annotations

import sys

import click

from ovnk.core.cli import CliState
from ovnk.core.cli import fail
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


@click.command("release-uplink")
@click.option("--marker-dir", type=click.Path(file_okay=False), default=None,
              help="Write the file ovnk-uplink-released here when done (the chart's OVS pod waits for it).")
@pass_state
def release_uplink_command(state: CliState, marker_dir: str | None) -> None:
    """Give this node's uplink back to the host: the gateway bridge's addresses and routes move to the
    uplink and the bridge is deleted (run before OVS stops; the node agent sets it up again at its next
    start)."""
    import logging
    from pathlib import Path

    from ovnk.core.errors import StartupError
    from ovnk.core.node.gateway import RELEASED_MARKER
    from ovnk.core.node.gateway import release_uplink
    from ovnk.core.node.net import NetFacade
    from ovnk.core.node.ovs import MONITORED_COLUMNS
    from ovnk.core.node.ovs import OvsFacade
    from ovnk.core.ovn.connection import OvsdbClient

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    address = state.runtime(configure=False).config.ovs.address
    try:
        client = OvsdbClient(remote=address, schema="Open_vSwitch", name="ovs", leader_only=False,
                             columns=MONITORED_COLUMNS, timeout=20.0).start(timeout=10.0)
    except StartupError as exc:
        fail(f"cannot release the uplink: {exc}")
        return
    try:
        done = release_uplink(ovs=OvsFacade(client, timeout=20.0), net=NetFacade())
    except Exception as exc:
        fail(f"cannot release the uplink: {exc}")
        return
    finally:
        client.stop()
    if marker_dir is not None:
        Path(marker_dir, RELEASED_MARKER).write_text("released\n" if done else "no gateway bridge\n")
    if done is None:
        click.echo("no gateway bridge (ovn-bridge-mappings names none that exists): nothing to release")
    else:
        bridge, uplink, addresses = done
        click.echo(f"released {uplink} from {bridge}: {', '.join(map(str, addresses)) or 'no addresses'} "
                   f"back on {uplink}")


def register(cli: click.Group) -> None:
    """Add every core subcommand that lives outside :mod:`ovnk.core.cli`."""
    cli.add_command(controller_command)
    cli.add_command(node_command)
    cli.add_command(release_uplink_command)
    from ovnk.core import cni_cli

    cni_cli.register(cli)
    from ovnk.core.trace import cli as trace_cli

    trace_cli.register(cli)
