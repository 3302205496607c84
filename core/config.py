"""The one typed configuration model of ovnk.

File format: INI, like ovn-kubernetes' ``ovnkube.conf`` (``docs/configuration.md``),
one ``[section]`` per dataclass below plus one ``[<plugin>]`` section per
enabled plugin. Precedence, highest first: ``--set section.key=value`` and the
convenience flags, ``OVNK_<SECTION>_<KEY>`` environment variables, the file,
the defaults written here.

:func:`load` only parses; :func:`ovnk.core.bootstrap.bootstrap` combines it with
plugin loading, because the enabled plugins decide which extra sections exist.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from typing import Any
from typing import Literal

from ovnk.core import settings as s
from ovnk.core.errors import ConfigError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_CONFIG_FILE = "/etc/ovnk/ovnk.conf"


@dataclass(frozen=True)
class ClusterSubnet:
    """One ``CIDR/hostPrefix`` entry of ``cluster-subnets`` (``10.244.0.0/16/24``)."""

    network: IPNetwork
    host_prefix: int

    def __str__(self) -> str:
        return f"{self.network}/{self.host_prefix}"

    @classmethod
    def parse(cls, text: str) -> ClusterSubnet:
        text = text.strip()
        parts = text.split("/")
        if len(parts) not in (2, 3):
            raise ValueError(f"{text!r} is not CIDR or CIDR/hostPrefix")
        network = ipaddress.ip_network("/".join(parts[:2]), strict=True)
        if len(parts) == 3:
            host_prefix = int(parts[2])
        else:
            host_prefix = 24 if network.version == 4 else 64
        if not network.prefixlen <= host_prefix <= network.max_prefixlen - 2:
            raise ValueError(f"host prefix /{host_prefix} does not fit in {network}")
        return cls(network=network, host_prefix=host_prefix)


def _parse_cluster_subnets(text: str) -> tuple[ClusterSubnet, ...]:
    items = tuple(ClusterSubnet.parse(p) for p in text.split(",") if p.strip())
    if not items:
        raise ValueError("at least one cluster subnet is required")
    return items


def _parse_networks(text: str) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(p.strip(), strict=True) for p in text.split(",") if p.strip())


def _range(lo: int, hi: int) -> Any:
    def check(value: int) -> str | None:
        return None if lo <= value <= hi else f"must be between {lo} and {hi}"

    return check


def _positive(value: float) -> str | None:
    return None if value > 0 else "must be greater than 0"


def _not_negative(value: float) -> str | None:
    return None if value >= 0 else "must be 0 or more"


def _address(value: str) -> str | None:
    """Accept an OVSDB remote list: unix:, tcp:, ssl: entries separated by commas."""
    for part in value.split(","):
        part = part.strip()
        if not part.startswith(("unix:", "tcp:", "ssl:")):
            return f"{part!r} is not an OVSDB remote (unix:PATH, tcp:IP:PORT or ssl:IP:PORT)"
    return None


def _bind_address(value: str) -> str | None:
    if value == "":
        return None
    _host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        return "expected HOST:PORT (or empty to disable)"
    return None


@dataclass(frozen=True)
class DefaultSettings:
    """``[default]``: the cluster network itself."""

    mtu: int = s.setting(1400, help="MTU of pod interfaces", check=_range(576, 65000))
    cluster_subnets: tuple[ClusterSubnet, ...] = s.setting(
        (ClusterSubnet(ipaddress.ip_network("10.244.0.0/16"), 24),),
        help="pod networks as CIDR/hostPrefix, comma separated (IPv4 first for dual stack)",
        parse=_parse_cluster_subnets,
    )
    encap_type: Literal["geneve", "vxlan"] = s.setting("geneve", help="tunnel encapsulation")
    encap_port: int = s.setting(6081, help="tunnel UDP port", check=_range(1, 65535))
    inactivity_probe: int = s.setting(
        100000, help="OVSDB client inactivity probe in ms (0 disables)", check=_range(0, 3600000)
    )
    db_txn_timeout: float = s.setting(100.0, help="seconds before an NB transaction gives up", check=_positive)


@dataclass(frozen=True)
class KubernetesSettings:
    """``[kubernetes]``: how to reach the API server and the service network."""

    kubeconfig: str = s.setting("", help="kubeconfig path; empty means in-cluster service account")
    service_cidrs: tuple[IPNetwork, ...] = s.setting(
        (ipaddress.ip_network("10.96.0.0/16"),), help="service CIDRs", parse=_parse_networks
    )
    request_timeout: float = s.setting(30.0, help="seconds for one API request", check=_positive)
    qps: float = s.setting(200.0, help="client-side request rate limit per second", check=_positive)


@dataclass(frozen=True)
class OvnDbSettings:
    """``[ovnnorth]``: the OVN Northbound database (``[ovnsouth]`` has the same keys)."""

    address: str = s.setting(
        "unix:/var/run/ovn/ovnnb_db.sock",
        help="OVSDB remote(s): unix:PATH, tcp:IP:PORT, ssl:IP:PORT; comma list for RAFT members",
        check=_address,
    )
    client_privkey: str = s.setting("", help="client private key for ssl: remotes")
    client_cert: str = s.setting("", help="client certificate for ssl: remotes")
    client_cacert: str = s.setting("", help="CA certificate for ssl: remotes")


@dataclass(frozen=True)
class OvnSouthSettings(OvnDbSettings):
    """``[ovnsouth]``: the OVN Southbound database."""

    address: str = s.setting(
        "unix:/var/run/ovn/ovnsb_db.sock",
        help="OVSDB remote(s): unix:PATH, tcp:IP:PORT, ssl:IP:PORT; comma list for RAFT members",
        check=_address,
    )


@dataclass(frozen=True)
class OvsSettings:
    """``[ovs]``: the node's local Open_vSwitch database."""

    address: str = s.setting("unix:/var/run/openvswitch/db.sock", help="Open_vSwitch DB remote", check=_address)
    datapath_type: Literal["system", "netdev"] = s.setting(
        "system", help="OVS datapath of br-int and the gateway bridge (netdev = userspace)"
    )
    run_dir: str = s.setting(
        "/var/run/openvswitch", help="ovs-vswitchd's run directory (OpenFlow management sockets <bridge>.mgmt)"
    )


