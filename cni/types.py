"""CNI request, result and error types (CNI spec 0.3.0 to 1.1.0), stdlib only.

The shim forwards the runtime's environment and stdin untouched; this module
turns them into a validated :class:`CniRequest` inside the node agent, and
turns a :class:`CniResult` or :class:`CniError` back into the JSON the runtime
expects for the request's ``cniVersion``.

Error codes. 0-99 are the spec's well-known codes; we use:

* 1  ``ERR_INCOMPATIBLE_VERSION``: ``cniVersion`` unsupported, or too old for
  the command (CHECK needs 0.4.0, STATUS and GC need 1.1.0).
* 2  ``ERR_UNSUPPORTED_FIELD``: the netconf asks for something this plugin does
  not do (an ``ipam`` section: addresses come from OVN, never from an IPAM plugin).
* 3  ``ERR_UNKNOWN_CONTAINER``: the container or its network namespace does not
  exist (the runtime needs no DEL afterwards).
* 4  ``ERR_INVALID_ENVIRONMENT``: a ``CNI_*`` variable is missing or malformed.
* 5  ``ERR_IO_FAILURE``: reading stdin or talking to the kernel failed.
* 6  ``ERR_DECODING_FAILURE``: stdin (or a request body) is not a JSON object.
* 7  ``ERR_INVALID_NETWORK_CONFIG``: a netconf field is missing or has the wrong type.
* 11 ``ERR_TRY_AGAIN_LATER``: the node agent is not reachable (yet); transient.
* 50 ``ERR_NOT_AVAILABLE``: STATUS: the plugin cannot serve ADD right now.
* 51 ``ERR_NOT_AVAILABLE_LIMITED``: STATUS: as 50, and running pods may have
  limited connectivity.

Plugin-specific codes (100 and up) say which part of ADD gave up, so an
operator reading the kubelet's event knows where to look:

* 100 ``ERR_INTERNAL``: unexpected exception in the node agent (a bug); the
  message carries the exception text, the node agent's log the traceback.
* 101 ``ERR_POD_ANNOTATION_TIMEOUT``: the controller did not publish the pod's
  ``k8s.ovn.org/pod-networks`` annotation in time (``[cni] annotation-timeout``).
* 102 ``ERR_OVN_INSTALLED_TIMEOUT``: ovn-controller did not mark the OVS
  interface ``ovn-installed`` in time (``[cni] ovn-installed-timeout``).
* 103 ``ERR_POD_CHANGED``: the pod was deleted or re-created (UID or MAC
  changed) while ADD was waiting; this sandbox is stale.
* 104 ``ERR_KUBE_API``: the Kubernetes API could not be reached to read the pod.
* 105 ``ERR_BAD_REPLY``: the shim could not understand the node agent's reply
  (shim and node agent of different versions). An agent that closes the
  connection without a reply (restarting) is 11, not 105.
* 106 ``ERR_WIRING_MISMATCH``: CHECK found the pod's interface, addresses or
  OVS port not as ADD left them (the message names what differs).
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from types import MappingProxyType
from typing import Any

ERR_INCOMPATIBLE_VERSION = 1
ERR_UNSUPPORTED_FIELD = 2
ERR_UNKNOWN_CONTAINER = 3
ERR_INVALID_ENVIRONMENT = 4
ERR_IO_FAILURE = 5
ERR_DECODING_FAILURE = 6
ERR_INVALID_NETWORK_CONFIG = 7
ERR_TRY_AGAIN_LATER = 11
ERR_NOT_AVAILABLE = 50
ERR_NOT_AVAILABLE_LIMITED = 51
ERR_INTERNAL = 100
ERR_POD_ANNOTATION_TIMEOUT = 101
ERR_OVN_INSTALLED_TIMEOUT = 102
ERR_POD_CHANGED = 103
ERR_KUBE_API = 104
ERR_BAD_REPLY = 105
ERR_WIRING_MISMATCH = 106

# Oldest first. 0.1.0/0.2.0 results have no interface list; nothing we serve uses them.
SUPPORTED_VERSIONS: tuple[str, ...] = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
CURRENT_VERSION = "1.1.0"

COMMANDS: tuple[str, ...] = ("ADD", "DEL", "CHECK", "VERSION", "STATUS", "GC")

# The environment each command cannot do without (CNI_COMMAND itself aside).
# DEL may run after the namespace is gone, so CNI_NETNS may be empty there.
REQUIRED_ENV: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
        "DEL": ("CNI_CONTAINERID", "CNI_IFNAME"),
        "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
        "VERSION": (),
        "STATUS": (),
        "GC": (),
    }
)

# The oldest cniVersion a command exists in.
MIN_VERSION: Mapping[str, str] = MappingProxyType({"CHECK": "0.4.0", "STATUS": "1.1.0", "GC": "1.1.0"})

# The spec's pattern for container ids and network names.
_ID_PATTERN = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")
_IFNAMSIZ = 16
# Kubernetes names: a namespace is a DNS-1123 label, a pod name a DNS-1123 subdomain.
_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_NAMESPACE_PATTERN = re.compile(rf"^{_DNS_LABEL}$")
_POD_NAME_PATTERN = re.compile(rf"^{_DNS_LABEL}(\.{_DNS_LABEL})*$")
_POD_NAME_LIMITS = {"K8S_POD_NAMESPACE": (_NAMESPACE_PATTERN, 63), "K8S_POD_NAME": (_POD_NAME_PATTERN, 253)}
#: Characters of one client-supplied value a log line or error message shows (escaped) at most.
PRINTABLE_LIMIT = 80


def printable(value: str, limit: int = PRINTABLE_LIMIT) -> str:
    """``value`` safe for one log line: control and non-ASCII characters escaped, at most ``limit``
    characters of it (then ``...(N chars)``). Container ids, pod names and error texts come from
    whoever can reach the CNI socket; written raw, a newline in one forges a log line."""
    shown = value[:limit].encode("unicode_escape").decode("ascii")
    return shown if len(value) <= limit else f"{shown}...({len(value)} chars)"


def version_info() -> dict[str, Any]:
    """The answer to ``VERSION``."""
    return {"cniVersion": CURRENT_VERSION, "supportedVersions": list(SUPPORTED_VERSIONS)}


def version_tuple(version: str) -> tuple[int, ...]:
    """``"0.4.0"`` -> ``(0, 4, 0)``; raises ``ValueError`` for anything else."""
    parts = version.split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise ValueError(f"{version!r} is not a MAJOR.MINOR.PATCH version")
    return tuple(int(p) for p in parts)


class CniError(Exception):
    """A CNI error: becomes the spec's error object and a non-zero exit of the shim."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details

    def __str__(self) -> str:
        text = f"CNI error {self.code}: {self.msg}"
        return f"{text} ({self.details})" if self.details else text

    def to_dict(self, cni_version: str = CURRENT_VERSION) -> dict[str, Any]:
        return {"cniVersion": cni_version, "code": self.code, "msg": self.msg, "details": self.details}


