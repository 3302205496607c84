"""Fixtures for ``ovnk.core.kube`` against the session's real API server.

``client`` is the client under test, ``writer`` a second, independent client
for the changes the tests make (so a test never observes its own client's
state). ``apiserver_outage`` kills kube-apiserver and always starts it again.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ovnk.core.kube.client import KubeClient

pytestmark = pytest.mark.kube

CONTROLLER_STARTUP_SECONDS = 12.0


@pytest.fixture
def client(kubeconfig: str) -> Iterator[KubeClient]:
    with KubeClient(kubeconfig=kubeconfig, request_timeout=10.0, user_agent="ovnk-test") as kube:
        yield kube


@pytest.fixture
def writer(kubeconfig: str) -> Iterator[KubeClient]:
    with KubeClient(kubeconfig=kubeconfig, request_timeout=10.0, user_agent="ovnk-test-writer") as kube:
        yield kube


class ApiServerControl:
    """Stops and restarts the session's kube-apiserver; :meth:`restore` always leaves it running."""

    def __init__(self, kube_cp: Any) -> None:
        self.kube_cp = kube_cp
        self._down = False
        self._paused = False

    def kill(self) -> None:
        self.settle()
        self._down = True
        self.kube_cp.stop_apiserver(kill=True)

    def start(self) -> None:
        self.kube_cp.start_apiserver()  # waits for /readyz
        self._down = False

    def pause(self) -> None:
        """SIGSTOP: the server still accepts TCP connections but answers nothing (a hung server)."""
        self.settle()
        self._paused = True
        self.kube_cp.apiserver.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.kube_cp.apiserver.send_signal(signal.SIGCONT)
        self._paused = False

    def settle(self) -> None:
        """kube-controller-manager exits (a fatal "forbidden") when the API server goes away while
        it is still building its controllers' clients, in its first seconds; the session shares
        it with other tests, so never pull the server from under a starting one."""
        for daemon in (self.kube_cp.controller_manager, self.kube_cp.scheduler):
            if daemon is None or daemon.pid is None:
                continue
            try:
                age = _process_age(daemon.pid)
            except (OSError, ValueError, IndexError):
                continue
            if age < CONTROLLER_STARTUP_SECONDS:
                time.sleep(CONTROLLER_STARTUP_SECONDS - age)

    def restore(self) -> None:
        if self._paused:
            self.resume()
        if self._down or not self.kube_cp.apiserver or not self.kube_cp.apiserver.alive():
            self.start()


def _process_age(pid: int) -> float:
    """Seconds since ``pid`` started (field 22 of /proc/PID/stat is its start in clock ticks after boot)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    start_ticks = int(stat.rsplit(")", 1)[1].split()[19])
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return uptime - start_ticks / os.sysconf("SC_CLK_TCK")


@pytest.fixture
def apiserver(kube_cp: Any) -> Iterator[ApiServerControl]:
    control = ApiServerControl(kube_cp)
    control.settle()  # before the test starts its clock
    try:
        yield control
    finally:
        control.restore()