@dataclass(frozen=True)
class GatewaySettings:
    """``[gateway]``: north-south traffic (shared-gateway mode)."""

    mode: Literal["shared"] = s.setting("shared", help="gateway mode (shared: through GR_<node> and the bridge)")
    interface: str = s.setting("", help="uplink interface or bridge; empty = the one holding the default route")
    next_hop: str = s.setting("", help="default gateway of the node; empty = from the routing table")
    vlan_id: int = s.setting(0, help="VLAN of the uplink (0 = none)", check=_range(0, 4094))
    nodeport: bool = s.setting(True, help="serve NodePort services")
    nodeport_templates: bool = s.setting(
        True, help="serve a plain NodePort with template load balancers resolved per chassis "
        "(Chassis_Template_Var NODEIP_IPv4_<i>), one per service instead of one per node"
    )
    v4_join_subnet: ipaddress.IPv4Network = s.setting(
        ipaddress.IPv4Network("100.64.0.0/16"), help="join switch subnet"
    )
    v4_masquerade_subnet: ipaddress.IPv4Network = s.setting(
        ipaddress.IPv4Network("169.254.0.0/17"), help="masquerade subnet (hairpin and host masquerade IPs)"
    )


@dataclass(frozen=True)
class LoggingSettings:
    """``[logging]``."""

    level: Literal["debug", "info", "warning", "error"] = s.setting("info", help="log level")
    file: str = s.setting("", help="log file; empty logs to stderr")


