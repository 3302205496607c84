"""The typed configuration: layers, precedence, validation, sources."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from ovnk.core import config as config_mod
from ovnk.core.config import ConfigInputs
from ovnk.core.errors import ConfigError


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "ovnk.conf"
    path.write_text(text)
    return str(path)


def test_config_defaults_match_ovn_kubernetes_helm_defaults() -> None:
    cfg = config_mod.load(ConfigInputs(env={}))
    assert cfg.default.mtu == 1400
    assert [str(s) for s in cfg.default.cluster_subnets] == ["10.244.0.0/16/24"]
    assert cfg.kubernetes.service_cidrs == (ipaddress.ip_network("10.96.0.0/16"),)
    assert cfg.gateway.v4_join_subnet == ipaddress.IPv4Network("100.64.0.0/16")
    assert cfg.cni.plugin == "ovn-k8s-cni-overlay"
    assert cfg.controller.name == "default-network-controller"
    assert cfg.source_of("default", "mtu") == "default"


def test_config_precedence_flag_over_env_over_file_over_default(tmp_path: Path) -> None:
    path = write(tmp_path, "[default]\nmtu = 1300\nencap-port = 7000\n[node]\nname = from-file\n")
    env = {"OVNK_DEFAULT_MTU": "1200", "OVNK_NODE_NAME": "from-env"}
    cfg = config_mod.load(
        ConfigInputs(config_file=path, env=env, assignments=["default.mtu=1100"], flags={"node_name": None})
    )
    assert cfg.default.mtu == 1100
    assert cfg.source_of("default", "mtu") == "flag:--set default.mtu"
    assert cfg.default.encap_port == 7000
    assert cfg.source_of("default", "encap-port") == f"file:{path}"
    assert cfg.node.name == "from-env"
    assert cfg.source_of("node", "name") == "env:OVNK_NODE_NAME"
    cfg2 = config_mod.load(ConfigInputs(config_file=path, env=env, flags={"node_name": "from-flag"}))
    assert cfg2.node.name == "from-flag"
    assert cfg2.source_of("node", "name") == "flag:--node-name"
    assert cfg2.default.mtu == 1200


def test_config_cluster_subnets_dual_stack_and_host_prefix_default() -> None:
    cfg = config_mod.load(ConfigInputs(env={"OVNK_DEFAULT_CLUSTER_SUBNETS": "10.128.0.0/14/23, fd00:10:244::/48"}))
    subnets = cfg.default.cluster_subnets
    assert [(str(s.network), s.host_prefix) for s in subnets] == [("10.128.0.0/14", 23), ("fd00:10:244::/48", 64)]


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"OVNK_DEFAULT_MTU": "abc"}, "invalid value for [default] mtu: 'abc' (from env:OVNK_DEFAULT_MTU): expected an integer"),
        ({"OVNK_DEFAULT_MTU": "70000"}, "[default] mtu: '70000'"),
        ({"OVNK_DEFAULT_CLUSTER_SUBNETS": "10.0.0.0/33"}, "[default] cluster-subnets: '10.0.0.0/33'"),
        ({"OVNK_DEFAULT_CLUSTER_SUBNETS": "10.0.0.0/16/8"}, "host prefix /8 does not fit"),
        ({"OVNK_GATEWAY_MODE": "local"}, "[gateway] mode: 'local'"),
        ({"OVNK_OVNNORTH_ADDRESS": "http://x"}, "is not an OVSDB remote"),
        ({"OVNK_CONTROLLER_REPAIR_MODE": "maybe"}, "expected one of off, log, repair"),
        ({"OVNK_CNI_REMOVE_CONF_ON_EXIT": "perhaps"}, "expected a boolean"),
    ],
)
def test_config_invalid_value_names_key_and_value(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_mod.load(ConfigInputs(env=env))
    assert fragment in str(info.value)


def test_config_cross_field_validation(tmp_path: Path) -> None:
    path = write(tmp_path, "[controller]\nlease-duration = 5\nrenew-deadline = 10\n")
    with pytest.raises(ConfigError, match=r"\[controller\].*renew-deadline must be shorter"):
        config_mod.load(ConfigInputs(config_file=path, env={}))


def test_config_unknown_key_and_section_are_errors(tmp_path: Path) -> None:
    path = write(tmp_path, "[default]\nmtuu = 1400\n")
    with pytest.raises(ConfigError, match=r"unknown setting \[default\] mtuu"):
        config_mod.load(ConfigInputs(config_file=path, env={}))
    path = write(tmp_path, "[kubernets]\nkubeconfig = x\n")
    with pytest.raises(ConfigError, match=r"unknown config section \[kubernets\]"):
        config_mod.load(ConfigInputs(config_file=path, env={}))


def test_config_section_of_installed_but_disabled_plugin_is_accepted(tmp_path: Path) -> None:
    path = write(tmp_path, "[egressip]\nreachability-total-timeout = 3\n")
    cfg = config_mod.load(ConfigInputs(config_file=path, env={}), optional_sections=["egressip"])
    assert "egressip" not in cfg.plugin_sections


def test_config_missing_or_broken_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        config_mod.load(ConfigInputs(config_file=str(tmp_path / "nope.conf"), env={}))
    path = write(tmp_path, "mtu = 3\n")
    with pytest.raises(ConfigError, match="not valid INI"):
        config_mod.load(ConfigInputs(config_file=path, env={}))


def test_config_enabled_plugins_from_env_short_form() -> None:
    inputs = ConfigInputs(env={"OVNK_PLUGINS": "egressip, multicast"})
    assert config_mod.enabled_plugins(inputs) == ("egressip", "multicast")
    inputs = ConfigInputs(env={"OVNK_PLUGINS": "egressip"}, flags={"plugins": "multicast"})
    assert config_mod.enabled_plugins(inputs) == ("multicast",)


def test_config_is_frozen() -> None:
    cfg = config_mod.load(ConfigInputs(env={}))
    with pytest.raises(AttributeError):
        cfg.default.mtu = 9000  # type: ignore[misc]
