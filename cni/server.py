"""The CNI server inside the node agent: the shim's other end.

It listens on a root-only unix socket (directory 0700, socket 0600), answers
``POST /cni`` with one thread per request, validates each request into a
:class:`~ovnk.cni.types.CniRequest` and hands it to a :class:`CniHandler`, the
object that really wires pod interfaces (the node agent provides it). Requests
for the same container are serialised, different containers run in parallel.

Every outcome becomes a reply: a result, the handler's :class:`CniError`, or,
for any other exception, error 100 with the exception text. One log line and
one ``ovnk_cni_request_duration_seconds`` observation per request.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import logging
import os
import socket
import socketserver
import stat
import sys
import threading
import time
from collections.abc import Iterator
from collections.abc import Mapping
from typing import Any
from typing import Protocol

from prometheus_client import CollectorRegistry
from prometheus_client import Histogram

from ovnk.cni.install import check_socket_path
from ovnk.cni.types import COMMANDS
from ovnk.cni.types import CURRENT_VERSION
from ovnk.cni.types import ERR_DECODING_FAILURE
from ovnk.cni.types import ERR_INTERNAL
from ovnk.cni.types import ERR_NOT_AVAILABLE
from ovnk.cni.types import ERR_NOT_AVAILABLE_LIMITED
from ovnk.cni.types import ERR_TRY_AGAIN_LATER
from ovnk.cni.types import ERR_UNKNOWN_CONTAINER
from ovnk.cni.types import PRINTABLE_LIMIT
from ovnk.cni.types import CniError
from ovnk.cni.types import CniRequest
from ovnk.cni.types import CniResult
from ovnk.cni.types import printable
from ovnk.cni.types import version_info
from ovnk.core.errors import StartupError
from ovnk.core.metrics import node_metrics

logger = logging.getLogger(__name__)

# Seconds a client may take to send its request (not the handler's run time).
REQUEST_READ_TIMEOUT = 30.0
MAX_REQUEST_BYTES = 1024 * 1024
# Characters of an error message one log line shows at most.
LOGGED_MESSAGE_LIMIT = 300
# How often the accept loop looks for stop(); bounds how long stop() takes.
STOP_POLL_INTERVAL = 0.1
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class CniHandler(Protocol):
    """What the node agent plugs into the server; every method may raise :class:`CniError`."""

    def add(self, request: CniRequest) -> CniResult:
        """Wire the pod interface; return the result (the server renders it for the request's version)."""
        ...

    def delete(self, request: CniRequest) -> None:
        """Tear the interface down. Must succeed for unknown containers and missing namespaces."""
        ...

    def check(self, request: CniRequest) -> None:
        """Verify the interface still matches ``request.prev_result``."""
        ...

    def status(self, request: CniRequest) -> None:
        """Raise ``CniError(50, ...)`` while ADD cannot be served."""
        ...

    def gc(self, request: CniRequest) -> None:
        """Remove attachments not listed in ``request.valid_attachments``."""
        ...


def http_status_for(code: int) -> int:
    """HTTP status of an error reply: 503 for transient unavailability, 500 for our own codes, else 400."""
    if code in (ERR_TRY_AGAIN_LATER, ERR_NOT_AVAILABLE, ERR_NOT_AVAILABLE_LIMITED):
        return 503
    if code >= 100:
        return 500
    return 400


class _ContainerLocks:
    """One lock per container id, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}

    @contextlib.contextmanager
    def hold(self, key: str) -> Iterator[None]:
        with self._guard:
            lock, users = self._locks.get(key, (threading.Lock(), 0))
            self._locks[key] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._guard:
                lock, users = self._locks[key]
                if users == 1:
                    del self._locks[key]
                else:
                    self._locks[key] = (lock, users - 1)


class _UnixHttpServer(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True
    # stop() must not wait for an ADD that may run for two minutes.
    block_on_close = False

    def __init__(self, path: str, cni: CniServer) -> None:
        self.cni = cni
        super().__init__(path, _RequestHandler, bind_and_activate=False)

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, OSError):
            # A client that went away (a runtime's timeout, a killed shim): one line, not a traceback.
            logger.warning("CNI server: client connection failed: %s: %s", type(error).__name__,
                           printable(str(error), LOGGED_MESSAGE_LIMIT))
        else:
            logger.warning("CNI server: connection failed", exc_info=True)


class _RequestHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = REQUEST_READ_TIMEOUT
    server: _UnixHttpServer

    def do_POST(self) -> None:
        started = time.monotonic()
        if self.path != "/cni":
            self._refuse(404, CniError(ERR_INTERNAL, f"no such endpoint '{printable(self.path)}'"), started)
            return
        length_header = self.headers.get("Content-Length", "")
        if not length_header.isdigit():
            self._refuse(411, CniError(ERR_DECODING_FAILURE, "request has no Content-Length"), started)
            return
        length = int(length_header)
        if length > MAX_REQUEST_BYTES:
            # Answered before the body is read: the shims read this reply even though the
            # rest of their request no longer gets through (a broken pipe on their side).
            error = CniError(ERR_DECODING_FAILURE, f"request of {length} bytes exceeds {MAX_REQUEST_BYTES}")
            self._refuse(413, error, started)
            return
        status, reply = self.server.cni.handle_body(self.rfile.read(length))
        self._reply(status, reply)

    def _refuse(self, status: int, error: CniError, started: float) -> None:
        """Reply to a request refused before its body was read, and log it like any other."""
        self.server.cni._record("", "-", "-", str(error.code), started, message=f"HTTP {status}: {error.msg}")
        self._reply(status, {"error": error.to_dict()})

    def _reply(self, status: int, reply: Mapping[str, Any]) -> None:
        payload = json.dumps(reply).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)
        self.close_connection = True

    def address_string(self) -> str:
        return "unix"  # unix-socket peers have no address; the base class would index ''

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("CNI server: " + format, *args)


class CniServer:
    """Serves CNI requests from the shim on a unix socket, calling ``handler`` for each."""

    def __init__(
        self, socket_path: str, handler: CniHandler, *, registry: CollectorRegistry | None = None
    ) -> None:
        check_socket_path(socket_path)
        self.socket_path = socket_path
        self.handler = handler
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.duration = Histogram(
            "ovnk_cni_request_duration_seconds",
            "Time the node agent took to answer a CNI request, by command and result (ok or the CNI error code).",
            ["command", "result"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        # ovn-kubernetes' name for dashboards: err="true"/"false" instead of our result code.
        self.upstream_duration = node_metrics(self.registry).cni_request_duration
        self._locks = _ContainerLocks()
        self._http: _UnixHttpServer | None = None
        self._thread: threading.Thread | None = None
        self._socket_inode: tuple[int, int] | None = None

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> None:
        """Bind the socket (0600, in a 0700 directory) and serve in daemon threads."""
        if self._http is not None:
            raise RuntimeError("CNI server already started")
        _prepare_directory(os.path.dirname(self.socket_path))
        _remove_stale_socket(self.socket_path)
        server = _UnixHttpServer(self.socket_path, self)
        try:
            server.server_bind()
            os.chmod(self.socket_path, 0o600)
            st = os.stat(self.socket_path)
            self._socket_inode = (st.st_dev, st.st_ino)
            server.server_activate()
        except BaseException:
            server.server_close()
            raise
        self._http = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": STOP_POLL_INTERVAL}, name="cni-server", daemon=True
        )
        self._thread.start()
        logger.info("CNI server listening on %s", self.socket_path)

    def stop(self) -> None:
        """Stop accepting, close the socket and remove it (requests in flight finish on their own)."""
        server, self._http = self._http, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with contextlib.suppress(FileNotFoundError):
            st = os.stat(self.socket_path)
            # Another server may have taken the path over since; leave its socket alone.
            if (st.st_dev, st.st_ino) == self._socket_inode:
                os.unlink(self.socket_path)
        logger.info("CNI server on %s stopped", self.socket_path)

    def __enter__(self) -> CniServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- requests ----------------------------------------------------------

    def handle_body(self, body: bytes) -> tuple[int, dict[str, Any]]:
        """Decode the shim's ``{"env", "config"}`` body and serve it; return (HTTP status, reply)."""
        try:
            decoded = json.loads(body)
        except ValueError as exc:
            return 400, {"error": CniError(ERR_DECODING_FAILURE, f"request body is not JSON: {exc}").to_dict()}
        except RecursionError:
            error = CniError(ERR_DECODING_FAILURE, "request body is not JSON: nested too deeply")
            return 400, {"error": error.to_dict()}
        env = decoded.get("env") if isinstance(decoded, dict) else None
        config = decoded.get("config") if isinstance(decoded, dict) else None
        if (
            not isinstance(env, dict)
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())
            or not isinstance(config, str)
        ):
            error = CniError(ERR_DECODING_FAILURE, 'request body must be {"env": {str: str}, "config": str}')
            return 400, {"error": error.to_dict()}
        return self.serve(env, config)

    def serve(self, env: Mapping[str, str], config_text: str) -> tuple[int, dict[str, Any]]:
        """Validate, dispatch to the handler, render; return (HTTP status, reply). Never raises."""
        started = time.monotonic()
        command = env.get("CNI_COMMAND", "")
        # Raw client input until the request validated: escaped for the log line.
        container = printable(env.get("CNI_CONTAINERID", "")[:12]) or "-"
        pod_key = "-"
        request: CniRequest | None = None
        try:
            request = CniRequest.parse(env, config_text)
            pod_key = request.pod_key
            if request.container_id:
                with self._locks.hold(request.container_id):
                    reply: dict[str, Any] = {"result": self._dispatch(request)}
            else:
                reply = {"result": self._dispatch(request)}
            status, outcome = 200, "ok"
        except CniError as exc:
            error = exc
        except Exception as exc:
            logger.exception("CNI %s %s container=%s: unexpected failure", _command_label(command), pod_key,
                             container)
            error = CniError(ERR_INTERNAL, f"{type(exc).__name__}: {exc}")
        else:
            self._record(command, pod_key, container, outcome, started)
            return status, reply
        cni_version = request.cni_version if request is not None else _declared_version(config_text)
        self._record(command, pod_key, container, str(error.code), started, message=error.msg)
        return http_status_for(error.code), {"error": error.to_dict(cni_version)}

    def _dispatch(self, request: CniRequest) -> dict[str, Any] | None:
        command = request.command
        if command in ("ADD", "CHECK"):
            _check_netns(request.netns)
        if command == "ADD":
            result = self.handler.add(request)
            if not isinstance(result, CniResult):
                raise TypeError(f"handler.add returned {type(result).__name__}, not CniResult")
            return result.to_dict(request.cni_version)
        if command == "DEL":
            self.handler.delete(request)
        elif command == "CHECK":
            self.handler.check(request)
        elif command == "STATUS":
            self.handler.status(request)
        elif command == "GC":
            self.handler.gc(request)
        elif command == "VERSION":
            return version_info()
        return None

    def _record(
        self, command: str, pod_key: str, container: str, outcome: str, started: float, *, message: str = ""
    ) -> None:
        duration = time.monotonic() - started
        label = _command_label(command)
        pod_key = printable(pod_key, 2 * PRINTABLE_LIMIT)
        self.duration.labels(command=label, result=outcome).observe(duration)
        self.upstream_duration.labels(command=label, err="false" if outcome == "ok" else "true").observe(duration)
        if outcome == "ok":
            logger.info(
                "CNI %s %s container=%s result=ok duration=%.3fs", label, pod_key, container, duration
            )
        else:
            logger.warning(
                "CNI %s %s container=%s result=error %s (%s) duration=%.3fs",
                label, pod_key, container, outcome, printable(message, LOGGED_MESSAGE_LIMIT), duration,
            )


