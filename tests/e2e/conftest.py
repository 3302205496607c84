"""The end-to-end suite: a real 2-node sandbox (kubelets, containerd, runc, OVN, ovnk), driven with kubectl.

Tests talk to the cluster through the Kubernetes API and kubectl only, as a
user would; packets are real. Failure injection (killing daemons) goes through
the sandbox's process records.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ovnk_lab import hostnet
from ovnk_lab import paths
from ovnk_lab.images import ECHO_IN_IMAGE
from ovnk_lab.sandbox import Sandbox
from ovnk_lab.sandbox import SandboxOptions
from ovnk_lab.sandbox import datapath_crashes

ECHO_TCP = 8080
ECHO_UDP = 8081


@dataclass(frozen=True)
class EchoResult:
    """One ``ovnk-echo send``: the reply (``None`` when nothing answered), its error text and how long it took."""

    reply: str | None
    error: str
    elapsed: float

    @property
    def refused(self) -> bool:
        """The connection was actively refused (TCP reset, ICMP port unreachable), not timed out."""
        return self.reply is None and "refused" in self.error.lower()


def _echo_result(argv: list[str], *, timeout: float) -> EchoResult:
    started = time.monotonic()
    res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 60, check=False)
    elapsed = time.monotonic() - started
    reply = res.stdout.strip() if res.returncode == 0 else None
    return EchoResult(reply=reply, error=res.stderr.strip(), elapsed=elapsed)


def poll_until(what: str, check: Callable[[], bool], *, timeout: float = 30, interval: float = 0.3) -> None:
    """Call ``check`` until it returns true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {timeout:g}s"
        time.sleep(interval)


class Cluster:
    """kubectl-level helpers over a running sandbox."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.kubeconfig = str(sandbox.kubeconfig)
        self.kubectl_bin = paths.tool_bin("kubectl")
        self.nodes = [n.name for n in sandbox.cluster.nodes]

    def sandbox_ovnk(self) -> list[str]:
        """The ``ovnk`` command line pointed at this cluster (for plugin commands)."""
        return [sys.executable, "-m", "ovnk", "--kubeconfig", self.kubeconfig]

    def kubectl(self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120) -> str:
        res = subprocess.run([self.kubectl_bin, f"--kubeconfig={self.kubeconfig}", *args], input=input,
                             capture_output=True, text=True, timeout=timeout, check=False)
        if check and res.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {res.stderr.strip() or res.stdout.strip()}")
        return res.stdout

    def namespace(self, *, labels: dict[str, str] | None = None) -> str:
        name = f"e2e-{uuid.uuid4().hex[:6]}"
        self.kubectl("create", "namespace", name)
        if labels:
            self.kubectl("label", "namespace", name, *(f"{k}={v}" for k, v in labels.items()))
        deadline = time.monotonic() + 60
        while "default" not in self.kubectl("-n", name, "get", "serviceaccounts", "-o", "name", check=False):
            assert time.monotonic() < deadline, "default service account never appeared"
            time.sleep(0.2)
        return name

    def run_pods(self, namespace: str, specs: list[dict[str, Any]], *, timeout: float = 120) -> dict[str, dict[str, Any]]:
        """Create pods ({name, node, kind: echo|client, labels}) and wait until Ready; returns pod objects by name."""
        docs = []
        for spec in specs:
            if spec.get("kind", "client") == "echo":
                container = {"name": "echo", "image": "ovnk-test/echo", "imagePullPolicy": "Never",
                             "args": [f"{ECHO_TCP}/tcp", f"{ECHO_UDP}/udp", *spec.get("extra_ports", [])],
                             "ports": spec.get("ports", [])}
            else:
                container = {"name": "client", "image": "busybox", "imagePullPolicy": "Never",
                             "command": ["sleep", "100000"]}
            docs.append({"apiVersion": "v1", "kind": "Pod",
                         "metadata": {"name": spec["name"], "namespace": namespace, "labels": spec.get("labels", {})},
                         "spec": {"nodeName": spec["node"], "terminationGracePeriodSeconds": 1,
                                  "containers": [container]}})
        self.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}))
        self.kubectl("-n", namespace, "wait", "--for=condition=Ready", *(f"pod/{s['name']}" for s in specs),
                     f"--timeout={int(timeout)}s", timeout=timeout + 30)
        return {s["name"]: self.pod(namespace, s["name"]) for s in specs}

    def pod(self, namespace: str, name: str) -> dict[str, Any]:
        return json.loads(self.kubectl("-n", namespace, "get", "pod", name, "-o", "json"))

    def pod_ip(self, namespace: str, name: str) -> str:
        return str(self.pod(namespace, name)["status"]["podIP"])

    def exec(self, namespace: str, pod: str, *cmd: str, check: bool = True, timeout: float = 60) -> str:
        return self.kubectl("-n", namespace, "exec", pod, "--", *cmd, check=check, timeout=timeout)

    def probe(self, namespace: str, pod: str, protocol: str, address: str, port: int, message: str = "hostname",
              *, timeout: float = 2, source_port: int | None = None) -> str | None:
        """Send ``message`` from ``pod`` with ovnk-echo; the reply, or None when nothing answered."""
        fixed = [str(source_port)] if source_port else []
        res = subprocess.run([self.kubectl_bin, f"--kubeconfig={self.kubeconfig}", "-n", namespace, "exec", pod,
                              "--", ECHO_IN_IMAGE, "send", protocol, address, str(port), message, f"{timeout:g}",
                              *fixed],
                             capture_output=True, text=True, timeout=timeout + 60, check=False)
        return res.stdout.strip() if res.returncode == 0 else None

    def send(self, namespace: str, pod: str, protocol: str, address: str, port: int, message: str = "hostname",
             *, timeout: float = 2) -> EchoResult:
        """Like :meth:`probe`, with the client's error text and the elapsed time (``kubectl exec`` included)."""
        return _echo_result([self.kubectl_bin, f"--kubeconfig={self.kubeconfig}", "-n", namespace, "exec", pod,
                             "--", ECHO_IN_IMAGE, "send", protocol, address, str(port), message, f"{timeout:g}"],
                            timeout=timeout)

    def apply(self, *docs: dict[str, Any]) -> None:
        """``kubectl apply`` of API objects."""
        self.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(docs)}))

    def ping(self, namespace: str, pod: str, address: str, *, count: int = 2) -> bool:
        res = subprocess.run([self.kubectl_bin, f"--kubeconfig={self.kubeconfig}", "-n", namespace, "exec", pod,
                              "--", "ping", "-c", str(count), "-W", "2", address],
                             capture_output=True, text=True, timeout=60, check=False)
        return res.returncode == 0


