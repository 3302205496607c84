"""Start-up cost of the installed CNI shim, beside Debian's reference ``bridge`` plugin.

Usage: ``.venv/bin/python bench/cni_shim_startup.py [--quick]``

Cases, run round-robin (one of each per round, so load changes on a shared
machine hit every case alike), each timed from spawn to exit:

* ``python -I -S -c pass``: the floor of any Python process.
* ``bridge VERSION``: the reference plugin (static Go binary), the baseline.
* for each shim, the native one (``[cni] shim = native``, the default) and the
  Python one:

  * ``VERSION``: the shim's own start-up (answered without the node agent);
  * ``STATUS, agent down``: the forwarding path's start-up (stdin read and
    checked, a failed connect), no server time;
  * ``ADD round trip``: stdin -> shim -> unix socket -> CniServer with a
    no-op handler -> result on stdout.

Goal: shim start-up (``VERSION`` p50) under 25 ms, for both shims. The last line of the
output is one JSON object with every figure, the baseline and the ratios.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

from ovnk.cni.install import install_shim
from ovnk.cni.server import CniServer
from ovnk.cni.types import CniInterface
from ovnk.cni.types import CniIPConfig
from ovnk.cni.types import CniRequest
from ovnk.cni.types import CniResult

GOAL_MS = 25.0
SHIMS = ("native", "python")
BASELINE_CASES = ("python_pass", "bridge_version")
BRIDGE = "/usr/lib/cni/bridge"
NETCONF = json.dumps({"cniVersion": "1.1.0", "name": "ovn-kubernetes", "type": "ovn-k8s-cni-overlay"})


class NoopHandler:
    """Answers at once, so the round trip measures the shim and the socket, not wiring."""

    def add(self, request: CniRequest) -> CniResult:
        return CniResult(
            interfaces=[CniInterface(name=request.ifname, mac="0a:58:0a:f4:01:05", sandbox=request.netns)],
            ips=[CniIPConfig(ipaddress.ip_interface("10.244.1.5/24"), ipaddress.ip_address("10.244.1.1"), 0)],
        )

    def delete(self, request: CniRequest) -> None:
        pass

    def check(self, request: CniRequest) -> None:
        pass

    def status(self, request: CniRequest) -> None:
        pass

    def gc(self, request: CniRequest) -> None:
        pass


@dataclass
class Case:
    key: str
    label: str
    argv: list[str]
    env: dict[str, str]
    stdin: bytes
    expect_status: int
    samples: list[float]


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[index]


def timed_run(case: Case) -> float:
    started = time.perf_counter()
    proc = subprocess.run(case.argv, input=case.stdin, env=case.env, capture_output=True, check=False)
    elapsed = (time.perf_counter() - started) * 1000
    if proc.returncode != case.expect_status:
        raise SystemExit(f"{case.label}: exit {proc.returncode}, stdout {proc.stdout!r}, stderr {proc.stderr!r}")
    return elapsed


def figures(samples: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(percentile(samples, 0.50), 2),
        "p99_ms": round(percentile(samples, 0.99), 2),
        "min_ms": round(min(samples), 2),
        "mean_ms": round(sum(samples) / len(samples), 2),
    }


def run(rounds: int, warmup: int, progress: Callable[[str], None]) -> dict[str, object]:
    workdir = tempfile.mkdtemp(prefix="ovnk-bench-", dir="/tmp")
    try:
        socket_path = os.path.join(workdir, "run", "cni.sock")
        down_socket = os.path.join(workdir, "down", "cni.sock")
        shims = {}
        for kind in SHIMS:
            shims[kind] = os.path.join(workdir, kind, "ovn-k8s-cni-overlay")
            install_shim(shims[kind], socket_path=socket_path, kind=kind)
        pod_env = {
            "CNI_COMMAND": "ADD",
            "CNI_CONTAINERID": "0123456789abcdef0123456789abcdef",
            # The benchmark's own netns: it exists, which is all the server checks.
            "CNI_NETNS": f"/proc/{os.getpid()}/ns/net",
            "CNI_IFNAME": "eth0",
            "CNI_ARGS": "K8S_POD_NAMESPACE=bench;K8S_POD_NAME=pod",
            "CNI_PATH": os.path.join(workdir, "native"),
        }
        down_conf = json.dumps({**json.loads(NETCONF), "serverSocket": down_socket}).encode()
        version_stdin = b'{"cniVersion": "1.1.0"}'
        cases = [
            Case("python_pass", "python -I -S -c pass", [sys.executable, "-I", "-S", "-c", "pass"], {}, b"", 0, []),
            Case("bridge_version", "bridge VERSION (baseline)", [BRIDGE], {"CNI_COMMAND": "VERSION"},
                 version_stdin, 0, []),
        ]
        for kind, shim in shims.items():
            prefix = "shim" if kind == "native" else "python_shim"
            cases += [
                Case(f"{prefix}_version", f"ovnk {kind} shim VERSION", [shim], {"CNI_COMMAND": "VERSION"},
                     version_stdin, 0, []),
                Case(f"{prefix}_status_agent_down", f"ovnk {kind} shim STATUS, agent down", [shim],
                     {"CNI_COMMAND": "STATUS"}, down_conf, 1, []),
                Case(f"{prefix}_add_round_trip", f"ovnk {kind} shim ADD round trip", [shim], pod_env,
                     NETCONF.encode(), 0, []),
            ]
        with CniServer(socket_path, NoopHandler()):
            for case in cases:
                for _ in range(warmup):
                    timed_run(case)
            for done in range(rounds):
                for case in cases:
                    case.samples.append(timed_run(case))
                if (done + 1) % max(1, rounds // 4) == 0:
                    progress(f"  {done + 1}/{rounds} rounds")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return {case.key: {"label": case.label, **figures(case.samples)} for case in cases}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (well under a minute)")
    options = parser.parse_args()
    if not os.access(BRIDGE, os.X_OK):
        raise SystemExit(f"{BRIDGE} is missing: install Debian's containernetworking-plugins")
    rounds, warmup = (40, 3) if options.quick else (300, 10)

    def progress(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    progress(f"cni_shim_startup: {rounds} rounds of 8 cases, interleaved")
    results = run(rounds, warmup, progress)

    print(f"\n{'case':<40} {'p50 ms':>8} {'p99 ms':>8} {'min ms':>8} {'mean ms':>8}")
    for entry in results.values():
        assert isinstance(entry, dict)
        print(f"{entry['label']:<40} {entry['p50_ms']:>8.2f} {entry['p99_ms']:>8.2f} "
              f"{entry['min_ms']:>8.2f} {entry['mean_ms']:>8.2f}")

    def p50(key: str) -> float:
        entry = results[key]
        assert isinstance(entry, dict)
        return float(entry["p50_ms"])

    ratio = {}
    for prefix in ("shim", "python_shim"):
        ratio.update({
            f"{prefix}_version_vs_bridge_version": round(p50(f"{prefix}_version") / p50("bridge_version"), 2),
            f"{prefix}_status_agent_down_vs_bridge_version":
                round(p50(f"{prefix}_status_agent_down") / p50("bridge_version"), 2),
            f"{prefix}_add_round_trip_vs_bridge_version":
                round(p50(f"{prefix}_add_round_trip") / p50("bridge_version"), 2),
        })
    ratio["python_shim_version_vs_python_pass"] = round(p50("python_shim_version") / p50("python_pass"), 2)
    goal_met = max(p50("shim_version"), p50("python_shim_version")) < GOAL_MS
    forwarding_met = max(p50("shim_status_agent_down"), p50("python_shim_status_agent_down")) < GOAL_MS
    print()
    for prefix, kind in (("shim", "native"), ("python_shim", "python")):
        print(f"{kind} shim start-up p50 {p50(prefix + '_version'):.1f} ms (goal < {GOAL_MS:.0f} ms): "
              f"{'met' if p50(prefix + '_version') < GOAL_MS else 'NOT met'}; with the forwarding path "
              f"{p50(prefix + '_status_agent_down'):.1f} ms; {ratio[prefix + '_version_vs_bridge_version']}x "
              "the bridge plugin")
    summary = {
        "benchmark": "cni_shim_startup",
        "quick": options.quick,
        "rounds": rounds,
        "python": sys.version.split()[0],
        "figures": {k: v for k, v in results.items() if k not in BASELINE_CASES},
        "baseline": {k: v for k, v in results.items() if k in BASELINE_CASES},
        "ratio": ratio,
        "goal_ms": GOAL_MS,
        "goal_met": goal_met,
        "forwarding_startup_goal_met": forwarding_met,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
