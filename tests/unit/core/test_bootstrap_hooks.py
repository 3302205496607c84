"""The bootstrap hooks, called through the real bootstrap with fake (but real dist-info) distributions."""

from __future__ import annotations

import pytest

from ovnk.core import bootstrap as bootstrap_mod
from ovnk.core.config import ConfigInputs
from ovnk.core.errors import PluginError

PUBLISHER = '''
from ovnk import hookimpl, hookspec

class Specs:
    @hookspec(firstresult=True)
    def ovnk_publisher_assigned(self, name):
        """Which node got ``name`` (plugin-published hook)."""

@hookimpl
def ovnk_addhooks(pluginmanager):
    pluginmanager.add_hookspecs(Specs)
'''

SUBSCRIBER = '''
from ovnk import hookimpl

@hookimpl
def ovnk_publisher_assigned(name):
    return f"node-for-{name}"
'''

LIFECYCLE = '''
from pathlib import Path
from dataclasses import dataclass
from ovnk import hookimpl, setting, OwnerType

EVENTS = []

@dataclass(frozen=True)
class LifeSettings:
    word: str = setting("x", help="a word")

@hookimpl
def ovnk_add_settings(settings):
    EVENTS.append("settings")
    settings.add("life", LifeSettings)

@hookimpl
def ovnk_claims(claims):
    EVENTS.append("claims")
    claims.owner_type(OwnerType("Life", "ACL"))
    claims.annotation("example.com/life")
    claims.label("example.com/alive")

@hookimpl
def ovnk_configure(config):
    EVENTS.append("configure:" + config.plugin_settings("life").word)

@hookimpl
def ovnk_unconfigure(config):
    EVENTS.append("unconfigure")
'''


def test_hook_ovnk_addhooks_lets_plugins_publish_hooks_to_each_other(fake_dists) -> None:
    fake_dists.add("ovnk-pub", plugins={"publisher": "pub_plugin"}, modules={"pub_plugin": PUBLISHER})
    fake_dists.add("ovnk-sub", plugins={"subscriber": "sub_plugin"}, modules={"sub_plugin": SUBSCRIBER})
    rt = bootstrap_mod.bootstrap(ConfigInputs(env={"OVNK_PLUGINS": "publisher,subscriber"}))
    assert rt.pm.hook.ovnk_publisher_assigned(name="eip1") == "node-for-eip1"


def test_hook_ovnk_addhooks_missing_publisher_is_a_clear_error(fake_dists) -> None:
    fake_dists.add("ovnk-sub", plugins={"subscriber": "sub_plugin"}, modules={"sub_plugin": SUBSCRIBER})
    with pytest.raises(PluginError, match="plugin 'subscriber' implements an unknown hook"):
        bootstrap_mod.bootstrap(ConfigInputs(env={"OVNK_PLUGINS": "subscriber"}))


def test_hook_ovnk_add_settings_claims_configure_unconfigure_in_order(fake_dists) -> None:
    fake_dists.add("ovnk-life", plugins={"life": "life_plugin"}, modules={"life_plugin": LIFECYCLE})
    rt = bootstrap_mod.bootstrap(ConfigInputs(env={"OVNK_PLUGINS": "life", "OVNK_LIFE_WORD": "hi"}))
    import life_plugin

    assert life_plugin.EVENTS == ["settings", "claims", "configure:hi"]
    rt.shutdown()
    assert life_plugin.EVENTS[-1] == "unconfigure"


def test_hook_ovnk_claims_records_the_owner_of_each_claim(fake_dists) -> None:
    fake_dists.add("ovnk-life", plugins={"life": "life_plugin"}, modules={"life_plugin": LIFECYCLE})
    rt = bootstrap_mod.bootstrap(ConfigInputs(env={"OVNK_PLUGINS": "life"}))
    assert rt.claims.owners.plugin_of(rt.claims.owners.get("ACL", "Life")) == "life"
    assert rt.claims.annotations["example.com/life"] == "life"
    assert rt.claims.labels["example.com/alive"] == "life"
    assert "annotation k8s.ovn.org/pod-networks" in rt.claims.by_plugin("core")


def test_hook_ovnk_configure_not_called_for_read_only_commands(fake_dists) -> None:
    fake_dists.add("ovnk-life", plugins={"life": "life_plugin"}, modules={"life_plugin": LIFECYCLE})
    bootstrap_mod.bootstrap(ConfigInputs(env={"OVNK_PLUGINS": "life"}), configure=False)
    import life_plugin

    assert life_plugin.EVENTS == ["settings", "claims"]


def test_hook_ovnk_unconfigure_runs_for_every_enabled_plugin(fake_dists) -> None:
    fake_dists.add("ovnk-life", plugins={"life": "life_plugin"}, modules={"life_plugin": LIFECYCLE})
    rt = bootstrap_mod.bootstrap(ConfigInputs(env={}))
    rt.shutdown()  # not enabled: its unconfigure never runs
    import sys

    assert "life_plugin" not in sys.modules


def test_hook_ovnk_register_commands_for_every_installed_plugin(fake_dists, run_cli) -> None:
    """Commands do not depend on ``[plugins] enabled``; a broken plugin costs only its own commands."""
    fake_dists.add("ovnk-cmd", plugins={"cmd": "cmd_plugin"}, modules={"cmd_plugin": """
import click
from ovnk import hookimpl

@hookimpl
def ovnk_register_commands(cli):
    @cli.command("wave")
    def wave():
        click.echo("waving")
"""})
    fake_dists.add("ovnk-broken", plugins={"broken": "broken_plugin"}, modules={"broken_plugin": """
raise RuntimeError("cannot import me")
"""})
    assert run_cli("--plugins", "cmd", "wave").output.endswith("waving\n")
    result = run_cli("wave")
    assert result.exit_code == 0
    assert result.output.endswith("waving\n")
    assert "plugin 'broken': its commands are unavailable" in result.output
    assert "cannot import me" in result.output
    missing = run_cli("nope")
    assert missing.exit_code != 0 and "No such command 'nope'" in missing.output
