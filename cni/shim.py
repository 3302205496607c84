#!/usr/bin/env python3
"""ovnk's CNI binary: forwards one CNI invocation to the node agent and prints its answer.

The container runtime runs this file once per pod operation, so it must start
in a few milliseconds: it is a single stdlib-only file (``ovnk.cni.install``
copies it into the CNI bin directory with the node's interpreter in the
shebang and the default socket path filled in), it imports nothing from ovnk,
and ``VERSION`` imports nothing at all. The forwarding path uses the C halves
of ``json`` and ``socket`` (``_json``, ``_socket``) directly: the ``json`` and
``socket`` packages import ``re`` and ``enum``, which cost more than the rest of
the shim's start-up together (measured: ~9 ms of ~20 ms); likewise it reads the
environment through ``posix``, as ``os`` costs another ~1-2 ms. If an
interpreter lacks them, the shim falls back to the public modules.

Protocol: HTTP/1.1 ``POST /cni`` on the node agent's unix socket, body
``{"env": {CNI_* variables}, "config": "<stdin>"}``; the reply is
``{"result": <CNI result or null>}`` (2xx) or ``{"error": <CNI error object>}``.
Exit status and stdout follow the CNI spec: the result (if any) and 0, or the
error object and 1.

The command table and version list below repeat ``ovnk.cni.types`` on
purpose (this file may not import it); a unit test keeps both in step.
"""

from __future__ import annotations

import sys

# typing costs milliseconds at import; mypy treats any TYPE_CHECKING name as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from collections.abc import Mapping
    from typing import BinaryIO

# Replaced by ovnk.cni.install.install_shim; keep the whole line intact.
DEFAULT_SOCKET_PATH = "/var/run/ovn-kubernetes/cni/ovn-cni-server.sock"  # ovnk-install: socket path

SUPPORTED_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
CURRENT_VERSION = "1.1.0"
VERSION_REPLY = '{"cniVersion": "1.1.0", "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]}'

REQUIRED_ENV = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
    "VERSION": (),
    "STATUS": (),
    "GC": (),
}
FORWARDED_ENV = ("CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS", "CNI_PATH")

ERR_INVALID_ENVIRONMENT = 4
ERR_IO_FAILURE = 5
ERR_DECODING_FAILURE = 6
ERR_TRY_AGAIN_LATER = 11
ERR_NOT_AVAILABLE = 50
ERR_BAD_REPLY = 105

# Connecting to a listening unix socket is immediate unless its backlog is full.
CONNECT_TIMEOUT = 10.0
# ADD may wait for the pod annotation and ovn-installed; the runtime itself gives up after 2 minutes.
REPLY_TIMEOUT = 150.0
MAX_REPLY_BYTES = 4 * 1024 * 1024