class ContinuousProbe:
    """A TCP probe every 200 ms from a pod, through one long-lived ``kubectl exec`` (like ovn-kubernetes'
    "continuous connectivity" tests); counts answered and failed probes."""

    def __init__(self, cluster: Cluster, namespace: str, pod: str, address: str, port: int = ECHO_TCP) -> None:
        # A failed probe carries the client's reason (timeout, refused, unreachable) into the report.
        # 2 s per probe: one lost SYN (retransmitted by TCP after 1 s on a loaded 2-core machine) is
        # not a broken pod; anything that unwires the pod fails many probes in a row.
        script = (f"while true; do if why=$({ECHO_IN_IMAGE} send tcp {address} {port} ping 2 2>&1 >/dev/null); "
                  "then echo ok; else echo \"FAIL $(date +%T) $why\"; fi; usleep 200000; done")
        self.proc = subprocess.Popen(
            [cluster.kubectl_bin, f"--kubeconfig={cluster.kubeconfig}", "-n", namespace, "exec", pod, "--",
             "sh", "-c", script], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.results: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.results.append(line.strip())

    def wait_for(self, count: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while len(self.results) < count:
            assert time.monotonic() < deadline, f"only {len(self.results)} probes in {timeout}s"
            time.sleep(0.1)

    def stop(self) -> tuple[int, int]:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._reader.join(5)
        return self.results.count("ok"), len(self.failures())

    def failures(self) -> list[str]:
        return [line for line in self.results if line.startswith("FAIL")]


# -- the suite's runtime, reported at the end of every run (the issue asks for it) -------

_E2E_DURATIONS: dict[str, float] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.nodeid.startswith("tests/e2e/"):
        _E2E_DURATIONS[report.nodeid] = _E2E_DURATIONS.get(report.nodeid, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _E2E_DURATIONS:
        return
    by_module: dict[str, float] = {}
    for nodeid, seconds in _E2E_DURATIONS.items():
        module = nodeid.split("::", 1)[0]
        by_module[module] = by_module.get(module, 0.0) + seconds
    terminalreporter.write_sep("-", "end-to-end suite runtime (setup + tests + teardown, sandboxes included)")
    for module, seconds in sorted(by_module.items()):
        terminalreporter.write_line(f"{module:40s} {seconds:7.1f} s")
    terminalreporter.write_line(f"{'total: ' + str(len(_E2E_DURATIONS)) + ' tests':40s} "
                                f"{sum(by_module.values()):7.1f} s")
    if _DATAPATH_CRASHES:
        terminalreporter.write_sep("-", "ovs-vswitchd crashed (restarted by its monitor only with OVS < 3.3)")
        for line in _DATAPATH_CRASHES:
            terminalreporter.write_line(line)


_DATAPATH_CRASHES: list[str] = []


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    workdir = Path(os.environ.get("OVNK_E2E_DIR", "/var/lib/ovnk/sandbox")) / f"e2e-{os.getpid()}"
    # A subnet of its own, so several suites (or a developer's sandbox) can run side by side.
    subnet = os.environ.get("OVNK_E2E_SUBNET") or hostnet.free_underlay_subnet(
        [f"172.31.{(os.getpid() + i) % 250}.0/24" for i in range(250)])
    box = Sandbox(workdir, prefix=f"e2e{os.getpid() % 10000}", subnet=subnet)
    box.up(SandboxOptions(nodes=2))
    try:
        yield box
    finally:
        _DATAPATH_CRASHES.extend(datapath_crashes(box.workdir))
        logs = Path(os.environ.get("OVNK_E2E_LOGS", "")) if os.environ.get("OVNK_E2E_LOGS") else None
        if logs is not None:
            from ovnk_lab.sandbox import copy_logs

            copy_logs(box, logs)
        box.down()


@pytest.fixture(scope="session")
def cluster(sandbox: Sandbox) -> Cluster:
    return Cluster(sandbox)


@pytest.fixture
def ns(cluster: Cluster) -> Iterator[str]:
    name = cluster.namespace()
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def external_echo(sandbox: Sandbox, port: int) -> subprocess.Popen[bytes]:
    """An ovnk-echo server in the sandbox's external namespace (the outside world)."""
    from ovnk_lab.hostnet import netns_path
    from ovnk_lab.images import build_echo_binary

    ext = sandbox.cluster.underlay.ext_netns
    return subprocess.Popen([paths.system_bin("nsenter"), f"--net={netns_path(ext)}", str(build_echo_binary()),
                             f"{port}/tcp", f"{port}/udp"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def node_send(sandbox: Sandbox, node: str, protocol: str, address: str, port: int, message: str = "hostname", *,
              timeout: float = 2) -> EchoResult:
    """An ovnk-echo client on a node's host network (a process of the node, like the kubelet's)."""
    from ovnk_lab.hostnet import netns_path
    from ovnk_lab.images import build_echo_binary

    netns = next(n.netns for n in sandbox.cluster.nodes if n.name == node)
    return _echo_result([paths.system_bin("nsenter"), f"--net={netns_path(netns)}", str(build_echo_binary()), "send",
                         protocol, address, str(port), message, f"{timeout:g}"], timeout=timeout)


def external_send(sandbox: Sandbox, protocol: str, address: str, port: int, message: str = "hostname", *,
                  timeout: float = 2, source_port: int | None = None) -> EchoResult:
    """An ovnk-echo client in the sandbox's external namespace (the outside world) sends ``message``."""
    from ovnk_lab.hostnet import netns_path
    from ovnk_lab.images import build_echo_binary

    ext = sandbox.cluster.underlay.ext_netns
    fixed = [str(source_port)] if source_port else []
    return _echo_result([paths.system_bin("nsenter"), f"--net={netns_path(ext)}", str(build_echo_binary()), "send",
                         protocol, address, str(port), message, f"{timeout:g}", *fixed], timeout=timeout)
