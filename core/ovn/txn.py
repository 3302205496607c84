"""The NB transaction manager: one atomic transaction per reconcile.

A reconcile opens ``with manager.transaction(reason=..., owner=...) as txn:``,
core and plugins add commands (``txn.ensure``, ``txn.remove``,
``txn.add_to``/``txn.remove_from`` or raw ovsdbapp commands with ``txn.add``),
and the transaction is committed when the block exits cleanly; if the block
raises, nothing is sent. The commit goes through the ``ovnk_nb_commit`` hook,
whose core implementation (``trylast``) calls :meth:`NbTxn.commit_blocking`.

Commit steps:

1. No commands: nothing happens (``"empty"``).
2. Under the connection lock, every command *plans* against the IDL; if none
   would change anything the transaction is not sent at all (``"unchanged"``).
   This is what makes a repeated reconcile write nothing, and it costs no
   round trip to the connection thread.
3. The write fence (leadership) is checked; a non-leader never writes.
4. The commands run on the ovsdbapp connection thread in one OVSDB
   transaction (``check_error=True``). ``TRY_AGAIN`` (disconnect, leader change)
   is retried by ovsdbapp until the timeout; commands re-plan against the fresh
   IDL, so a retried transaction never duplicates rows.

Threading: callers are worker threads; ovsdbapp's connection thread runs one
transaction at a time. The Kubernetes watch threads never commit.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING
from typing import Any

from ovsdbapp import exceptions as ovsdbapp_exceptions
from ovsdbapp.backend.ovs_idl import transaction as ovsdbapp_transaction
from prometheus_client import CollectorRegistry
from prometheus_client import Counter
from prometheus_client import Histogram

from ovnk.core.errors import PluginError
from ovnk.core.errors import TemporaryError
from ovnk.core.ovn import ids as ids_mod
from ovnk.core.ovn.commands import Command
from ovnk.core.ovn.commands import EnsureRow
from ovnk.core.ovn.commands import Match
from ovnk.core.ovn.commands import Parent
from ovnk.core.ovn.commands import RemoveRow
from ovnk.core.ovn.commands import SetMembership
from ovnk.core.ovn.commands import TxnScope
from ovnk.core.ovn.connection import OvsdbClient
from ovnk.core.ovn.ids import DbObjectIds

if TYPE_CHECKING:
    from ovnk.core.plugins import OvnkPluginManager

logger = logging.getLogger(__name__)

COMMITTED = "committed"
UNCHANGED = "unchanged"
EMPTY = "empty"


class NotLeaderError(TemporaryError):
    """This process does not hold the leader lease; it must not write."""


class _Transaction(ovsdbapp_transaction.Transaction):  # type: ignore[misc]
    """ovsdbapp's transaction plus: scope reset per attempt, fence check, outcome."""

    def __init__(self, api: Any, connection: Any, *, timeout: float, scope: TxnScope,
                 fence: Callable[[], bool]) -> None:
        super().__init__(api, connection, timeout=timeout, check_error=True, log_errors=False)
        self.scope = scope
        self.fence = fence
        self.changed = False

    def pre_commit(self, txn: Any) -> None:
        # Runs at the start of every attempt (TRY_AGAIN re-runs all commands).
        self.scope.reset()
        if not self.fence():
            raise NotLeaderError("lost leadership before commit; not writing")

    def post_commit(self, txn: Any) -> None:
        # Only called when the server accepted a transaction that changed something.
        self.changed = True
        super().post_commit(txn)