class ShimError(Exception):
    """An error the shim reports itself, as a CNI error object."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details


def _json_codec() -> tuple[Callable[[str], object], Callable[[object], str]]:
    """(loads, dumps) equivalent to ``json.loads`` and ``json.dumps`` with default arguments."""

    def reject_constant(name: str) -> object:
        raise ValueError(f"{name} is not valid JSON")

    def precise_loads(text: str) -> object:
        import json

        return json.loads(text, parse_constant=reject_constant)

    try:
        from _json import encode_basestring_ascii
        from _json import make_scanner
    except ImportError:
        import json

        return precise_loads, json.dumps

    class Context:
        # The attributes the C scanner reads from a json.JSONDecoder.
        strict = True
        object_hook = None
        object_pairs_hook = None
        parse_float = float
        parse_int = int
        parse_constant = staticmethod(reject_constant)

    scan = make_scanner(Context())  # type: ignore[arg-type]  # any object with these attributes works
    blanks = " \t\n\r"

    def loads(text: str) -> object:
        start = len(text) - len(text.lstrip(blanks))
        try:
            value, end = scan(text, start)
        except Exception:
            # Invalid input. The scanner's own errors need json.decoder loaded (3.11 raises
            # SystemError otherwise), so let the json package re-parse and word the error.
            return precise_loads(text)
        if text[end:].strip(blanks):
            return precise_loads(text)
        return value

    def dumps(value: object) -> str:
        if isinstance(value, str):
            return str(encode_basestring_ascii(value))
        if value is None:
            return "null"
        if value is True:
            return "true"
        if value is False:
            return "false"
        if isinstance(value, int | float):
            return repr(value)
        if isinstance(value, dict):
            items = (f"{encode_basestring_ascii(str(k))}: {dumps(v)}" for k, v in value.items())
            return "{" + ", ".join(items) + "}"
        if isinstance(value, list | tuple):
            return "[" + ", ".join(dumps(v) for v in value) + "]"
        raise TypeError(f"cannot encode {type(value).__name__} as JSON")

    return loads, dumps


def _error_object(cni_version: str, code: int, msg: str, details: str = "") -> str:
    _, dumps = _json_codec()
    return dumps({"cniVersion": cni_version, "code": code, "msg": msg, "details": details})


def _read_config(stdin: BinaryIO) -> tuple[str, dict[str, object] | None, str]:
    """Return (text, netconf dict or None, what is wrong with it or "")."""
    try:
        raw = stdin.read()
    except OSError as exc:
        raise ShimError(ERR_IO_FAILURE, f"cannot read the network config from stdin: {exc}") from None
    loads, _ = _json_codec()
    try:
        text = raw.decode("utf-8")
        config = loads(text)
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return "", None, f"network config on stdin is not JSON: {exc}"
    except RecursionError:
        return "", None, "network config on stdin is not JSON: nested too deeply"
    if not isinstance(config, dict):
        return text, None, f"network config on stdin is a JSON {type(config).__name__}, not an object"
    return text, config, ""


def _exchange(socket_path: str, body: bytes) -> tuple[int, bytes]:
    """POST ``body`` to ``/cni`` on ``socket_path``; return (HTTP status, reply body)."""
    try:
        from _socket import AF_UNIX
        from _socket import SOCK_STREAM
        from _socket import socket
    except ImportError:
        from socket import AF_UNIX
        from socket import SOCK_STREAM
        from socket import socket  # type: ignore[assignment]

    request = (
        b"POST /cni HTTP/1.1\r\nHost: ovnk-cni\r\nContent-Type: application/json\r\n"
        b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body)
    ) + body
    sock = socket(AF_UNIX, SOCK_STREAM)
    send_error: OSError | None = None
    try:
        sock.settimeout(CONNECT_TIMEOUT)
        sock.connect(socket_path)
        sock.settimeout(REPLY_TIMEOUT)
        try:
            sock.sendall(request)
        except (BrokenPipeError, ConnectionResetError) as exc:
            # The agent may answer before reading the whole request (one over its size limit)
            # and close: its reply is still waiting to be read.
            send_error = exc
        chunks: list[bytes] = []
        size = 0
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                # The agent closed with our request partly unread: the end of its reply.
                if chunks:
                    break
                raise send_error or ConnectionResetError(0, "the connection closed without a reply") from None
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_REPLY_BYTES:
                raise ShimError(ERR_BAD_REPLY, f"reply from the node agent on {socket_path} is too large")
    finally:
        sock.close()
    reply = b"".join(chunks)
    if not reply:
        if send_error is not None:
            raise send_error
        # The agent took the connection and closed it: it is restarting, not broken.
        raise ConnectionResetError(0, "the connection closed without a reply")
    head, sep, payload = reply.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].split(b" ", 2)
    if not sep or len(status_line) < 2 or not status_line[1].isdigit():
        raise ShimError(
            ERR_BAD_REPLY, f"the node agent on {socket_path} sent no valid HTTP reply", repr(reply[:200])
        )
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and value.strip().isdigit():
            payload = payload[: int(value)]
    return int(status_line[1]), payload


def _unreachable(command: str, socket_path: str, reason: str) -> ShimError:
    code = ERR_NOT_AVAILABLE if command == "STATUS" else ERR_TRY_AGAIN_LATER
    return ShimError(code, f"the ovnk node agent is not reachable on {socket_path}: {reason}; try again later")


def run(env: Mapping[str, str], stdin: BinaryIO) -> tuple[str, int]:
    """Handle one invocation; return (stdout text, exit status)."""
    command = env.get("CNI_COMMAND", "")
    if command == "VERSION":
        return VERSION_REPLY, 0
    cni_version = CURRENT_VERSION
    try:
        if not command:
            raise ShimError(ERR_INVALID_ENVIRONMENT, "CNI_COMMAND is not set")
        if command not in REQUIRED_ENV:
            raise ShimError(
                ERR_INVALID_ENVIRONMENT, f"CNI_COMMAND {command!r} is not one of {', '.join(REQUIRED_ENV)}"
            )
        text, config, problem = _read_config(stdin)
        declared = config.get("cniVersion") if config is not None else None
        if isinstance(declared, str):
            cni_version = declared
        missing = [name for name in REQUIRED_ENV[command] if not env.get(name)]
        if missing:
            raise ShimError(ERR_INVALID_ENVIRONMENT, f"{command} needs {', '.join(missing)}, which is not set")
        if config is None:
            raise ShimError(ERR_DECODING_FAILURE, problem)
        socket_path = config.get("serverSocket")
        if not isinstance(socket_path, str) or not socket_path:
            socket_path = DEFAULT_SOCKET_PATH

        loads, dumps = _json_codec()
        forwarded = {name: env[name] for name in FORWARDED_ENV if name in env}
        body = dumps({"env": forwarded, "config": text}).encode()
        try:
            status, payload = _exchange(socket_path, body)
        except FileNotFoundError:
            raise _unreachable(command, socket_path, "the socket does not exist") from None
        except ConnectionRefusedError:
            raise _unreachable(command, socket_path, "connection refused") from None
        except PermissionError:
            raise _unreachable(command, socket_path, "permission denied (the CNI binary must run as root)") from None
        except TimeoutError:
            raise _unreachable(command, socket_path, "no answer in time") from None
        except OSError as exc:
            raise _unreachable(command, socket_path, exc.strerror or str(exc)) from None
        try:
            reply = loads(payload.decode("utf-8"))
        except (ValueError, RecursionError):
            reply = None
        if not isinstance(reply, dict):
            raise ShimError(
                ERR_BAD_REPLY, f"the node agent on {socket_path} answered HTTP {status} without a JSON object",
                repr(payload[:200]),
            )
        if 200 <= status < 300 and "result" in reply:
            result = reply["result"]
            return ("" if result is None else dumps(result)), 0
        error = reply.get("error")
        if not isinstance(error, dict) or not isinstance(error.get("code"), int):
            raise ShimError(
                ERR_BAD_REPLY, f"the node agent on {socket_path} answered HTTP {status} without an error object",
                repr(payload[:200]),
            )
        return dumps(error), 1
    except ShimError as exc:
        return _error_object(cni_version, exc.code, exc.msg, exc.details), 1


def _environ() -> dict[str, str]:
    """The process environment as ``os.environ`` decodes it, without importing ``os`` (~1 ms of start-up)."""
    try:
        from posix import environ
    except ImportError:
        import os

        return dict(os.environ)
    return {key.decode("utf-8", "surrogateescape"): value.decode("utf-8", "surrogateescape")
            for key, value in environ.items()}


def main() -> int:
    """Entry point of the installed binary and of the ``ovnk-cni`` console script."""
    output, status = run(_environ(), sys.stdin.buffer)
    if output:
        sys.stdout.write(output + "\n")
        sys.stdout.flush()
    return status


if __name__ == "__main__":
    sys.exit(main())
