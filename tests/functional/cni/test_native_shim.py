"""The native shim (``cni/native/shim.c``): its build, its install, and the same answers as shim.py.

test_shim_server.py runs every shim scenario against both shims; this module covers
what only the compiled one has (the build, the socket slot, a static binary) and feeds
both shims the edge cases of JSON and the environment, comparing what the node agent
receives and what the runtime is told.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ovnk.cni import install

from .conftest import SHIM_TIMEOUT
from .conftest import netconf

REPLY = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 16\r\n\r\n{"result": null}'


def test_build_is_static_and_skipped_when_up_to_date(tmp_path: Path) -> None:
    dest = tmp_path / "shim"
    assert install.build_native_shim(dest) == dest
    built = dest.stat()
    # Static: runs with no loader, no libraries, nothing from the host.
    ldd = subprocess.run(["ldd", str(dest)], capture_output=True, text=True, check=False)
    assert "not a dynamic executable" in ldd.stdout + ldd.stderr
    install.build_native_shim(dest)
    assert dest.stat().st_mtime_ns == built.st_mtime_ns
    # A different build recipe (here: compiler spelled by path) rebuilds.
    install.build_native_shim(dest, cc="/usr/bin/gcc")
    assert dest.stat().st_ino != built.st_ino
    assert sorted(os.listdir(tmp_path)) == ["shim", "shim.sha256"]


def test_build_failure_names_the_compiler(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="no C compiler 'no-such-cc'"):
        install.build_native_shim(tmp_path / "shim", cc="no-such-cc")
    with pytest.raises(RuntimeError, match="failed to build"):
        install.build_native_shim(tmp_path / "shim", cc="false")
    assert os.listdir(tmp_path) == []


def test_install_writes_the_socket_into_the_slot_and_rewrites_only_on_change(
    tmp_path: Path, native_shim: Path
) -> None:
    dest = tmp_path / "ovn-k8s-cni-overlay"
    longest = "/" + "s" * (install.MAX_SOCKET_PATH - 1)
    install.install_shim(str(dest), socket_path=longest, native_binary=native_shim)
    content = dest.read_bytes()
    assert len(content) == native_shim.stat().st_size
    assert (b"ovnk-socket-path=" + longest.encode() + b"\0") in content
    first = dest.stat()
    install.install_shim(str(dest), socket_path=longest, native_binary=native_shim)
    assert dest.stat().st_ino == first.st_ino
    install.install_shim(str(dest), socket_path="/run/short.sock", native_binary=native_shim)
    assert dest.stat().st_ino != first.st_ino
    # The shorter path is NUL-padded: nothing of the longer one survives.
    assert b"s" * 20 not in dest.read_bytes()
    assert os.listdir(tmp_path) == ["ovn-k8s-cni-overlay"]
    with pytest.raises(ValueError, match="longer than 107 bytes"):
        install.install_shim(str(dest), socket_path=longest + "s", native_binary=native_shim)


def test_install_without_a_build_says_how_to_get_one(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"run `ovnk cni build-shim` \(needs gcc\) or set \[cni\] shim = python"):
        install.install_shim(str(tmp_path / "shim"), socket_path="/run/x.sock", native_binary=tmp_path / "missing")
    assert os.listdir(tmp_path) == []


def test_cli_builds_and_installs_the_native_shim(tmp_path: Path, run_cli: Callable[..., Any]) -> None:
    built = tmp_path / "build" / "ovnk-cni-shim"
    result = run_cli("cni", "build-shim", "--output", str(built))
    assert result.exit_code == 0, result.output
    assert f"native CNI shim: {built}" in result.output
    # `ovnk cni install` takes the default build (the setup script made it); --portable-python
    # is the chart's flag and changes nothing for the native shim.
    bin_dir = tmp_path / "bin"
    result = run_cli("--set", f"cni.bin-dir={bin_dir}", "cni", "install", "--portable-python", env={})
    assert result.exit_code == 0, result.output
    assert os.listdir(bin_dir) == ["ovn-k8s-cni-overlay"]
    version = subprocess.run([str(bin_dir / "ovn-k8s-cni-overlay")], env={"CNI_COMMAND": "VERSION"},
                             capture_output=True, text=True, timeout=SHIM_TIMEOUT, check=False)
    assert (version.returncode, version.stderr) == (0, "")
    assert json.loads(version.stdout)["supportedVersions"][-1] == "1.1.0"


# -- the same answers as shim.py -------------------------------------------------------


class Recorder:
    """A node agent stand-in on a unix socket: records each request body, answers ``reply``."""

    def __init__(self, path: str, reply: bytes = REPLY) -> None:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        self.path = path
        self.bodies: list[Any] = []
        self.reply = reply
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(8)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                head, _, body = data.partition(b"\r\n\r\n")
                length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length:")))
                while len(body) < length:
                    body += conn.recv(65536)
                self.bodies.append(json.loads(body))
                conn.sendall(self.reply)

    def close(self) -> None:
        # shutdown() wakes the thread blocked in accept(); close() alone would not, and the thread
        # would go on accepting on whatever socket reuses the descriptor (the next test's server).
        self.listener.shutdown(socket.SHUT_RDWR)
        self.thread.join(SHIM_TIMEOUT)
        assert not self.thread.is_alive()
        self.listener.close()
        os.unlink(self.path)


@pytest.fixture
def both_shims(cni_dir: Path, socket_path: str, native_shim: Path) -> dict[str, str]:
    shims = {}
    for kind in ("native", "python"):
        dest = str(cni_dir / kind / "ovn-k8s-cni-overlay")
        install.install_shim(dest, socket_path=socket_path, kind=kind, native_binary=native_shim)  # type: ignore[arg-type]
        shims[kind] = dest
    return shims


def run_both(shims: dict[str, str], env: dict[bytes, bytes], stdin: bytes) -> dict[str, tuple[int, Any]]:
    outcome = {}
    for kind, path in shims.items():
        proc = subprocess.run([path], input=stdin, env=env, capture_output=True, timeout=SHIM_TIMEOUT, check=False)
        assert proc.stderr == b"", (kind, proc.stderr)
        outcome[kind] = (proc.returncode, json.loads(proc.stdout) if proc.stdout.strip() else None)
    return outcome


def run_both_against_recorder(
    shims: dict[str, str], socket_path: str, env: dict[bytes, bytes], stdin: bytes, reply: bytes = REPLY
) -> tuple[dict[str, tuple[int, Any]], list[Any]]:
    """Both shims' outcomes, and the request bodies a :class:`Recorder` on ``socket_path`` received."""
    recorder = Recorder(socket_path, reply)
    try:
        return run_both(shims, env, stdin), recorder.bodies
    finally:
        recorder.close()


