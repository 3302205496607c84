"""Pod start-up on a real 2-node sandbox: create to Ready and to first ping, ovnk against Debian's ``bridge`` CNI.

Usage: ``.venv/bin/python bench/pod_ready.py [--quick]``  (root: it brings up sandboxes)

Two sandboxes of its own (own prefixes, underlay subnets and work dirs), brought
up side by side and measured one after the other (not timed: start-up):

* ovnk: :class:`~ovnk_lab.sandbox.Sandbox` (kubelets, containerd, OVN, the
  ovnk controller and node agents);
* baseline: :class:`~ovnk_lab.cluster.LabCluster` whose nodes use Debian's
  reference ``bridge`` + ``host-local`` plugins (:class:`~ovnk_lab.cluster.BridgeCni`).

On each, a client pod per node is started first. Then N pods (100; ``--quick``
20) are created through the API by 8 threads, alternating between the two
nodes. For every pod we time, from just before its create request:

* **Ready**: the first watch event with the pod's ``Ready`` condition True;
* **first ping**: the first ICMP echo reply from the pod's IP, pinged every
  20 ms, from the moment the watch shows the IP, by a small pinger inside the
  client pod's network namespace *on the pod's node* (``bridge`` does not
  route between nodes, so both sides are measured the same way). This is what
  a client that learns the address from the API sees; the kubelet publishes
  the IP with the same status update that makes a busybox pod Ready, so it
  lands a few ms after Ready. (Pinging the addresses a node will hand out
  *before* they are published would time the wiring itself, but that steady
  ICMP towards ports being bound crashed Debian's OVS 3.1.0 userspace
  conntrack in this lab, ``assertion conn->conn_type == CT_CONN_TYPE_DEFAULT
  failed in conn_update_state()``, 2 runs of 2 at 100 pods.)

Figures are p50/p99/max in ms. Ratio = ovnk's create-to-Ready p50 / bridge's.
The last line of the output is one JSON object with the figures, the baseline
and the ratio. Both sandboxes are brought down at the end, also on failure.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ovnk.core.kube.client import KubeClient
from ovnk.core.kube.resources import NAMESPACES
from ovnk.core.kube.resources import PODS
from ovnk.core.kube.resources import Resource
from ovnk_lab import images
from ovnk_lab import paths
from ovnk_lab.cluster import BridgeCni
from ovnk_lab.cluster import LabCluster
from ovnk_lab.kubenode import SandboxNode
from ovnk_lab.sandbox import Sandbox
from ovnk_lab.sandbox import SandboxOptions
from ovnk_lab.sandbox import copy_logs

SERVICEACCOUNTS = Resource("", "v1", "ServiceAccount", "serviceaccounts")
NAMESPACE = "bench-ready"
POD_TIMEOUT = 240.0

# Runs inside a client pod's netns: reads target IPs on stdin, pings every pending one every
# 20 ms over a raw ICMP socket, prints "<ip> <CLOCK_MONOTONIC seconds>" at its first reply.
PINGER = r"""
import os, select, socket, struct, sys, time
sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
sock.setblocking(False)
ident = os.getpid() & 0xFFFF
def packet(seq):
    header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
    data = header + b"ovnk-bench-ping"
    total = sum((data[i] << 8) + (data[i + 1] if i + 1 < len(data) else 0) for i in range(0, len(data), 2))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return struct.pack("!BBHHH", 8, 0, ~total & 0xFFFF, ident, seq) + b"ovnk-bench-ping"
pending, buf, seq, last = set(), b"", 0, 0.0
stdin = sys.stdin.fileno()
print("ready", flush=True)
while True:
    readable, _, _ = select.select([stdin, sock], [], [], 0.005)
    if stdin in readable:
        chunk = os.read(stdin, 65536)
        if not chunk:
            break
        buf += chunk
        *lines, buf = buf.split(b"\n")
        pending.update(line.decode().strip() for line in lines if line.strip())
    if sock in readable:
        while True:
            try:
                reply, (source, _) = sock.recvfrom(2048)
            except BlockingIOError:
                break
            icmp = reply[(reply[0] & 0x0F) * 4:]
            if len(icmp) >= 8 and icmp[0] == 0 and struct.unpack("!H", icmp[4:6])[0] == ident and source in pending:
                pending.discard(source)
                print(source, time.monotonic(), flush=True)
    now = time.monotonic()
    if pending and now - last >= 0.02:
        last, seq = now, (seq + 1) & 0xFFFF
        for target in list(pending):
            try:
                sock.sendto(packet(seq), (target, 0))
            except OSError:
                pass
