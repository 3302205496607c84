"""Pods programmed per second, API create to LSP committed, against a raw baseline; restart resync.

Setup: a real control plane and a real OVN central; the NB is pre-filled with
5000 logical switch ports (so the DB is not empty); nodes are created through
the API with the annotations a node agent would publish (no kubelet).

- ovnk: the controller runs; N pods are created through the API by 8 threads;
  we time from the first create until every pod's LSP is committed (seen by a
  separate NB client), and each pod's create -> LSP latency.
- baseline (same API server, same NB, controller stopped): the same 8 threads
  each do, per pod, the API create, the same ``k8s.ovn.org/pod-networks`` patch
  and one bare-ovsdbapp transaction writing the same rows (LSP with addresses,
  port security, options, external_ids; namespace address set; port group).
- resync: with M pods programmed, the controller restarts; we time until it is
  idle and count NB write transactions (must be 0).

Goals (issue): ovnk >= 0.5x the baseline's rate; resync of 10,000 unchanged
pods under 30 s with zero writes. ``--quick``: N=300, M=1000.
Run: ``.venv/bin/python bench/pods.py [--quick]``; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ovnk.core.bootstrap import bootstrap
from ovnk.core.config import ConfigInputs
from ovnk.core.controller import ControllerProcess
from ovnk.core.kube.client import KubeClient
from ovnk.core.kube.resources import NAMESPACES
from ovnk.core.kube.resources import NODES
from ovnk.core.kube.resources import PODS
from ovnk.core.kube.resources import Resource
from ovnk.core.ovn.connection import OvsdbClient
from ovnk_lab.kube import KubeControlPlane
from ovnk_lab.ovn import OvnCentral

PODS_PER_NODE = 240  # a /24 host subnet holds 252


def node_body(name: str, index: int) -> dict[str, Any]:
    ip = f"172.{30 + index // 250}.{index % 250}.11"
    gateway = {"default": {"mode": "shared", "bridge-id": "breth0", "interface-id": f"breth0_{name}",
                           "mac-address": f"0a:00:00:{index // 256:02x}:{index % 256:02x}:01",
                           "ip-addresses": [f"{ip}/24"], "next-hops": [ip.rsplit(".", 1)[0] + ".254"],
                           "node-port-enable": "true", "vlan-id": "0"}}
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "annotations": {
        "k8s.ovn.org/node-chassis-id": str(uuid.uuid4()),
        "k8s.ovn.org/l3-gateway-config": json.dumps(gateway),
        "k8s.ovn.org/node-mgmt-port-mac-addresses": json.dumps({"default": f"0a:00:01:{index // 256:02x}:{index % 256:02x}:02"}),
    }}}


def pod_body(namespace: str, name: str, node: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace},
            "spec": {"nodeName": node, "automountServiceAccountToken": False,
                     "containers": [{"name": "c", "image": "busybox"}]}}


class LspWatcher:
    """Records when each LSP name first appears in NB (through its own IDL)."""

    def __init__(self, client: OvsdbClient) -> None:
        self.seen: dict[str, float] = {}
        self._cond = threading.Condition()
        self.client = client
        client.add_row_listener(self._on_row)

    def _on_row(self, event: str, row: Any, _updates: Any) -> None:
        if event == "create" and row._table.name == "Logical_Switch_Port":
            with self._cond:
                self.seen.setdefault(row.name, time.monotonic())
                self._cond.notify_all()

    def wait_for(self, names: set[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not names <= self.seen.keys():
            if time.monotonic() > deadline:
                missing = len(names - self.seen.keys())
                raise TimeoutError(f"{missing} LSPs still missing after {timeout}s")
            time.sleep(0.01)


SERVICEACCOUNTS = Resource("", "v1", "ServiceAccount", "serviceaccounts")


def ensure_namespace(client: KubeClient, name: str) -> None:
    client.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    while client.get(SERVICEACCOUNTS, "default", namespace=name) is None:
        time.sleep(0.05)


def create_pods(client: KubeClient, namespace: str, count: int, nodes: list[str], *, prefix: str,
                each: Any = None) -> dict[str, float]:
    created: dict[str, float] = {}

    def one(i: int) -> None:
        name = f"{prefix}{i}"
        created[name] = time.monotonic()
        obj = client.create(PODS, pod_body(namespace, name, nodes[i % len(nodes)]), namespace=namespace)
        if each is not None:
            each(obj)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(count)))
    return created


def prefill(central: OvnCentral, count: int) -> None:
    client = OvsdbClient(remote=central.nb_address, schema="OVN_Northbound", name="prefill", timeout=120).start()
    api = client.api
    with api.transaction(check_error=True) as txn:
        txn.add(api.ls_add("filler"))
        for i in range(count):
            txn.add(api.lsp_add("filler", f"filler-{i}"))
    client.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n = 300 if args.quick else 1000
    resync_pods = 1000 if args.quick else 10000
    prefill_count = 5000
    with tempfile.TemporaryDirectory(prefix="ovnk-bench-pods-") as tmp:
        work = Path(tmp)
        plane = KubeControlPlane(work / "kube").start()
        central = OvnCentral(work / "ovn").start()
        try:
            return run(plane, central, n=n, resync_pods=resync_pods, prefill_count=prefill_count, quick=args.quick)
        finally:
            central.destroy()
            plane.stop()


def run(plane: KubeControlPlane, central: OvnCentral, *, n: int, resync_pods: int, prefill_count: int,
        quick: bool) -> int:
    kube = KubeClient(kubeconfig=str(plane.kubeconfig), qps=2000)
    prefill(central, prefill_count)
    node_count = max(2, -(-(max(n, resync_pods) + n) // PODS_PER_NODE))
    nodes = [f"bench-{i}" for i in range(node_count)]
    for i, node in enumerate(nodes):
        kube.create(NODES, node_body(node, i))
    inputs = ConfigInputs(env={}, flags={"kubeconfig": str(plane.kubeconfig), "nb_address": central.nb_address,
                                         "sb_address": central.sb_address},
                          assignments=["controller.leader-election=false", "controller.metrics-bind-address=",
                                       "controller.workers=8", "logging.level=warning"])
    process = ControllerProcess(bootstrap(inputs)).start()
    assert process.runner is not None
    process.runner.wait_idle(300, settle=0.5)
    watcher_client = OvsdbClient(remote=central.nb_address, schema="OVN_Northbound", name="watch", timeout=60).start()
    watcher = LspWatcher(watcher_client)

    # -- ovnk ---------------------------------------------------------------------
    ensure_namespace(kube, "bench-ovnk")
    started = time.monotonic()
    created = create_pods(kube, "bench-ovnk", n, nodes, prefix="p")
    names = {f"bench-ovnk_{name}" for name in created}
    watcher.wait_for(names, 600)
    ours_elapsed = max(watcher.seen[f"bench-ovnk_{k}"] for k in created) - started
    latencies = sorted(watcher.seen[f"bench-ovnk_{k}"] - t for k, t in created.items())
    process.runner.wait_idle(300, settle=0.5)
    process.stop()

    # -- baseline -------------------------------------------------------------------
    ensure_namespace(kube, "bench-raw")
    raw = OvsdbClient(remote=central.nb_address, schema="OVN_Northbound", name="raw", timeout=60).start()
    api = raw.api
    with api.transaction(check_error=True) as txn:
        txn.add(api.address_set_add("raw_ns", may_exist=True))
        txn.add(api.pg_add("raw_pg", may_exist=True))
    counters = {"ip": 0}
    lock = threading.Lock()

    def program(obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        node = obj["spec"]["nodeName"]
        with lock:
            counters["ip"] += 1
            host = counters["ip"]
        ip = f"10.200.{host // 250}.{host % 250 + 3}"
        mac = "0a:58:" + ":".join(f"{int(b):02x}" for b in ip.split("."))
        network = {"default": {"ip_addresses": [f"{ip}/24"], "mac_address": mac, "gateway_ips": ["10.200.0.1"],
                               "routes": [{"dest": "10.244.0.0/16", "nextHop": "10.200.0.1"}], "role": "primary"}}
        kube.patch(PODS, meta["name"], {"metadata": {"annotations": {"k8s.ovn.org/pod-networks": json.dumps(network)}}},
                   namespace=meta["namespace"])
        name = f"{meta['namespace']}_{meta['name']}"
        with api.transaction(check_error=True) as txn:
            txn.add(api.lsp_add(node, name, may_exist=True))
            txn.add(api.lsp_set_addresses(name, [f"{mac} {ip}"]))
            txn.add(api.lsp_set_port_security(name, [f"{mac} {ip}"]))
            txn.add(api.lsp_set_options(name, **{"iface-id-ver": meta["uid"], "requested-chassis": node}))
            txn.add(api.db_set("Logical_Switch_Port", name, ("external_ids", {"namespace": meta["namespace"], "pod": "true"})))
            txn.add(api.address_set_add_addresses("raw_ns", [ip]))
            txn.add(api.pg_add_ports("raw_pg", name))

    started = time.monotonic()
    raw_created = create_pods(kube, "bench-raw", n, nodes, prefix="r", each=program)
    base_elapsed = time.monotonic() - started
    raw.stop()
    # The baseline's pods carry annotations ovnk did not write: remove them before the resync.
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda name: kube.delete(PODS, name, namespace="bench-raw", grace_period_seconds=0), raw_created))

    # -- resync ---------------------------------------------------------------------------
    extra = resync_pods - n
    process = ControllerProcess(bootstrap(inputs)).start()
    assert process.runner is not None
    ensure_namespace(kube, "bench-resync")
    create_pods(kube, "bench-resync", extra, nodes, prefix="s")
    watcher.wait_for({f"bench-resync_s{i}" for i in range(extra)}, 1800)
    process.runner.wait_idle(600, settle=1.0)
    process.stop()
    central.wait_northd()
    size = central.nb.members[0].db_file.stat().st_size
    started = time.monotonic()
    process = ControllerProcess(bootstrap(inputs)).start()
    assert process.runner is not None and process.ctx is not None
    process.runner.wait_idle(600, settle=0.5)
    resync_seconds = time.monotonic() - started - 0.5
    registry = process.ctx.registry
    writes = sum(registry.get_sample_value("ovnk_nb_txn_total", {"owner": owner, "result": "committed"}) or 0
                 for owner in ("Pod", "Node", "Namespace", "Cluster", "repair"))
    bytes_written = central.nb.members[0].db_file.stat().st_size - size
    process.stop()
    watcher_client.stop()

    ours_rate = n / ours_elapsed
    base_rate = n / base_elapsed
    p50 = statistics.median(latencies)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    print(f"\nPods programmed: {n} pods into an NB already holding {prefill_count}+ LSPs, {node_count} nodes, 8 creators")
    print(f"{'':<58}{'seconds':>9}{'pods/s':>9}{'x base':>8}")
    print(f"{'baseline: API create + annotation patch + bare ovsdbapp txn':<58}{base_elapsed:>9.2f}{base_rate:>9.1f}{1:>7.2f}x")
    print(f"{'ovnk controller: API create -> LSP committed':<58}{ours_elapsed:>9.2f}{ours_rate:>9.1f}{ours_rate / base_rate:>7.2f}x")
    print(f"ovnk per-pod create -> LSP latency: p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms")
    print(f"restart resync of {resync_pods} unchanged pods: {resync_seconds:.1f} s, NB write transactions {writes:.0f}, "
          f"bytes written {bytes_written}")
    print(json.dumps({
        "benchmark": "pods",
        "quick": quick,
        "pods": n,
        "prefilled_lsps": prefill_count,
        "nodes": node_count,
        "unit": "pods/s",
        "ours": {"pods_per_s": round(ours_rate, 1), "latency_p50_ms": round(p50 * 1000),
                 "latency_p99_ms": round(p99 * 1000), "resync_pods": resync_pods,
                 "resync_seconds": round(resync_seconds, 2), "resync_write_txns": int(writes),
                 "resync_bytes_written": bytes_written},
        "baseline": {"raw_pods_per_s": round(base_rate, 1)},
        "ratio": round(ours_rate / base_rate, 2),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