def parse_cni_args(text: str) -> dict[str, str]:
    """Parse ``CNI_ARGS`` (``K1=V1;K2=V2``); empty items are skipped, values may contain ``=``."""
    parsed: dict[str, str] = {}
    for item in text.split(";"):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CniError(ERR_INVALID_ENVIRONMENT, f"CNI_ARGS item '{printable(item)}' is not KEY=VALUE",
                           printable(text, 4 * PRINTABLE_LIMIT))
        parsed[key] = value
    return parsed


def _check_interface_name(name: str) -> str | None:
    if len(name) >= _IFNAMSIZ:
        return f"is longer than {_IFNAMSIZ - 1} characters"
    if name in (".", ".."):
        return "is not a valid interface name"
    if any(c in "/:" or c.isspace() for c in name):
        return "contains '/', ':' or whitespace"
    return None


@dataclass(frozen=True)
class GcAttachment:
    """One entry of GC's ``cni.dev/valid-attachments``: an attachment the runtime still uses."""

    container_id: str
    ifname: str


@dataclass(frozen=True)
class CniRequest:
    """One CNI invocation, validated. Build it with :meth:`parse`."""

    command: str
    container_id: str
    netns: str
    ifname: str
    path: tuple[str, ...]
    args: Mapping[str, str]
    config: Mapping[str, Any]
    cni_version: str
    network_name: str
    plugin_type: str
    prev_result: Mapping[str, Any] | None = None
    runtime_config: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    device_id: str | None = None
    valid_attachments: tuple[GcAttachment, ...] | None = None

    @property
    def pod_namespace(self) -> str | None:
        return self.args.get("K8S_POD_NAMESPACE") or None

    @property
    def pod_name(self) -> str | None:
        return self.args.get("K8S_POD_NAME") or None

    @property
    def pod_uid(self) -> str | None:
        return self.args.get("K8S_POD_UID") or None

    @property
    def pod_infra_container_id(self) -> str | None:
        return self.args.get("K8S_POD_INFRA_CONTAINER_ID") or None

    @property
    def pod_key(self) -> str:
        """``namespace/name`` for logs, ``-`` when the runtime did not say (STATUS, GC)."""
        if self.pod_namespace and self.pod_name:
            return f"{self.pod_namespace}/{self.pod_name}"
        return "-"

    @classmethod
    def parse(cls, env: Mapping[str, str], config_text: str) -> CniRequest:
        """Validate the runtime's environment and netconf; raise :class:`CniError` on bad input."""
        command = env.get("CNI_COMMAND", "")
        if not command:
            raise CniError(ERR_INVALID_ENVIRONMENT, "CNI_COMMAND is not set")
        if command not in COMMANDS:
            raise CniError(
                ERR_INVALID_ENVIRONMENT, f"CNI_COMMAND {command!r} is not one of {', '.join(COMMANDS)}"
            )
        missing = [name for name in REQUIRED_ENV[command] if not env.get(name)]
        if missing:
            raise CniError(ERR_INVALID_ENVIRONMENT, f"{command} needs {', '.join(missing)}, which is not set")
        container_id = env.get("CNI_CONTAINERID", "")
        if container_id and not _ID_PATTERN.match(container_id):
            raise CniError(
                ERR_INVALID_ENVIRONMENT,
                f"CNI_CONTAINERID '{printable(container_id)}' may only hold letters, digits, '_', '.' and '-'",
            )
        ifname = env.get("CNI_IFNAME", "")
        problem = _check_interface_name(ifname) if ifname else None
        if problem:
            raise CniError(ERR_INVALID_ENVIRONMENT, f"CNI_IFNAME '{printable(ifname)}' {problem}")
        args = parse_cni_args(env.get("CNI_ARGS", ""))
        for key, (pattern, limit) in _POD_NAME_LIMITS.items():
            value = args.get(key)
            if value and (len(value) > limit or not pattern.match(value)):
                raise CniError(ERR_INVALID_ENVIRONMENT,
                               f"CNI_ARGS {key} '{printable(value)}' is not a valid Kubernetes name")

        config = _decode_config(config_text)
        cni_version = _check_version(command, config)
        if command == "VERSION":
            name, plugin_type = "", ""
        else:
            name = _string_field(config, "name", required=True)
            if not _ID_PATTERN.match(name):
                raise CniError(
                    ERR_INVALID_NETWORK_CONFIG,
                    f"network name {name!r} may only hold letters, digits, '_', '.' and '-'",
                )
            plugin_type = _string_field(config, "type", required=True)
        if command in ("ADD", "CHECK") and "ipam" in config:
            raise CniError(
                ERR_UNSUPPORTED_FIELD,
                f"network {name!r}: the 'ipam' section is not supported; pod addresses come from OVN",
            )
        device_id = _string_field(config, "deviceID", required=False) or None
        return cls(
            command=command,
            container_id=container_id,
            netns=env.get("CNI_NETNS", ""),
            ifname=ifname,
            path=tuple(p for p in env.get("CNI_PATH", "").split(":") if p),
            args=MappingProxyType(args),
            config=MappingProxyType(config),
            cni_version=cni_version,
            network_name=name,
            plugin_type=plugin_type,
            prev_result=_object_field(config, "prevResult"),
            runtime_config=MappingProxyType(_object_field(config, "runtimeConfig") or {}),
            device_id=device_id,
            valid_attachments=_valid_attachments(config) if command == "GC" else None,
        )


