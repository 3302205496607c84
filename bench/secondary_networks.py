"""Secondary networks: a pod with two attachments, create -> Ready, against the same pod with none.

Usage: ``.venv/bin/python bench/secondary_networks.py [--quick]``  (root: it brings up a sandbox)

One 2-node sandbox of its own (own prefix, underlay subnet and work dir) with
the plugin on and ``attachments = agent`` (no Multus in the lab: the node
agent performs the attachments when the runtime asks for the default
network), a layer3 and a layer2 NetworkAttachmentDefinition. Then, alternating
in one run so both see the same machine load, N rounds (20; ``--quick`` 6) of:

* **baseline**: a busybox pod with no ``k8s.v1.cni.cncf.io/networks``;
* **two attachments**: the same pod with ``<l3>,<l2>`` (interfaces net1, net2);

each created through the API on alternating nodes and timed from just before
its create request to the first time the API shows its ``Ready`` condition
True (polled every 20 ms), then deleted. Figures are p50/p99/max in ms; the
goal is two attachments' p50 <= 1.5x the baseline's. The last line of the
output is one JSON object with the figures and the ratio.
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
import time
from pathlib import Path
from typing import Any

from ovnk.core.kube.client import KubeClient
from ovnk.core.kube.resources import NAMESPACES
from ovnk.core.kube.resources import PODS
from ovnk.plugins.secondary_networks.controller import NADS
from ovnk_lab.sandbox import Sandbox
from ovnk_lab.sandbox import SandboxOptions

NAMESPACE = "bench-secondary"
GOAL = 1.5


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def free_subnet() -> str:
    """A 172.27.x.0/24 the host has no address in (other sandboxes may be up)."""
    used = subprocess.run(["ip", "-j", "-4", "addr"], capture_output=True, text=True, check=True).stdout
    taken = {ipaddress.IPv4Address(a["local"]) for link in json.loads(used) for a in link.get("addr_info", [])}
    for offset in range(250):
        subnet = ipaddress.IPv4Network(f"172.27.{(os.getpid() + offset) % 250}.0/24")
        if not any(ip in subnet for ip in taken):
            return str(subnet)
    raise SystemExit("no free 172.27.x.0/24 subnet for the benchmark sandbox")


def figures(values_s: list[float]) -> dict[str, float]:
    ordered = sorted(values_s)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {"p50_ms": round(statistics.median(ordered) * 1000, 1), "p99_ms": round(p99 * 1000, 1),
            "min_ms": round(ordered[0] * 1000, 1), "max_ms": round(ordered[-1] * 1000, 1), "count": len(ordered)}


def nad(name: str, **config: Any) -> dict[str, Any]:
    doc = {"cniVersion": "1.0.0", "type": "ovn-k8s-cni-overlay", "name": name,
           "netAttachDefName": f"{NAMESPACE}/{name}", **config}
    return {"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
            "metadata": {"name": name, "namespace": NAMESPACE}, "spec": {"config": json.dumps(doc)}}


def pod_body(name: str, node: str, networks: str | None) -> dict[str, Any]:
    annotations = {"k8s.v1.cni.cncf.io/networks": networks} if networks else {}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NAMESPACE, "annotations": annotations},
            "spec": {"nodeName": node, "terminationGracePeriodSeconds": 0,
                     "containers": [{"name": "c", "image": "busybox", "imagePullPolicy": "Never",
                                     "command": ["sleep", "100000"]}]}}


def is_ready(pod: dict[str, Any] | None) -> bool:
    conditions = ((pod or {}).get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def create_to_ready(kube: KubeClient, name: str, node: str, networks: str | None, timeout: float = 120) -> float:
    started = time.monotonic()
    kube.create(PODS, pod_body(name, node, networks), namespace=NAMESPACE)
    while not is_ready(kube.get(PODS, name, namespace=NAMESPACE)):
        if time.monotonic() - started > timeout:
            raise SystemExit(f"pod {name} not Ready within {timeout:g}s")
        time.sleep(0.02)
    elapsed = time.monotonic() - started
    kube.delete(PODS, name, namespace=NAMESPACE, grace_period_seconds=0)
    while kube.get(PODS, name, namespace=NAMESPACE) is not None:
        if time.monotonic() - started > 2 * timeout:
            raise SystemExit(f"pod {name} not gone")
        time.sleep(0.1)
    return elapsed


def measure(sandbox: Sandbox, rounds: int) -> tuple[list[float], list[float]]:
    kube = KubeClient(kubeconfig=str(sandbox.kubeconfig))
    kube.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    deadline = time.monotonic() + 60
    while True:  # the namespace's default service account must exist before pods can be created
        try:
            kube.create(NADS, nad("l3", topology="layer3", subnets="10.230.0.0/16/24"), namespace=NAMESPACE)
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    kube.create(NADS, nad("l2", topology="layer2", subnets="10.231.0.0/24"), namespace=NAMESPACE)
    nodes = [n.name for n in sandbox.cluster.nodes]
    # One warm-up of each kind (image, first attachment of each network), not timed.
    create_to_ready(kube, "warm-plain", nodes[0], None)
    create_to_ready(kube, "warm-multi", nodes[1], "l3,l2")
    plain: list[float] = []
    multi: list[float] = []
    for index in range(rounds):
        node = nodes[index % len(nodes)]
        plain.append(create_to_ready(kube, f"plain-{index}", node, None))
        multi.append(create_to_ready(kube, f"multi-{index}", node, "l3,l2"))
        progress(f"round {index + 1}/{rounds}: none {plain[-1] * 1000:.0f} ms, two {multi[-1] * 1000:.0f} ms")
    return plain, multi


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="6 rounds instead of 20")
    options = parser.parse_args()
    rounds = 6 if options.quick else 20
    pid = os.getpid()
    base = Path(os.environ.get("OVNK_SANDBOX_DIR", "/var/lib/ovnk/sandbox")) / f"bench-secondary-{pid}"
    sandbox = Sandbox(base, prefix=f"bsn{pid % 10000}", subnet=free_subnet(), progress=progress)
    try:
        sandbox.up(SandboxOptions(nodes=2))
        sandbox.set_plugins(["secondary_networks"], settings={"secondary_networks": {"attachments": "agent"}})
        plain, multi = measure(sandbox, rounds)
    finally:
        try:
            sandbox.down()
        finally:
            shutil.rmtree(base, ignore_errors=True)
    ours, baseline = figures(multi), figures(plain)
    ratio = round(ours["p50_ms"] / baseline["p50_ms"], 2)
    print(f"\n{rounds} pods of each kind on 2 nodes")
    print(f"{'case':<36} {'p50 ms':>8} {'p99 ms':>8} {'min ms':>8} {'max ms':>8}")
    for label, entry in (("two attachments: create -> Ready", ours), ("none: create -> Ready (baseline)", baseline)):
        print(f"{label:<36} {entry['p50_ms']:>8.1f} {entry['p99_ms']:>8.1f} {entry['min_ms']:>8.1f} "
              f"{entry['max_ms']:>8.1f}")
    print(f"\ntwo attachments' create -> Ready p50 is {ratio}x the pod without (goal <= {GOAL}x)")
    print(json.dumps({"benchmark": "secondary_networks", "quick": options.quick, "rounds": rounds, "figures": ours,
                      "baseline": baseline, "ratio": ratio, "goal": GOAL, "met": ratio <= GOAL}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
