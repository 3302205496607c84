"""Entry-point module of the hello plugin: settings, claims, a command, configure."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import click

from ovnk import OwnerType
from ovnk import command_settings
from ovnk import hookimpl
from ovnk import setting

CALLS: list[str] = []

HELLO_ACL = OwnerType(name="Hello", table="ACL", keys=("name",))


@dataclass(frozen=True)
class HelloSettings:
    greeting: str = setting("hello", help="what the hello command prints")
    repeat: int = setting(1, help="how many times", check=lambda v: None if 0 < v < 10 else "must be 1..9")


@hookimpl
def ovnk_add_settings(settings):
    CALLS.append("ovnk_add_settings")
    settings.add("hello", HelloSettings)


@hookimpl
def ovnk_claims(claims):
    CALLS.append("ovnk_claims")
    claims.crd(Path(__file__).parent / "crds" / "hellos.yaml")
    claims.owner_type(HELLO_ACL)
    claims.annotation("example.com/hello")


@hookimpl
def ovnk_configure(config):
    CALLS.append("ovnk_configure:" + config.plugin_settings("hello").greeting)


@hookimpl
def ovnk_register_commands(cli):
    @cli.command("hello")
    def hello():
        """Print the configured greeting."""
        settings = command_settings("hello")
        for _ in range(settings.repeat):
            click.echo(settings.greeting)
