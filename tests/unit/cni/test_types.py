"""CNI request parsing and validation, error objects and result rendering (pure logic)."""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Any

import pytest

from ovnk.cni import shim
from ovnk.cni import types as t
from ovnk.cni.types import CniDns
from ovnk.cni.types import CniError
from ovnk.cni.types import CniInterface
from ovnk.cni.types import CniIPConfig
from ovnk.cni.types import CniRequest
from ovnk.cni.types import CniResult
from ovnk.cni.types import CniRoute
from ovnk.cni.types import GcAttachment

KUBELET_ARGS = (
    "IgnoreUnknown=1;K8S_POD_NAMESPACE=web;K8S_POD_NAME=frontend-1;"
    "K8S_POD_INFRA_CONTAINER_ID=4f2c9a;K8S_POD_UID=3d4c2b1a-0000-4000-8000-000000000001"
)


def env_for(command: str, **overrides: str | None) -> dict[str, str]:
    env = {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": "4f2c9a0b1c2d3e4f5a6b7c8d9e0f",
        "CNI_NETNS": "/var/run/netns/cni-1234",
        "CNI_IFNAME": "eth0",
        "CNI_ARGS": KUBELET_ARGS,
        "CNI_PATH": "/opt/cni/bin:/usr/lib/cni",
    }
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def netconf(version: str = "1.1.0", **extra: Any) -> str:
    config: dict[str, Any] = {"cniVersion": version, "name": "ovn-kubernetes", "type": "ovn-k8s-cni-overlay"}
    for key, value in extra.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    return json.dumps(config)


def parse_error(env: dict[str, str], config: str) -> CniError:
    with pytest.raises(CniError) as info:
        CniRequest.parse(env, config)
    return info.value


# -- CNI_ARGS ---------------------------------------------------------------


def test_cni_args_kubelet_format() -> None:
    assert t.parse_cni_args(KUBELET_ARGS) == {
        "IgnoreUnknown": "1",
        "K8S_POD_NAMESPACE": "web",
        "K8S_POD_NAME": "frontend-1",
        "K8S_POD_INFRA_CONTAINER_ID": "4f2c9a",
        "K8S_POD_UID": "3d4c2b1a-0000-4000-8000-000000000001",
    }


def test_cni_args_empty_items_and_values_with_equal_signs() -> None:
    assert t.parse_cni_args("") == {}
    assert t.parse_cni_args(";A=1;;B=x=y;C=;") == {"A": "1", "B": "x=y", "C": ""}


@pytest.mark.parametrize("text", ["K8S_POD_NAME", "A=1;broken", "=value"])
def test_cni_args_item_without_key_value_is_error_4(text: str) -> None:
    with pytest.raises(CniError) as info:
        t.parse_cni_args(text)
    assert info.value.code == t.ERR_INVALID_ENVIRONMENT
    assert "is not KEY=VALUE" in info.value.msg


# -- successful parsing, per command ------------------------------------------


def test_parse_add_reads_every_field() -> None:
    config = netconf(deviceID="0000:03:00.2", runtimeConfig={"mac": "0a:58:0a:f4:00:05"}, mtu=1400)
    request = CniRequest.parse(env_for("ADD"), config)
    assert request.command == "ADD"
    assert request.container_id == "4f2c9a0b1c2d3e4f5a6b7c8d9e0f"
    assert request.netns == "/var/run/netns/cni-1234"
    assert request.ifname == "eth0"
    assert request.path == ("/opt/cni/bin", "/usr/lib/cni")
    assert request.cni_version == "1.1.0"
    assert request.network_name == "ovn-kubernetes"
    assert request.plugin_type == "ovn-k8s-cni-overlay"
    assert request.device_id == "0000:03:00.2"
    assert request.runtime_config == {"mac": "0a:58:0a:f4:00:05"}
    assert request.config["mtu"] == 1400
    assert request.prev_result is None
    assert request.valid_attachments is None
    assert (request.pod_namespace, request.pod_name) == ("web", "frontend-1")
    assert request.pod_uid == "3d4c2b1a-0000-4000-8000-000000000001"
    assert request.pod_infra_container_id == "4f2c9a"
    assert request.pod_key == "web/frontend-1"
    assert request.args["IgnoreUnknown"] == "1"


