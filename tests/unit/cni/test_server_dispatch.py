"""CniServer's dispatch (``serve``), without a socket: validation, rendering, error mapping, metrics."""

from __future__ import annotations

import ipaddress
import json
import threading
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from ovnk.cni import server as server_mod
from ovnk.cni.server import CniServer
from ovnk.cni.server import http_status_for
from ovnk.cni.types import CniError
from ovnk.cni.types import CniInterface
from ovnk.cni.types import CniIPConfig
from ovnk.cni.types import CniRequest
from ovnk.cni.types import CniResult


class Handler:
    def __init__(self, result: Any = None) -> None:
        self.result = result
        self.seen: list[CniRequest] = []

    def add(self, request: CniRequest) -> CniResult:
        self.seen.append(request)
        return self.result  # type: ignore[no-any-return]

    def delete(self, request: CniRequest) -> None:
        self.seen.append(request)

    def check(self, request: CniRequest) -> None:
        self.seen.append(request)

    def status(self, request: CniRequest) -> None:
        raise CniError(51, "ovn-controller lost its southbound connection")

    def gc(self, request: CniRequest) -> None:
        self.seen.append(request)


def add_env(netns: str = "/proc/self/ns/net") -> dict[str, str]:
    return {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "abc123", "CNI_NETNS": netns, "CNI_IFNAME": "eth0"}


def conf(version: str = "1.1.0") -> str:
    return json.dumps({"cniVersion": version, "name": "net", "type": "ovn-k8s-cni-overlay"})


def one_ip_result(interface: int = 0) -> CniResult:
    return CniResult(
        interfaces=[CniInterface(name="eth0", mac="0a:58:00:00:00:01")],
        ips=[CniIPConfig(ipaddress.ip_interface("fd00::5/64"), None, interface)],
    )


@pytest.mark.parametrize(("version", "with_ip_version"), [("0.3.0", True), ("0.4.0", True), ("1.0.0", False)])
def test_add_result_rendered_for_the_request_version(version: str, with_ip_version: bool) -> None:
    server = CniServer("/run/ovnk-unit/cni.sock", Handler(one_ip_result()))
    status, reply = server.serve(add_env(), conf(version))
    assert status == 200
    assert reply["result"]["cniVersion"] == version
    assert ("version" in reply["result"]["ips"][0]) is with_ip_version


@pytest.mark.parametrize(
    ("result", "fragment"),
    [
        ({"not": "a CniResult"}, "TypeError: handler.add returned dict, not CniResult"),
        (one_ip_result(interface=3), "ValueError: IP fd00::5/64 refers to interface 3"),
    ],
)
def test_broken_handler_results_are_error_100(result: Any, fragment: str) -> None:
    status, reply = CniServer("/run/ovnk-unit/cni.sock", Handler(result)).serve(add_env(), conf())
    assert status == 500
    assert reply["error"]["code"] == 100
    assert fragment in reply["error"]["msg"]


def test_status_error_51_is_http_503_and_counted() -> None:
    registry = CollectorRegistry()
    server = CniServer("/run/ovnk-unit/cni.sock", Handler(), registry=registry)
    status, reply = server.serve({"CNI_COMMAND": "STATUS"}, conf())
    assert (status, reply["error"]["code"]) == (503, 51)
    labels = {"command": "STATUS", "result": "51"}
    assert registry.get_sample_value("ovnk_cni_request_duration_seconds_count", labels) == 1


def test_invalid_commands_share_one_metric_label() -> None:
    registry = CollectorRegistry()
    server = CniServer("/run/ovnk-unit/cni.sock", Handler(), registry=registry)
    for command in ("x1", "x2", "x3"):
        assert server.serve({"CNI_COMMAND": command}, conf())[0] == 400
    labels = {"command": "invalid", "result": "4"}
    assert registry.get_sample_value("ovnk_cni_request_duration_seconds_count", labels) == 3


def test_error_reply_echoes_the_declared_version_even_when_invalid_elsewhere() -> None:
    server = CniServer("/run/ovnk-unit/cni.sock", Handler())
    _, reply = server.serve({"CNI_COMMAND": "ADD"}, conf("0.4.0"))
    assert reply["error"]["cniVersion"] == "0.4.0"
    _, reply = server.serve({"CNI_COMMAND": "ADD"}, "[]")
    assert reply["error"]["cniVersion"] == "1.1.0"


def test_version_through_the_server() -> None:
    status, reply = CniServer("/run/ovnk-unit/cni.sock", Handler()).serve({"CNI_COMMAND": "VERSION"}, conf())
    assert status == 200 and reply["result"]["supportedVersions"][-1] == "1.1.0"


def test_http_status_mapping() -> None:
    assert [http_status_for(c) for c in (1, 3, 4, 6, 7, 11, 50, 51, 100, 105)] == [
        400, 400, 400, 400, 400, 503, 503, 503, 500, 500
    ]


def test_socket_path_is_checked_up_front() -> None:
    with pytest.raises(ValueError, match="must be absolute"):
        CniServer("relative.sock", Handler())
    with pytest.raises(ValueError, match="longer than 107 bytes"):
        CniServer("/" + "x" * 200, Handler())


def test_container_locks_serialise_one_key_and_are_dropped_when_unused() -> None:
    locks = server_mod._ContainerLocks()
    inside = threading.Event()
    release = threading.Event()
    order: list[str] = []

    def first() -> None:
        with locks.hold("c1"):
            inside.set()
            release.wait(10)
            order.append("first")

    def second() -> None:
        with locks.hold("c1"):
            order.append("second")

    t1 = threading.Thread(target=first)
    t1.start()
    assert inside.wait(10)
    t2 = threading.Thread(target=second)
    t2.start()
    with locks.hold("other"):  # a different container is not blocked
        order.append("other")
    release.set()
    t1.join(10)
    t2.join(10)
    assert order == ["other", "first", "second"]
    assert locks._locks == {}
