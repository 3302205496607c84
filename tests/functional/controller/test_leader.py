"""Two real `ovnk controller` processes: only the leader writes; the standby takes over when it dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from ovnk_lab.procs import free_port
from tests.functional.topology.conftest import ClusterEnv


def scrape(port: int, name: str) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return float("nan")
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def committed(port: int) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return float("nan")
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("ovnk_nb_txn_total{") and 'result="committed"' in line)


def start(env: ClusterEnv, identity: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    argv = [str(Path(sys.executable).parent / "ovnk"), "--kubeconfig", str(env.kube.kubeconfig),
            "--nb-address", env.central.nb_address, "--sb-address", env.central.sb_address,
            "--set", f"controller.identity={identity}", "--set", f"controller.metrics-bind-address=127.0.0.1:{port}",
            "--set", "controller.lease-duration=3", "--set", "controller.renew-deadline=2",
            "--set", "controller.retry-period=0.5", "--set", f"controller.lease-name=test-{env.central.workdir.name}",
            "controller"]
    return subprocess.Popen(argv, stdout=log.open("wb"), stderr=subprocess.STDOUT, env={**os.environ, "OVNK_CONFIG": ""})


def wait(predicate, timeout: float, what: str) -> float:
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < timeout, f"timed out waiting for {what}"
        time.sleep(0.05)
    return time.monotonic() - started


@pytest.mark.kube
@pytest.mark.ovn
@pytest.mark.slow
def test_standby_takes_over_and_only_the_leader_writes(env: ClusterEnv, tmp_path: Path) -> None:
    port_a, port_b = free_port(), free_port()
    a = start(env, "ctrl-a", port_a, tmp_path / "a.log")
    procs = [a]
    try:
        wait(lambda: scrape(port_a, "ovnk_controller_leader") == 1, 30, "controller a to lead")
        b = start(env, "ctrl-b", port_b, tmp_path / "b.log")
        procs.append(b)
        wait(lambda: scrape(port_b, "ovnk_build_info") == 1, 30, "controller b to serve metrics")
        env.create_node("ha-1", 0)
        ns = f"t-ha-{uuid.uuid4().hex[:6]}"
        env.create_namespace(ns)
        for i in range(20):
            env.create_pod(ns, f"before-{i}", "ha-1")
        wait(lambda: len([p for p in env.pods(ns) if "k8s.ovn.org/pod-networks" in
                          (p["metadata"].get("annotations") or {})]) == 20, 60, "pods programmed by a")
        assert committed(port_a) > 0
        assert committed(port_b) == 0, "the standby never writes"
        assert scrape(port_b, "ovnk_controller_leader") == 0
        a.send_signal(signal.SIGKILL)
        a.wait()
        killed = time.monotonic()
        for i in range(20):
            env.create_pod(ns, f"after-{i}", "ha-1")
        took = wait(lambda: scrape(port_b, "ovnk_controller_leader") == 1, 15, "controller b to lead")
        assert time.monotonic() - killed <= 3 + 1.0 + 2, f"took over after {took:.1f}s"
        wanted = {f"{ns}_before-{i}" for i in range(20)} | {f"{ns}_after-{i}" for i in range(20)}
        wait(lambda: wanted <= set(env.central.nbctl("--bare", "--columns=name", "list", "Logical_Switch_Port").split()),
             60, "pods programmed by b")
        assert committed(port_b) > 0
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
