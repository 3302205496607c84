"""The shim's own logic, in-process: its lean JSON codec and the errors it answers by itself.

The end-to-end behaviour (installed file, subprocess, real server) is in
tests/functional/cni/.
"""

from __future__ import annotations

import io
import json
import sys
from typing import Any

import pytest

from ovnk.cni import shim

VALUES: list[Any] = [
    {"cniVersion": "1.1.0", "name": "ovn-kubernetes", "type": "ovn-k8s-cni-overlay"},
    {"nested": {"list": [1, 2.5, -3, 1e100, True, False, None, "x"], "empty": {}, "none": []}},
    {"unicode": "päd \u2603 \U0001f600", "escapes": "quote\" backslash\\ newline\n tab\t nul\x00"},
    [],
    "plain",
    0,
    {"big": 2**70, "small": -0.0001},
]


@pytest.fixture(params=["c-accelerator", "json-package"])
def codec(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Any:
    if request.param == "json-package":
        monkeypatch.setitem(sys.modules, "_json", None)  # "from _json import ..." now raises ImportError
    return shim._json_codec()


@pytest.mark.parametrize("value", VALUES)
def test_codec_matches_the_json_package(codec: Any, value: Any) -> None:
    loads, dumps = codec
    assert dumps(value) == json.dumps(value)
    assert loads(json.dumps(value)) == value
    assert loads(f" \n\t{json.dumps(value)}\r\n ") == value


@pytest.mark.parametrize("text", ["", "   ", "{", '{"a": }', "[1] x", "NaN", "Infinity", "{'a': 1}", '"\x01"'])
def test_codec_rejects_what_the_json_package_rejects(codec: Any, text: str) -> None:
    loads, _ = codec
    with pytest.raises(ValueError):
        json.loads(text, parse_constant=lambda name: (_ for _ in ()).throw(ValueError(name)))
    with pytest.raises(ValueError):
        loads(text)


def test_codec_refuses_to_encode_unknown_types() -> None:
    _, dumps = shim._json_codec()
    with pytest.raises(TypeError):
        dumps({"a": object()})


class ExplodingStdin(io.RawIOBase):
    def read(self, size: int = -1) -> bytes:
        raise OSError(5, "Input/output error")


def run(env: dict[str, str], stdin: bytes | io.RawIOBase = b"") -> tuple[dict[str, Any] | None, int]:
    stream = io.BytesIO(stdin) if isinstance(stdin, bytes) else stdin
    output, status = shim.run(env, stream)  # type: ignore[arg-type]
    return (json.loads(output) if output else None), status


def test_version_does_not_touch_stdin() -> None:
    reply, status = run({"CNI_COMMAND": "VERSION"}, ExplodingStdin())
    assert status == 0
    assert reply == {"cniVersion": "1.1.0", "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]}


def test_unreadable_stdin_is_error_5() -> None:
    reply, status = run({"CNI_COMMAND": "ADD"}, ExplodingStdin())
    assert status == 1 and reply is not None
    assert reply["code"] == 5
    assert "cannot read the network config from stdin" in reply["msg"]


@pytest.mark.parametrize(
    ("env", "stdin", "code", "fragment"),
    [
        ({}, b"{}", 4, "CNI_COMMAND is not set"),
        ({"CNI_COMMAND": "UPDATE"}, b"{}", 4, "CNI_COMMAND 'UPDATE' is not one of ADD, DEL, CHECK, VERSION, STATUS, GC"),
        ({"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c"}, b'{"cniVersion": "0.4.0"}', 4,
         "ADD needs CNI_NETNS, CNI_IFNAME, which is not set"),
        ({"CNI_COMMAND": "STATUS"}, b"{nope", 6, "network config on stdin is not JSON"),
        ({"CNI_COMMAND": "STATUS"}, b"\xff", 6, "network config on stdin is not JSON"),
        ({"CNI_COMMAND": "GC"}, b"[]", 6, "network config on stdin is a JSON list, not an object"),
    ],
)
def test_errors_the_shim_answers_itself(env: dict[str, str], stdin: bytes, code: int, fragment: str) -> None:
    reply, status = run(env, stdin)
    assert status == 1 and reply is not None
    assert reply["code"] == code
    assert fragment in reply["msg"]
    assert reply["cniVersion"] == ("0.4.0" if b"0.4.0" in stdin else "1.1.0")


@pytest.mark.parametrize(("command", "code"), [("STATUS", 50), ("GC", 11)])
def test_unreachable_agent_names_the_socket(command: str, code: int) -> None:
    config = json.dumps({"cniVersion": "1.1.0", "serverSocket": "/nonexistent/ovnk/cni.sock"}).encode()
    reply, status = run({"CNI_COMMAND": command}, config)
    assert status == 1 and reply is not None
    assert reply["code"] == code
    assert "not reachable on /nonexistent/ovnk/cni.sock: the socket does not exist" in reply["msg"]


def test_environment_is_read_as_os_environ_decodes_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    monkeypatch.setenv("CNI_ARGS", "K8S_POD_NAME=p\udcff;IgnoreUnknown=1")  # a byte that is not UTF-8
    assert shim._environ() == dict(os.environ)
