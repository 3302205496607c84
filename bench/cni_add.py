"""CNI ADD/DEL latency of ovnk on a simulated node, beside Debian's reference ``bridge`` + ``host-local``.

Usage: ``.venv/bin/python bench/cni_add.py [--quick]``  (root: it creates network namespaces)

Set-up (not timed): a simulated node (:mod:`ovnk_lab.ovsnode`: netns,
ovs-vswitchd netdev, ovn-controller, OVN central, API server, the ovnk
controller in-process) with ``ovnk node`` running; N pods bound to it and
annotated by the controller; N sandbox netns for ovnk and N for the baseline.

Timed, round-robin (one ovnk ADD, then one bridge ADD, ...; so load changes on
the shared machine hit both alike), each from spawn to exit of the plugin
binary, as a runtime sees it:

* ovnk: the installed shim (``--shim native``, the default, or ``python``),
  which forwards to the node agent; the agent's log
  gives each ADD's ``ovn-installed`` wait (ovn-controller's work, not ours),
  reported separately and subtracted for "ADD without the wait";
* baseline: ``/usr/lib/cni/bridge`` with ``host-local`` IPAM, executed inside a
  netns of its own (a timing helper runs there, so no ``nsenter`` is timed);
* and a ``STATUS`` through the shim after each ADD: the floor every forwarded
  call pays (interpreter start-up of the shim, the socket, the agent's HTTP
  parsing) before any wiring.

Then DEL for every sandbox, round-robin as well. Goal: ovnk ADD without the
ovn-installed wait at most 2x the bridge plugin's ADD (p50). The last line of
the output is one JSON object with the figures, the baseline and the ratios.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from ovnk.core.kube.resources import NAMESPACES
from ovnk_lab import paths
from ovnk_lab.ovsnode import NodeLab
from ovnk_lab.ovsnode import PodSandbox
from ovnk_lab.ovsnode import netconf

GOAL_RATIO = 2.0
PLUGIN_DIR = "/usr/lib/cni"

# Runs inside the baseline's netns: executes one plugin call per stdin line, answers with its duration.
TIMER = r"""
import json, subprocess, sys, time
for line in sys.stdin:
    job = json.loads(line)
    started = time.perf_counter()
    proc = subprocess.run([job["plugin"]], input=job["stdin"].encode(), env=job["env"], capture_output=True)
    took = (time.perf_counter() - started) * 1000
    print(json.dumps({"ms": took, "rc": proc.returncode, "out": proc.stdout.decode()[-300:]}), flush=True)
"""


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[index]


def figures(samples: list[float]) -> dict[str, float]:
    return {"p50_ms": round(percentile(samples, 0.50), 2), "p99_ms": round(percentile(samples, 0.99), 2),
            "min_ms": round(min(samples), 2), "mean_ms": round(sum(samples) / len(samples), 2)}


class Baseline:
    """bridge + host-local in a netns of their own, driven through a timing helper living there."""

    def __init__(self, workdir: Path, prefix: str) -> None:
        self.netns = f"{prefix}-bl"
        self.workdir = workdir
        subprocess.run(["ip", "netns", "add", self.netns], check=True)
        self.conf = json.dumps({
            "cniVersion": "1.0.0", "name": "bench-bridge", "type": "bridge", "bridge": "cni-bench",
            "isGateway": True, "ipMasq": False, "mtu": 1400,
            "ipam": {"type": "host-local", "subnet": "10.250.0.0/16", "dataDir": str(workdir / "ipam")},
        })
        self.timer = subprocess.Popen(
            [paths.system_bin("nsenter"), f"--net=/run/netns/{self.netns}", "--", sys.executable, "-I", "-c", TIMER],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def call(self, command: str, container: str, netns: str) -> float:
        env = {"CNI_COMMAND": command, "CNI_CONTAINERID": container, "CNI_NETNS": netns, "CNI_IFNAME": "eth0",
               "CNI_PATH": PLUGIN_DIR, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
        assert self.timer.stdin is not None and self.timer.stdout is not None
        self.timer.stdin.write(json.dumps({"plugin": f"{PLUGIN_DIR}/bridge", "stdin": self.conf, "env": env}) + "\n")
        self.timer.stdin.flush()
        answer = json.loads(self.timer.stdout.readline())
        if answer["rc"] != 0:
            raise SystemExit(f"bridge {command} failed: {answer['out']}")
        return float(answer["ms"])

    def close(self) -> None:
        if self.timer.stdin is not None:
            self.timer.stdin.close()
        self.timer.wait(10)
        subprocess.run(["ip", "netns", "delete", self.netns], check=False)


def ovnk_call(lab: NodeLab, pod: PodSandbox, command: str) -> float:
    started = time.perf_counter()
    done = lab.cni(pod, command, config=netconf())
    took = (time.perf_counter() - started) * 1000
    if done.returncode != 0:
        raise SystemExit(f"ovnk {command} of {pod.name} failed: {done.stdout} {done.stderr}")
    return took


def installed_waits(log: Path, namespace: str) -> dict[str, tuple[float, float]]:
    """pod name -> (wired ms, ovn-installed wait ms) from the agent's ADD log lines."""
    pattern = re.compile(rf"ADD {re.escape(namespace)}/(\S+): wired in ([\d.]+) ms .*ovn-installed after ([\d.]+) ms")
    found = {}
    for line in log.read_text(errors="replace").splitlines():
        match = pattern.search(line)
        if match:
            found[match.group(1)] = (float(match.group(2)), float(match.group(3)))
    return found