def test_parsed_request_cannot_be_changed() -> None:
    request = CniRequest.parse(env_for("ADD"), netconf())
    with pytest.raises(AttributeError):
        request.command = "DEL"  # type: ignore[misc]
    with pytest.raises(TypeError):
        request.config["name"] = "other"  # type: ignore[index]


def test_parse_without_pod_args_has_no_pod_identity() -> None:
    request = CniRequest.parse(env_for("ADD", CNI_ARGS=None, CNI_PATH=None), netconf())
    assert request.pod_namespace is None and request.pod_name is None and request.pod_uid is None
    assert request.pod_key == "-"
    assert request.path == ()
    assert request.device_id is None


def test_parse_del_accepts_empty_or_missing_netns() -> None:
    assert CniRequest.parse(env_for("DEL", CNI_NETNS=""), netconf()).netns == ""
    assert CniRequest.parse(env_for("DEL", CNI_NETNS=None), netconf()).netns == ""


def test_parse_del_tolerates_ipam_section_rejected_on_add() -> None:
    # A DEL must be able to clean up whatever the netconf says.
    assert CniRequest.parse(env_for("DEL"), netconf(ipam={"type": "host-local"})).command == "DEL"


def test_parse_check_carries_prev_result() -> None:
    prev = {"cniVersion": "1.0.0", "interfaces": [{"name": "eth0"}], "ips": []}
    request = CniRequest.parse(env_for("CHECK"), netconf("1.0.0", prevResult=prev))
    assert request.prev_result == prev
    assert CniResult.from_dict(request.prev_result).interfaces[0].name == "eth0"


def test_parse_status_needs_only_the_config() -> None:
    request = CniRequest.parse({"CNI_COMMAND": "STATUS"}, netconf())
    assert request.command == "STATUS"
    assert (request.container_id, request.netns, request.ifname) == ("", "", "")
    assert request.pod_key == "-"


def test_parse_gc_reads_valid_attachments() -> None:
    attachments = [{"containerID": "aaa", "ifname": "eth0"}, {"containerID": "bbb", "ifname": "net1"}]
    request = CniRequest.parse({"CNI_COMMAND": "GC"}, netconf(**{"cni.dev/valid-attachments": attachments}))
    assert request.valid_attachments == (GcAttachment("aaa", "eth0"), GcAttachment("bbb", "net1"))
    assert CniRequest.parse({"CNI_COMMAND": "GC"}, netconf()).valid_attachments == ()


def test_parse_version_needs_neither_name_nor_type() -> None:
    request = CniRequest.parse({"CNI_COMMAND": "VERSION"}, json.dumps({"cniVersion": "0.4.0"}))
    assert (request.command, request.cni_version, request.network_name) == ("VERSION", "0.4.0", "")


@pytest.mark.parametrize("version", t.SUPPORTED_VERSIONS)
def test_parse_add_accepts_every_supported_version(version: str) -> None:
    assert CniRequest.parse(env_for("ADD"), netconf(version)).cni_version == version