@dataclass(frozen=True)
class ControllerSettings:
    """``[controller]``: the cluster-wide controller process (``ovnk controller``)."""

    name: str = s.setting(
        "default-network-controller", help="value of k8s.ovn.org/owner-controller on every row we own"
    )
    metrics_bind_address: str = s.setting(
        "127.0.0.1:9409", help="HOST:PORT serving /metrics, /healthz, /readyz (empty disables)", check=_bind_address
    )
    leader_election: bool = s.setting(True, help="elect a leader on a coordination.k8s.io Lease")
    lease_namespace: str = s.setting("ovn-kubernetes", help="namespace of the leader Lease")
    lease_name: str = s.setting("ovnk-controller", help="name of the leader Lease")
    lease_duration: float = s.setting(15.0, help="seconds a lease is valid", check=_positive)
    renew_deadline: float = s.setting(10.0, help="seconds the leader keeps trying to renew", check=_positive)
    retry_period: float = s.setting(2.0, help="seconds between lease attempts", check=_positive)
    identity: str = s.setting("", help="leader-election identity; empty = <hostname>_<pid>")
    install_crds: bool = s.setting(
        True, help="apply the CRDs of the enabled plugins at start-up; false: they are installed by someone else (the "
        "Helm chart, with its RBAC granting no write on CRDs) and the controller waits until the API server serves "
        "them")
    repair_mode: Literal["off", "log", "repair"] = s.setting(
        "repair", help="startup repair of owned NB rows: off, log the plan, or apply it"
    )
    workers: int = s.setting(4, help="default worker threads per controller", check=_range(1, 256))
    max_attempts: int = s.setting(15, help="attempts before a key is reported as failed", check=_range(1, 1000))
    max_backoff: float = s.setting(60.0, help="cap of the per-key retry backoff in seconds", check=_positive)
    e2e_timestamp_interval: float = s.setting(
        30.0, help="seconds between e2e-timestamp probes written to NB_Global and read back from SB (0 disables)",
        check=_not_negative)

    def validate(self) -> None:
        if self.renew_deadline >= self.lease_duration:
            raise ValueError("renew-deadline must be shorter than lease-duration")
        if self.retry_period >= self.renew_deadline:
            raise ValueError("retry-period must be shorter than renew-deadline")


@dataclass(frozen=True)
class NodeSettings:
    """``[node]``: the node agent (``ovnk node``)."""

    name: str = s.setting("", help="Kubernetes node name; empty = the host name")
    metrics_bind_address: str = s.setting(
        "127.0.0.1:9410", help="HOST:PORT serving /metrics (empty disables); the same as health-bind-address: one "
        "listener serves all three endpoints", check=_bind_address
    )
    health_bind_address: str = s.setting(
        "127.0.0.1:9410", help="HOST:PORT serving /healthz and /readyz (empty disables); keep it on loopback: the "
        "kubelet probes from the host network, nobody else needs them", check=_bind_address
    )
    encap_ip: str = s.setting("", help="tunnel endpoint IP; empty = the node's primary IP")
    chassis_ca_cert: str = s.setting(
        "", help="PEM certificate of the node CA: with chassis-ca-key, the agent issues this node's Southbound "
        "client certificate (CN = its chassis name) and gives it to ovn-controller; empty: ovn-controller uses "
        "what it was started with")
    chassis_ca_key: str = s.setting("", help="PEM private key of the node CA (see chassis-ca-cert)")
    chassis_cert_dir: str = s.setting(
        "/var/run/ovn/chassis-tls", help="where the issued chassis key and certificate are written (ovn-controller "
        "reads them from there)")
    mgmt_port: str = s.setting("ovn-k8s-mp0", help="management port interface name")
    run_dir: str = s.setting("/var/run/ovnk", help="runtime state of the node agent")
    ovn_run_dir: str = s.setting(
        "/var/run/ovn", help="where ovn-controller keeps its pidfile and control socket (health metrics)")


