"""``ovnk cni``: the CNI shim on this host (the Helm chart's init step runs ``ovnk cni install``).

The node agent installs the shim itself at every start; this command exists
for deployments where the shim must be in place before the agent runs, and
where the host has no Python of its own (``--portable-python``, see
:mod:`ovnk.cni.portable`).
"""

from __future__ import annotations

import click

from ovnk.core.cli import CliState
from ovnk.core.cli import fail
from ovnk.core.cli import pass_state


@click.group("cni")
def cni_group() -> None:
    """The CNI shim on this host."""


@cni_group.command("install")
@click.option(
    "--portable-python",
    is_flag=True,
    help="Copy this interpreter, the standard library files the shim needs and their shared libraries "
    "into <[cni] bin-dir>/ovnk-python and name that copy in the shim's shebang (for hosts without "
    "this interpreter, e.g. when ovnk runs in a container).",
)
@pass_state
def cni_install(state: CliState, portable_python: bool) -> None:
    """Install the CNI shim as [cni] bin-dir/plugin, with [cni] socket-path as its socket."""
    import logging

    from ovnk.cni import install
    from ovnk.cni import portable

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    settings = state.runtime(configure=False).config.cni
    python = None
    if portable_python:
        try:
            python = portable.install_portable_python(
                settings.bin_dir, shim_source=install.SHIM_SOURCE.read_text(encoding="utf-8")
            )
        except (portable.PortablePythonError, OSError) as exc:
            fail(f"cannot install the portable interpreter into {portable.portable_dir(settings.bin_dir)}: {exc}")
    try:
        dest = install.install_configured_shim(settings, python=python)
    except (ValueError, OSError) as exc:
        fail(f"cannot install the CNI shim into {settings.bin_dir}: {exc}")
        return
    click.echo(f"installed {dest} (interpreter {python or install.shim_interpreter(settings.bin_dir)})")


def register(cli: click.Group) -> None:
    """Add ``ovnk cni`` to the ``ovnk`` group."""
    cli.add_command(cni_group)
