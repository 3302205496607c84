"""NB write outage when the RAFT leader dies: ovnk's transaction manager beside bare ovsdbapp.

Usage: ``.venv/bin/python bench/raft_failover.py [--quick]``

A 3-member clustered OVN Northbound database (the lab's ``OvnCentral``). Two
writers run at the same time against it, each on its own connection with the
comma-separated list of all three members and leader-only writes:

* ovnk: ``OvsdbClient`` + ``TxnManager``, one transaction per "reconcile"
  (a logical switch port with ownership external_ids), as the controller writes;
* baseline: bare ovsdbapp (``OvsdbIdl`` + ``Connection`` + the NB API),
  ``lsp_add(may_exist=True)`` in ``api.transaction(check_error=True)``; a
  failed transaction is retried at once, as a hand-written client would.

Each writer commits every 20 ms. Each round SIGKILLs the current leader, and
measures for each writer the **write outage**: from the kill to the end of its
first transaction that started after the kill and committed. The RAFT election
itself (kill -> a member reports ``Role: leader``) is reported as the floor.
Then the killed member is restarted and rejoins before the next round.

The last line of the output is one JSON object with the figures, the baseline
and the ratio (ovnk's outage p50 over the baseline's).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ovsdbapp.backend.ovs_idl import connection as ovsdbapp_connection
from ovsdbapp.backend.ovs_idl import idlutils
from ovsdbapp.schema.ovn_northbound import impl_idl as nb_impl

from ovnk.core.ovn.commands import Match
from ovnk.core.ovn.commands import Parent
from ovnk.core.ovn.connection import OvsdbClient
from ovnk.core.ovn.ids import OwnerType
from ovnk.core.ovn.txn import TxnManager
from ovnk_lab.ovn import OvnCentral

CONTROLLER = "default-network-controller"
SWITCH = OwnerType("Node", "Logical_Switch", ("name",))
PORT = OwnerType("Pod", "Logical_Switch_Port", ("name",))
INTERVAL = 0.02
# What a controller would configure: the transaction may take this long, failover included.
TXN_TIMEOUT = 60.0


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[index]


def figures(samples: list[float]) -> dict[str, float]:
    return {"p50_ms": round(percentile(samples, 0.50), 1), "max_ms": round(max(samples), 1),
            "min_ms": round(min(samples), 1), "mean_ms": round(sum(samples) / len(samples), 1)}


class Writer:
    """Commits one transaction every INTERVAL on its own thread; logs (started, ended, ok) of each."""

    def __init__(self, name: str, commit: Callable[[int], None]) -> None:
        self.name = name
        self.commit = commit
        self.log: list[tuple[float, float, bool]] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"writer-{name}", daemon=True)

    def start(self) -> Writer:
        self._thread.start()
        return self

    def _run(self) -> None:
        index = 0
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.commit(index)
                ok = True
                index += 1  # a failed one is retried with the same name
            except Exception as exc:
                ok = False
                self.errors.append(f"{type(exc).__name__}: {exc}"[:200])
            self.log.append((started, time.monotonic(), ok))
            self._stop.wait(INTERVAL)

    def outage_after(self, moment: float) -> float | None:
        """Seconds from ``moment`` to the end of the first committed transaction started after it."""
        for started, ended, ok in list(self.log):
            if ok and started >= moment:
                return ended - moment
        return None

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(TXN_TIMEOUT + 5)


def ovnk_writer(remote: str) -> tuple[Writer, OvsdbClient]:
    client = OvsdbClient(remote=remote, schema="OVN_Northbound", name="nb", timeout=TXN_TIMEOUT).start()
    txns = TxnManager(client, pm=None, controller=CONTROLLER, timeout=TXN_TIMEOUT)
    with txns.transaction(reason="bench setup", owner="bench") as txn:
        txn.ensure("Logical_Switch", name="ovnk-bench", ids=SWITCH.ids(CONTROLLER, name="ovnk-bench"))

    def commit(index: int) -> None:
        name = f"ovnk-{index}"
        with txns.transaction(reason=f"port {index}", owner="bench") as txn:
            txn.ensure("Logical_Switch_Port", name=name, ids=PORT.ids(CONTROLLER, name=name),
                       columns={"addresses": [f"0a:58:0a:f5:{index // 256 % 256:02x}:{index % 256:02x}"]},
                       parent=Parent(Match.of("Logical_Switch", name="ovnk-bench"), "ports"))

    return Writer("ovnk", commit), client


def baseline_writer(remote: str) -> tuple[Writer, ovsdbapp_connection.Connection]:
    helper = idlutils.get_schema_helper(remote, "OVN_Northbound")
    helper.register_all()
    idl = ovsdbapp_connection.OvsdbIdl(remote, helper, leader_only=True)
    connection = ovsdbapp_connection.Connection(idl=idl, timeout=TXN_TIMEOUT)
    # ovsdbapp keeps the connection on the API *class*; a subclass keeps it apart from ovnk's.
    api_class = type("BaselineNbApi", (nb_impl.OvnNbApiIdlImpl,), {"_ovsdb_connection": None})
    api = api_class(connection)
    with api.transaction(check_error=True) as txn:
        txn.add(api.ls_add("baseline-bench", may_exist=True))

    def commit(index: int) -> None:
        with api.transaction(check_error=True) as txn:
            txn.add(api.lsp_add("baseline-bench", f"baseline-{index}", may_exist=True))

    return Writer("baseline", commit), connection


def wait(what: str, condition: Callable[[], bool], timeout: float, interval: float = 0.05) -> float:
    """Poll until ``condition``; return when it became true (monotonic)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(interval)
    return time.monotonic()


