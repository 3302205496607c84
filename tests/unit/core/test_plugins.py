"""Plugin discovery, enablement and the clear errors of the plugin framework."""

from __future__ import annotations

import pytest

from ovnk.core import bootstrap as bootstrap_mod
from ovnk.core import plugins as plugins_mod
from ovnk.core.config import ConfigInputs
from ovnk.core.errors import ConfigError
from ovnk.core.errors import PluginError

GOOD = """
from dataclasses import dataclass
from ovnk import hookimpl, setting, OwnerType

CALLS = []

@dataclass(frozen=True)
class Settings:
    level: int = setting(3, help="a level", check=lambda v: None if v < 10 else "must be < 10")

@hookimpl
def ovnk_add_settings(settings):
    settings.add("{name}", Settings)

@hookimpl
def ovnk_claims(claims):
    claims.owner_type(OwnerType(name="{owner}", table="ACL"))

@hookimpl
def ovnk_configure(config):
    CALLS.append(("configure", config.plugin_settings("{name}").level))
"""


def good_plugin(name: str, owner: str) -> str:
    return GOOD.replace("{name}", name).replace("{owner}", owner)


def test_plugins_discovered_through_entry_points_and_enabled_by_config(fake_dists) -> None:
    fake_dists.add("ovnk-alpha", plugins={"alpha": "alpha_plugin"}, modules={"alpha_plugin": good_plugin("alpha", "Alpha")})
    fake_dists.add("ovnk-beta", plugins={"beta": "beta_plugin"}, modules={"beta_plugin": good_plugin("beta", "Beta")})
    found = plugins_mod.discover()
    assert {"alpha", "beta"} <= set(found)
    assert found["alpha"].distribution == "ovnk-alpha"
    rt = bootstrap_mod.bootstrap(ConfigInputs(env={"OVNK_PLUGINS": "alpha", "OVNK_ALPHA_LEVEL": "7"}))
    assert "alpha" in rt.pm.plugin_names()
    assert "beta" not in rt.pm.plugin_names()
    import alpha_plugin

    assert alpha_plugin.CALLS == [("configure", 7)]
    assert rt.config.plugin_settings("alpha").level == 7
    assert rt.config.source_of("alpha", "level") == "env:OVNK_ALPHA_LEVEL"
    assert rt.claims.owners.get("ACL", "Alpha") is not None


def test_plugins_disabled_plugin_is_never_imported_and_its_hooks_never_run(fake_dists) -> None:
    fake_dists.add("ovnk-gamma", plugins={"gamma": "gamma_plugin"},
                   modules={"gamma_plugin": "raise RuntimeError('imported although disabled')\n"})
    rt = bootstrap_mod.bootstrap(ConfigInputs(env={}))
    assert "gamma" not in rt.pm.plugin_names()


def test_plugins_unknown_plugin_name_fails_with_clear_message(fake_dists) -> None:
    fake_dists.add("ovnk-alpha", plugins={"alpha": "alpha_plugin"}, modules={"alpha_plugin": good_plugin("alpha", "Alpha")})
    with pytest.raises(PluginError) as info:
        bootstrap_mod.bootstrap(ConfigInputs(env={"OVNK_PLUGINS": "alpha,egresip"}))
    message = str(info.value)
    assert "plugin 'egresip' is enabled in the configuration but not installed" in message
    assert "alpha" in message


def test_plugins_import_failure_names_the_plugin(fake_dists) -> None:
    fake_dists.add("ovnk-broken", plugins={"broken": "broken_plugin"},
                   modules={"broken_plugin": "import not_a_module_anywhere\n"})
    with pytest.raises(PluginError) as info:
        bootstrap_mod.bootstrap(ConfigInputs(env={"OVNK_PLUGINS": "broken"}))
    message = str(info.value)
    assert "plugin 'broken' (distribution ovnk-broken 1.0) failed to import broken_plugin" in message
    assert "ModuleNotFoundError" in message


def test_plugins_duplicate_claims_name_both_plugins(fake_dists) -> None:
    fake_dists.add("ovnk-one", plugins={"one": "one_plugin"}, modules={"one_plugin": good_plugin("one", "Same")})
    fake_dists.add("ovnk-two", plugins={"two": "two_plugin"}, modules={"two_plugin": good_plugin("two", "Same")})
    with pytest.raises(PluginError) as info:
        bootstrap_mod.bootstrap(ConfigInputs(env={"OVNK_PLUGINS": "one,two"}))
    message = str(info.value)
    assert "owner type Same (ACL)" in message
    assert "'one'" in message and "'two'" in message


def test_plugins_duplicate_settings_section_names_both_plugins(fake_dists) -> None:
    fake_dists.add("ovnk-one", plugins={"one": "one_plugin"}, modules={"one_plugin": good_plugin("shared", "A")})
    fake_dists.add("ovnk-two", plugins={"two": "two_plugin"}, modules={"two_plugin": good_plugin("shared", "B")})
    with pytest.raises(Exception) as info:
        bootstrap_mod.bootstrap(ConfigInputs(env={"OVNK_PLUGINS": "one,two"}))
    assert "[shared]" in str(info.value) and "'one'" in str(info.value) and "'two'" in str(info.value)