def _decode_config(text: str) -> dict[str, Any]:
    try:
        config = json.loads(text)
    except ValueError as exc:
        raise CniError(ERR_DECODING_FAILURE, f"network config on stdin is not JSON: {exc}") from None
    except RecursionError:
        raise CniError(ERR_DECODING_FAILURE, "network config on stdin is not JSON: nested too deeply") from None
    if not isinstance(config, dict):
        raise CniError(
            ERR_DECODING_FAILURE, f"network config on stdin is a JSON {type(config).__name__}, not an object"
        )
    return config


def _check_version(command: str, config: Mapping[str, Any]) -> str:
    version = config.get("cniVersion")
    supported = ", ".join(SUPPORTED_VERSIONS)
    if version is None:
        # The spec's libraries read a missing cniVersion as 0.1.0, which we do not serve.
        raise CniError(
            ERR_INCOMPATIBLE_VERSION, f"network config has no cniVersion (0.1.0 is implied); supported: {supported}"
        )
    if not isinstance(version, str):
        raise CniError(ERR_INVALID_NETWORK_CONFIG, f"cniVersion must be a string, not {version!r}")
    if version not in SUPPORTED_VERSIONS:
        raise CniError(
            ERR_INCOMPATIBLE_VERSION, f"cniVersion {version!r} is not supported; supported: {supported}"
        )
    needed = MIN_VERSION.get(command)
    if needed and version_tuple(version) < version_tuple(needed):
        raise CniError(
            ERR_INCOMPATIBLE_VERSION,
            f"{command} needs cniVersion {needed} or later; the network config says {version}",
        )
    return version