"""


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def free_subnets(count: int) -> list[str]:
    """``count`` 172.28.x.0/24 subnets the host has no address in (other sandboxes may be up)."""
    used = subprocess.run(["ip", "-j", "-4", "addr"], capture_output=True, text=True, check=True).stdout
    taken = {ipaddress.IPv4Address(a["local"]) for link in json.loads(used) for a in link.get("addr_info", [])}
    found: list[str] = []
    start = os.getpid() % 200
    for offset in range(250):
        subnet = ipaddress.IPv4Network(f"172.28.{(start + offset) % 250}.0/24")
        if not any(ip in subnet for ip in taken):
            found.append(str(subnet))
            if len(found) == count:
                return found
    raise SystemExit("no free 172.28.x.0/24 subnets for the benchmark sandboxes")


def figures(values_s: list[float]) -> dict[str, float]:
    ms = sorted(v * 1000 for v in values_s)
    p99 = ms[min(len(ms) - 1, max(0, round(0.99 * len(ms)) - 1))]
    return {"n": len(ms), "p50_ms": round(statistics.median(ms), 1), "p99_ms": round(p99, 1),
            "min_ms": round(ms[0], 1), "max_ms": round(ms[-1], 1), "mean_ms": round(statistics.fmean(ms), 1)}


def pod_body(name: str, node: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1, "automountServiceAccountToken": False,
                     "containers": [{"name": "c", "image": "busybox", "imagePullPolicy": "Never",
                                     "command": ["sleep", "100000"]}]}}


def is_ready(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in pod.get("status", {}).get("conditions") or [])


class Pinger:
    """The PINGER script inside one client pod's network namespace."""

    def __init__(self, netns: Path) -> None:
        self.proc = subprocess.Popen([paths.system_bin("nsenter"), f"--net={netns}", "--", sys.executable, "-I", "-S",
                                      "-c", PINGER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None and self.proc.stdin is not None
        if self.proc.stdout.readline().strip() != "ready":
            raise SystemExit(f"the pinger in {netns} did not start")
        self.replies: dict[str, float] = {}
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            ip, at = line.split()
            self.replies.setdefault(ip, float(at))

    def add(self, ip: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(ip + "\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


class ReadyWatch:
    """Watches the namespace: first Ready time per pod; hands each new pod IP to its node's pinger."""

    def __init__(self, kube: KubeClient, pingers: dict[str, Pinger]) -> None:
        self.kube = kube
        self.pingers = pingers
        self.ready: dict[str, float] = {}
        self.ips: dict[str, str] = {}
        self._stop = threading.Event()
        _items, self._version = kube.list(PODS, namespace=NAMESPACE)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._watch()
            except Exception as exc:  # a broken watch resumes from the last version seen
                if self._stop.is_set():
                    return
                progress(f"pod watch ended ({exc}); watching again")
                time.sleep(0.2)

    def _watch(self) -> None:
        with self.kube.watch(PODS, namespace=NAMESPACE, resource_version=self._version, timeout_seconds=60) as events:
            for event in events:
                seen = time.monotonic()
                pod = event.object
                self._version = pod.get("metadata", {}).get("resourceVersion", self._version)
                if event.type == "BOOKMARK":
                    continue
                name = pod["metadata"]["name"]
                ip = pod.get("status", {}).get("podIP")
                if ip and name not in self.ips:
                    self.ips[name] = ip
                    pinger = self.pingers.get(pod["spec"]["nodeName"])
                    if pinger is not None and not name.startswith("client-"):
                        pinger.add(ip)
                if is_ready(pod):
                    self.ready.setdefault(name, seen)
                if self._stop.is_set():
                    return

    def stop(self) -> None:
        self._stop.set()


def ensure_namespace(kube: KubeClient) -> None:
    kube.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    deadline = time.monotonic() + 60
    while kube.get(SERVICEACCOUNTS, "default", namespace=NAMESPACE) is None:
        if time.monotonic() > deadline:
            raise SystemExit("the namespace's default service account never appeared")
        time.sleep(0.05)


def wait_until(what: str, predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


def measure(label: str, kubeconfig: Path, nodes: list[SandboxNode], count: int) -> dict[str, Any]:
    """Create ``count`` pods on ``nodes`` and time each one's Ready and first ping."""
    kube = KubeClient(kubeconfig=str(kubeconfig), qps=1000)
    try:
        ensure_namespace(kube)
        names = [n.name for n in nodes]
        clients = {node: f"client-{node}" for node in names}
        for node, client in clients.items():
            kube.create(PODS, pod_body(client, node), namespace=NAMESPACE)

        def clients_ready() -> bool:
            return all(is_ready(kube.get(PODS, c, namespace=NAMESPACE) or {}) for c in clients.values())

        wait_until(f"{label}: the client pods", clients_ready, POD_TIMEOUT)
        pingers = {node.name: Pinger(node.pod_netns(NAMESPACE, clients[node.name])) for node in nodes}
        pods = {f"p-{i:03d}": names[i % len(names)] for i in range(count)}
        watch = ReadyWatch(kube, pingers)
        created: dict[str, float] = {}

        def create(item: tuple[str, str]) -> None:
            name, node = item
            created[name] = time.monotonic()
            kube.create(PODS, pod_body(name, node), namespace=NAMESPACE)

        progress(f"{label}: creating {count} pods on {len(names)} nodes")
        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(create, pods.items()))

        def done() -> bool:
            pinged = all(watch.ips.get(p) in pingers[pods[p]].replies for p in pods)
            return pinged and all(p in watch.ready for p in pods)

        try:
            wait_until(f"{label}: {count} pods Ready and answering pings", done, POD_TIMEOUT)
        except SystemExit as exc:
            not_ready = sorted(p for p in pods if p not in watch.ready)
            silent = sorted(p for p in pods if watch.ips.get(p) not in pingers[pods[p]].replies)
            raise SystemExit(f"{exc}: {len(not_ready)} not Ready ({', '.join(not_ready[:10])}), "
                             f"{len(silent)} not answering ({', '.join(silent[:10])})") from None
        finally:
            watch.stop()
            for pinger in pingers.values():
                pinger.close()
        elapsed = time.monotonic() - started
        ready = [watch.ready[p] - created[p] for p in pods]
        pinged = [pingers[pods[p]].replies[watch.ips[p]] - created[p] for p in pods]
        return {"pods": count, "all_ready_s": round(elapsed, 2), "create_to_ready": figures(ready),
                "create_to_first_ping": figures(pinged)}
    finally:
        kube.close()


def run(count: int, logs: Path | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    pid = os.getpid()
    base = Path(os.environ.get("OVNK_SANDBOX_DIR", "/var/lib/ovnk/sandbox"))
    ovnk_subnet, bridge_subnet = free_subnets(2)
    sandbox = Sandbox(base / f"bench-ready-{pid}-ovnk", prefix=f"bro{pid % 10000}", subnet=ovnk_subnet,
                      progress=lambda m: progress(f"[ovnk] {m}"))
    bridge = LabCluster(base / f"bench-ready-{pid}-bridge", prefix=f"brb{pid % 10000}", subnet=bridge_subnet,
                        progress=lambda m: progress(f"[bridge] {m}"))
    images.ensure_bundle()  # built once here, not by two threads at the same time
    errors: list[BaseException] = []

    def up(action: Callable[[], object]) -> None:
        try:
            action()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=up, args=(lambda: sandbox.up(SandboxOptions(nodes=2)),)),
               threading.Thread(target=up, args=(lambda: bridge.up(2, cni=BridgeCni()),))]
    try:
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        progress(f"both sandboxes up in {time.monotonic() - started:.1f}s")
        ours = measure("ovnk", sandbox.kubeconfig, sandbox.cluster.nodes, count)
        theirs = measure("bridge", bridge.kubeconfig, bridge.nodes, count)
        return ours, theirs
    finally:
        if logs is not None:
            copy_logs(sandbox, logs / "ovnk")
        for name, target in (("ovnk", sandbox), ("bridge", bridge)):
            try:
                target.down()
            except Exception as exc:
                progress(f"[{name}] down failed: {exc}")
        for suffix in ("ovnk", "bridge"):
            shutil.rmtree(base / f"bench-ready-{pid}-{suffix}", ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="20 pods instead of 100 (under a minute)")
    parser.add_argument("--logs", type=Path, help="copy the ovnk sandbox's logs here before it goes down")
    options = parser.parse_args()
    count = 20 if options.quick else 100
    started = time.monotonic()
    ours, theirs = run(count, options.logs)
    rows = [
        ("ovnk: create -> Ready", ours["create_to_ready"]),
        ("ovnk: create -> first ping (same node)", ours["create_to_first_ping"]),
        ("bridge: create -> Ready (baseline)", theirs["create_to_ready"]),
        ("bridge: create -> first ping (same node)", theirs["create_to_first_ping"]),
    ]
    print(f"\n{count} pods on 2 nodes per CNI, {time.monotonic() - started:.0f}s in all "
          f"(all Ready after {ours['all_ready_s']}s with ovnk, {theirs['all_ready_s']}s with bridge)")
    print(f"{'case':<44} {'p50 ms':>8} {'p99 ms':>8} {'min ms':>8} {'max ms':>8}")
    for label, entry in rows:
        print(f"{label:<44} {entry['p50_ms']:>8.1f} {entry['p99_ms']:>8.1f} {entry['min_ms']:>8.1f} "
              f"{entry['max_ms']:>8.1f}")
    ratio = {
        "ready_p50_vs_bridge": round(ours["create_to_ready"]["p50_ms"] / theirs["create_to_ready"]["p50_ms"], 2),
        "ready_p99_vs_bridge": round(ours["create_to_ready"]["p99_ms"] / theirs["create_to_ready"]["p99_ms"], 2),
        "first_ping_p50_vs_bridge": round(ours["create_to_first_ping"]["p50_ms"]
                                          / theirs["create_to_first_ping"]["p50_ms"], 2),
    }
    print(f"\novnk create -> Ready p50 is {ratio['ready_p50_vs_bridge']}x the bridge plugin's")
    print(json.dumps({"benchmark": "pod_ready", "quick": options.quick, "pods": count, "figures": ours,
                      "baseline": theirs, "ratio": ratio["ready_p50_vs_bridge"], "ratios": ratio}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
