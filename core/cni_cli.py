"""``ovnk cni``: the CNI shim on this host (the Helm chart's init step runs ``ovnk cni install``).

The node agent installs the shim itself at every start; ``install`` exists for
deployments where the shim must be in place before the agent runs, and, for the
Python shim, where the host has no Python of its own (``--portable-python``,
see :mod:`ovnk.cni.portable`). ``build-shim`` compiles the native shim (the
setup script and the image build run it).
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
    help="With [cni] shim = python: copy this interpreter, the standard library files the shim needs "
    "and their shared libraries into <[cni] bin-dir>/ovnk-python and name that copy in the shim's "
    "shebang (for hosts without this interpreter, e.g. when ovnk runs in a container). The native "
    "shim needs nothing on the host, so the flag changes nothing for it.",
)
@pass_state
def cni_install(state: CliState, portable_python: bool) -> None:
    """Install the CNI shim ([cni] shim) as [cni] bin-dir/plugin, with [cni] socket-path as its socket."""
    import logging

    from ovnk.cni import install
    from ovnk.cni import portable

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    settings = state.runtime(configure=False).config.cni
    python = None
    if portable_python and settings.shim == "python":
        try:
            python = portable.install_portable_python(
                settings.bin_dir, shim_source=install.SHIM_SOURCE.read_text(encoding="utf-8")
            )
        except (portable.PortablePythonError, OSError) as exc:
            fail(f"cannot install the portable interpreter into {portable.portable_dir(settings.bin_dir)}: {exc}")
    try:
        dest = install.install_configured_shim(settings, python=python)
    except (ValueError, RuntimeError, OSError) as exc:
        fail(f"cannot install the CNI shim into {settings.bin_dir}: {exc}")
        return
    if settings.shim == "native":
        click.echo(f"installed {dest} (native, built from {install.NATIVE_SOURCE.name})")
    else:
        click.echo(f"installed {dest} (interpreter {python or install.shim_interpreter(settings.bin_dir)})")


@cni_group.command("build-shim")
@click.option("--output", type=click.Path(dir_okay=False), default=None,
              help="where to write the binary (default: <sys.prefix>/libexec/ovnk/ovnk-cni-shim, "
              "where `ovnk cni install` and the node agent look for it)")
@click.option("--cc", default="gcc", show_default=True, help="the C compiler")
def cni_build_shim(output: str | None, cc: str) -> None:
    """Compile the native CNI shim (static; skipped when already built from the same source)."""
    from pathlib import Path

    from ovnk.cni import install

    try:
        built = install.build_native_shim(Path(output) if output else None, cc=cc)
    except (RuntimeError, OSError) as exc:
        fail(f"cannot build the native CNI shim: {exc}")
        return
    click.echo(f"native CNI shim: {built}")


def register(cli: click.Group) -> None:
    """Add ``ovnk cni`` to the ``ovnk`` group."""
    cli.add_command(cni_group)