def _string_field(config: Mapping[str, Any], key: str, *, required: bool) -> str:
    value = config.get(key)
    if value is None or value == "":
        if required:
            raise CniError(ERR_INVALID_NETWORK_CONFIG, f"network config has no {key!r}")
        return ""
    if not isinstance(value, str):
        raise CniError(ERR_INVALID_NETWORK_CONFIG, f"network config field {key!r} must be a string, not {value!r}")
    return value


def _object_field(config: Mapping[str, Any], key: str) -> dict[str, Any] | None:
    value = config.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise CniError(ERR_INVALID_NETWORK_CONFIG, f"network config field {key!r} must be an object")
    return value


def _valid_attachments(config: Mapping[str, Any]) -> tuple[GcAttachment, ...]:
    key = "cni.dev/valid-attachments"
    raw = config.get(key, [])
    if not isinstance(raw, list):
        raise CniError(ERR_INVALID_NETWORK_CONFIG, f"{key!r} must be a list")
    attachments = []
    for index, item in enumerate(raw):
        container_id = item.get("containerID") if isinstance(item, dict) else None
        ifname = item.get("ifname") if isinstance(item, dict) else None
        if not isinstance(container_id, str) or not isinstance(ifname, str):
            raise CniError(
                ERR_INVALID_NETWORK_CONFIG, f"{key}[{index}] must be an object with string containerID and ifname"
            )
        attachments.append(GcAttachment(container_id=container_id, ifname=ifname))
    return tuple(attachments)


# ---------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass
class CniInterface:
    """An interface of the result; ``sandbox`` (netns path) is set for the pod side only."""

    name: str
    mac: str = ""
    sandbox: str = ""
    mtu: int | None = None


@dataclass
class CniIPConfig:
    """An address; ``interface`` indexes :attr:`CniResult.interfaces`."""

    address: IPInterface
    gateway: IPAddress | None = None
    interface: int | None = None


@dataclass
class CniRoute:
    dst: IPNetwork
    gw: IPAddress | None = None
    mtu: int | None = None


@dataclass
class CniDns:
    nameservers: list[str] = field(default_factory=list)
    domain: str = ""
    search: list[str] = field(default_factory=list)
    options: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        rendered: dict[str, Any] = {}
        if self.nameservers:
            rendered["nameservers"] = list(self.nameservers)
        if self.domain:
            rendered["domain"] = self.domain
        if self.search:
            rendered["search"] = list(self.search)
        if self.options:
            rendered["options"] = list(self.options)
        return rendered


