"""The HTTP endpoint of long-running processes: ``/metrics``, ``/healthz``, ``/readyz``.

``/healthz`` answers 200 while every liveness check passes (the process is not
wedged); ``/readyz`` answers 200 once the process said it is ready (caches
synced, node set up...) and its readiness checks pass. Each check is a
callable returning ``None`` when fine or a short reason.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.exposition import generate_latest

from ovnk.core.errors import StartupError

logger = logging.getLogger(__name__)

Check = Callable[[], str | None]


class HealthState:
    """Liveness and readiness of one process."""

    def __init__(self) -> None:
        self._ready = threading.Event()
        self.liveness: dict[str, Check] = {}
        self.readiness: dict[str, Check] = {}

    def set_ready(self, ready: bool = True) -> None:
        if ready:
            self._ready.set()
        else:
            self._ready.clear()

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def failures(self, checks: dict[str, Check]) -> list[str]:
        problems = []
        for name, check in list(checks.items()):
            try:
                reason = check()
            except Exception as exc:  # a broken check is a failing check
                reason = f"check raised {type(exc).__name__}: {exc}"
            if reason:
                problems.append(f"{name}: {reason}")
        return problems


class _Server(ThreadingHTTPServer):
    # Python 3.11's HTTPServer sets SO_REUSEPORT: a second process could then bind the same
    # metrics port silently and answer half the scrapes. A busy port must be an error.
    allow_reuse_port = False
    daemon_threads = True


METRICS = "/metrics"
HEALTHZ = "/healthz"
READYZ = "/readyz"
ALL_ENDPOINTS = frozenset({METRICS, HEALTHZ, READYZ})
HEALTH_ENDPOINTS = frozenset({HEALTHZ, READYZ})


class HealthServer:
    """Serves ``endpoints`` (default: all three) on ``HOST:PORT`` in a daemon thread; other paths are 404."""

    def __init__(self, bind: str, registry: CollectorRegistry, state: HealthState, *,
                 endpoints: frozenset[str] = ALL_ENDPOINTS) -> None:
        host, _, port = bind.rpartition(":")
        self.registry = registry
        self.state = state
        self.endpoints = endpoints
        handler = self._handler_class()
        what = {ALL_ENDPOINTS: "metrics and health", HEALTH_ENDPOINTS: "health"}.get(endpoints, " and ".join(sorted(endpoints)))
        try:
            self._server = _Server((host.strip("[]") or "0.0.0.0", int(port)), handler)
        except OSError as exc:
            raise StartupError(f"cannot serve {what} on {bind}: {exc.strerror or exc}") from exc
        self._thread = threading.Thread(target=self._server.serve_forever, name="health-http", daemon=True)

    @property
    def address(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{host!s}:{port}"

    def start(self) -> None:
        self._thread.start()
        logger.info("serving %s on %s", ", ".join(sorted(self.endpoints)), self.address)

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()  # waits for serve_forever, so only when it runs
        self._server.server_close()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path not in server.endpoints:
                    self._reply(404, b"not found\n", "text/plain")
                elif path == METRICS:
                    body = generate_latest(server.registry)
                    self._reply(200, body, CONTENT_TYPE_LATEST)
                elif path == HEALTHZ:
                    problems = server.state.failures(server.state.liveness)
                    self._text(503 if problems else 200, problems)
                elif path == READYZ:
                    problems = server.state.failures(server.state.readiness)
                    if not server.state.ready:
                        problems.insert(0, "not ready yet")
                    self._text(503 if problems else 200, problems)
                else:
                    self._reply(404, b"not found\n", "text/plain")

            def _text(self, code: int, problems: list[str]) -> None:
                text = "\n".join(problems) + "\n" if problems else "ok\n"
                self._reply(code, text.encode(), "text/plain; charset=utf-8")

            def _reply(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                logger.debug("http: " + format, *args)

        return Handler
