"""Registers the process and tooling subcommands on the ``ovnk`` group.

Each command imports its implementation only when invoked, so ``ovnk --help``
stays fast.
"""

from __future__ import annotations

import click


def register(cli: click.Group) -> None:
    """Add every core subcommand that lives outside :mod:`ovnk.core.cli`."""
