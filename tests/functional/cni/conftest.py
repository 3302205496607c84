"""Fixtures for the CNI path: the shim installed exactly as deployed (native and Python; each test
runs with both), a real CniServer on a temporary unix socket, a recording test handler, and a
real network namespace.

The handler is a test double on purpose: wiring interfaces is the node agent's
job and is tested there; here it stands for "whatever the node agent plugs in".
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from ovnk.cni.install import ShimKind
from ovnk.cni.install import build_native_shim
from ovnk.cni.install import install_shim
from ovnk.cni.server import CniServer
from ovnk.cni.types import CniInterface
from ovnk.cni.types import CniIPConfig
from ovnk.cni.types import CniRequest
from ovnk.cni.types import CniResult

SHIM_TIMEOUT = 60


@dataclass
class RecordingHandler:
    """Records every request; raises what a test puts in ``fail[command]``; ``gate[container]``
    (an Event) makes ADD for that container wait until the test sets it."""

    calls: list[CniRequest] = field(default_factory=list)
    fail: dict[str, BaseException] = field(default_factory=dict)
    gate: dict[str, threading.Event] = field(default_factory=dict)
    entered: dict[str, threading.Event] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _record(self, request: CniRequest) -> None:
        with self.lock:
            self.calls.append(request)
        error = self.fail.get(request.command)
        if error is not None:
            raise error

    def commands(self) -> list[str]:
        with self.lock:
            return [c.command for c in self.calls]

    def add(self, request: CniRequest) -> CniResult:
        self._record(request)
        if request.container_id in self.entered:
            self.entered[request.container_id].set()
        if request.container_id in self.gate:
            assert self.gate[request.container_id].wait(SHIM_TIMEOUT)
        return CniResult(
            interfaces=[
                CniInterface(name=request.container_id[:15], mac="b6:1a:2c:3d:4e:5f"),
                CniInterface(name=request.ifname, mac="0a:58:0a:f4:01:05", sandbox=request.netns, mtu=1400),
            ],
            ips=[CniIPConfig(ipaddress.ip_interface("10.244.1.5/24"), ipaddress.ip_address("10.244.1.1"), 1)],
        )

    def delete(self, request: CniRequest) -> None:
        self._record(request)

    def check(self, request: CniRequest) -> None:
        self._record(request)

    def status(self, request: CniRequest) -> None:
        self._record(request)

    def gc(self, request: CniRequest) -> None:
        self._record(request)


@dataclass
class ShimRun:
    returncode: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        return json.loads(self.stdout)


def netconf(version: str = "1.1.0", **extra: Any) -> str:
    config: dict[str, Any] = {"cniVersion": version, "name": "ovn-kubernetes", "type": "ovn-k8s-cni-overlay"}
    config.update(extra)
    return json.dumps(config)


@pytest.fixture
def cni_dir() -> Iterator[Path]:
    # Under /tmp with a short name: a unix socket path holds at most 107 bytes.
    path = Path(tempfile.mkdtemp(prefix="ovnk-cni-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def socket_path(cni_dir: Path) -> str:
    return str(cni_dir / "run" / "cni.sock")


@pytest.fixture(scope="session")
def native_shim() -> Path:
    """The compiled shim, rebuilt if ``cni/native/shim.c`` changed since the last build."""
    return build_native_shim()


@pytest.fixture(params=["native", "python"])
def shim_kind(request: pytest.FixtureRequest) -> str:
    """Both shims: every test that runs the installed shim holds them to the same behaviour."""
    return str(request.param)


@pytest.fixture
def shim_path(cni_dir: Path, socket_path: str, shim_kind: ShimKind, native_shim: Path) -> str:
    dest = str(cni_dir / "bin" / "ovn-k8s-cni-overlay")
    install_shim(dest, socket_path=socket_path, kind=shim_kind, native_binary=native_shim)
    return dest


@pytest.fixture
def handler() -> RecordingHandler:
    return RecordingHandler()


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry(auto_describe=True)


@pytest.fixture
def cni_server(socket_path: str, handler: RecordingHandler, registry: CollectorRegistry) -> Iterator[CniServer]:
    server = CniServer(socket_path, handler, registry=registry)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def netns() -> Iterator[str]:
    """A real network namespace (``ip netns add``); yields its path."""
    name = f"ovnk-cni-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    yield f"/var/run/netns/{name}"
    subprocess.run(["ip", "netns", "delete", name], check=True)


@pytest.fixture
def pod_env(netns: str) -> Callable[..., dict[str, str]]:
    def make(command: str, **overrides: str | None) -> dict[str, str]:
        env = {
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": uuid.uuid4().hex + uuid.uuid4().hex,
            "CNI_NETNS": netns,
            "CNI_IFNAME": "eth0",
            "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=web;K8S_POD_NAME=frontend-1;K8S_POD_UID=u-1",
            "CNI_PATH": "/opt/cni/bin",
        }
        for key, value in overrides.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        return env

    return make


@pytest.fixture
def run_shim(shim_path: str) -> Callable[..., ShimRun]:
    """Execute the installed shim like a runtime does: its path, env and stdin, nothing else."""

    def run(env: dict[str, str], stdin: str | bytes = "", *, argv: list[str] | None = None) -> ShimRun:
        data = stdin.encode() if isinstance(stdin, str) else stdin
        proc = subprocess.run(
            argv or [shim_path], input=data, env=env, capture_output=True, timeout=SHIM_TIMEOUT, check=False
        )
        return ShimRun(proc.returncode, proc.stdout.decode(), proc.stderr.decode())

    return run