def wait_outage(writer: Writer, killed_at: float) -> float:
    """The writer's outage after a kill at ``killed_at``, once it has written again."""
    deadline = time.monotonic() + TXN_TIMEOUT + 10
    while (outage := writer.outage_after(killed_at)) is None:
        if time.monotonic() > deadline:
            raise SystemExit(f"{writer.name} did not write again within {TXN_TIMEOUT + 10:.0f}s: "
                             f"{writer.errors[-3:]}")
        time.sleep(0.05)
    return outage


def run(rounds: int, progress: Callable[[str], None]) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="ovnkbf-", dir="/tmp"))
    central = OvnCentral(workdir / "central", cluster=3)
    writers: list[Writer] = []
    closers: list[Callable[[], Any]] = []
    try:
        progress("starting a 3-member clustered OVN central")
        central.start()
        ours, client = ovnk_writer(central.nb_address)
        closers.append(client.stop)
        theirs, connection = baseline_writer(central.nb_address)
        closers.append(lambda: connection.stop(timeout=5))
        writers = [ours.start(), theirs.start()]
        outages: dict[str, list[float]] = {"ovnk": [], "baseline": []}
        elections: list[float] = []
        time.sleep(1)
        for done in range(rounds):
            index = central.leader_index(central.nb)
            assert index is not None, "no NB leader"
            # Stamped just before SIGKILL: a transaction counts only if it started after this.
            killed_at = time.monotonic()
            central.nb.members[index].daemon.kill()
            elected = wait("a new NB leader", lambda: central.leader_index(central.nb) is not None, 30, 0.1)
            elections.append(elected - killed_at)
            for writer in writers:
                outages[writer.name].append(wait_outage(writer, killed_at))
            central.restart_member(central.nb, index)
            # Let the restarted member catch up and the writers settle before the next kill.
            time.sleep(3)
            progress(f"  round {done + 1}/{rounds}: election {elections[-1] * 1000:.0f} ms, "
                     f"outage ovnk {outages['ovnk'][-1] * 1000:.0f} ms, "
                     f"baseline {outages['baseline'][-1] * 1000:.0f} ms")
        for writer in writers:
            writer.stop()
        return {
            "ovnk": figures([o * 1000 for o in outages["ovnk"]]),
            "baseline": figures([o * 1000 for o in outages["baseline"]]),
            "election": figures([e * 1000 for e in elections]),
            "commits": {w.name: sum(1 for entry in w.log if entry[2]) for w in writers},
            "failed_attempts": {w.name: len(w.errors) for w in writers},
            "first_errors": {w.name: sorted(set(w.errors))[:3] for w in writers},
        }
    finally:
        for writer in writers:
            writer.stop()
        for close in closers:
            close()
        central.destroy()
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 leader kills instead of 10 (under a minute)")
    options = parser.parse_args()
    rounds = 3 if options.quick else 10

    def progress(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    results = run(rounds, progress)
    print(f"\n{rounds} NB leader kills, writers every {INTERVAL * 1000:.0f} ms")
    print(f"{'case':<46} {'p50 ms':>8} {'max ms':>8} {'min ms':>8} {'mean ms':>8}")
    for label, key in (("RAFT election (kill -> new leader), the floor", "election"),
                       ("ovnk TxnManager: write outage", "ovnk"),
                       ("bare ovsdbapp (baseline): write outage", "baseline")):
        entry = results[key]
        print(f"{label:<46} {entry['p50_ms']:>8.1f} {entry['max_ms']:>8.1f} {entry['min_ms']:>8.1f} "
              f"{entry['mean_ms']:>8.1f}")
    print(f"commits: {results['commits']}; failed attempts seen by the writer: {results['failed_attempts']}")
    ratio = round(results["ovnk"]["p50_ms"] / results["baseline"]["p50_ms"], 2)
    print(f"\novnk's write outage p50 is {ratio}x bare ovsdbapp's")
    summary = {
        "benchmark": "raft_failover",
        "quick": options.quick,
        "rounds": rounds,
        "figures": {"ovnk_outage": results["ovnk"], "election": results["election"],
                    "commits": results["commits"]["ovnk"], "failed_attempts": results["failed_attempts"]["ovnk"]},
        "baseline": {"ovsdbapp_outage": results["baseline"], "commits": results["commits"]["baseline"],
                     "failed_attempts": results["failed_attempts"]["baseline"]},
        "ratio": {"outage_p50_vs_ovsdbapp": ratio},
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