class NbTxn:
    """One atomic NB transaction being built by a reconcile.

    :ivar reason: what the transaction is for (``pod ns/name``), for logs.
    :ivar owner: who builds it (a controller or owner-type name), for metrics.
    """

    def __init__(self, manager: TxnManager, *, reason: str, owner: str) -> None:
        self.manager = manager
        self.reason = reason
        self.owner = owner
        self.scope = TxnScope()
        self.commands: list[Any] = []
        self.outcome: str | None = None

    @property
    def api(self) -> Any:
        return self.manager.client.api

    @property
    def controller(self) -> str:
        return self.manager.controller

    def __len__(self) -> int:
        return len(self.commands)

    # -- building ------------------------------------------------------------

    def add(self, command: Any) -> Any:
        """Add any ovsdbapp command (for ours, prefer the helpers below)."""
        self.commands.append(command)
        return command

    def ensure(
        self,
        table: str,
        *,
        ids: DbObjectIds | None = None,
        name: str | None = None,
        where: Mapping[str, Any] | None = None,
        columns: Mapping[str, Any] | None = None,
        external_ids: Mapping[str, str] | None = None,
        parent: Parent | None = None,
    ) -> EnsureRow:
        """Create or converge one owned row.

        The row is found by ``name`` if given, else by the primary id of
        ``ids``, else by ``where`` among ``parent``'s children. Its
        ``external_ids`` become the ownership keys of ``ids`` plus
        ``external_ids`` (which must contain the ownership keys when ``ids`` is
        not given). ``columns`` are complete desired values.
        """
        cols = dict(columns or {})
        if not self.manager.client.has_column(table, "external_ids"):
            # Load_Balancer_Group has no external_ids in OVN's schema: such rows are
            # ours by their fixed name only, and core never deletes them.
            if name is None:
                raise ValueError(f"{table} has no external_ids; its rows must be found by name")
            cols.setdefault("name", name)
            command = EnsureRow(self.api, self.scope, match=Match.of(table, name=name), columns=cols, parent=parent)
            return self.add(command)  # type: ignore[no-any-return]
        ext = dict(ids.external_ids() if ids is not None else {})
        ext.update(external_ids or {})
        if ext.get(ids_owner_key()) != self.controller:
            raise ValueError(f"{table} row {name or where} has no ownership external_ids of {self.controller}")
        match = Match.of(
            table,
            name=name,
            primary_id=ids.primary_id if (ids is not None and not where) else None,
            where=dict(where or {}),
        )
        if name is not None:
            cols.setdefault("name", name)
        cols["external_ids"] = ext
        command = EnsureRow(self.api, self.scope, match=match, columns=cols, parent=parent, controller=self.controller)
        return self.add(command)  # type: ignore[no-any-return]

    def converge(self, table: str, *, uuid: str, columns: Mapping[str, Any]) -> EnsureRow:
        """Set ``columns`` of an existing row of ours (by uuid) where they differ; no-op if it is gone."""
        command = EnsureRow(self.api, self.scope, match=Match.of(table, uuid=uuid), columns=dict(columns),
                            controller=self.controller if self.manager.client.has_column(table, "external_ids")
                            else None, create=False)
        return self.add(command)  # type: ignore[no-any-return]

    def remove(self, table: str, *, name: str | None = None, primary_id: str | None = None,
               uuid: str | None = None, where: Mapping[str, Any] | None = None,
               parent: Parent | None = None) -> RemoveRow:
        """Delete a row if it exists (no-op otherwise)."""
        match = Match.of(table, name=name, primary_id=primary_id, uuid=uuid, where=dict(where or {}))
        return self.add(RemoveRow(self.api, self.scope, match=match, parent=parent))  # type: ignore[no-any-return]

    def add_to(self, match: Match, column: str, values: Iterable[Any], *, if_exists: bool = False) -> SetMembership:
        """Ensure ``values`` (plain values, ``Ref``s or commands) are in ``match``'s set ``column``.

        ``if_exists``: a missing row is left missing instead of failing the transaction.
        """
        return self.add(SetMembership(self.api, self.scope, match=match, column=column, add=values,  # type: ignore[no-any-return]
                                      missing_ok=if_exists))

    def remove_from(self, match: Match, column: str, values: Iterable[Any]) -> SetMembership:
        """Ensure ``values`` are not in ``match``'s set ``column``."""
        return self.add(SetMembership(self.api, self.scope, match=match, column=column, remove=values))  # type: ignore[no-any-return]

    # -- committing ------------------------------------------------------------

    def needs_commit(self) -> bool:
        """Whether any command would change the database now (read-only, under the lock)."""
        ours = [c for c in self.commands if isinstance(c, Command)]
        if len(ours) != len(self.commands):
            return True  # raw ovsdbapp commands cannot plan; let the IDL decide
        # Desired values and atoms need only the schema: built here, outside the lock the IDL thread
        # and every other worker need (a restart's first pass plans every key and writes nothing).
        schema_idl = self.manager.client.idl
        for command in ours:
            command.prepare(schema_idl)
        planning_scope = TxnScope()
        with self.manager.client.locked() as idl:
            for command in ours:
                saved = command.scope
                command.scope = planning_scope
                try:
                    if command.plan(idl):
                        return True
                finally:
                    command.scope = saved
        return False

    def commit_blocking(self) -> str:
        """Commit now (called by core's ``ovnk_nb_commit``); returns the outcome."""
        return self.manager._commit(self)


