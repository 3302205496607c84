"""The end-to-end health probe of the OVN control plane: ``e2e_timestamp``.

Like ovn-kubernetes, the leading controller writes the current time to
``NB_Global options:e2e_timestamp`` every ``[controller] e2e-timestamp-interval``
seconds; ovn-northd copies NB_Global's options to ``SB_Global``, so the value
read back from the Southbound database shows how fresh the whole NB -> northd
-> SB path is (``time() - ovnkube_controller_sb_e2e_timestamp`` is the lag an
alert fires on). Writing one option key of the singleton NB_Global row is the
one write ovnk makes to a row it does not own; it never deletes anything there.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import time
from dataclasses import dataclass
from typing import Any

from ovnk.core.metrics import ControllerMetrics
from ovnk.core.ovn.connection import OvsdbClient
from ovnk.core.ovn.connection import SslFiles
from ovnk.core.ovn.txn import TxnManager

logger = logging.getLogger(__name__)

E2E_KEY = "e2e_timestamp"
#: Seconds one ``_Server`` query of one database server may take.
SERVER_QUERY_TIMEOUT = 5.0


@dataclass(frozen=True)
class ServerStatus:
    """What one ovsdb-server says about one of its databases (its ``_Server`` database)."""

    model: str  # "clustered", "standalone", "relay"
    connected: bool  # a clustered member connected to its cluster (standalone: always)
    leader: bool  # a clustered member that is the leader (standalone: always)

    @property
    def role(self) -> str:
        if self.model != "clustered":
            return self.model
        return "leader" if self.leader else "follower"


def query_server(remote: str, database: str, *, ssl: SslFiles | None = None,
                 timeout: float = SERVER_QUERY_TIMEOUT) -> ServerStatus | None:
    """The ``_Server`` row of ``database`` on the one server at ``remote``; ``None`` when it does not answer.

    Every ovsdb-server serves ``_Server`` (the same data ``ovsdb-client`` and RAFT clients use to find
    the leader), so a member's RAFT role is one cheap select away, from anywhere that reaches it.
    """
    binary = shutil.which("ovsdb-client")
    if binary is None:
        return None
    query = ["_Server", {"op": "select", "table": "Database", "where": [["name", "==", database]],
                         "columns": ["model", "connected", "leader"]}]
    argv = [binary, f"--timeout={max(1, int(timeout))}"]
    if ssl is not None:
        argv += [f"--private-key={ssl.private_key}", f"--certificate={ssl.certificate}", f"--ca-cert={ssl.ca_cert}"]
    argv += ["query", remote, json.dumps(query)]
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 2, check=False)
        rows = json.loads(res.stdout)[0]["rows"] if res.returncode == 0 else []
    except (subprocess.TimeoutExpired, ValueError, LookupError, TypeError):
        return None
    if not rows:
        return None
    row = rows[0]
    return ServerStatus(model=str(row.get("model")), connected=bool(row.get("connected")),
                        leader=bool(row.get("leader")))


def read_global_option(client: OvsdbClient | None, table: str, key: str) -> float:
    """``options:<key>`` of the singleton ``table`` row as a number; 0 when absent, unparsable or disconnected."""
    if client is None:
        return 0.0
    try:
        with client.locked() as idl:
            rows = list(idl.tables[table].rows.values()) if table in idl.tables else []
            value = rows[0].options.get(key) if rows else None
    except RuntimeError:  # not started or already stopped
        return 0.0
    try:
        return float(value) if value is not None else 0.0
    except ValueError:
        return 0.0


class E2eTimestampProbe:
    """Writes the timestamp (a leader-only periodic task) and reads it back for the metrics."""

    def __init__(self, *, nb: OvsdbClient, sb: OvsdbClient | None, txns: TxnManager, metrics: ControllerMetrics,
                 servers: dict[str, tuple[str, SslFiles | None]] | None = None) -> None:
        self.nb = nb
        self.sb = sb
        self.txns = txns
        self.metrics = metrics
        #: database name -> (remote list, client certificates): whose members' RAFT role to report.
        self.servers = dict(servers or {})
        metrics.sb_e2e_timestamp.set_function(self.sb_value)

    def sb_value(self) -> float:
        return read_global_option(self.sb, "SB_Global", E2E_KEY)

    def nb_value(self) -> float:
        return read_global_option(self.nb, "NB_Global", E2E_KEY)

    def run(self) -> None:
        """One round: write now, then record what NB and SB hold."""
        now = int(time.time())
        try:
            self._write(now)
            self.metrics.nb_e2e_timestamp.set(now)
        except Exception as exc:
            # A failed write is what the metric is for: 0 makes "NB not writable" visible.
            logger.warning("cannot write the e2e timestamp to NB_Global: %s", exc)
            self.metrics.nb_e2e_timestamp.set(0)
        self.metrics.db_e2e_timestamp.labels(db_name="OVN_Northbound").set(self.nb_value())
        self.metrics.db_e2e_timestamp.labels(db_name="OVN_Southbound").set(self.sb_value())
        self.record_servers()

    def record_servers(self) -> None:
        """``ovn_db_cluster_server_role`` and ``ovn_db_cluster_server_connected`` of every member."""
        for database, (remotes, ssl) in self.servers.items():
            for remote in (r.strip() for r in remotes.split(",") if r.strip()):
                status = query_server(remote, database, ssl=ssl)
                role = status.role if status is not None else "unreachable"
                for known in ("leader", "follower", "standalone", "relay", "unreachable"):
                    self.metrics.db_server_role.labels(db_name=database, server=remote, server_role=known).set(
                        1 if known == role else 0)
                self.metrics.db_server_connected.labels(db_name=database, server=remote).set(
                    1 if status is not None and status.connected else 0)

    def _write(self, now: int) -> None:
        with self.nb.locked() as idl:
            rows = list(idl.tables["NB_Global"].rows.values())
            uuid: Any = rows[0].uuid if rows else None
        if uuid is None:
            raise RuntimeError("NB has no NB_Global row (is ovn-northd's database initialised?)")
        with self.txns.transaction(reason="e2e timestamp", owner="Cluster") as txn:
            txn.add(self.nb.api.db_set("NB_Global", uuid, ("options", {E2E_KEY: str(now)})))
