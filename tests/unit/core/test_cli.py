"""The ovnk command line: config show, plugins list, clear errors."""

from __future__ import annotations

from pathlib import Path

from tests.unit.core.test_plugins import good_plugin


def test_cli_config_show_prints_values_and_sources(run_cli, tmp_path: Path) -> None:
    conf = tmp_path / "ovnk.conf"
    conf.write_text("[default]\nmtu = 1300\n")
    result = run_cli("--config", str(conf), "--node-name", "n1", "config", "show",
                     env={"OVNK_DEFAULT_ENCAP_PORT": "7081"})
    assert result.exit_code == 0, result.output
    assert f"mtu = 1300    # file:{conf}" in result.output
    assert "encap-port = 7081    # env:OVNK_DEFAULT_ENCAP_PORT" in result.output
    assert "name = n1    # flag:--node-name" in result.output
    assert "encap-type = geneve    # default" in result.output


def test_cli_invalid_value_is_a_clear_error(run_cli) -> None:
    result = run_cli("--set", "default.mtu=big", "config", "show")
    assert result.exit_code == 1
    assert "ovnk: error: invalid value for [default] mtu: 'big' (from flag:--set default.mtu): expected an integer" in result.output


def test_cli_unknown_plugin_is_a_clear_error(run_cli) -> None:
    result = run_cli("--plugins", "nosuchplugin", "config", "show")
    assert result.exit_code == 1
    assert "plugin 'nosuchplugin' is enabled in the configuration but not installed" in result.output


def test_cli_plugins_list_shows_installed_plugins(run_cli, fake_dists) -> None:
    fake_dists.add("ovnk-alpha", plugins={"alpha": "alpha_plugin"}, version="2.5",
                   modules={"alpha_plugin": good_plugin("alpha", "Alpha")})
    result = run_cli("--plugins", "alpha", "plugins", "list")
    assert result.exit_code == 0, result.output
    assert "alpha  (ovnk-alpha 2.5)  enabled" in result.output
    assert "hooks:   ovnk_add_settings, ovnk_claims, ovnk_configure" in result.output
    assert "owner type Alpha (ACL)" in result.output
    result = run_cli("plugins", "list")
    assert "alpha  (ovnk-alpha 2.5)  disabled" in result.output
    assert "core  (ovnk" in result.output


def test_cli_plugins_list_reports_broken_plugin_without_failing(run_cli, fake_dists) -> None:
    fake_dists.add("ovnk-broken", plugins={"broken": "broken_plugin"}, modules={"broken_plugin": "1/0\n"})
    result = run_cli("plugins", "list")
    assert result.exit_code == 0
    assert "broken  (ovnk-broken 1.0)  disabled" in result.output
    assert "ZeroDivisionError" in result.output