def _command_label(command: str) -> str:
    """The command as logs and metrics show it: one of the spec's, else ``invalid``."""
    return command if command in COMMANDS else "invalid"


def _declared_version(config_text: str) -> str:
    """The netconf's cniVersion for an error reply when the request did not validate."""
    try:
        declared = json.loads(config_text).get("cniVersion")
    except (ValueError, AttributeError, RecursionError):
        return CURRENT_VERSION
    return declared if isinstance(declared, str) and declared else CURRENT_VERSION


def _check_netns(netns: str) -> None:
    try:
        os.stat(netns)
    except FileNotFoundError:
        raise CniError(ERR_UNKNOWN_CONTAINER, f"network namespace {netns} does not exist") from None
    except OSError as exc:
        raise CniError(ERR_UNKNOWN_CONTAINER, f"network namespace {netns} is not accessible: {exc}") from None


def _prepare_directory(directory: str) -> None:
    """Create the socket directory 0700, or tighten an existing one that is ours alone."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    st = os.stat(directory)
    if st.st_mode & stat.S_ISVTX:
        raise StartupError(f"CNI socket directory {directory} is shared (sticky bit); use a dedicated directory")
    if st.st_uid != os.geteuid():
        raise StartupError(
            f"CNI socket directory {directory} belongs to uid {st.st_uid}, not to this process (uid {os.geteuid()})"
        )
    if stat.S_IMODE(st.st_mode) != 0o700:
        logger.info("CNI socket directory %s had mode %o; setting 0700", directory, stat.S_IMODE(st.st_mode))
        os.chmod(directory, 0o700)


def _remove_stale_socket(path: str) -> None:
    """Remove a socket left by a previous run; refuse if it is live or not a socket."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise StartupError(f"{path} exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except OSError:
        pass  # nobody listens: stale
    else:
        raise StartupError(f"another CNI server is listening on {path}")
    finally:
        probe.close()
    logger.info("removing stale CNI socket %s", path)
    os.unlink(path)
