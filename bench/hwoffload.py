"""CNI ADD/DEL through the VF driver beside core's veth driver, on one simulated node with a stand-in NIC.

Usage: ``.venv/bin/python bench/hwoffload.py [--quick]``  (root: it creates network namespaces;
run it under ``flock /work/.heavy.lock``)

Set-up (not timed): a simulated node (:mod:`ovnk_lab.ovsnode`) with ``ovnk node`` and the hwoffload
plugin on, a stand-in NIC (:mod:`ovnk_lab.vfs`) with one VF per VF pod, and as many veth pods.
Timed, round-robin (one VF ADD, then one veth ADD, ...: load on the shared machine hits both alike),
each from spawn to exit of the installed shim, ``ovn-installed`` wait included for both; then DEL
the same way. The VF path moves an existing device (about 16 ms per namespace move, lab.md) where
the veth path creates the pair in place: the interesting figure is the ratio. The last line of the
output is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from ovnk.core.kube.resources import NAMESPACES
from ovnk_lab.ovsnode import NodeLab
from ovnk_lab.ovsnode import PodSandbox
from ovnk_lab.ovsnode import netconf
from ovnk_lab.vfs import StandinNic


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def figures(samples: list[float]) -> dict[str, float]:
    return {"p50_ms": round(percentile(samples, 0.5), 1), "p99_ms": round(percentile(samples, 0.99), 1),
            "n": len(samples)}


def call(lab: NodeLab, pod: PodSandbox, command: str, config: str) -> float:
    done = lab.cni(pod, command, config=config)
    if done.returncode != 0:
        raise RuntimeError(f"{command} {pod.name}: {done.stdout} {done.stderr}")
    return done.seconds * 1000


def run(pods: int) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="ovnkbhw-", dir="/tmp"))
    lab = NodeLab(workdir / "w", nodes=1)
    try:
        lab.start()
        node = lab.nodes["node-1"]
        nic = StandinNic(workdir / "sys", vfs=pods).create(node.netns)
        lab.start_agent(node, f"hwoffload.sysfs-root={nic.root}", plugins=("hwoffload",))
        assert lab.client is not None
        namespace = f"bench-{uuid.uuid4().hex[:6]}"
        lab.client.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
        vf_pods = [lab.create_pod(node, namespace, f"vf{i}") for i in range(pods)]
        veth_pods = [lab.create_pod(node, namespace, f"veth{i}") for i in range(pods)]
        for pod in vf_pods + veth_pods:
            lab.wait_pod_annotated(pod)
        vf_conf = [netconf(deviceID=nic.vf_pci(i)) for i in range(pods)]
        samples: dict[str, list[float]] = {"vf_add": [], "veth_add": [], "vf_del": [], "veth_del": []}
        for i in range(pods):
            samples["vf_add"].append(call(lab, vf_pods[i], "ADD", vf_conf[i]))
            samples["veth_add"].append(call(lab, veth_pods[i], "ADD", netconf()))
        for i in range(pods):
            samples["vf_del"].append(call(lab, vf_pods[i], "DEL", vf_conf[i]))
            samples["veth_del"].append(call(lab, veth_pods[i], "DEL", netconf()))
        result: dict[str, Any] = {name: figures(values) for name, values in samples.items()}
        result["add_ratio_p50"] = round(result["vf_add"]["p50_ms"] / result["veth_add"]["p50_ms"], 2)
        result["del_ratio_p50"] = round(result["vf_del"]["p50_ms"] / result["veth_del"]["p50_ms"], 2)
        return result
    finally:
        lab.destroy()
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 pods of each kind instead of 30")
    args = parser.parse_args()
    result = run(8 if args.quick else 30)
    for name in ("vf_add", "veth_add", "vf_del", "veth_del"):
        print(f"{name:9} p50 {result[name]['p50_ms']:7.1f} ms  p99 {result[name]['p99_ms']:7.1f} ms", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
