"""Parts of ``bench/scale.py``: the shapes, the controller process it measures, NB/SB watchers, northd's figures.

The pure helpers (:class:`Shape`, :func:`percentile`, :func:`metric_sum`,
:func:`parse_proc_usage`, :func:`parse_stopwatch`, :func:`parse_engine_stats`)
have unit tests in ``tests/unit/test_bench_scale.py``.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from ovnk.core.ovn.connection import OvsdbClient
from ovnk.core.ovn.ids import OBJECT_NAME_KEY
from ovnk.core.ovn.ids import OWNER_TYPE_KEY
from ovnk_lab.ovn import OvnCentral
from ovnk_lab.procs import Daemon
from ovnk_lab.procs import free_port

#: ovn-kubernetes' kind CI: average ovnkube RSS (issue 22; docs/performance.md "Scale").
OVNKUBE_RSS_MB = 413
FRACTIONS = (0.25, 0.5, 1.0)
#: ``--quick`` grows in one smaller step: 1/4 (the baseline) then the full (a tenth) shape.
QUICK_FRACTIONS = (0.25, 1.0)


@dataclass(frozen=True)
class Shape:
    nodes: int
    pods: int
    services: int
    policies: int
    namespaces: int

    def scaled(self, fraction: float) -> Shape:
        """This shape times ``fraction``; nodes and namespaces round up so that every object has a home."""
        return Shape(nodes=max(1, math.ceil(self.nodes * fraction)), pods=round(self.pods * fraction),
                     services=round(self.services * fraction), policies=round(self.policies * fraction),
                     namespaces=max(1, math.ceil(self.namespaces * fraction)))

    def per_namespace(self, kind: str) -> int:
        """How many pods / services / policies share one namespace (object ``i`` lives in ``i // this``)."""
        return max(1, getattr(self, kind) // self.namespaces)


FULL = Shape(nodes=100, pods=10_000, services=1_000, policies=500, namespaces=100)


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of ``values`` (``fraction`` in 0..1)."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1))
    return ordered[index]


def metric_sum(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` in Prometheus text ``text`` whose labels include ``labels``."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def parse_proc_usage(status: str, stat: str, clock_ticks: int) -> tuple[int, float]:
    """(RSS bytes, user+system CPU seconds) from ``/proc/<pid>/status`` and ``/proc/<pid>/stat`` texts."""
    rss = next(int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmRSS:"))
    # The command name (field 2) is in parentheses and may hold spaces: count fields after the last ')'.
    fields = stat[stat.rindex(")") + 2:].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return rss, (utime + stime) / clock_ticks


def proc_usage(pid: int) -> tuple[int, float]:
    base = Path(f"/proc/{pid}")
    return parse_proc_usage((base / "status").read_text(), (base / "stat").read_text(),
                            os.sysconf("SC_CLK_TCK"))


def parse_stopwatch(text: str) -> dict[str, dict[str, float]]:
    """``stopwatch/show`` output -> {name: {"samples", "max_ms", "min_ms", "p95_ms"}}."""
    result: dict[str, dict[str, float]] = {}
    current: dict[str, float] | None = None
    keys = {"Total samples": "samples", "Maximum": "max_ms", "Minimum": "min_ms", "95th percentile": "p95_ms"}
    for line in text.splitlines():
        if line.startswith("Statistics for '"):
            current = result.setdefault(line.split("'")[1], {})
        elif current is not None and ":" in line:
            key, value = (part.strip() for part in line.split(":", 1))
            if key in keys:
                current[keys[key]] = float(value.split()[0])
    return result


def parse_engine_stats(text: str) -> dict[str, dict[str, int]]:
    """``inc-engine/show-stats`` output -> {node: {"recompute", "compute", "cancel"}}."""
    result: dict[str, dict[str, int]] = {}
    current: dict[str, int] | None = None
    for line in text.splitlines():
        if line.startswith("Node: "):
            current = result.setdefault(line[len("Node: "):].strip(), {})
        elif current is not None and line.startswith("- ") and ":" in line:
            key, value = line[2:].split(":", 1)
            current[key.strip()] = int(value)
    return result


# -- the controller process -------------------------------------------------------------


class ControllerProc:
    """One ``python -m ovnk controller`` process with its own config file and /metrics port."""

    def __init__(self, *, workdir: Path, name: str, kubeconfig: Path, nb: str, sb: str, leader_election: bool,
                 lease: tuple[float, float, float]) -> None:
        self.name = name
        self.port = free_port()
        self.config = workdir / "config" / f"{name}.conf"
        self.config.parent.mkdir(parents=True, exist_ok=True)
        lines = ["[kubernetes]", f"kubeconfig = {kubeconfig}", "[ovnnorth]", f"address = {nb}",
                 "[ovnsouth]", f"address = {sb}", "[logging]", "level = warning",
                 "[controller]", f"identity = bench-{name}", f"metrics-bind-address = 127.0.0.1:{self.port}",
                 f"leader-election = {'true' if leader_election else 'false'}",
                 # The OVN health probe writes NB_Global every interval by design; off here so the
                 # NB writes counted during a resync are the reconcile's own.
                 "e2e-timestamp-interval = 0"]
        if leader_election:
            lines += [f"lease-duration = {lease[0]:g}", f"renew-deadline = {lease[1]:g}", f"retry-period = {lease[2]:g}"]
        self.config.write_text("\n".join(lines) + "\n")
        env = {**os.environ, "OVNK_CONFIG": ""}
        self.daemon = Daemon(f"ovnk-controller-{name}", [sys.executable, "-m", "ovnk", "--config", str(self.config),
                                                          "controller"],
                             log_path=workdir / "log" / f"controller-{name}.log", env=env)

    def start(self) -> ControllerProc:
        self.daemon.start()
        return self

    @property
    def pid(self) -> int:
        assert self.daemon.pid is not None
        return self.daemon.pid

    def _get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, ""
        except OSError:
            self.daemon.check_alive()
            return 0, ""

    def metrics(self) -> str:
        return self._get("/metrics")[1]

    def ready(self) -> bool:
        return self._get("/readyz")[0] == 200

    def is_leader(self) -> bool:
        text = self.metrics()
        return bool(text) and metric_sum(text, "ovnk_controller_leader") == 1.0

    def committed_txns(self) -> float:
        return metric_sum(self.metrics(), "ovnk_nb_txn_total", result="committed")

    def usage(self) -> tuple[int, float]:
        return proc_usage(self.pid)

    def wait_leader(self, *, timeout: float) -> tuple[float, float]:
        """Monotonic times at which this controller's leader gauge was first seen at 1 and its first
        reconcile (of any key) was counted."""
        deadline = time.monotonic() + timeout
        leading: float | None = None
        while True:
            text = self.metrics()
            now = time.monotonic()
            if text and metric_sum(text, "ovnk_controller_leader") == 1.0:
                leading = leading or now
                if metric_sum(text, "ovnk_controller_reconcile_total") >= 1:
                    return leading, now
            if now > deadline:
                raise TimeoutError(f"{self.name} did not take the lease and reconcile within {timeout:.0f}s")
            time.sleep(0.05)

    def wait_idle(self, *, min_reconciles: int, timeout: float, settle: float = 1.0) -> float:
        """Wait until it leads, its queues are empty, it reconciled at least ``min_reconciles`` keys and no
        reconcile or NB transaction happened for ``settle`` seconds; returns when that quiet began."""
        deadline = time.monotonic() + timeout
        last: tuple[float, float] | None = None
        quiet_since = 0.0
        while time.monotonic() < deadline:
            now = time.monotonic()
            text = self.metrics()
            if text and metric_sum(text, "ovnk_controller_leader") == 1.0:
                counts = (metric_sum(text, "ovnk_controller_reconcile_total"), metric_sum(text, "ovnk_nb_txn_total"))
                busy = metric_sum(text, "ovnk_controller_queue_depth") > 0 or counts[0] < min_reconciles
                if busy or counts != last:
                    last, quiet_since = counts, now
                elif now - quiet_since >= settle:
                    return quiet_since
            time.sleep(0.1)
        raise TimeoutError(f"controller {self.name} not idle within {timeout:.0f}s (log {self.daemon.log_path})")

    def kill(self) -> None:
        """SIGKILL by pid (the failover test): no lease release, no goodbye."""
        self.daemon.stop(timeout=5.0, sig=signal.SIGKILL)

    def stop(self) -> None:
        self.daemon.stop(timeout=30.0)


# -- what NB and SB hold ----------------------------------------------------------------


@dataclass(frozen=True)
class PodSeen:
    lsp: float
    address_set: float
    port_binding: float


class NbWatcher:
    """Its own NB and SB IDL copies: when each LSP, load balancer, policy port group, namespace address-set
    member and Port_Binding first appeared (monotonic seconds)."""

    def __init__(self, central: OvnCentral) -> None:
        self.central = central
        self.cond = threading.Condition()
        self.lsp: dict[str, float] = {}
        self.lsp_ip: dict[str, str] = {}
        self.ns_member: dict[str, float] = {}
        self.lb: dict[str, float] = {}
        self.pg: dict[str, float] = {}
        self.pb: dict[str, float] = {}
        self.nb = OvsdbClient(remote=central.nb_address, schema="OVN_Northbound", name="scale-nb", timeout=120,
                              tables=("Logical_Switch_Port", "Address_Set", "Load_Balancer", "Port_Group", "ACL"),
                              columns={"Logical_Switch_Port": ["name", "addresses"],
                                       "Address_Set": ["addresses", "external_ids"], "Load_Balancer": ["name"],
                                       "Port_Group": ["external_ids"], "ACL": ["priority"]})
        self.nb.add_row_listener(self._on_nb)
        self.nb.start()
        self.sb = OvsdbClient(remote=central.sb_address, schema="OVN_Southbound", name="scale-sb", timeout=120,
                              tables=("Port_Binding",), columns={"Port_Binding": ["logical_port"]})
        self.sb.add_row_listener(self._on_sb)
        self.sb.start()

    def _on_nb(self, event: str, row: Any, _updates: Any) -> None:
        if event == "delete":
            return
        now = time.monotonic()
        table = row._table.name
        with self.cond:
            if table == "Logical_Switch_Port":
                if row.name not in self.lsp and row.addresses and len(row.addresses[0].split()) > 1:
                    self.lsp[row.name] = now
                    self.lsp_ip[row.name] = row.addresses[0].split()[1]
            elif table == "Address_Set":
                if row.external_ids.get(OWNER_TYPE_KEY) == "Namespace":
                    for address in row.addresses:
                        self.ns_member.setdefault(address, now)
            elif table == "Load_Balancer":
                self.lb.setdefault(row.name, now)
            elif table == "Port_Group":
                if row.external_ids.get(OWNER_TYPE_KEY) == "NetworkPolicy":
                    self.pg.setdefault(row.external_ids.get(OBJECT_NAME_KEY, ""), now)
            else:
                return
            self.cond.notify_all()

    def _on_sb(self, event: str, row: Any, _updates: Any) -> None:
        if event == "create":
            with self.cond:
                self.pb.setdefault(row.logical_port, time.monotonic())
                self.cond.notify_all()

    def wait_rows(self, *, lsps: set[str], lbs: set[str], pgs: set[str], timeout: float,
                  check: Callable[[], None] = lambda: None) -> float:
        """Wait until every named row exists; returns when the last of them appeared. ``check`` runs every
        second meanwhile (it raises when a controller died, instead of waiting out ``timeout``)."""
        def missing() -> Mapping[str, int]:
            return {"LSPs": len(lsps - self.lsp.keys()), "load balancers": len(lbs - self.lb.keys()),
                    "policy port groups": len(pgs - self.pg.keys())}

        deadline = time.monotonic() + timeout
        with self.cond:
            while not self.cond.wait_for(lambda: not any(missing().values()), 1.0):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"rows still missing after {timeout:.0f}s: {dict(missing())}")
                check()
            times = [self.lsp[n] for n in lsps] + [self.lb[n] for n in lbs] + [self.pg[n] for n in pgs]
        return max(times)

    def wait_pod(self, lsp: str, *, timeout: float, check: Callable[[], None] = lambda: None) -> PodSeen:
        def done() -> bool:
            ip = self.lsp_ip.get(lsp)
            return ip is not None and ip in self.ns_member and lsp in self.pb

        deadline = time.monotonic() + timeout
        with self.cond:
            while not self.cond.wait_for(done, 1.0) and time.monotonic() < deadline:
                check()
            if not done():
                raise TimeoutError(f"pod {lsp}: LSP {lsp in self.lsp}, address set "
                                   f"{self.lsp_ip.get(lsp) in self.ns_member}, Port_Binding {lsp in self.pb} "
                                   f"after {timeout:.0f}s")
            return PodSeen(lsp=self.lsp[lsp], address_set=self.ns_member[self.lsp_ip[lsp]], port_binding=self.pb[lsp])

    def sizes(self) -> dict[str, Any]:
        """NB and SB file sizes after compaction, and row counts."""
        central = self.central
        appctl = central.install.bin("ovs-appctl")
        result: dict[str, Any] = {}
        for db in (central.nb, central.sb):
            member = db.members[0]
            subprocess.run([appctl, "-t", str(member.ctl), "ovsdb-server/compact"], env=central.env, check=True,
                           capture_output=True, timeout=300)
            result[f"{db.kind}_mb"] = round(member.db_file.stat().st_size / 2**20, 2)
        with self.nb.locked() as idl:
            result["nb_lsps"] = len(idl.tables["Logical_Switch_Port"].rows)
            result["nb_acls"] = len(idl.tables["ACL"].rows)
            result["nb_lbs"] = len(idl.tables["Load_Balancer"].rows)
            result["nb_address_sets"] = len(idl.tables["Address_Set"].rows)
        flows = central.sbctl("--no-headings", "--format=csv", "--columns=_uuid", "list", "Logical_Flow")
        result["sb_lflows"] = len(flows.splitlines())
        return result

    def stop(self) -> None:
        self.nb.stop()
        self.sb.stop()


# -- ovn-northd ---------------------------------------------------------------------------


def _northd(central: OvnCentral, *command: str) -> str:
    ctl = central.workdir / "run" / "ovn-northd.ctl"
    return subprocess.run([central.install.bin("ovn-appctl"), "-t", str(ctl), *command], env=central.env,
                          check=True, capture_output=True, text=True, timeout=60).stdout


def reset_northd_stats(central: OvnCentral) -> float:
    """Zero northd's stopwatches and engine counters; returns its CPU seconds so far."""
    central.wait_northd()
    _northd(central, "stopwatch/reset")
    _northd(central, "inc-engine/clear-stats")
    assert central.northd is not None and central.northd.pid is not None
    return proc_usage(central.northd.pid)[1]


def northd_stats(central: OvnCentral, *, cpu_before: float, changes: int) -> dict[str, Any]:
    """What northd spent on ``changes`` changes since :func:`reset_northd_stats`: its CPU time per change
    (``/proc``; the same on every OVN version), its longest main-loop iteration (stopwatch
    ``ovn-northd-loop``) and how many times it recomputed the logical flows in full instead of
    incrementally (``inc-engine/show-stats``, node ``lflow``)."""
    assert central.northd is not None and central.northd.pid is not None
    cpu = proc_usage(central.northd.pid)[1] - cpu_before
    loop = parse_stopwatch(_northd(central, "stopwatch/show")).get("ovn-northd-loop", {})
    lflow = parse_engine_stats(_northd(central, "inc-engine/show-stats")).get("lflow", {})
    return {"northd_cpu_ms_per_change": round(1000 * cpu / changes, 1), "northd_loop_max_ms": loop.get("max_ms", 0.0),
            "northd_recomputes": lflow.get("recompute", 0), "northd_incremental": lflow.get("compute", 0)}
