"""The installed shim, run as a subprocess, against a real CniServer on a unix socket."""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from ovnk.cni.server import CniServer
from ovnk.cni.types import CniError
from ovnk.core.errors import StartupError

from .conftest import SHIM_TIMEOUT
from .conftest import RecordingHandler
from .conftest import ShimRun
from .conftest import netconf

RunShim = Callable[..., ShimRun]
PodEnv = Callable[..., dict[str, str]]


# -- success paths ---------------------------------------------------------------


@pytest.mark.usefixtures("cni_server")
def test_add_returns_the_handlers_result_rendered_for_the_netconf_version(
    run_shim: RunShim, pod_env: PodEnv, handler: RecordingHandler, netns: str
) -> None:
    env = pod_env("ADD")
    config = netconf("1.0.0", mtu=1400)
    run = run_shim(env, config)
    assert (run.returncode, run.stderr) == (0, "")
    assert run.json == {
        "cniVersion": "1.0.0",
        "interfaces": [
            {"name": env["CNI_CONTAINERID"][:15], "mac": "b6:1a:2c:3d:4e:5f"},
            {"name": "eth0", "mac": "0a:58:0a:f4:01:05", "sandbox": netns},
        ],
        "ips": [{"address": "10.244.1.5/24", "gateway": "10.244.1.1", "interface": 1}],
    }
    [request] = handler.calls
    assert request.command == "ADD"
    assert request.container_id == env["CNI_CONTAINERID"]
    assert (request.netns, request.ifname, request.path) == (netns, "eth0", ("/opt/cni/bin",))
    assert (request.pod_key, request.pod_uid) == ("web/frontend-1", "u-1")
    assert request.config == json.loads(config)


@pytest.mark.usefixtures("cni_server")
def test_add_for_0_3_1_carries_ip_versions(run_shim: RunShim, pod_env: PodEnv) -> None:
    run = run_shim(pod_env("ADD"), netconf("0.3.1"))
    assert run.returncode == 0
    assert run.json["cniVersion"] == "0.3.1"
    assert run.json["ips"][0]["version"] == "4"


@pytest.mark.usefixtures("cni_server")
def test_del_check_status_gc_succeed_silently(run_shim: RunShim, pod_env: PodEnv, handler: RecordingHandler) -> None:
    env = pod_env("CHECK")
    prev = {"cniVersion": "1.1.0", "interfaces": [{"name": "eth0"}], "ips": []}
    for command, env_, config in [
        ("CHECK", env, netconf(prevResult=prev)),
        ("DEL", {**env, "CNI_COMMAND": "DEL", "CNI_NETNS": ""}, netconf()),
        ("STATUS", {"CNI_COMMAND": "STATUS"}, netconf()),
        ("GC", {"CNI_COMMAND": "GC"}, netconf(**{"cni.dev/valid-attachments": [{"containerID": "a", "ifname": "eth0"}]})),
    ]:
        run = run_shim({**env_, "CNI_COMMAND": command}, config)
        assert (command, run.returncode, run.stdout, run.stderr) == (command, 0, "", "")
    assert handler.commands() == ["CHECK", "DEL", "STATUS", "GC"]
    assert handler.calls[0].prev_result == prev
    assert handler.calls[1].netns == ""
    assert [a.container_id for a in handler.calls[3].valid_attachments or ()] == ["a"]