# -- error codes ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({}, "CNI_COMMAND is not set"),
        ({"CNI_COMMAND": ""}, "CNI_COMMAND is not set"),
        ({"CNI_COMMAND": "add"}, "CNI_COMMAND 'add' is not one of ADD, DEL, CHECK, VERSION, STATUS, GC"),
        (env_for("ADD", CNI_CONTAINERID=None), "ADD needs CNI_CONTAINERID, which is not set"),
        (env_for("ADD", CNI_NETNS=""), "ADD needs CNI_NETNS, which is not set"),
        (env_for("ADD", CNI_IFNAME=None, CNI_NETNS=None), "ADD needs CNI_NETNS, CNI_IFNAME"),
        (env_for("CHECK", CNI_NETNS=None), "CHECK needs CNI_NETNS"),
        (env_for("CHECK", CNI_IFNAME=None), "CHECK needs CNI_IFNAME"),
        (env_for("DEL", CNI_CONTAINERID=None), "DEL needs CNI_CONTAINERID"),
        (env_for("DEL", CNI_IFNAME=None), "DEL needs CNI_IFNAME"),
        (env_for("ADD", CNI_CONTAINERID="abc/def"), "CNI_CONTAINERID 'abc/def' may only hold"),
        (env_for("ADD", CNI_CONTAINERID="-abc"), "CNI_CONTAINERID '-abc' may only hold"),
        (env_for("ADD", CNI_IFNAME="a-very-long-ifname"), "is longer than 15 characters"),
        (env_for("ADD", CNI_IFNAME="eth/0"), "contains '/', ':' or whitespace"),
        (env_for("ADD", CNI_IFNAME=".."), "is not a valid interface name"),
        (env_for("ADD", CNI_ARGS="K8S_POD_NAME"), "CNI_ARGS item 'K8S_POD_NAME' is not KEY=VALUE"),
    ],
)
def test_invalid_environment_is_error_4(env: dict[str, str], fragment: str) -> None:
    error = parse_error(env, netconf())
    assert error.code == t.ERR_INVALID_ENVIRONMENT == 4
    assert fragment in error.msg


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        ("", "network config on stdin is not JSON"),
        ("{not json", "network config on stdin is not JSON"),
        ('["cniVersion"]', "is a JSON list, not an object"),
        ("42", "is a JSON int, not an object"),
    ],
)
def test_undecodable_config_is_error_6(config: str, fragment: str) -> None:
    error = parse_error(env_for("ADD"), config)
    assert error.code == t.ERR_DECODING_FAILURE == 6
    assert fragment in error.msg


@pytest.mark.parametrize(
    ("command", "version", "fragment"),
    [
        ("ADD", "0.2.0", "cniVersion '0.2.0' is not supported; supported: 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0"),
        ("ADD", "2.0.0", "cniVersion '2.0.0' is not supported"),
        ("DEL", "banana", "cniVersion 'banana' is not supported"),
        ("ADD", None, "network config has no cniVersion (0.1.0 is implied)"),
        ("CHECK", "0.3.1", "CHECK needs cniVersion 0.4.0 or later; the network config says 0.3.1"),
        ("STATUS", "1.0.0", "STATUS needs cniVersion 1.1.0 or later; the network config says 1.0.0"),
        ("GC", "0.4.0", "GC needs cniVersion 1.1.0 or later"),
    ],
)
def test_incompatible_version_is_error_1(command: str, version: str | None, fragment: str) -> None:
    error = parse_error(env_for(command), netconf(version or "", cniVersion=version))
    assert error.code == t.ERR_INCOMPATIBLE_VERSION == 1
    assert fragment in error.msg


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ({"name": None}, "network config has no 'name'"),
        ({"name": ""}, "network config has no 'name'"),
        ({"type": None}, "network config has no 'type'"),
        ({"name": 5}, "field 'name' must be a string"),
        ({"name": "has space"}, "network name 'has space' may only hold"),
        ({"cniVersion": 1.0}, "cniVersion must be a string"),
        ({"deviceID": 3}, "field 'deviceID' must be a string"),
        ({"prevResult": []}, "field 'prevResult' must be an object"),
        ({"runtimeConfig": "x"}, "field 'runtimeConfig' must be an object"),
    ],
)
def test_invalid_network_config_is_error_7(extra: dict[str, Any], fragment: str) -> None:
    error = parse_error(env_for("ADD"), netconf(**extra))
    assert error.code == t.ERR_INVALID_NETWORK_CONFIG == 7
    assert fragment in error.msg


@pytest.mark.parametrize(
    "attachments", [{"containerID": "a"}, ["a"], [{"containerID": "a"}], [{"containerID": 1, "ifname": "eth0"}]]
)
def test_malformed_gc_attachments_is_error_7(attachments: Any) -> None:
    error = parse_error({"CNI_COMMAND": "GC"}, netconf(**{"cni.dev/valid-attachments": attachments}))
    assert error.code == t.ERR_INVALID_NETWORK_CONFIG
    assert "cni.dev/valid-attachments" in error.msg


