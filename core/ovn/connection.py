"""OVSDB connections: the OVN Northbound, the Southbound and a node's Open_vSwitch DB.

One :class:`OvsdbClient` is one ovsdbapp ``Connection`` (its own thread, one
transaction at a time, ``TransactionQueue(1)``) plus the ovsdbapp API object
for the schema. Remotes may be ``unix:``, ``tcp:`` or ``ssl:`` (with client
certificates), or a comma-separated list of RAFT members; writes go to the
leader only (``leader_only=True``) and the IDL's reconnect backoff is lowered
so a client resumes within 1-2 s after a leader change (lab.md).

Threading model: the ovsdbapp connection thread owns the IDL. It runs
``idl.run()`` and commits queued transactions, both under ``Connection.lock``.
Other threads read the IDL only while holding that lock (:meth:`OvsdbClient.locked`),
briefly, and copy what they need; they never keep Row objects.

Indexes created before the first connect make lookups O(log n): ``name`` on
tables that have a name column, and two ownership indexes on every table with
``external_ids`` -- by primary id (``k8s.ovn.org/id``) and by
(owner-controller, owner-type).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ovs import stream as ovs_stream
from ovs.db import idl as ovs_idl
from ovsdbapp.backend.ovs_idl import connection as ovsdbapp_connection
from ovsdbapp.backend.ovs_idl import idlutils
from prometheus_client import CollectorRegistry
from prometheus_client import Counter
from prometheus_client import Gauge

from ovnk.core.errors import StartupError
from ovnk.core.ovn import atoms
from ovnk.core.ovn import indexes
from ovnk.core.ovn import jsonparser

logger = logging.getLogger(__name__)


# Reconnect backoff (ms) after a lost connection. During a RAFT election a
# leader-only client connects to followers, is told "not leader" and backs off;
# with the IDL's default (1-8 s) a leader change costs 3-18 s of writes, with 1 s
# flat 2-4 s (bench/raft_failover.py). python-ovs allows nothing under 1 s through
# its setter; 100-200 ms forced onto the FSM got writes back in 1.6 s but, in one
# of three full test runs, left a commit unanswered for 30 s (a transaction sent
# mid-election), so the floor stays at 1 s.
RECONNECT_BACKOFF_MS = (1000, 1000)


@dataclass(frozen=True)
class SslFiles:
    """Client-side PEM files for ``ssl:`` remotes."""

    private_key: str
    certificate: str
    ca_cert: str


#: ``listener(event, row, updates)``: event is ``"create"``, ``"update"`` or ``"delete"``.
RowListener = Callable[[str, Any, Any], None]


class _Idl(ovsdbapp_connection.OvsdbIdl):  # type: ignore[misc]
    """The IDL with a short reconnect backoff, a connection-change counter and row listeners."""

    def __init__(self, remote: str, helper: Any, *, leader_only: bool, probe_interval: int,
                 listeners: list[RowListener] | None = None, label: str = "") -> None:
        super().__init__(remote, helper, probe_interval=probe_interval, leader_only=leader_only)
        # The IDL has no public setter for the backoff; its session's FSM does.
        self._session.reconnect.set_backoff(*RECONNECT_BACKOFF_MS)
        self.reconnects = 0
        self._last_session_seqno = -1
        self._row_listeners = listeners if listeners is not None else []
        self._label = label or remote
        # Monotonic time the connection went down; None while it is up (or before it first was).
        self._down_since: float | None = None
        self._was_up = False

    def cooperative_yield(self) -> None:
        # ovsdbapp's version sleeps(0) per row for eventlet; we use plain threads and
        # the connection lock is held anyway, so it only slows the initial sync.
        return

    def notify(self, event: str, row: Any, updates: Any = None) -> None:
        for listener in self._row_listeners:
            try:
                listener(event, row, updates)
            except Exception:  # a listener must never break the IDL loop
                logger.exception("OVSDB row listener %r failed", listener)

    def run(self) -> Any:
        result = super().run()
        seqno = self._session.get_seqno()
        if seqno != self._last_session_seqno:
            if self._last_session_seqno != -1:
                self.reconnects += 1
            self._last_session_seqno = seqno
        self._log_transitions()
        return result

    def _log_transitions(self) -> None:
        """One line when the database is lost, one when it serves us again, with the time it was down.

        "Up" is monitoring the database, not merely connected: a RAFT client that reaches a
        follower connects and is sent on, several times per election, and that is still down.
        """
        up = bool(self._session.is_connected()) and self.state == self.IDL_S_MONITORING
        if up == self._was_up:
            return
        self._was_up = up
        now = time.monotonic()
        if not up:
            self._down_since = now
            logger.warning("%s: lost the connection; reconnecting", self._label)
        elif self._down_since is not None:  # not the first connection: start() logs that one
            logger.info("%s: reconnected after %.1fs down", self._label, now - self._down_since)
            self._down_since = None

    def connected(self) -> bool:
        return bool(self._session.is_connected())


class OvsdbClient:
    """One OVSDB database connection with its ovsdbapp API.

    :param remote: ``unix:PATH``, ``tcp:IP:PORT``, ``ssl:IP:PORT`` or a comma list (RAFT).
    :param schema: ``OVN_Northbound``, ``OVN_Southbound`` or ``Open_vSwitch``.
    :param name: short name for logs and metrics (``nb``, ``sb``, ``ovs``).
    :param tables: tables to monitor (default: all).
    :param columns: monitor only these columns of these tables (others as ``tables`` says);
        columns a busy writer updates often and nobody reads (Interface ``statistics``) cost
        CPU on every update otherwise.
    :param leader_only: for RAFT, connect only to the leader (writers need this).
    :param ssl: client certificates for ``ssl:`` remotes.
    :param inactivity_probe_ms: OVSDB inactivity probe (0 disables).
    :param timeout: seconds a transaction (and the first connect) may take.
    :param registry: Prometheus registry for connection metrics.
    """

    def __init__(
        self,
        *,
        remote: str,
        schema: str,
        name: str,
        tables: tuple[str, ...] | None = None,
        columns: Mapping[str, Sequence[str]] | None = None,
        leader_only: bool = True,
        ssl: SslFiles | None = None,
        inactivity_probe_ms: int = 100000,
        timeout: float = 100.0,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.remote = remote
        self.schema = schema
        self.name = name
        self.tables = tables
        self.columns = dict(columns or {})
        self.leader_only = leader_only
        self.ssl = ssl
        self.inactivity_probe_ms = inactivity_probe_ms
        self.timeout = timeout
        self.api: Any = None
        self._connection: ovsdbapp_connection.Connection | None = None
        self._idl: _Idl | None = None
        self._schema_columns: dict[str, set[str]] = {}
        self._schema_json: dict[str, Any] = {}
        self._metrics_thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._reconnects_seen = 0
        self._row_listeners: list[RowListener] = []
        self._m_connected: Gauge | None = None
        self._m_reconnects: Counter | None = None
        if registry is not None:
            self._m_connected = Gauge(
                f"ovnk_ovsdb_{name}_connected", f"1 while the {schema} connection is up.", registry=registry
            )
            self._m_reconnects = Counter(
                f"ovnk_ovsdb_{name}_reconnects_total", f"Reconnections to {schema}.", registry=registry
            )

    # -- lifecycle -----------------------------------------------------------

    def start(self, *, timeout: float | None = None) -> OvsdbClient:
        """Fetch the schema, build the IDL with our indexes and connect.

        The first connection is retried with backoff until ``timeout``
        (default: the transaction timeout); then :class:`StartupError` says why.
        """
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        jsonparser.use_c_parser()  # once per process: a no-op after the first call
        atoms.install()  # likewise
        if self.ssl is not None:
            ovs_stream.Stream.ssl_set_private_key_file(self.ssl.private_key)
            ovs_stream.Stream.ssl_set_certificate_file(self.ssl.certificate)
            ovs_stream.Stream.ssl_set_ca_cert_file(self.ssl.ca_cert)
        delay = 0.1
        last_error: Exception | None = None
        while True:
            try:
                helper = idlutils.get_schema_helper(self.remote, self.schema)
                break
            except Exception as exc:  # schema fetch fails for every unreachable member
                last_error = exc
            if time.monotonic() + delay > deadline:
                raise StartupError(
                    f"cannot reach the {self.schema} database at {self.remote}: {last_error}"
                )
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
        unknown = sorted(set(self.tables or ()) - set(helper.schema_json["tables"]))
        if unknown:
            raise StartupError(f"the {self.schema} database at {self.remote} has no table {', '.join(unknown)}")
        if self.columns:
            for table, names in self.columns.items():
                helper.register_columns(table, list(names))
            for table in self.tables or ():
                if table not in self.columns:
                    helper.register_table(table)
        elif self.tables:
            for table in self.tables:
                helper.register_table(table)
        else:
            helper.register_all()
        self._schema_columns = {
            table: set(spec.get("columns", {})) for table, spec in helper.schema_json["tables"].items()
        }
        self._schema_json = helper.schema_json
        self._idl = _Idl(self.remote, helper, leader_only=self.leader_only, probe_interval=self.inactivity_probe_ms,
                         listeners=self._row_listeners, label=f"{self.schema} at {self.remote}")
        self._create_indexes(self._idl)
        self._connection = ovsdbapp_connection.Connection(
            idl=self._idl, timeout=max(1.0, deadline - time.monotonic())
        )
        self.api = self._make_api(self._connection)
        self._connection.timeout = self.timeout
        self._stop.clear()
        self._metrics_thread = threading.Thread(target=self._watch_connection, name=f"ovsdb-{self.name}-state", daemon=True)
        self._metrics_thread.start()
        logger.info("connected to %s at %s", self.schema, self.remote)
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._connection is not None:
            self._connection.stop(timeout=5)
            self._connection = None

    def _make_api(self, connection: ovsdbapp_connection.Connection) -> Any:
        # ovsdbapp keeps the connection as a *class* attribute of the API class,
        # so each client gets its own subclass (as ovsdbapp's own fixtures do).
        if self.schema == "OVN_Northbound":
            from ovsdbapp.schema.ovn_northbound import impl_idl as nb_impl

            base: type = nb_impl.OvnNbApiIdlImpl
        elif self.schema == "OVN_Southbound":
            from ovsdbapp.schema.ovn_southbound import impl_idl as sb_impl

            base = sb_impl.OvnSbApiIdlImpl
        else:
            from ovsdbapp.schema.open_vswitch import impl_idl as ovs_impl

            base = ovs_impl.OvsdbIdl
        api_class = type(f"{base.__name__}_{self.name}_{id(self):x}", (base,), {"_ovsdb_connection": None})
        try:
            return api_class(connection, start=True, auto_index=False)
        except Exception as exc:
            raise StartupError(f"cannot connect to the {self.schema} database at {self.remote}: {exc}") from exc

    @staticmethod
    def _create_indexes(idl: _Idl) -> None:
        for table in idl.tables.values():
            indexes.install(table)

    def _watch_connection(self) -> None:
        while not self._stop.wait(0.5):
            idl = self._idl
            if idl is None:
                return
            if self._m_connected is not None:
                self._m_connected.set(1 if idl.connected() else 0)
            if self._m_reconnects is not None and idl.reconnects > self._reconnects_seen:
                self._m_reconnects.inc(idl.reconnects - self._reconnects_seen)
                self._reconnects_seen = idl.reconnects

    def add_row_listener(self, listener: RowListener) -> None:
        """Call ``listener(event, row, updates)`` for every row change the IDL applies.

        It runs on the connection thread with the connection lock held (call
        before or after :meth:`start`): it must be quick, must not block and must
        not commit transactions; typically it sets an event or notifies a condition.
        """
        self._row_listeners.append(listener)

    # -- access --------------------------------------------------------------

    @property
    def connection(self) -> ovsdbapp_connection.Connection:
        if self._connection is None:
            raise RuntimeError(f"{self.name} client is not started")
        return self._connection

    @property
    def idl(self) -> _Idl:
        if self._idl is None:
            raise RuntimeError(f"{self.name} client is not started")
        return self._idl

    @property
    def connected(self) -> bool:
        return self._idl is not None and self._idl.connected()

    @property
    def reconnects(self) -> int:
        return self._idl.reconnects if self._idl is not None else 0

    @contextlib.contextmanager
    def locked(self) -> Iterator[ovs_idl.Idl]:
        """Hold the connection lock and yield the IDL for a consistent, brief read."""
        with self.connection.lock:
            yield self.idl

    def has_column(self, table: str, column: str) -> bool:
        """Whether the server's schema has ``table.column`` (optional columns differ by OVN version)."""
        return column in self._schema_columns.get(table, set())

    def has_table(self, table: str) -> bool:
        return table in self._schema_columns

    def allows_key(self, table: str, column: str, key: str) -> bool:
        """Whether the schema lets map or set column ``table.column`` hold ``key`` (its enum, if any).

        Newer OVN schemas widen some enums (QoS ``action`` gained ``mark``); ``False``
        when the column does not exist.
        """
        spec = self._schema_json.get("tables", {}).get(table, {}).get("columns", {}).get(column)
        if spec is None:
            return False
        key_type = spec.get("type", {}).get("key") if isinstance(spec.get("type"), dict) else None
        enum = key_type.get("enum") if isinstance(key_type, dict) else None
        if enum is None:
            return True
        values = enum[1] if isinstance(enum, list) and len(enum) == 2 and enum[0] == "set" else [enum]
        return key in values