ADD_ENV = {b"CNI_COMMAND": b"ADD", b"CNI_CONTAINERID": b"c1", b"CNI_NETNS": b"/var/run/netns/x",
           b"CNI_IFNAME": b"eth0"}


@pytest.mark.parametrize(
    "stdin",
    [
        b' \n\t{"cniVersion": "0.4.0", "name": "n"}\r\n',  # blanks around the object
        '{"cniVersion": "1.0.0", "name": "caf\u00e9 \U0001f600", "x": "\\u00e9\\ud83d\\ude00\\n\\"\\\\\\/"}'.encode(),
        b'{"cniVersion": "0.3.1", "cniVersion": "1.0.0", "nested": [[[{"a": [1, -2.5e+3, 0.1E-2, true, null]}]]]}',
        b'{"serverSocket": "", "cniVersion": "1.0.0"}',  # empty serverSocket: the installed default
        b'{"cniVersion": 1.0}',  # not a string: the shim's own errors say 1.1.0
    ],
)
def test_valid_configs_reach_the_agent_identically(both_shims: dict[str, str], socket_path: str, stdin: bytes) -> None:
    outcome, bodies = run_both_against_recorder(both_shims, socket_path, ADD_ENV, stdin)
    assert outcome == {"native": (0, None), "python": (0, None)}
    native, python = bodies
    assert native == python
    assert native["config"] == stdin.decode()


def test_environment_bytes_that_are_not_utf8_are_forwarded_like_python_does(
    both_shims: dict[str, str], socket_path: str
) -> None:
    env = {**ADD_ENV, b"CNI_ARGS": b"K8S_POD_NAME=p\xff\xfe;X=\"q\\\x01", b"CNI_PATH": b"", b"UNRELATED": b"1"}
    outcome, bodies = run_both_against_recorder(both_shims, socket_path, env, netconf().encode())
    assert outcome["native"] == outcome["python"] == (0, None)
    native, python = bodies
    assert native == python
    assert native["env"]["CNI_ARGS"] == 'K8S_POD_NAME=p\udcff\udcfe;X="q\\\x01'
    assert native["env"]["CNI_PATH"] == ""
    assert "UNRELATED" not in native["env"]


