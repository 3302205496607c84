"""The /metrics, /healthz and /readyz endpoint (real HTTP on loopback) and per-key log lines."""

from __future__ import annotations

import io
import logging
import urllib.error
import urllib.request

import pytest

from ovnk.core import logs
from ovnk.core.errors import StartupError
from ovnk.core.health import HealthServer
from ovnk.core.health import HealthState
from ovnk.core.kube.resources import PODS
from ovnk.core.metrics import new_registry
from ovnk.core.reconcile.runner import ControllerRunner
from ovnk.core.reconcile.spec import ControllerSpec
from ovnk.core.reconcile.spec import ReconcileRequest
from ovnk.core.reconcile.spec import Watch
from ovnk_lab.procs import free_port
from tests.unit.core.reconcile.test_runner import MemoryFactory
from tests.unit.core.reconcile.test_runner import pod


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_health_server_serves_metrics_liveness_and_readiness() -> None:
    registry = new_registry(component="test")
    state = HealthState()
    server = HealthServer(f"127.0.0.1:{free_port()}", registry, state)
    server.start()
    try:
        base = f"http://{server.address}"
        code, text = get(f"{base}/metrics")
        assert code == 200 and 'ovnk_build_info{component="test"' in text
        assert get(f"{base}/healthz") == (200, "ok\n")
        code, text = get(f"{base}/readyz")
        assert code == 503 and "not ready yet" in text
        state.set_ready()
        assert get(f"{base}/readyz") == (200, "ok\n")
        state.liveness["nb"] = lambda: "NB disconnected"
        code, text = get(f"{base}/healthz")
        assert code == 503 and "nb: NB disconnected" in text
        state.readiness["cache"] = lambda: 1 / 0  # type: ignore[return-value]
        code, text = get(f"{base}/readyz")
        assert code == 503 and "check raised ZeroDivisionError" in text
        assert get(f"{base}/nope")[0] == 404
    finally:
        server.stop()


def test_health_server_port_in_use_is_a_clear_startup_error() -> None:
    registry = new_registry(component="test")
    first = HealthServer(f"127.0.0.1:{free_port()}", registry, HealthState())
    try:
        with pytest.raises(StartupError, match=r"cannot serve metrics and health on 127\.0\.0\.1:"):
            HealthServer(first.address, registry, HealthState())
    finally:
        first.stop()


def test_every_log_line_of_a_reconcile_names_the_key() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(logs.FORMAT))
    handler.addFilter(logs.KeyFilter())
    plugin_logger = logging.getLogger("some.plugin")
    plugin_logger.addHandler(handler)
    plugin_logger.setLevel(logging.INFO)
    try:
        factory = MemoryFactory()

        def reconcile(req: ReconcileRequest) -> None:
            plugin_logger.info("programming the port")

        runner = ControllerRunner([ControllerSpec(name="pods", watches=(Watch(PODS),), reconcile=reconcile)],
                                  informers=factory)
        runner.start_watches()
        factory.informers[next(iter(factory.informers))].add(pod("web-1"))
        runner.start_workers()
        assert runner.wait_idle(5)
        runner.stop()
        plugin_logger.info("outside any reconcile")
    finally:
        plugin_logger.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert any("[pods ns/web-1] programming the port" in line for line in lines)
    assert any(line.endswith("some.plugin: outside any reconcile") for line in lines)
