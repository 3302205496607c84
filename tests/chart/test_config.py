"""The rendered ovnk.conf is read by ovnk's own loader: the chart and core/config.py agree on every key."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ovnk.core import config as config_mod
from ovnk.core.config import ConfigInputs
from ovnk.core.settings import env_name

from .conftest import REPO
from .conftest import TEMP_PLUGIN
from .conftest import first_party_plugins
from .conftest import plugin_values
from .conftest import render

ENTRYPOINT = REPO / "hack" / "image" / "ovnk-entrypoint"


def write_config(tmp_path: Path, values: dict[str, Any] | None = None, **kwargs: Any) -> Path:
    path = tmp_path / "ovnk.conf"
    path.write_text(render(values, **kwargs).config_text())
    return path


def test_default_config_loads_with_the_chart_values(tmp_path: Path) -> None:
    path = write_config(tmp_path, namespace="net-system")
    cfg = config_mod.load(ConfigInputs(config_file=str(path), env={}))
    assert cfg.default.mtu == 1400
    assert [str(s) for s in cfg.default.cluster_subnets] == ["10.244.0.0/16/24"]
    assert cfg.default.encap_type == "geneve"
    assert cfg.kubernetes.service_cidrs == (ipaddress.ip_network("10.96.0.0/16"),)
    assert cfg.kubernetes.kubeconfig == ""  # the in-cluster service account
    assert cfg.gateway.mode == "shared"
    assert cfg.logging.level == "info"
    assert cfg.controller.leader_election is True
    assert (cfg.controller.lease_namespace, cfg.controller.lease_name) == ("net-system", "ovnk-controller")
    assert (cfg.controller.lease_duration, cfg.controller.renew_deadline, cfg.controller.retry_period) == (15, 10, 2)
    assert cfg.controller.metrics_bind_address == "0.0.0.0:9409"
    # The agent's health endpoints stay on the node's loopback; /metrics too in the file, the pod's
    # OVNK_NODE_METRICS_BIND_ADDRESS moves it to the node's address (tests/chart/test_monitoring.py).
    assert cfg.node.health_bind_address == cfg.node.metrics_bind_address == "127.0.0.1:9410"
    # TLS by default: the controller's client certificate, the node CA for the chassis certificates.
    assert cfg.ovnnorth.client_cert == cfg.ovnsouth.client_cert == "/etc/ovnk/ssl/cert/tls.crt"
    assert (cfg.node.chassis_ca_cert, cfg.node.chassis_ca_key) == ("/etc/ovnk/ssl/node-ca/tls.crt",
                                                                    "/etc/ovnk/ssl/node-ca/tls.key")
    assert (cfg.cni.bin_dir, cfg.cni.conf_dir) == ("/opt/cni/bin", "/etc/cni/net.d")
    assert cfg.plugins.enabled == ()
    # Every key in the file came from the file (nothing silently ignored).
    rendered_keys = {(s, k) for s, keys in render(namespace="net-system").ini().items() for k in keys}
    assert rendered_keys
    assert all(cfg.source_of(s, k) == f"file:{path}" for s, k in rendered_keys)


def test_every_value_reaches_its_key(tmp_path: Path) -> None:
    values = {
        "clusterSubnets": "10.128.0.0/14/23,fd00:10:244::/48/64",
        "serviceCIDR": "172.30.0.0/16,fd00:10:96::/112",
        "mtu": 8900,
        "encap": {"type": "vxlan", "port": 4789},
        "gateway": {"interface": "breth0", "nextHop": "192.168.1.1", "vlanId": 20, "nodeportTemplates": False},
        "logLevel": "debug",
        "ovnDb": {"mode": "raft", "ssl": {"enabled": True}},
        "controller": {"replicas": 3, "metricsPort": 19409,
                       "leaderElection": {"leaseDuration": 137, "renewDeadline": 107, "retryPeriod": 26}},
        "node": {"healthPort": 19410, "metricsPort": 19476, "metricsBindHost": "0.0.0.0"},
        "cni": {"binDir": "/usr/libexec/cni", "confDir": "/etc/kubernetes/cni/net.d"},
        "extraConfig": {"controller": {"workers": 8, "repair-mode": "log"}, "ovs": {"datapath-type": "netdev"}},
    }
    cfg = config_mod.load(ConfigInputs(config_file=str(write_config(tmp_path, values)), env={}))
    assert [str(s) for s in cfg.default.cluster_subnets] == ["10.128.0.0/14/23", "fd00:10:244::/48/64"]
    assert [str(n) for n in cfg.kubernetes.service_cidrs] == ["172.30.0.0/16", "fd00:10:96::/112"]
    assert (cfg.default.mtu, cfg.default.encap_type, cfg.default.encap_port) == (8900, "vxlan", 4789)
    assert (cfg.gateway.interface, cfg.gateway.next_hop, cfg.gateway.vlan_id) == ("breth0", "192.168.1.1", 20)
    assert cfg.gateway.nodeport_templates is False
    assert cfg.logging.level == "debug"
    assert (cfg.controller.lease_duration, cfg.controller.renew_deadline, cfg.controller.retry_period) == (
        137, 107, 26)
    assert cfg.controller.metrics_bind_address == "0.0.0.0:19409"
    assert (cfg.node.health_bind_address, cfg.node.metrics_bind_address) == ("127.0.0.1:19410", "0.0.0.0:19476")
    assert (cfg.controller.workers, cfg.controller.repair_mode, cfg.ovs.datapath_type) == (8, "log", "netdev")
    assert (cfg.cni.bin_dir, cfg.cni.conf_dir) == ("/usr/libexec/cni", "/etc/kubernetes/cni/net.d")
    for section in (cfg.ovnnorth, cfg.ovnsouth):
        assert (section.client_privkey, section.client_cert, section.client_cacert) == (
            "/etc/ovnk/ssl/cert/tls.key", "/etc/ovnk/ssl/cert/tls.crt", "/etc/ovnk/ssl/ca/ca.crt")


def test_the_environment_the_pods_set_maps_onto_config_keys(tmp_path: Path) -> None:
    """The entrypoint exports the database addresses, the DaemonSet the node name: both are config keys."""
    rendered = render()
    agent = rendered.containers("DaemonSet", "-node")["node"]
    assert env_name("node", "name") in {e["name"] for e in agent["env"]}
    entrypoint = ENTRYPOINT.read_text()
    for section in ("ovnnorth", "ovnsouth"):
        assert f"export {env_name('ovnnorth', 'address')} {env_name('ovnsouth', 'address')}" in entrypoint
        assert f"{env_name(section, 'address')}=" in entrypoint
    env = {
        "OVNK_OVNNORTH_ADDRESS": "ssl:10.89.0.2:6641,ssl:10.89.0.3:6641,ssl:10.89.0.4:6641",
        "OVNK_OVNSOUTH_ADDRESS": "ssl:10.89.0.2:6642",
        "OVNK_NODE_NAME": "worker-1",
    }
    path = tmp_path / "ovnk.conf"
    path.write_text(rendered.config_text())
    cfg = config_mod.load(ConfigInputs(config_file=str(path), env=env))
    assert cfg.ovnnorth.address == env["OVNK_OVNNORTH_ADDRESS"]
    assert cfg.ovnsouth.address == env["OVNK_OVNSOUTH_ADDRESS"]
    assert cfg.node_name == "worker-1"


def test_config_show_accepts_the_config_with_every_first_party_plugin(
    tmp_path: Path, run_cli: Callable[..., Any]
) -> None:
    """The full start-up path (plugins loaded, their sections validated) of `ovnk config show`."""
    for values in (None, plugin_values(first_party_plugins()), plugin_values([], disabled=first_party_plugins())):
        path = write_config(tmp_path, values)
        result = run_cli("--config", str(path), "config", "show", env={})
        assert result.exit_code == 0, result.output
        assert f"# config file: {path}" in result.output
        assert "metrics-bind-address = 0.0.0.0:9409    # file:" in result.output


PLUGIN_MODULE = f"""
from dataclasses import dataclass