@dataclass(frozen=True)
class CniSettings:
    """``[cni]``: the CNI shim, its server in the node agent and the CNI config file."""

    conf_dir: str = s.setting("/etc/cni/net.d", help="where the CNI config file is written")
    conf_file: str = s.setting("10-ovn-kubernetes.conf", help="CNI config file name")
    bin_dir: str = s.setting("/opt/cni/bin", help="where the shim is installed")
    plugin: str = s.setting("ovn-k8s-cni-overlay", help="CNI plugin type (shim binary name)")
    shim: Literal["native", "python"] = s.setting(
        "native",
        help="which shim to install: the compiled one (`ovnk cni build-shim`, nothing needed on the host) "
        "or the Python one (needs an interpreter on the host, see `ovnk cni install --portable-python`)",
    )
    conf_version: Literal["0.4.0", "1.0.0", "1.1.0"] = s.setting(
        "1.0.0",
        help="cniVersion of the written CNI config (1.0.0 works with containerd 1.6's libcni; the server speaks 0.3.0-1.1.0)",
    )
    socket_path: str = s.setting(
        "/var/run/ovn-kubernetes/cni/ovn-cni-server.sock", help="unix socket of the CNI server (directory 0700)"
    )
    remove_conf_on_exit: bool = s.setting(False, help="remove the CNI config file when the node agent stops")
    annotation_timeout: float = s.setting(30.0, help="seconds ADD waits for the pod annotation", check=_positive)
    ovn_installed_timeout: float = s.setting(
        45.0, help="seconds ADD waits for ovn-installed on the OVS interface", check=_positive
    )

    def validate(self) -> None:
        if self.annotation_timeout + self.ovn_installed_timeout >= 110:
            raise ValueError("annotation-timeout + ovn-installed-timeout must stay under the runtime's 120 s")


@dataclass(frozen=True)
class PluginsSettings:
    """``[plugins]``: which installed plugins run in this deployment."""

    enabled: tuple[str, ...] = s.setting((), help="names of enabled plugins (entry points of ovnk.plugins)")


CORE_SECTIONS: dict[str, type[Any]] = {
    "default": DefaultSettings,
    "kubernetes": KubernetesSettings,
    "ovnnorth": OvnDbSettings,
    "ovnsouth": OvnSouthSettings,
    "ovs": OvsSettings,
    "gateway": GatewaySettings,
    "logging": LoggingSettings,
    "controller": ControllerSettings,
    "node": NodeSettings,
    "cni": CniSettings,
    "plugins": PluginsSettings,
}


# Convenience flags: flag name -> (section, key).
FLAG_KEYS: dict[str, tuple[str, str]] = {
    "plugins": ("plugins", "enabled"),
    "log_level": ("logging", "level"),
    "kubeconfig": ("kubernetes", "kubeconfig"),
    "nb_address": ("ovnnorth", "address"),
    "sb_address": ("ovnsouth", "address"),
    "ovs_address": ("ovs", "address"),
    "node_name": ("node", "name"),
}


@dataclass(frozen=True)
class Config:
    """The effective configuration: core sections, plugin sections and where each value came from."""

    default: DefaultSettings
    kubernetes: KubernetesSettings
    ovnnorth: OvnDbSettings
    ovnsouth: OvnSouthSettings
    ovs: OvsSettings
    gateway: GatewaySettings
    logging: LoggingSettings
    controller: ControllerSettings
    node: NodeSettings
    cni: CniSettings
    plugins: PluginsSettings
    plugin_sections: Mapping[str, Any] = field(default_factory=dict)
    sources: Mapping[tuple[str, str], str] = field(default_factory=dict)
    config_file: str | None = None

    def plugin_settings(self, name: str) -> Any:
        """Settings dataclass of plugin ``name`` (registered through ``ovnk_add_settings``)."""
        try:
            return self.plugin_sections[name]
        except KeyError:
            raise KeyError(f"no settings section [{name}] (plugin not enabled or has no settings)") from None

    def section(self, name: str) -> Any:
        """Any section by name, core or plugin."""
        if name in CORE_SECTIONS:
            return getattr(self, name)
        return self.plugin_settings(name)

    def section_names(self) -> list[str]:
        return [*CORE_SECTIONS, *self.plugin_sections]

    def source_of(self, section: str, key: str) -> str:
        return self.sources.get((section, key), "default")

    @property
    def node_name(self) -> str:
        """The node name of this process (``[node] name`` or the host name)."""
        import socket

        return self.node.name or socket.gethostname()