@pytest.mark.parametrize("command", ["ADD", "CHECK"])
def test_ipam_section_is_unsupported_field_error_2(command: str) -> None:
    error = parse_error(env_for(command), netconf(ipam={"type": "host-local"}))
    assert error.code == t.ERR_UNSUPPORTED_FIELD == 2
    assert "'ipam' section is not supported" in error.msg


def test_error_object_shape_and_text() -> None:
    error = CniError(t.ERR_TRY_AGAIN_LATER, "node agent not ready", "socket missing")
    assert error.to_dict("0.4.0") == {
        "cniVersion": "0.4.0",
        "code": 11,
        "msg": "node agent not ready",
        "details": "socket missing",
    }
    assert error.to_dict()["cniVersion"] == "1.1.0"
    assert str(error) == "CNI error 11: node agent not ready (socket missing)"
    assert str(CniError(3, "gone")) == "CNI error 3: gone"


def test_plugin_specific_codes_are_distinct_and_at_least_100() -> None:
    codes = [t.ERR_INTERNAL, t.ERR_POD_ANNOTATION_TIMEOUT, t.ERR_OVN_INSTALLED_TIMEOUT, t.ERR_POD_CHANGED,
             t.ERR_KUBE_API, t.ERR_BAD_REPLY]
    assert len(set(codes)) == len(codes) and min(codes) == 100


