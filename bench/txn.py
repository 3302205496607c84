"""NB transaction manager against bare ovsdbapp, same server, same run.

Each "reconcile" writes what a pod reconcile writes: one logical switch port
(addresses, port security, options, external_ids) on a node switch and its
membership in a port group, in one transaction. Three passes over N keys:

- baseline: bare ovsdbapp -- ``lsp_add(may_exist=True)`` + ``lsp_set_addresses``
  + ``lsp_set_port_security`` + ``lsp_set_options`` + ``pg_add_ports``, one
  ``api.transaction(check_error=True)`` per key (what a hand-written client does);
- ovnk: ``TxnManager`` with ``txn.ensure`` + ``txn.add_to`` (ownership keys,
  planning, metrics included);
- ovnk unchanged: the same N reconciles again -- they must write nothing; this is
  the restart/resync case.

Each pass starts from a fresh standalone OVN central. The ratio is ovnk's
reconciles per second over the baseline's.
Run: ``.venv/bin/python bench/txn.py [--quick]``; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ovnk.core.ovn.commands import Match
from ovnk.core.ovn.commands import Parent
from ovnk.core.ovn.commands import Ref
from ovnk.core.ovn.connection import OvsdbClient
from ovnk.core.ovn.ids import OwnerType
from ovnk.core.ovn.txn import TxnManager
from ovnk_lab.ovn import OvnCentral

CONTROLLER = "default-network-controller"
NODE = OwnerType("Node", "Logical_Switch", ("name", "type"))
POD = OwnerType("Pod", "Logical_Switch_Port", ("name",))
GROUP = OwnerType("Cluster", "Port_Group", ("name",))


def pod_columns(i: int) -> tuple[str, dict[str, str]]:
    ip = f"10.{128 + i // 65536}.{(i // 256) % 256}.{i % 256}"
    mac = "0a:58:" + ":".join(f"{int(b):02x}" for b in ip.split("."))
    return f"{mac} {ip}", {"iface-id-ver": f"uid-{i}", "requested-chassis": "chassis-1"}


def run_baseline(client: OvsdbClient, n: int) -> float:
    api = client.api
    with api.transaction(check_error=True) as txn:
        txn.add(api.ls_add("node-1", may_exist=True))
        txn.add(api.pg_add("bench_pg", may_exist=True))
    started = time.perf_counter()
    for i in range(n):
        address, options = pod_columns(i)
        name = f"ns_pod{i}"
        with api.transaction(check_error=True) as txn:
            txn.add(api.lsp_add("node-1", name, may_exist=True))
            txn.add(api.lsp_set_addresses(name, [address]))
            txn.add(api.lsp_set_port_security(name, [address]))
            txn.add(api.lsp_set_options(name, **options))
            txn.add(api.db_set("Logical_Switch_Port", name, ("external_ids", {"namespace": "ns", "pod": "true"})))
            txn.add(api.pg_add_ports("bench_pg", name))
    return time.perf_counter() - started


def run_ovnk(manager: TxnManager, n: int) -> tuple[float, dict[str, int]]:
    group = GROUP.ids(CONTROLLER, name="clusterPortGroup")
    with manager.transaction(reason="setup", owner="bench") as txn:
        txn.ensure("Logical_Switch", name="node-1", ids=NODE.ids(CONTROLLER, name="node-1", type="switch"))
        txn.ensure("Port_Group", name=group.hashed_name, ids=group)
    outcomes: dict[str, int] = {}
    started = time.perf_counter()
    for i in range(n):
        address, options = pod_columns(i)
        name = f"ns_pod{i}"
        with manager.transaction(reason=name, owner="Pod") as txn:
            txn.ensure("Logical_Switch_Port", name=name, ids=POD.ids(CONTROLLER, name=f"ns/pod{i}"),
                       columns={"addresses": [address], "port_security": [address], "options": options},
                       external_ids={"namespace": "ns", "pod": "true"},
                       parent=Parent(Match.of("Logical_Switch", name="node-1"), "ports"))
            txn.add_to(Match.of("Port_Group", name=group.hashed_name), "ports",
                       [Ref(Match.of("Logical_Switch_Port", name=name))])
        outcomes[str(txn.outcome)] = outcomes.get(str(txn.outcome), 0) + 1
    return time.perf_counter() - started, outcomes


def fresh(workdir: Path, tag: str) -> tuple[OvnCentral, OvsdbClient]:
    central = OvnCentral(workdir / tag).start()
    client = OvsdbClient(remote=central.nb_address, schema="OVN_Northbound", name=f"nb-{tag}", timeout=60).start()
    return central, client


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer reconciles (under a minute)")
    args = parser.parse_args()
    n = 500 if args.quick else 3000
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="ovnk-bench-txn-") as tmp:
        workdir = Path(tmp)
        central, client = fresh(workdir, "baseline")
        try:
            results["baseline"] = run_baseline(client, n)
        finally:
            client.stop()
            central.destroy()
        central, client = fresh(workdir, "ovnk")
        try:
            manager = TxnManager(client, pm=None, controller=CONTROLLER, timeout=60)
            results["ovnk"], first = run_ovnk(manager, n)
            central.wait_northd()  # northd's own NB_Global updates land before we measure
            size = central.nb.members[0].db_file.stat().st_size
            results["unchanged"], second = run_ovnk(manager, n)
            unchanged_writes = central.nb.members[0].db_file.stat().st_size - size
        finally:
            client.stop()
            central.destroy()
    rate = {k: n / v for k, v in results.items()}
    print(f"\nNB transactions: {n} pod-like reconciles (LSP + port group membership), one transaction each")
    print(f"{'pass':<48}{'seconds':>9}{'reconciles/s':>14}{'x base':>8}")
    labels = {"baseline": "bare ovsdbapp (lsp_add may_exist ... pg_add_ports)", "ovnk": "ovnk TxnManager (ensure + add_to)",
              "unchanged": "ovnk TxnManager, second pass (nothing to write)"}
    for key in ("baseline", "ovnk", "unchanged"):
        print(f"{labels[key]:<48}{results[key]:>9.2f}{rate[key]:>14.0f}{rate[key] / rate['baseline']:>7.2f}x")
    print(f"outcomes first pass: {first}; second pass: {second}; bytes written by the second pass: {unchanged_writes}")
    print(json.dumps({
        "benchmark": "txn",
        "quick": args.quick,
        "reconciles": n,
        "unit": "reconciles/s",
        "ours": {"reconciles_per_s": round(rate["ovnk"]), "unchanged_reconciles_per_s": round(rate["unchanged"]),
                 "unchanged_bytes_written": unchanged_writes},
        "baseline": {"bare_ovsdbapp_reconciles_per_s": round(rate["baseline"])},
        "ratio": round(rate["ovnk"] / rate["baseline"], 2),
        "ratio_unchanged": round(rate["unchanged"] / rate["baseline"], 2),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
