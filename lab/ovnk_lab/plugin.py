"""Entry-point module of the lab plugin: it adds ``ovnk sandbox`` and nothing else.

The lab is a separate distribution (``ovnk-lab``) installed into the development
venv only; the product image never contains it. Commands of every installed
plugin are available on the ``ovnk`` command line, so the sandbox needs no
``[plugins] enabled`` entry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ovnk import hookimpl

if TYPE_CHECKING:
    import click


@hookimpl
def ovnk_register_commands(cli: click.Group) -> None:
    from ovnk_lab.cli import sandbox_group

    cli.add_command(sandbox_group)