@dataclass
class ConfigInputs:
    """Everything :func:`load` reads: file path, environment and flags."""

    config_file: str | None = None
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    assignments: Sequence[str] = ()
    flags: Mapping[str, str | None] = field(default_factory=dict)

    def resolved_file(self) -> str | None:
        """The config file in use: the flag, then ``OVNK_CONFIG``, then /etc/ovnk/ovnk.conf if present."""
        if self.config_file:
            return self.config_file
        env_file = self.env.get("OVNK_CONFIG")
        if env_file:
            return env_file
        if os.path.exists(DEFAULT_CONFIG_FILE):
            return DEFAULT_CONFIG_FILE
        return None


def read_layers(inputs: ConfigInputs) -> s.RawLayers:
    """Read the file layer and the flag layer (env is read per section later)."""
    layers = s.RawLayers()
    path = inputs.resolved_file()
    if path:
        s.read_ini(path, layers)
    return layers


def _apply_env_and_flags(
    inputs: ConfigInputs, specs: list[s.SectionSpec], layers: s.RawLayers
) -> None:
    s.read_env(inputs.env, specs, layers)
    # OVNK_PLUGINS is the documented short form of OVNK_PLUGINS_ENABLED.
    if "OVNK_PLUGINS" in inputs.env and "OVNK_PLUGINS_ENABLED" not in inputs.env:
        layers.put("plugins", "enabled", inputs.env["OVNK_PLUGINS"], "env:OVNK_PLUGINS")
    for text in inputs.assignments:
        section, key, assigned = s.parse_assignment(text)
        layers.put(section, key, assigned, f"flag:--set {section}.{key}")
    for flag, value in inputs.flags.items():
        if value is None:
            continue
        section, key = FLAG_KEYS[flag]
        layers.put(section, key, value, f"flag:--{flag.replace('_', '-')}")


def core_specs() -> list[s.SectionSpec]:
    return [s.SectionSpec(name=n, cls=c, owner="core") for n, c in CORE_SECTIONS.items()]


def enabled_plugins(inputs: ConfigInputs) -> tuple[str, ...]:
    """The ``[plugins] enabled`` list alone, read before any plugin is loaded."""
    layers = read_layers(inputs)
    spec = s.SectionSpec(name="plugins", cls=PluginsSettings, owner="core")
    _apply_env_and_flags(inputs, [spec], layers)
    section, _ = s.build_section(spec, layers)
    return tuple(section.enabled)


def load(
    inputs: ConfigInputs,
    *,
    plugin_specs: Sequence[s.SectionSpec] = (),
    optional_sections: Sequence[str] = (),
) -> Config:
    """Build the :class:`Config` from ``inputs``.

    ``plugin_specs`` are the sections enabled plugins declared.
    ``optional_sections`` are section names that may appear in the file without
    being used (installed but disabled plugins); any other unknown section is an
    error naming it.
    """
    layers = read_layers(inputs)
    specs = core_specs() + list(plugin_specs)
    _apply_env_and_flags(inputs, specs, layers)
    known = {sp.name for sp in specs}
    for section in sorted(layers.sections() - known):
        if section in optional_sections:
            continue
        where = ""
        keys = layers.keys_in(section)
        if keys:
            raw = layers.get(section, keys[0])
            where = f" (from {raw.source})" if raw else ""
        raise ConfigError(f"unknown config section [{section}]{where}; known: {', '.join(sorted(known))}")
    built: dict[str, Any] = {}
    sources: dict[tuple[str, str], str] = {}
    for spec in specs:
        instance, srcs = s.build_section(spec, layers)
        built[spec.name] = instance
        for key, src in srcs.items():
            sources[(spec.name, key)] = src
    core = {name: built[name] for name in CORE_SECTIONS}
    plugin_sections = {sp.name: built[sp.name] for sp in plugin_specs}
    return Config(
        **core,
        plugin_sections=plugin_sections,
        sources=sources,
        config_file=inputs.resolved_file(),
    )