def ids_owner_key() -> str:
    return ids_mod.OWNER_CONTROLLER_KEY


class TxnManager:
    """Opens and commits NB transactions for one controller.

    :param client: the NB connection.
    :param pm: plugin manager (the commit goes through ``ovnk_nb_commit``).
    :param controller: ``k8s.ovn.org/owner-controller`` of every row we write.
    :param timeout: seconds a commit may take, retries included.
    :param fence: returns False when this process must not write (not leader).
    :param registry: Prometheus registry for transaction metrics.
    """

    def __init__(
        self,
        client: OvsdbClient,
        *,
        pm: OvnkPluginManager | None,
        controller: str,
        timeout: float = 100.0,
        fence: Callable[[], bool] | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.client = client
        self.pm = pm
        self.controller = controller
        self.timeout = timeout
        self.fence: Callable[[], bool] = fence or (lambda: True)
        self._read_only: str | None = None
        self._duration: Histogram | None = None
        self._total: Counter | None = None
        if registry is not None:
            self._duration = Histogram(
                "ovnk_nb_txn_duration_seconds", "Time to commit an NB transaction (writes only).", ["owner"],
                registry=registry, buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            )
            self._total = Counter(
                "ovnk_nb_txn_total", "NB transactions by owner and outcome.", ["owner", "result"], registry=registry
            )

    @contextmanager
    def read_only(self, phase: str) -> Iterator[None]:
        """Refuse every commit while the block runs (start-up phases that must only read)."""
        self._read_only = phase
        try:
            yield
        finally:
            self._read_only = None

    def new(self, *, reason: str, owner: str) -> NbTxn:
        return NbTxn(self, reason=reason, owner=owner)

    @contextmanager
    def transaction(self, *, reason: str, owner: str) -> Iterator[NbTxn]:
        """Build a transaction in the ``with`` block; commit it on clean exit, drop it on error."""
        txn = self.new(reason=reason, owner=owner)
        yield txn
        self.commit(txn)

    def commit(self, txn: NbTxn) -> str:
        """Commit through the ``ovnk_nb_commit`` hook (or directly without a plugin manager)."""
        if self.pm is not None:
            outcome = self.pm.hook.ovnk_nb_commit(txn=txn)
        else:
            outcome = txn.commit_blocking()
        txn.outcome = outcome
        return str(outcome)

    def _count(self, owner: str, result: str) -> None:
        if self._total is not None:
            self._total.labels(owner=owner, result=result).inc()

    def _commit(self, txn: NbTxn) -> str:
        if not txn.commands:
            return EMPTY
        if self._read_only is not None:
            raise PluginError(f"NB transaction for {txn.reason} refused: {self._read_only} must not write")
        if not txn.needs_commit():
            self._count(txn.owner, UNCHANGED)
            return UNCHANGED
        if not self.fence():
            self._count(txn.owner, "not_leader")
            raise NotLeaderError(f"not the leader; not writing ({txn.reason})")
        conn = self.client.connection
        ovs_txn = _Transaction(self.client.api, conn, timeout=self.timeout, scope=txn.scope, fence=self.fence)
        for command in txn.commands:
            ovs_txn.add(command)
        started = time.monotonic()
        try:
            ovs_txn.commit()
        except NotLeaderError:
            self._count(txn.owner, "not_leader")
            raise
        except ovsdbapp_exceptions.TimeoutException as exc:
            self._count(txn.owner, "timeout")
            raise TemporaryError(f"NB transaction for {txn.reason} timed out after {self.timeout:.0f}s: {exc}") from exc
        except Exception:
            self._count(txn.owner, "error")
            raise
        elapsed = time.monotonic() - started
        if self._duration is not None:
            self._duration.labels(owner=txn.owner).observe(elapsed)
        outcome = COMMITTED if ovs_txn.changed else UNCHANGED
        self._count(txn.owner, outcome)
        logger.debug("NB txn %s for %s: %d commands in %.1f ms", outcome, txn.reason, len(txn.commands), elapsed * 1000)
        return outcome
