"""EndpointSlice change -> Load_Balancer row updated in NB, with many services in place, against a raw baseline.

Setup: a real control plane and a real OVN central, two nodes created through the
API with the annotations a node agent would publish, N selector-less Services
(one in five a NodePort, so its two template load balancers exist too) each with an
EndpointSlice of three endpoints. The controller programs them all (timed).

- ovnk: K times, one after the other, an EndpointSlice is replaced through the
  API (one endpoint gets a new IP); we time from just before the PUT until a
  separate NB client sees the service's ``Service_<ns>/<name>_TCP_cluster`` row
  carry the new backend.
- baseline (same API server, same NB, same rows, controller stopped): the same
  K slice replacements, each followed by one bare-ovsdbapp transaction setting
  the row's vips (``db_set``), timed the same way. The NB-only part (the
  ``db_set`` transaction until the watcher sees it) is reported separately.

Run: ``.venv/bin/python bench/services.py [--quick]`` (quick: N=200, K=50, under a minute;
full: N=1000, K=200). The last line of output is one JSON object.
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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ovnk.core.bootstrap import bootstrap
from ovnk.core.config import ConfigInputs
from ovnk.core.controller import ControllerProcess
from ovnk.core.kube.client import KubeClient
from ovnk.core.kube.resources import ENDPOINTSLICES
from ovnk.core.kube.resources import NAMESPACES
from ovnk.core.kube.resources import NODES
from ovnk.core.kube.resources import SERVICES
from ovnk.core.ovn.connection import OvsdbClient
from ovnk_lab.kube import KubeControlPlane
from ovnk_lab.ovn import OvnCentral

NAMESPACE = "bench"


def node_body(name: str, index: int) -> dict[str, Any]:
    ip = f"172.30.0.{11 + index}"
    gateway = {"default": {"mode": "shared", "bridge-id": "breth0", "interface-id": f"breth0_{name}",
                           "mac-address": f"0a:00:00:00:00:{index + 1:02x}", "ip-addresses": [f"{ip}/24"],
                           "next-hops": ["172.30.0.254"], "node-port-enable": "true", "vlan-id": "0"}}
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "annotations": {
        "k8s.ovn.org/node-chassis-id": str(uuid.uuid4()),
        "k8s.ovn.org/l3-gateway-config": json.dumps(gateway),
        "k8s.ovn.org/node-mgmt-port-mac-addresses": json.dumps({"default": f"0a:00:00:00:01:{index + 1:02x}"}),
    }}}


def service_body(i: int) -> dict[str, Any]:
    spec: dict[str, Any] = {"type": "NodePort" if i % 5 == 0 else "ClusterIP",
                            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"s{i}", "namespace": NAMESPACE},
            "spec": spec}


def slice_body(api_version: str, i: int, ips: list[str]) -> dict[str, Any]:
    beta = api_version.endswith("v1beta1")
    endpoints = []
    for n, ip in enumerate(ips):
        node = f"bench-{n % 2}"
        entry: dict[str, Any] = {"addresses": [ip], "conditions": {"ready": True}}
        entry.update({"topology": {"kubernetes.io/hostname": node}} if beta else {"nodeName": node})
        endpoints.append(entry)
    return {"apiVersion": api_version, "kind": "EndpointSlice",
            "metadata": {"name": f"s{i}-1", "namespace": NAMESPACE,
                         "labels": {"kubernetes.io/service-name": f"s{i}"}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": endpoints}


def initial_ips(i: int) -> list[str]:
    return [f"10.{100 + i // 250}.{i % 250}.{n + 1}" for n in range(3)]


class LbWatcher:
    """Records when a Load_Balancer row first carries an expected backend (through its own IDL)."""

    def __init__(self, client: OvsdbClient) -> None:
        self._cond = threading.Condition()
        self._want: tuple[str, str] | None = None
        self._seen: float | None = None
        self.owned = 0
        client.add_row_listener(self._on_row)

    def _on_row(self, event: str, row: Any, _updates: Any) -> None:
        if row._table.name != "Load_Balancer" or event == "delete":
            return
        with self._cond:
            want = self._want
            if want is not None and row.name == want[0] and any(want[1] in v for v in row.vips.values()):
                self._seen = time.monotonic()
                self._want = None
                self._cond.notify_all()

    def expect(self, name: str, backend: str) -> None:
        with self._cond:
            self._want, self._seen = (name, backend), None

    def wait(self, timeout: float = 30.0) -> float:
        with self._cond:
            if not self._cond.wait_for(lambda: self._seen is not None, timeout):
                raise TimeoutError(f"no NB update within {timeout}s for {self._want}")
            assert self._seen is not None
            return self._seen


def count_service_lbs(client: OvsdbClient) -> int:
    with client.locked() as idl:
        return sum(1 for row in idl.tables["Load_Balancer"].rows.values()
                   if row.external_ids.get("k8s.ovn.org/owner-type") == "Service"
                   and row.external_ids.get("k8s.ovn.org/owner", "").startswith(f"{NAMESPACE}/"))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def measure(kube: KubeClient, watcher: LbWatcher, *, api_version: str, changes: list[int], round_no: int,
            after_put: Callable[[int, list[str]], None] | None = None) -> list[tuple[float, float]]:
    """(started, seen) per change: just before the slice replacement, and when the LB row had the new backend."""
    timings = []
    for n, i in enumerate(changes):
        ips = initial_ips(i)
        ips[0] = f"10.250.{(round_no * 100 + n // 250) % 250}.{n % 250 + 1}"
        current = kube.get(ENDPOINTSLICES, f"s{i}-1", namespace=NAMESPACE)
        assert current is not None
        body = slice_body(api_version, i, ips)
        body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        watcher.expect(f"Service_{NAMESPACE}/s{i}_TCP_cluster", f"{ips[0]}:8080")
        started = time.monotonic()
        kube.replace(ENDPOINTSLICES, body, namespace=NAMESPACE)
        if after_put is not None:
            after_put(i, ips)
        timings.append((started, watcher.wait()))
    return timings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 services, 50 changes (under a minute)")
    parser.add_argument("--services", type=int)
    parser.add_argument("--changes", type=int)
    args = parser.parse_args(argv)
    services = args.services or (200 if args.quick else 1000)
    changes = args.changes or (50 if args.quick else 200)
    with tempfile.TemporaryDirectory(prefix="ovnk-bench-svc-") as tmp:
        work = Path(tmp)
        # Only the service-account controller: nothing else writes EndpointSlices.
        plane = KubeControlPlane(work / "kube", scheduler=False, controllers="serviceaccount")
        plane.start()
        central = OvnCentral(work / "ovn").start()
        try:
            return run(plane, central, services=services, changes=changes, quick=args.quick)
        finally:
            central.destroy()
            plane.stop()


def run(plane: KubeControlPlane, central: OvnCentral, *, services: int, changes: int, quick: bool) -> int:
    kube = KubeClient(kubeconfig=str(plane.kubeconfig), qps=5000)
    api_version = kube.resolve(ENDPOINTSLICES).api_version
    for index in range(2):
        kube.create(NODES, node_body(f"bench-{index}", index))
    kube.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})

    def create(i: int) -> None:
        kube.create(SERVICES, service_body(i), namespace=NAMESPACE)
        kube.create(ENDPOINTSLICES, slice_body(api_version, i, initial_ips(i)), namespace=NAMESPACE)

    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(create, range(services)))
    created_s = time.monotonic() - started
    # Cluster LBs + each NodePort's two template LBs (switch and router side; with
    # [gateway] nodeport-templates=false, one per node: two here as well).
    expected_lbs = services + 2 * len(range(0, services, 5))

    watch_client = OvsdbClient(remote=central.nb_address, schema="OVN_Northbound", name="watch", timeout=60).start()
    watcher = LbWatcher(watch_client)
    inputs = ConfigInputs(env={}, flags={"kubeconfig": str(plane.kubeconfig), "nb_address": central.nb_address,
                                         "sb_address": central.sb_address},
                          assignments=["controller.leader-election=false", "controller.metrics-bind-address=",
                                       "controller.workers=8", "logging.level=warning"])
    started = time.monotonic()
    process = ControllerProcess(bootstrap(inputs)).start()
    assert process.runner is not None and process.ctx is not None
    deadline = time.monotonic() + 600
    while count_service_lbs(watch_client) < expected_lbs:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{count_service_lbs(watch_client)}/{expected_lbs} load balancers programmed")
        time.sleep(0.02)
    initial_s = time.monotonic() - started
    process.runner.wait_idle(300, settle=0.5)

    registry = process.ctx.registry

    def sync_totals() -> tuple[float, float]:
        return (registry.get_sample_value("ovnk_services_sync_duration_seconds_count") or 0.0,
                registry.get_sample_value("ovnk_services_sync_duration_seconds_sum") or 0.0)

    initial_count, initial_sum = sync_totals()
    step = max(1, services // changes)
    picks = [(n * step) % services for n in range(changes)]
    ours = [seen - started for started, seen in
            measure(kube, watcher, api_version=api_version, changes=picks, round_no=1)]
    process.runner.wait_idle(60, settle=0.3)
    after_count, after_sum = sync_totals()
    sync_count, sync_sum = after_count - initial_count, after_sum - initial_sum
    process.stop()

    raw = OvsdbClient(remote=central.nb_address, schema="OVN_Northbound", name="raw", timeout=60).start()
    api = raw.api
    cluster_ips = {i: kube.get(SERVICES, f"s{i}", namespace=NAMESPACE)["spec"]["clusterIP"]  # type: ignore[index]
                   for i in set(picks)}
    sent_at: list[float] = []

    def program(i: int, ips: list[str]) -> None:
        backends = ",".join(f"{ip}:8080" for ip in sorted(ips, key=lambda a: tuple(int(x) for x in a.split("."))))
        sent_at.append(time.monotonic())
        with api.transaction(check_error=True) as txn:
            txn.add(api.db_set("Load_Balancer", f"Service_{NAMESPACE}/s{i}_TCP_cluster",
                               ("vips", {f"{cluster_ips[i]}:80": backends})))

    timings = measure(kube, watcher, api_version=api_version, changes=picks, round_no=2, after_put=program)
    baseline = [seen - started for started, seen in timings]
    nb_only = [seen - sent for (_, seen), sent in zip(timings, sent_at, strict=True)]
    raw.stop()
    watch_client.stop()

    figures = {
        "ours": {"p50_ms": percentile(ours, 0.5) * 1e3, "p99_ms": percentile(ours, 0.99) * 1e3,
                 "mean_ms": statistics.fmean(ours) * 1e3},
        "baseline": {"p50_ms": percentile(baseline, 0.5) * 1e3, "p99_ms": percentile(baseline, 0.99) * 1e3,
                     "mean_ms": statistics.fmean(baseline) * 1e3},
        "nb_only": {"p50_ms": percentile(nb_only, 0.5) * 1e3, "p99_ms": percentile(nb_only, 0.99) * 1e3,
                    "mean_ms": statistics.fmean(nb_only) * 1e3},
    }
    print(f"\nEndpointSlice change -> Load_Balancer updated in NB; {services} services "
          f"({expected_lbs} load balancers) in place, {changes} sequential changes each")
    print(f"{'path':<62}{'p50 ms':>9}{'p99 ms':>9}{'mean ms':>9}")
    labels = {"ours": "ovnk: slice PUT -> watch -> reconcile -> one NB txn",
              "baseline": "baseline: slice PUT, then bare ovsdbapp db_set (one txn)",
              "nb_only": "  of which the db_set txn -> row seen by the watcher"}
    for key, label in labels.items():
        f = figures[key]
        print(f"{label:<62}{f['p50_ms']:>9.1f}{f['p99_ms']:>9.1f}{f['mean_ms']:>9.1f}")
    print(f"setup: {services} services + slices created in {created_s:.1f}s; the controller programmed all "
          f"{expected_lbs} LBs in {initial_s:.1f}s from its start ({initial_count:.0f} reconciles)")
    print(f"mean reconcile during the changes: {(sync_sum / sync_count * 1e3) if sync_count else 0.0:.2f} ms "
          f"over {sync_count:.0f} reconciles")
    result = {
        "benchmark": "services",
        "quick": quick,
        "services": services,
        "load_balancers": expected_lbs,
        "changes": changes,
        "unit": "ms",
        "ours": {k: round(v, 2) for k, v in figures["ours"].items()},
        "baseline": {k: round(v, 2) for k, v in figures["baseline"].items()},
        "baseline_nb_only": {k: round(v, 2) for k, v in figures["nb_only"].items()},
        "ratio": round(figures["ours"]["p50_ms"] / figures["baseline"]["p50_ms"], 2),
        "ratio_p99": round(figures["ours"]["p99_ms"] / figures["baseline"]["p99_ms"], 2),
        "initial_program_s": round(initial_s, 2),
        "mean_reconcile_ms": round(sync_sum / sync_count * 1e3, 3) if sync_count else None,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