def rows_by_name(idl: ovs_idl.Idl, table: str, name: str) -> list[Any]:
    """Rows of ``table`` whose ``name`` column equals ``name`` (indexed)."""
    return indexes.by_name(idl.tables[table], name)


def rows_by_id(idl: ovs_idl.Idl, table: str, primary_id: str) -> list[Any]:
    """Rows of ``table`` whose ``external_ids:k8s.ovn.org/id`` equals ``primary_id`` (indexed)."""
    return indexes.by_id(idl.tables[table], primary_id)


def rows_by_owner(idl: ovs_idl.Idl, table: str, controller: str, owner_type: str) -> list[Any]:
    """Rows of ``table`` owned by ``controller`` with owner type ``owner_type`` (indexed)."""
    return indexes.by_owner(idl.tables[table], controller, owner_type)


def rows_by_owner_name(idl: ovs_idl.Idl, table: str, controller: str, owner_type: str, name: str) -> list[Any]:
    """Rows of ``table`` of one owner type whose ``k8s.ovn.org/name`` is ``name`` (indexed)."""
    return indexes.by_owner(idl.tables[table], controller, owner_type, name)


def rows_by_controller(idl: ovs_idl.Idl, table: str, controller: str) -> list[Any]:
    """Every row of ``table`` owned by ``controller`` (any owner type)."""
    return indexes.by_owner(idl.tables[table], controller)