def test_plugins_invalid_plugin_setting_names_key_and_value(fake_dists) -> None:
    fake_dists.add("ovnk-alpha", plugins={"alpha": "alpha_plugin"}, modules={"alpha_plugin": good_plugin("alpha", "Alpha")})
    with pytest.raises(ConfigError) as info:
        bootstrap_mod.bootstrap(ConfigInputs(env={"OVNK_PLUGINS": "alpha", "OVNK_ALPHA_LEVEL": "12"}))
    assert "invalid value for [alpha] level: '12' (from env:OVNK_ALPHA_LEVEL): must be < 10" in str(info.value)


def test_plugins_unknown_hook_is_rejected_by_check_pending(fake_dists) -> None:
    fake_dists.add("ovnk-typo", plugins={"typo": "typo_plugin"}, modules={"typo_plugin": """
from ovnk import hookimpl

@hookimpl
def ovnk_pod_txnn(ctx, txn):
    pass
"""})
    with pytest.raises(PluginError) as info:
        bootstrap_mod.bootstrap(ConfigInputs(env={"OVNK_PLUGINS": "typo"}))
    assert "plugin 'typo' implements an unknown hook" in str(info.value)
    assert "ovnk_pod_txnn" in str(info.value)


def test_plugins_wrong_hook_arguments_are_rejected(fake_dists) -> None:
    fake_dists.add("ovnk-args", plugins={"args": "args_plugin"}, modules={"args_plugin": """
from ovnk import hookimpl

@hookimpl
def ovnk_configure(config, extra):
    pass
"""})
    with pytest.raises(PluginError) as info:
        bootstrap_mod.bootstrap(ConfigInputs(env={"OVNK_PLUGINS": "args"}))
    assert "args" in str(info.value) and "extra" in str(info.value)


def test_plugins_two_distributions_same_plugin_name(fake_dists) -> None:
    fake_dists.add("ovnk-a", plugins={"dup": "dup_a"}, modules={"dup_a": ""})
    fake_dists.add("ovnk-b", plugins={"dup": "dup_b"}, modules={"dup_b": ""})
    with pytest.raises(PluginError, match="plugin 'dup' is provided twice"):
        plugins_mod.discover()


def test_plugins_manager_factory_builds_independent_managers() -> None:
    a = plugins_mod.get_plugin_manager(discovered={})
    b = plugins_mod.get_plugin_manager(discovered={})
    assert a is not b
    assert a.plugin_names() == b.plugin_names()
    assert all(name.startswith("core.") for name in a.plugin_names())


def test_plugins_only_ovnk_prefixed_attributes_are_hooks(pm) -> None:
    class Plugin:
        def helper(self):  # not a hook: ignored
            raise AssertionError

        ovnk_not_a_function = 3

    pm.register(Plugin(), name="odd")
    assert pm.hooks_of("odd") == []


STATEFUL = """
from ovnk import hookimpl, OwnerType

class Runtime:
    def __init__(self, level):
        self.level = level

    @hookimpl
    def ovnk_claims(self, claims):
        claims.owner_type(OwnerType(name="StatefulThing", table="ACL"))

    @hookimpl
    def ovnk_restore(self, ctx):
        raise RuntimeError("restore exploded")

@hookimpl
def ovnk_configure(config, pluginmanager):
    pluginmanager.register_runtime("stateful", Runtime(1))

@hookimpl
def ovnk_unconfigure(config):
    pass
"""


def test_hook_configure_registers_a_runtime_object_attributed_to_its_plugin(fake_dists) -> None:
    fake_dists.add("ovnk-stateful", plugins={"stateful": "stateful_plugin"}, modules={"stateful_plugin": STATEFUL})
    rt = bootstrap_mod.bootstrap(ConfigInputs(env={"OVNK_PLUGINS": "stateful"}), defaults=())
    pm = rt.pm
    runtime = pm.runtime_of("stateful")
    assert runtime is not None and runtime.level == 1
    assert pm.get_name(runtime) == "stateful:runtime"
    assert pm.owner_plugin("stateful:runtime") == "stateful"
    assert "ovnk_restore" in pm.hooks_of("stateful") and "ovnk_configure" in pm.hooks_of("stateful")
    # Claims made by the runtime object belong to the plugin.
    from ovnk.core.bootstrap import collect_claims

    assert collect_claims(pm).owners.plugin_of(collect_claims(pm).owners.get("ACL", "StatefulThing")) == "stateful"
    with pytest.raises(PluginError, match="plugin 'stateful' failed in ovnk_restore: RuntimeError: restore exploded"):
        pm.call_each("ovnk_restore", ctx=None)
    with pytest.raises(PluginError, match="registered its runtime object twice"):
        pm.register_runtime("stateful", object())
    with pytest.raises(PluginError, match="no such plugin is registered"):
        pm.register_runtime("ghost", object())
    rt.shutdown()
    assert pm.runtime_of("stateful") is None