from ovnk import hookimpl
from ovnk import setting


@dataclass(frozen=True)
class Settings:
    greeting: str = setting("hello", help="what to say")
    repeat: int = setting(1, help="how often", check=lambda v: None if 0 < v < 10 else "must be 1..9")


@hookimpl
def ovnk_add_settings(settings):
    settings.add("{TEMP_PLUGIN}", Settings)
"""


def test_plugin_settings_reach_the_plugins_section(
    tmp_path: Path, chart_tree: Path, fake_dists: Any, run_cli: Callable[..., Any]
) -> None:
    """A plugin's settings map becomes its [<plugin>] section, validated by the plugin's own dataclass."""
    fake_dists.add("ovnk-charttest", plugins={TEMP_PLUGIN: "ovnkcharttest_plugin"},
                   modules={"ovnkcharttest_plugin": PLUGIN_MODULE})
    values = {"plugins": {TEMP_PLUGIN: {"enabled": True, "settings": {"greeting": "hi there", "repeat": 3}}}}
    path = write_config(tmp_path, values, chart=chart_tree)
    result = run_cli("--config", str(path), "config", "show", env={})
    assert result.exit_code == 0, result.output
    section = result.output.split(f"[{TEMP_PLUGIN}]\n", 1)[1]
    assert f"greeting = hi there    # file:{path}" in section
    assert f"repeat = 3    # file:{path}" in section
    assert f"enabled = {TEMP_PLUGIN}    # file:{path}" in result.output

    # A key the plugin does not know passes the chart but not ovnk: the error names it.
    values["plugins"][TEMP_PLUGIN]["settings"]["colour"] = "red"
    path = write_config(tmp_path, values, chart=chart_tree)
    result = run_cli("--config", str(path), "config", "show", env={})
    assert result.exit_code == 1
    assert f"unknown setting [{TEMP_PLUGIN}] colour" in result.output