@dataclass
class CniResult:
    """The result of ADD. Mutable: ``ovnk_cni_add`` hooks may amend it before it is rendered."""

    interfaces: list[CniInterface] = field(default_factory=list)
    ips: list[CniIPConfig] = field(default_factory=list)
    routes: list[CniRoute] = field(default_factory=list)
    dns: CniDns = field(default_factory=CniDns)

    def to_dict(self, cni_version: str) -> dict[str, Any]:
        """Render for ``cni_version``: before 1.0.0 every IP carries ``"version"``;
        interface and route MTUs exist from 1.1.0 on. Raises ``ValueError`` for a
        version we do not serve or an IP pointing at a missing interface."""
        if cni_version not in SUPPORTED_VERSIONS:
            raise ValueError(f"cannot render a result for cniVersion {cni_version!r}")
        pre_1 = version_tuple(cni_version) < (1, 0, 0)
        with_mtu = version_tuple(cni_version) >= (1, 1, 0)
        interfaces = []
        for iface in self.interfaces:
            item: dict[str, Any] = {"name": iface.name}
            if iface.mac:
                item["mac"] = iface.mac
            if iface.sandbox:
                item["sandbox"] = iface.sandbox
            if with_mtu and iface.mtu:
                item["mtu"] = iface.mtu
            interfaces.append(item)
        ips = []
        for ip in self.ips:
            entry: dict[str, Any] = {}
            if pre_1:
                entry["version"] = str(ip.address.version)
            entry["address"] = str(ip.address)
            if ip.gateway is not None:
                entry["gateway"] = str(ip.gateway)
            if ip.interface is not None:
                if not 0 <= ip.interface < len(self.interfaces):
                    raise ValueError(f"IP {ip.address} refers to interface {ip.interface}, which does not exist")
                entry["interface"] = ip.interface
            ips.append(entry)
        routes = []
        for route in self.routes:
            rendered: dict[str, Any] = {"dst": str(route.dst)}
            if route.gw is not None:
                rendered["gw"] = str(route.gw)
            if with_mtu and route.mtu:
                rendered["mtu"] = route.mtu
            routes.append(rendered)
        result: dict[str, Any] = {"cniVersion": cni_version, "interfaces": interfaces, "ips": ips}
        if routes:
            result["routes"] = routes
        dns = self.dns.to_dict()
        if dns:
            result["dns"] = dns
        return result

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CniResult:
        """Read a rendered result of any served version (a CHECK's ``prevResult``);
        raises :class:`CniError` (code 7) when it is malformed."""
        try:
            interfaces = [
                CniInterface(
                    name=str(i["name"]),
                    mac=str(i.get("mac", "")),
                    sandbox=str(i.get("sandbox", "")),
                    mtu=int(i["mtu"]) if i.get("mtu") else None,
                )
                for i in data.get("interfaces") or []
            ]
            ips = [
                CniIPConfig(
                    address=ipaddress.ip_interface(ip["address"]),
                    gateway=ipaddress.ip_address(ip["gateway"]) if ip.get("gateway") else None,
                    interface=int(ip["interface"]) if ip.get("interface") is not None else None,
                )
                for ip in data.get("ips") or []
            ]
            routes = [
                CniRoute(
                    dst=ipaddress.ip_network(r["dst"], strict=False),
                    gw=ipaddress.ip_address(r["gw"]) if r.get("gw") else None,
                    mtu=int(r["mtu"]) if r.get("mtu") else None,
                )
                for r in data.get("routes") or []
            ]
            raw_dns = data.get("dns") or {}
            dns = CniDns(
                nameservers=list(raw_dns.get("nameservers", [])),
                domain=str(raw_dns.get("domain", "")),
                search=list(raw_dns.get("search", [])),
                options=list(raw_dns.get("options", [])),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CniError(ERR_INVALID_NETWORK_CONFIG, f"malformed CNI result: {exc!r}") from None
        return cls(interfaces=interfaces, ips=ips, routes=routes, dns=dns)