def test_version_is_answered_without_the_node_agent(run_shim: RunShim, socket_path: str) -> None:
    assert not os.path.exists(socket_path)
    run = run_shim({"CNI_COMMAND": "VERSION"}, '{"cniVersion": "1.0.0"}')
    assert run.returncode == 0
    assert run.json == {"cniVersion": "1.1.0", "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]}


def test_server_socket_in_netconf_overrides_the_installed_default(
    cni_dir: Path, pod_env: PodEnv, run_shim: RunShim, handler: RecordingHandler
) -> None:
    other = str(cni_dir / "other" / "cni.sock")
    with CniServer(other, handler):
        run = run_shim(pod_env("ADD"), netconf(serverSocket=other))
    assert run.returncode == 0, run.stdout
    assert handler.commands() == ["ADD"]


# -- errors ----------------------------------------------------------------------


def assert_cni_error(run: ShimRun, code: int, fragment: str, *, version: str = "1.1.0") -> dict[str, object]:
    assert run.returncode == 1, run
    error = run.json
    assert error["code"] == code, error
    assert fragment in str(error["msg"]), error
    assert error["cniVersion"] == version
    return dict(error)


@pytest.mark.usefixtures("cni_server")
@pytest.mark.parametrize("stdin", [b"{not json", b"", b"[1, 2]", b"\xff\xfe"])
def test_malformed_stdin_is_error_6(stdin: bytes, run_shim: RunShim, pod_env: PodEnv, handler: RecordingHandler) -> None:
    run = run_shim(pod_env("ADD"), stdin)
    assert_cni_error(run, 6, "network config on stdin is")
    assert handler.calls == []


@pytest.mark.usefixtures("cni_server")
@pytest.mark.parametrize(
    ("command", "unset", "fragment"),
    [
        ("ADD", "CNI_CONTAINERID", "ADD needs CNI_CONTAINERID, which is not set"),
        ("ADD", "CNI_NETNS", "ADD needs CNI_NETNS, which is not set"),
        ("CHECK", "CNI_IFNAME", "CHECK needs CNI_IFNAME, which is not set"),
        ("DEL", "CNI_CONTAINERID", "DEL needs CNI_CONTAINERID, which is not set"),
        ("ADD", "CNI_COMMAND", "CNI_COMMAND is not set"),
    ],
)
def test_missing_environment_is_error_4(
    command: str, unset: str, fragment: str, run_shim: RunShim, pod_env: PodEnv, handler: RecordingHandler
) -> None:
    run = run_shim(pod_env(command, **{unset: None}), netconf("0.4.0"))
    # Without CNI_COMMAND the shim does not read stdin (a person may be running it by hand).
    assert_cni_error(run, 4, fragment, version="1.1.0" if unset == "CNI_COMMAND" else "0.4.0")
    assert handler.calls == []


@pytest.mark.usefixtures("cni_server")
def test_invalid_environment_values_are_error_4_from_the_server(run_shim: RunShim, pod_env: PodEnv) -> None:
    assert_cni_error(run_shim(pod_env("BOGUS"), netconf()), 4, "CNI_COMMAND 'BOGUS' is not one of")
    run = run_shim(pod_env("ADD", CNI_IFNAME="much-too-long-ifname"), netconf())
    assert_cni_error(run, 4, "CNI_IFNAME 'much-too-long-ifname' is longer than 15 characters")


@pytest.mark.usefixtures("cni_server")
def test_unknown_cni_version_is_error_1(run_shim: RunShim, pod_env: PodEnv, handler: RecordingHandler) -> None:
    run = run_shim(pod_env("ADD"), netconf("9.9.9"))
    assert_cni_error(run, 1, "cniVersion '9.9.9' is not supported", version="9.9.9")
    run = run_shim(pod_env("CHECK"), netconf("0.3.1"))
    assert_cni_error(run, 1, "CHECK needs cniVersion 0.4.0 or later", version="0.3.1")
    assert handler.calls == []


@pytest.mark.usefixtures("cni_server")
def test_invalid_network_config_is_error_7(run_shim: RunShim, pod_env: PodEnv) -> None:
    run = run_shim(pod_env("ADD"), json.dumps({"cniVersion": "1.0.0", "type": "ovn-k8s-cni-overlay"}))
    assert_cni_error(run, 7, "network config has no 'name'", version="1.0.0")


@pytest.mark.usefixtures("cni_server")
@pytest.mark.parametrize("command", ["ADD", "CHECK"])
def test_missing_network_namespace_is_error_3(
    command: str, cni_dir: Path, run_shim: RunShim, pod_env: PodEnv, handler: RecordingHandler
) -> None:
    missing = str(cni_dir / "no-such-netns")
    run = run_shim(pod_env(command, CNI_NETNS=missing), netconf())
    assert_cni_error(run, 3, f"network namespace {missing} does not exist")
    assert handler.calls == []


@pytest.mark.usefixtures("cni_server")
def test_del_with_vanished_network_namespace_reaches_the_handler(
    cni_dir: Path, run_shim: RunShim, pod_env: PodEnv, handler: RecordingHandler
) -> None:
    run = run_shim(pod_env("DEL", CNI_NETNS=str(cni_dir / "gone")), netconf())
    assert (run.returncode, run.stdout) == (0, "")
    assert handler.commands() == ["DEL"]


@pytest.mark.usefixtures("cni_server")
def test_handler_exception_is_error_100_and_the_server_keeps_serving(
    run_shim: RunShim, pod_env: PodEnv, handler: RecordingHandler, caplog: pytest.LogCaptureFixture
) -> None:
    handler.fail["ADD"] = RuntimeError("veth creation exploded")
    env = pod_env("ADD")
    run = run_shim(env, netconf())
    assert_cni_error(run, 100, "RuntimeError: veth creation exploded")
    assert any(
        "unexpected failure" in r.message and "web/frontend-1" in r.message and r.exc_info for r in caplog.records
    )
    del handler.fail["ADD"]
    assert run_shim(env, netconf()).returncode == 0


@pytest.mark.usefixtures("cni_server")
def test_handler_cni_error_is_passed_through(run_shim: RunShim, pod_env: PodEnv, handler: RecordingHandler) -> None:
    handler.fail["ADD"] = CniError(101, "timed out waiting for the pod-networks annotation", "after 30 s")
    run = run_shim(pod_env("ADD"), netconf("1.0.0"))
    error = assert_cni_error(run, 101, "timed out waiting", version="1.0.0")
    assert error["details"] == "after 30 s"
    handler.fail["STATUS"] = CniError(50, "OVS is not ready")
    assert_cni_error(run_shim({"CNI_COMMAND": "STATUS"}, netconf()), 50, "OVS is not ready")


def test_node_agent_down_is_error_11_and_50_for_status(
    run_shim: RunShim, pod_env: PodEnv, socket_path: str
) -> None:
    run = run_shim(pod_env("ADD"), netconf())
    assert_cni_error(run, 11, f"not reachable on {socket_path}: the socket does not exist")
    assert_cni_error(run_shim(pod_env("DEL"), netconf()), 11, socket_path)
    assert_cni_error(run_shim({"CNI_COMMAND": "STATUS"}, netconf()), 50, f"not reachable on {socket_path}")


def test_node_agent_stopped_leaving_a_dead_socket_is_error_11(
    run_shim: RunShim, pod_env: PodEnv, socket_path: str
) -> None:
    os.makedirs(os.path.dirname(socket_path), mode=0o700)
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(socket_path)
    dead.close()  # bound, never listened: the path stays, connecting is refused
    run = run_shim(pod_env("ADD"), netconf())
    assert_cni_error(run, 11, f"not reachable on {socket_path}: connection refused")


@pytest.mark.parametrize(
    ("reply", "code", "fragment"),
    [
        (b"garbage\r\n", 105, "sent no valid HTTP reply"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", 105, "answered HTTP 200 without a JSON object"),
        (b'HTTP/1.1 500 Oops\r\n\r\n{"error": "text"}', 105, "answered HTTP 500 without an error object"),
        (b"", 11, "the connection closed without a reply; try again later"),
    ],
)
def test_unintelligible_or_missing_reply(
    reply: bytes, code: int, fragment: str, run_shim: RunShim, pod_env: PodEnv, socket_path: str
) -> None:
    os.makedirs(os.path.dirname(socket_path), mode=0o700)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(socket_path)
    listener.listen(1)

    def answer_once() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(reply)

    thread = threading.Thread(target=answer_once, daemon=True)
    thread.start()
    try:
        assert_cni_error(run_shim(pod_env("ADD"), netconf()), code, fragment)
    finally:
        thread.join(SHIM_TIMEOUT)
        listener.close()


# -- concurrency -----------------------------------------------------------------


@pytest.mark.usefixtures("cni_server")
def test_different_containers_run_in_parallel_same_container_is_serialised(
    shim_path: str, pod_env: PodEnv, handler: RecordingHandler
) -> None:
    slow, fast = pod_env("ADD"), pod_env("ADD")
    slow_id = slow["CNI_CONTAINERID"]
    handler.gate[slow_id] = threading.Event()
    handler.entered[slow_id] = threading.Event()

    def start(env: dict[str, str]) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([shim_path], env=env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        assert proc.stdin is not None
        proc.stdin.write(netconf().encode())
        proc.stdin.close()
        return proc

    slow_add = start(slow)
    try:
        assert handler.entered[slow_id].wait(SHIM_TIMEOUT)
        # Another container is served while the first ADD is still inside the handler.
        fast_add = start(fast)
        assert fast_add.wait(SHIM_TIMEOUT) == 0
        # A DEL for the busy container waits for its ADD to finish.
        slow_del = start({**slow, "CNI_COMMAND": "DEL"})
        with pytest.raises(subprocess.TimeoutExpired):
            slow_del.wait(0.5)
        assert handler.commands() == ["ADD", "ADD"]
    finally:
        handler.gate[slow_id].set()
    assert slow_add.wait(SHIM_TIMEOUT) == 0
    assert slow_del.wait(SHIM_TIMEOUT) == 0
    assert handler.commands() == ["ADD", "ADD", "DEL"]
    assert [c.container_id for c in handler.calls] == [slow_id, fast["CNI_CONTAINERID"], slow_id]


# -- socket security and lifecycle -----------------------------------------------------


def connect_as_nobody(path: str) -> int:
    """errno of a connect() to ``path`` from a child running as uid/gid 65534 (0 if it connected)."""
    pid = os.fork()
    if pid == 0:  # child: drop privileges, try, report through the exit status
        code = 99
        try:
            os.setgroups([])
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                client.connect(path)
                code = 0
            except OSError as exc:
                code = exc.errno or 98
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.mark.usefixtures("cni_server")
def test_socket_is_root_only(socket_path: str) -> None:
    directory = os.path.dirname(socket_path)
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(socket_path).st_mode) == 0o600
    assert stat.S_ISSOCK(os.stat(socket_path).st_mode)
    import errno

    assert connect_as_nobody(socket_path) == errno.EACCES
    # Even with the directory opened up, the socket's own mode keeps others out.
    os.chmod(directory, 0o755)
    try:
        assert connect_as_nobody(socket_path) == errno.EACCES
    finally:
        os.chmod(directory, 0o700)


def test_start_tightens_directory_and_replaces_stale_socket(
    socket_path: str, handler: RecordingHandler, run_shim: RunShim, pod_env: PodEnv
) -> None:
    directory = os.path.dirname(socket_path)
    os.makedirs(directory)
    os.chmod(directory, 0o755)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(socket_path)
    stale.close()
    with CniServer(socket_path, handler):
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
        assert run_shim(pod_env("ADD"), netconf()).returncode == 0
    assert not os.path.exists(socket_path)  # stop() removes it
    assert os.path.isdir(directory)


def test_start_refuses_a_live_socket_and_non_sockets(socket_path: str, handler: RecordingHandler) -> None:
    with CniServer(socket_path, handler):
        with pytest.raises(StartupError, match="another CNI server is listening"):
            CniServer(socket_path, handler).start()
    Path(socket_path).write_text("not a socket")
    with pytest.raises(StartupError, match="exists and is not a socket"):
        CniServer(socket_path, handler).start()
    assert Path(socket_path).read_text() == "not a socket"


def test_start_refuses_shared_directories(handler: RecordingHandler) -> None:
    with pytest.raises(StartupError, match="is shared"):
        CniServer("/tmp/ovnk-cni-must-not-exist.sock", handler).start()
    assert not os.path.exists("/tmp/ovnk-cni-must-not-exist.sock")
    assert os.stat("/tmp").st_mode & stat.S_ISVTX


def test_stop_then_start_again(socket_path: str, handler: RecordingHandler, run_shim: RunShim, pod_env: PodEnv) -> None:
    server = CniServer(socket_path, handler)
    server.start()
    server.stop()
    server.stop()  # idempotent
    assert_cni_error(run_shim(pod_env("ADD"), netconf()), 11, "the socket does not exist")
    server.start()
    try:
        assert run_shim(pod_env("ADD"), netconf()).returncode == 0
    finally:
        server.stop()


# -- observability ---------------------------------------------------------------


@pytest.mark.usefixtures("cni_server")
def test_duration_metric_and_one_log_line_per_request(
    run_shim: RunShim, pod_env: PodEnv, registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="ovnk.cni.server")
    env = pod_env("ADD")
    assert run_shim(env, netconf()).returncode == 0
    assert run_shim(env, netconf("7.0.0")).returncode == 1

    def count(command: str, result: str) -> float | None:
        return registry.get_sample_value(
            "ovnk_cni_request_duration_seconds_count", {"command": command, "result": result}
        )

    assert count("ADD", "ok") == 1
    assert count("ADD", "1") == 1
    lines = [r.getMessage() for r in caplog.records if r.name == "ovnk.cni.server" and r.getMessage().startswith("CNI ")]
    short = env["CNI_CONTAINERID"][:12]
    assert len(lines) == 2
    assert lines[0].startswith(f"CNI ADD web/frontend-1 container={short} result=ok duration=")
    assert lines[1].startswith(f"CNI ADD - container={short} result=error 1 (cniVersion '7.0.0' is not supported")


# -- the HTTP layer itself ---------------------------------------------------------


def raw_exchange(path: str, request: bytes) -> tuple[int, dict[str, object]]:
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.settimeout(SHIM_TIMEOUT)
    client.connect(path)
    client.sendall(request)
    data = b""
    while chunk := client.recv(65536):
        data += chunk
    client.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(body)


@pytest.mark.usefixtures("cni_server")
@pytest.mark.parametrize(
    ("request_bytes", "status", "code"),
    [
        (b"POST /other HTTP/1.1\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}", 404, 100),
        (b"POST /cni HTTP/1.1\r\nConnection: close\r\n\r\n", 411, 6),
        (b"POST /cni HTTP/1.1\r\nContent-Length: 5\r\nConnection: close\r\n\r\n{nope", 400, 6),
        (b'POST /cni HTTP/1.1\r\nContent-Length: 24\r\nConnection: close\r\n\r\n{"env": 1, "config": ""}', 400, 6),
        (b"POST /cni HTTP/1.1\r\nContent-Length: 99999999\r\nConnection: close\r\n\r\n", 413, 6),
    ],
)
def test_malformed_http_requests_get_error_objects(
    socket_path: str, request_bytes: bytes, status: int, code: int
) -> None:
    got_status, reply = raw_exchange(socket_path, request_bytes)
    assert got_status == status
    error = reply["error"]
    assert isinstance(error, dict) and error["code"] == code


def test_silent_node_agent_times_out_as_error_11(
    socket_path: str, pod_env: PodEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The shim's real reply timeout is 150 s (ADD may legitimately take two minutes);
    # run its code in-process with a short one against a listener that never answers.
    from ovnk.cni import shim

    monkeypatch.setattr(shim, "REPLY_TIMEOUT", 0.3)
    os.makedirs(os.path.dirname(socket_path), mode=0o700)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(socket_path)
    listener.listen(1)
    try:
        output, status = shim.run(pod_env("ADD"), io.BytesIO(netconf(serverSocket=socket_path).encode()))
    finally:
        listener.close()
    assert status == 1
    error = json.loads(output)
    assert error["code"] == 11
    assert f"not reachable on {socket_path}: no answer in time" in error["msg"]


# -- robustness against hostile or broken clients (issue 24, D5) ---------------------------


@pytest.mark.usefixtures("cni_server")
def test_request_over_the_size_limit_is_the_agents_error_6_not_a_broken_pipe(
    run_shim: RunShim, pod_env: PodEnv, handler: RecordingHandler, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="ovnk.cni.server")
    # 2 MiB of config: the agent refuses it after reading the headers, before the shim has sent it all.
    done = run_shim(pod_env("ADD"), netconf(padding="x" * (2 * 1024 * 1024)))
    assert done.returncode == 1, done.stdout
    error = json.loads(done.stdout)
    assert error["code"] == 6, error
    assert "exceeds 1048576" in error["msg"]
    assert handler.calls == []
    refused = [r.getMessage() for r in caplog.records if r.name == "ovnk.cni.server" and "exceeds" in r.getMessage()]
    assert len(refused) == 1, [r.getMessage() for r in caplog.records]


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.usefixtures("cni_server")
@pytest.mark.parametrize("where", ["config", "body"])
def test_deeply_nested_json_gets_error_6_and_the_server_keeps_serving(
    socket_path: str, pod_env: PodEnv, run_shim: RunShim, where: str
) -> None:
    env = pod_env("ADD")
    if where == "config":  # past both shims only by a client of its own: the socket is root's
        config = '{"cniVersion": "1.0.0", "name": "n", "type": "t", "x": ' + nested(50000) + "}"
        body = json.dumps({"env": env, "config": config}).encode()
    else:
        body = b'{"env": ' + nested(50000).encode() + b', "config": ""}'
    request = b"POST /cni HTTP/1.1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    status, reply = raw_exchange(socket_path, request)
    assert status == 400
    error = reply["error"]
    assert isinstance(error, dict) and error["code"] == 6, error
    assert "nested too deeply" in str(error["msg"])
    assert run_shim(env, netconf()).returncode == 0


@pytest.mark.usefixtures("cni_server")
def test_aborted_client_connections_log_one_line_each(socket_path: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG", logger="ovnk.cni.server")
    aborts = 20
    for _ in range(aborts):
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(socket_path)
        # Headers promising a body that never comes: the server answers into a closed socket.
        client.sendall(b"POST /cni HTTP/1.1\r\nContent-Length: 100\r\n\r\n{")
        client.close()

    def failures() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name == "ovnk.cni.server" and "connection" in r.getMessage()
                and r.levelno >= logging.WARNING]

    deadline = time.monotonic() + 30
    while len(failures()) < aborts and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = failures()
    assert len(lines) == aborts, [r.getMessage() for r in lines]
    assert all(r.exc_info is None and "\n" not in r.getMessage() for r in lines), lines[0].exc_info


@pytest.mark.usefixtures("cni_server")
def test_client_supplied_names_are_logged_escaped_and_capped(
    run_shim: RunShim, pod_env: PodEnv, handler: RecordingHandler, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG", logger="ovnk.cni")
    forged = "\n2026-01-01 00:00:00,000 INFO    ovnk.cni.server: CNI ADD kube-system/forged result=ok"
    runs = [
        run_shim(pod_env("ADD", CNI_CONTAINERID="abc" + forged), netconf()),
        run_shim(pod_env("ADD", CNI_ARGS="K8S_POD_NAMESPACE=web;K8S_POD_NAME=p" + forged.replace(";", ",")), netconf()),
        run_shim(pod_env("DEL", CNI_ARGS="K8S_POD_NAMESPACE=web;K8S_POD_NAME=" + "n" * 20000), netconf()),
    ]
    for done in runs:
        error = json.loads(done.stdout)
        assert done.returncode == 1 and error["code"] == 4, done.stdout
    assert handler.calls == []
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("ovnk.cni")]
    assert messages
    for message in messages:
        assert "\n" not in message and "\r" not in message, message
        assert len(message) < 1000, message[:200]