def test_version_info_and_version_tuple() -> None:
    assert t.version_info() == {"cniVersion": "1.1.0", "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]}
    assert t.version_tuple("0.4.0") < t.version_tuple("1.0.0") < t.version_tuple("1.10.0")
    with pytest.raises(ValueError):
        t.version_tuple("1.0")


def test_standalone_shim_repeats_the_tables_of_types() -> None:
    # shim.py may not import ovnk.cni.types, so it carries copies; they must agree.
    assert shim.SUPPORTED_VERSIONS == t.SUPPORTED_VERSIONS
    assert shim.CURRENT_VERSION == t.CURRENT_VERSION
    assert json.loads(shim.VERSION_REPLY) == t.version_info()
    assert shim.REQUIRED_ENV == dict(t.REQUIRED_ENV)
    assert list(shim.REQUIRED_ENV) == list(t.COMMANDS)
    for name in ("ERR_INVALID_ENVIRONMENT", "ERR_IO_FAILURE", "ERR_DECODING_FAILURE", "ERR_TRY_AGAIN_LATER",
                 "ERR_NOT_AVAILABLE", "ERR_BAD_REPLY"):
        assert getattr(shim, name) == getattr(t, name), name


# -- results -------------------------------------------------------------------


def dual_stack_result() -> CniResult:
    return CniResult(
        interfaces=[
            CniInterface(name="4f2c9a0b1c2d3e4", mac="b6:1a:2c:3d:4e:5f", mtu=1400),
            CniInterface(name="eth0", mac="0a:58:0a:f4:01:05", sandbox="/var/run/netns/cni-1234", mtu=1400),
        ],
        ips=[
            CniIPConfig(ipaddress.ip_interface("10.244.1.5/24"), ipaddress.ip_address("10.244.1.1"), 1),
            CniIPConfig(ipaddress.ip_interface("fd00:10:244:2::5/64"), ipaddress.ip_address("fd00:10:244:2::1"), 1),
        ],
        routes=[CniRoute(ipaddress.ip_network("10.96.0.0/16"), ipaddress.ip_address("10.244.1.1"), mtu=1300)],
        dns=CniDns(nameservers=["10.96.0.10"], search=["svc.cluster.local"]),
    )


@pytest.mark.parametrize("version", ["0.3.0", "0.3.1", "0.4.0"])
def test_result_before_1_0_carries_ip_versions_and_no_mtu(version: str) -> None:
    rendered = dual_stack_result().to_dict(version)
    assert rendered["cniVersion"] == version
    assert rendered["ips"] == [
        {"version": "4", "address": "10.244.1.5/24", "gateway": "10.244.1.1", "interface": 1},
        {"version": "6", "address": "fd00:10:244:2::5/64", "gateway": "fd00:10:244:2::1", "interface": 1},
    ]
    assert rendered["interfaces"] == [
        {"name": "4f2c9a0b1c2d3e4", "mac": "b6:1a:2c:3d:4e:5f"},
        {"name": "eth0", "mac": "0a:58:0a:f4:01:05", "sandbox": "/var/run/netns/cni-1234"},
    ]
    assert rendered["routes"] == [{"dst": "10.96.0.0/16", "gw": "10.244.1.1"}]
    assert rendered["dns"] == {"nameservers": ["10.96.0.10"], "search": ["svc.cluster.local"]}


def test_result_1_0_has_no_ip_versions_and_no_mtu() -> None:
    rendered = dual_stack_result().to_dict("1.0.0")
    assert rendered["ips"][0] == {"address": "10.244.1.5/24", "gateway": "10.244.1.1", "interface": 1}
    assert all("version" not in ip for ip in rendered["ips"])
    assert all("mtu" not in i for i in rendered["interfaces"])
    assert rendered["routes"] == [{"dst": "10.96.0.0/16", "gw": "10.244.1.1"}]


def test_result_1_1_adds_interface_and_route_mtu() -> None:
    rendered = dual_stack_result().to_dict("1.1.0")
    assert rendered["interfaces"][1] == {
        "name": "eth0", "mac": "0a:58:0a:f4:01:05", "sandbox": "/var/run/netns/cni-1234", "mtu": 1400
    }
    assert rendered["routes"] == [{"dst": "10.96.0.0/16", "gw": "10.244.1.1", "mtu": 1300}]


def test_minimal_result_omits_empty_sections() -> None:
    result = CniResult(interfaces=[CniInterface(name="eth0")], ips=[CniIPConfig(ipaddress.ip_interface("10.0.0.2/24"))])
    assert result.to_dict("1.0.0") == {
        "cniVersion": "1.0.0", "interfaces": [{"name": "eth0"}], "ips": [{"address": "10.0.0.2/24"}]
    }


def test_result_is_mutable_for_hooks() -> None:
    result = dual_stack_result()
    result.routes.append(CniRoute(ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_address("10.244.1.1")))
    result.dns.domain = "cluster.local"
    rendered = result.to_dict("1.0.0")
    assert rendered["routes"][-1] == {"dst": "0.0.0.0/0", "gw": "10.244.1.1"}
    assert rendered["dns"]["domain"] == "cluster.local"


def test_result_rendering_rejects_dangling_interface_index_and_unknown_version() -> None:
    result = CniResult(ips=[CniIPConfig(ipaddress.ip_interface("10.0.0.2/24"), interface=0)])
    with pytest.raises(ValueError, match="refers to interface 0, which does not exist"):
        result.to_dict("1.0.0")
    with pytest.raises(ValueError, match=re.escape("cannot render a result for cniVersion '0.2.0'")):
        CniResult().to_dict("0.2.0")


@pytest.mark.parametrize("version", t.SUPPORTED_VERSIONS)
def test_result_round_trips_through_every_version(version: str) -> None:
    original = dual_stack_result()
    back = CniResult.from_dict(original.to_dict(version))
    assert back.ips == original.ips
    assert back.routes[0].dst == original.routes[0].dst
    assert [i.name for i in back.interfaces] == [i.name for i in original.interfaces]
    assert back.dns == original.dns


@pytest.mark.parametrize(
    "data", [{"interfaces": [{"mac": "x"}]}, {"ips": [{"address": "not-an-ip"}]}, {"routes": [{"gw": "1.1.1.1"}]}]
)
def test_malformed_result_is_error_7(data: dict[str, Any]) -> None:
    with pytest.raises(CniError) as info:
        CniResult.from_dict(data)
    assert info.value.code == t.ERR_INVALID_NETWORK_CONFIG
    assert "malformed CNI result" in info.value.msg
