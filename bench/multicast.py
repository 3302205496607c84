"""Multicast: namespaces enabled at once -> their ACLs committed, against a baseline; restart resync.

Real API server and NB with ovn-northd, no kubelets, no pods (a namespace's
multicast rows do not depend on its pods: core keeps their port-group
membership). With N namespaces in place (core's namespace port groups and
address sets written), all N are annotated ``k8s.ovn.org/multicast-enabled=true``
at once; we time from the first patch until every ``MulticastNS`` ACL (two per
namespace) is committed, seen by a separate NB client.
  Baseline: bare ovsdbapp adding the same two ACLs to N port groups of its own,
  one transaction per namespace, from a precomputed list, the controller stopped.
Resync: the controller restarts with nothing changed; we time until it is idle
and count its committed NB transactions and the bytes the NB file grew (both
must be 0).

``--quick``: N=200; full: N=1000. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ovnk.core.bootstrap import bootstrap
from ovnk.core.config import ConfigInputs
from ovnk.core.controller import ControllerProcess
from ovnk.core.kube.client import KubeClient
from ovnk.core.kube.resources import NAMESPACES
from ovnk.core.ovn.connection import OvsdbClient
from ovnk.plugins.multicast import nb
from ovnk_lab.kube import KubeControlPlane
from ovnk_lab.ovn import OvnCentral

ANNOTATION = "k8s.ovn.org/multicast-enabled"


class AclCounter:
    """Counts ``MulticastNS`` ACLs as they appear in NB (its own IDL), and every row change."""

    def __init__(self, client: OvsdbClient) -> None:
        self.count = 0
        self.changes = 0
        self.last = 0.0
        self._lock = threading.Lock()
        client.add_row_listener(self._on_row)

    def _on_row(self, event: str, row: Any, _updates: Any) -> None:
        with self._lock:
            self.changes += 1
            if event == "create" and row._table.name == "ACL" and \
                    row.external_ids.get("k8s.ovn.org/owner-type") in (nb.NAMESPACE_ACL.name, "bench"):
                self.count += 1
                self.last = time.monotonic()

    def wait_for(self, count: int, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if self.count >= count:
                    return self.last
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.count}/{count} ACLs after {timeout}s")
            time.sleep(0.01)


def committed_transactions(process: ControllerProcess) -> float:
    """Every NB transaction the controller committed so far (all owners)."""
    assert process.ctx is not None
    return sum(sample.value for metric in process.ctx.registry.collect() if metric.name == "ovnk_nb_txn"
               for sample in metric.samples
               if sample.name == "ovnk_nb_txn_total" and sample.labels.get("result") == "committed")


def run(work: Path, *, namespaces: int) -> dict[str, Any]:
    plane = KubeControlPlane(work / "kube").start()
    central = OvnCentral(work / "ovn").start()
    try:
        kube = KubeClient(kubeconfig=str(plane.kubeconfig), qps=2000)
        inputs = ConfigInputs(env={}, flags={"kubeconfig": str(plane.kubeconfig), "nb_address": central.nb_address,
                                             "sb_address": central.sb_address},
                              assignments=["controller.leader-election=false", "controller.metrics-bind-address=",
                                           "controller.workers=8", "logging.level=warning",
                                           "plugins.enabled=multicast"])
        names = [f"mc-{i}" for i in range(namespaces)]
        process = ControllerProcess(bootstrap(inputs)).start()
        assert process.runner is not None and process.ctx is not None
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda name: kube.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace",
                                                                "metadata": {"name": name}}), names))
        process.runner.wait_idle(600, settle=1.0)
        counter_client = OvsdbClient(remote=central.nb_address, schema="OVN_Northbound", name="count",
                                     timeout=60).start()
        counter = AclCounter(counter_client)
        acls = namespaces * 2

        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda name: kube.patch(NAMESPACES, name, {"metadata": {"annotations": {ANNOTATION: "true"}}}),
                          names))
        ours = counter.wait_for(acls, 900) - started
        process.runner.wait_idle(600, settle=1.0)
        # The rows the controller wrote, as the baseline's precomputed list.
        plan = [(row.external_ids["k8s.ovn.org/name"], str(row["direction"]), int(row["priority"]), str(row["match"]))
                for row in process.ctx.nb.owned(nb.NAMESPACE_ACL, columns=("direction", "priority", "match"))]
        assert len(plan) == acls, f"{len(plan)} namespace ACLs, {acls} expected"

        # What the first pass committed: the same count read the same way, so a resync's 0 means nothing.
        first_pass = committed_transactions(process)

        # -- resync: a restart with nothing changed ------------------------------------------
        process.stop()
        size = central.nb.members[0].db_file.stat().st_size
        changes = counter.changes
        started = time.monotonic()
        process = ControllerProcess(bootstrap(inputs)).start()
        assert process.runner is not None
        process.runner.wait_idle(600, settle=0.5)
        resync_seconds = time.monotonic() - started - 0.5
        writes = committed_transactions(process)
        bytes_written = central.nb.members[0].db_file.stat().st_size - size
        row_changes = counter.changes - changes
        process.stop()

        # -- baseline: bare ovsdbapp, the same ACLs on port groups of its own ----------------
        raw = OvsdbClient(remote=central.nb_address, schema="OVN_Northbound", name="raw", timeout=120).start()
        api = raw.api
        with api.transaction(check_error=True) as txn:
            for name in names:
                txn.add(api.pg_add(f"bench_{name.replace('-', '_')}", may_exist=True))
        counter.count = 0
        by_namespace: dict[str, list[tuple[str, int, str]]] = {}
        for name, direction, priority, match in plan:
            by_namespace.setdefault(name, []).append((direction, priority, match))
        started = time.monotonic()
        for name, rows in by_namespace.items():
            with api.transaction(check_error=True) as txn:
                for direction, priority, match in rows:
                    txn.add(api.pg_acl_add(f"bench_{name.replace('-', '_')}", direction, priority, match, "allow",
                                           **{"k8s.ovn.org/owner-type": "bench", "k8s.ovn.org/name": name}))
        base = counter.wait_for(acls, 300) - started
        raw.stop()
        counter_client.stop()
        return {"namespaces": namespaces, "acls": acls,
                "ours_seconds": round(ours, 2), "baseline_seconds": round(base, 2),
                "ours_acls_per_s": round(acls / ours, 1), "baseline_acls_per_s": round(acls / base, 1),
                "ratio": round(base / ours, 2), "resync_seconds": round(resync_seconds, 2),
                "first_pass_write_txns": int(first_pass), "resync_write_txns": int(writes), "resync_bytes_written": bytes_written,
                "resync_row_changes": row_changes}
    finally:
        central.destroy()
        plane.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--namespaces", type=int, help="N (overrides --quick's 200 and the full run's 1000)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ovnk-bench-mc-") as tmp:
        result = run(Path(tmp), namespaces=args.namespaces or (200 if args.quick else 1000))
    print(f"\nMulticast enabled in {result['namespaces']} namespaces at once ({result['acls']} ACLs)")
    print(f"{'':<52}{'seconds':>9}{'ACLs/s':>9}{'x base':>8}")
    print(f"{'baseline: bare ovsdbapp, precomputed rows':<52}{result['baseline_seconds']:>9.2f}"
          f"{result['baseline_acls_per_s']:>9.1f}{1:>7.2f}x")
    print(f"{'ovnk: annotations patched -> every ACL committed':<52}{result['ours_seconds']:>9.2f}"
          f"{result['ours_acls_per_s']:>9.1f}{result['ratio']:>7.2f}x")
    print(f"restart resync of {result['namespaces']} enabled namespaces: {result['resync_seconds']:.1f} s, "
          f"NB write transactions {result['resync_write_txns']} (first pass: {result['first_pass_write_txns']}), bytes written {result['resync_bytes_written']}, "
          f"row changes seen {result['resync_row_changes']}")
    print(json.dumps({"benchmark": "multicast", "quick": args.quick, **result}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