@pytest.mark.parametrize(
    ("stdin", "code", "fragment", "version"),
    [
        (b'{"cniVersion": "1.0.0"} x', 6, "not JSON", "1.1.0"),
        (b'{"cniVersion": NaN}', 6, "not JSON", "1.1.0"),
        (b'\xef\xbb\xbf{"cniVersion": "1.0.0"}', 6, "not JSON", "1.1.0"),  # a BOM
        (b'{"name": "\xc0\xaf"}', 6, "not JSON", "1.1.0"),  # overlong UTF-8
        (b'{"name": "a\x01"}', 6, "not JSON", "1.1.0"),  # raw control character
        (b'{"a": 01}', 6, "not JSON", "1.1.0"),
        (b'{"a": "\\x"}', 6, "not JSON", "1.1.0"),
        (b'"just a string"', 6, "not an object", "1.1.0"),
        (b"null", 6, "not an object", "1.1.0"),
    ],
)
def test_invalid_configs_are_refused_identically(
    both_shims: dict[str, str], socket_path: str, stdin: bytes, code: int, fragment: str, version: str
) -> None:
    outcome, bodies = run_both_against_recorder(both_shims, socket_path, ADD_ENV, stdin)
    assert bodies == []
    for kind, (status, error) in outcome.items():
        assert status == 1, kind
        assert (error["code"], error["cniVersion"]) == (code, version), (kind, error)
        assert fragment in error["msg"], (kind, error)


def test_missing_environment_error_carries_the_configs_escaped_version(both_shims: dict[str, str]) -> None:
    stdin = b'{"cniVersion": "1.0.\\u0030"}'
    outcome = run_both(both_shims, {b"CNI_COMMAND": b"DEL"}, stdin)
    assert outcome["native"] == outcome["python"]
    status, error = outcome["native"]
    assert (status, error["code"], error["cniVersion"]) == (1, 4, "1.0.0")
    assert error["msg"] == "DEL needs CNI_CONTAINERID, CNI_IFNAME, which is not set"


def test_a_deeply_nested_config_is_refused_not_crashed(both_shims: dict[str, str], socket_path: str) -> None:
    # Python's limit is its recursion depth (it used to escape as a traceback); the native one's 512.
    deep = b'{"cniVersion": "1.0.0", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    outcome, bodies = run_both_against_recorder(both_shims, socket_path, ADD_ENV, deep)
    assert bodies == []
    for kind, (status, error) in outcome.items():
        assert (status, error["code"], error["cniVersion"]) == (1, 6, "1.1.0"), kind
        assert "nested too deeply" in error["msg"], kind


def test_error_and_result_replies_pass_through_unchanged(both_shims: dict[str, str], socket_path: str) -> None:
    result = {"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "mac": "0a:58:0a:f4:01:05"}],
              "ips": [{"address": "10.244.1.5/24", "gateway": "10.244.1.1", "interface": 0}]}
    for status, reply, exit_code in [
        ("200 OK", {"result": result}, 0),
        ("500 Internal Server Error", {"error": {"cniVersion": "1.0.0", "code": 7, "msg": "bad", "details": "d"}}, 1),
    ]:
        body = json.dumps(reply).encode()
        raw = b"HTTP/1.1 %s\r\nContent-Length: %d\r\n\r\n" % (status.encode(), len(body)) + body + b"trailing"
        outcome, _ = run_both_against_recorder(both_shims, socket_path, ADD_ENV, netconf("1.0.0").encode(), raw)
        expected = reply.get("result") or reply["error"]
        assert outcome == {"native": (exit_code, expected), "python": (exit_code, expected)}


def test_cli_install_without_a_build_fails_with_the_fix(
    tmp_path: Path, run_cli: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(install, "native_shim_binary", lambda: tmp_path / "never-built")
    bin_dir = tmp_path / "bin"
    result = run_cli("--set", f"cni.bin-dir={bin_dir}", "cni", "install", env={})
    assert result.exit_code == 1
    assert f"cannot install the CNI shim into {bin_dir}: the native CNI shim is not built" in result.output
    assert "run `ovnk cni build-shim` (needs gcc) or set [cni] shim = python" in result.output
    assert not any(bin_dir.glob("*"))