def run(pods: int, warmup: int, progress: Any, agent_log: Path | None = None, shim: str = "native") -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="ovnkb-", dir="/tmp"))
    lab = NodeLab(workdir / "w", nodes=1)
    baseline: Baseline | None = None
    try:
        progress("starting the simulated node (API server, OVN central, OVS, controller, ovnk node)")
        lab.start()
        node = lab.nodes["node-1"]
        lab.start_agent(node, f"cni.shim={shim}")
        assert lab.client is not None
        namespace = f"bench-{uuid.uuid4().hex[:6]}"
        lab.client.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
        total = pods + warmup
        progress(f"creating {total} pods and sandboxes")
        sandboxes = [lab.create_pod(node, namespace, f"p{i}") for i in range(total)]
        for sandbox in sandboxes:
            lab.wait_pod_annotated(sandbox)
        baseline = Baseline(workdir, lab.prefix)
        base_netns = []
        for _ in range(total):
            name = f"{lab.prefix}-b{uuid.uuid4().hex[:6]}"
            subprocess.run(["ip", "netns", "add", name], check=True)
            base_netns.append(name)
        add_ovnk: list[float] = []
        add_bridge: list[float] = []
        status_ovnk: list[float] = []
        progress(f"ADD x {total} (first {warmup} are warm-up), interleaved with the bridge plugin")
        for index, (sandbox, netns) in enumerate(zip(sandboxes, base_netns, strict=True)):
            ours = ovnk_call(lab, sandbox, "ADD")
            theirs = baseline.call("ADD", f"bench{index:04d}", f"/run/netns/{netns}")
            # The floor of any forwarded call: shim start-up, socket, the agent's HTTP and parsing.
            floor = ovnk_call(lab, sandbox, "STATUS")
            if index >= warmup:
                add_ovnk.append(ours)
                add_bridge.append(theirs)
                status_ovnk.append(floor)
        waits = installed_waits(node.agent_log, namespace)
        if agent_log is not None:
            shutil.copy(node.agent_log, agent_log)
        measured = sandboxes[warmup:]
        missing = [s.name for s in measured if s.name not in waits]
        if missing:
            raise SystemExit(f"no ovn-installed figure in the agent log for {', '.join(missing[:5])}")
        wait_ms = [waits[s.name][1] for s in measured]
        wired_ms = [waits[s.name][0] for s in measured]
        without_wait = [total_ms - wait for total_ms, wait in zip(add_ovnk, wait_ms, strict=True)]
        del_ovnk: list[float] = []
        del_bridge: list[float] = []
        progress(f"DEL x {total}, interleaved")
        for index, (sandbox, netns) in enumerate(zip(sandboxes, base_netns, strict=True)):
            ours = ovnk_call(lab, sandbox, "DEL")
            theirs = baseline.call("DEL", f"bench{index:04d}", f"/run/netns/{netns}")
            if index >= warmup:
                del_ovnk.append(ours)
                del_bridge.append(theirs)
        for name in base_netns:
            subprocess.run(["ip", "netns", "delete", name], check=False)
        return {
            "ovnk": {
                "add": figures(add_ovnk),
                "add_without_ovn_installed_wait": figures(without_wait),
                "ovn_installed_wait": figures(wait_ms),
                "agent_wiring": figures(wired_ms),
                "del": figures(del_ovnk),
                "status_round_trip": figures(status_ovnk),
            },
            "baseline": {"bridge_add": figures(add_bridge), "bridge_del": figures(del_bridge)},
        }
    finally:
        if baseline is not None:
            baseline.close()
        lab.destroy()
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="20 pods instead of 100 (well under a minute)")
    parser.add_argument("--agent-log", type=Path, help="keep a copy of the node agent's log here")
    parser.add_argument("--shim", choices=("native", "python"), default="native",
                        help="which CNI shim the node agent installs ([cni] shim; native is the default)")
    options = parser.parse_args()
    for plugin in ("bridge", "host-local"):
        if not Path(PLUGIN_DIR, plugin).exists():
            raise SystemExit(f"{PLUGIN_DIR}/{plugin} is missing: install Debian's containernetworking-plugins")
    pods, warmup = (20, 3) if options.quick else (100, 5)

    def progress(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    started = time.monotonic()
    results = run(pods, warmup, progress, options.agent_log, options.shim)
    rows = [
        ("ovnk ADD (shim -> agent -> ovn-installed)", results["ovnk"]["add"]),
        ("  of which the ovn-installed wait", results["ovnk"]["ovn_installed_wait"]),
        ("  ADD without the ovn-installed wait", results["ovnk"]["add_without_ovn_installed_wait"]),
        ("  agent's wiring (server side)", results["ovnk"]["agent_wiring"]),
        ("ovnk STATUS (shim round trip, no wiring)", results["ovnk"]["status_round_trip"]),
        ("bridge + host-local ADD (baseline)", results["baseline"]["bridge_add"]),
        ("ovnk DEL", results["ovnk"]["del"]),
        ("bridge + host-local DEL (baseline)", results["baseline"]["bridge_del"]),
    ]
    print(f"\n{pods} pods, {options.shim} shim, {time.monotonic() - started:.0f}s in all")
    print(f"{'case':<44} {'p50 ms':>8} {'p99 ms':>8} {'min ms':>8} {'mean ms':>8}")
    for label, entry in rows:
        print(f"{label:<44} {entry['p50_ms']:>8.2f} {entry['p99_ms']:>8.2f} {entry['min_ms']:>8.2f} "
              f"{entry['mean_ms']:>8.2f}")
    base_add = results["baseline"]["bridge_add"]["p50_ms"]
    ratio = {
        "add_without_wait_vs_bridge_add_p50": round(results["ovnk"]["add_without_ovn_installed_wait"]["p50_ms"]
                                                    / base_add, 2),
        "add_vs_bridge_add_p50": round(results["ovnk"]["add"]["p50_ms"] / base_add, 2),
        "del_vs_bridge_del_p50": round(results["ovnk"]["del"]["p50_ms"] / results["baseline"]["bridge_del"]["p50_ms"],
                                       2),
        "status_round_trip_vs_bridge_add_p50": round(results["ovnk"]["status_round_trip"]["p50_ms"] / base_add, 2),
    }
    goal_met = ratio["add_without_wait_vs_bridge_add_p50"] <= GOAL_RATIO
    print(f"\nADD without the ovn-installed wait: {ratio['add_without_wait_vs_bridge_add_p50']}x the bridge plugin "
          f"(goal <= {GOAL_RATIO}x): {'met' if goal_met else 'NOT met'}")
    summary = {
        "benchmark": "cni_add",
        "quick": options.quick,
        "pods": pods,
        "shim": options.shim,
        "figures": results["ovnk"],
        "baseline": results["baseline"],
        "ratio": ratio,
        "goal_ratio": GOAL_RATIO,
        "goal_met": goal_met,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
