"""Startup repair: plan, then apply, log or skip it (``[controller] repair-mode``).

After the caches are synced, allocations restored (``ovnk_restore``) and
before workers start, each owner type's rows are compared with what the
cluster says should exist. Plugins add to one :class:`RepairPlan` through
``ovnk_repair``: rows to delete (:meth:`RepairPlan.stale`) and columns of
existing rows to set (:meth:`RepairPlan.converge`, for content no single
key's reconcile rewrites, such as a shared address set's members). Core adds
every row that carries our controller but an owner type no enabled plugin
claims (that is how switching a plugin off removes what it created). Missing
and otherwise drifted rows need no plan: every key is reconciled right after
repair, and reconciles converge rows to the desired state.

Planning writes nothing; only :meth:`RepairPlan.apply` does, in ``repair``
mode. Rows without our ``k8s.ovn.org/owner-controller`` are never in a plan.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING
from typing import Any

from ovnk.core.ovn.ids import OwnerRegistry
from ovnk.core.ovn.reader import NbReader
from ovnk.core.ovn.reader import RowSnapshot

if TYPE_CHECKING:
    from ovnk.core.ovn.txn import TxnManager

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StaleRow:
    row: RowSnapshot
    reason: str
    planned_by: str


@dataclass(frozen=True)
class ConvergeRow:
    row: RowSnapshot
    columns: Mapping[str, Any]
    reason: str
    planned_by: str


class RepairPlan:
    """Rows to delete at startup, with the reason and who planned each."""

    def __init__(self, *, controller: str) -> None:
        self.controller = controller
        self.current_plugin = "core"
        self._entries: dict[tuple[str, str], StaleRow] = {}
        self._converge: dict[tuple[str, str], ConvergeRow] = {}

    def _check_ours(self, row: RowSnapshot, what: str) -> None:
        if row.external_ids.get("k8s.ovn.org/owner-controller") != self.controller:
            raise ValueError(f"refusing to plan {what} of {row.table} {row.uuid}: not owned by {self.controller}")

    def stale(self, row: RowSnapshot, *, reason: str) -> None:
        """Plan the deletion of ``row`` (must be ours: carry our owner-controller)."""
        self._check_ours(row, "deletion")
        self._entries.setdefault((row.table, row.uuid), StaleRow(row=row, reason=reason, planned_by=self.current_plugin))

    def converge(self, row: RowSnapshot, *, columns: Mapping[str, Any], reason: str) -> None:
        """Plan setting ``columns`` of ``row`` to the given complete values (``row`` must be ours).

        Only what differs is written when the plan is applied. A row also
        planned for deletion is deleted, not converged.
        """
        self._check_ours(row, "a change")
        self._converge[(row.table, row.uuid)] = ConvergeRow(row=row, columns=dict(columns), reason=reason,
                                                            planned_by=self.current_plugin)

    @property
    def entries(self) -> list[StaleRow]:
        """The rows planned for deletion."""
        return list(self._entries.values())

    @property
    def changes(self) -> list[ConvergeRow]:
        """The rows planned for a column change (and not for deletion)."""
        return [c for key, c in self._converge.items() if key not in self._entries]

    def __len__(self) -> int:
        return len(self._entries) + len(self.changes)

    @staticmethod
    def _label(row: RowSnapshot) -> str:
        return f"{row.table} {row.name or row.primary_id or row.uuid}"

    def log(self) -> None:
        for entry in self.entries:
            logger.info("repair plan: delete %s (%s; planned by %s)", self._label(entry.row), entry.reason,
                        entry.planned_by)
        for change in self.changes:
            logger.info("repair plan: set %s of %s (%s; planned by %s)", ", ".join(sorted(change.columns)),
                        self._label(change.row), change.reason, change.planned_by)

    def apply(self, manager: TxnManager, *, batch: int = 1000) -> int:
        """Write the plan in transactions of at most ``batch`` rows; returns the rows deleted or changed.

        Changes are planned against the IDL like every other command, so a row
        that already holds the planned values costs nothing.
        """
        entries = self.entries
        for start in range(0, len(entries), batch):
            chunk = entries[start:start + batch]
            with manager.transaction(reason=f"repair ({len(chunk)} stale rows)", owner="repair") as txn:
                for entry in chunk:
                    txn.remove(entry.row.table, uuid=entry.row.uuid)
            for entry in chunk:
                logger.info("repair: deleted %s (%s)", self._label(entry.row), entry.reason)
        changes = self.changes
        changed = 0
        for start in range(0, len(changes), batch):
            drifted = changes[start:start + batch]
            with manager.transaction(reason=f"repair ({len(drifted)} drifted rows)", owner="repair") as txn:
                for change in drifted:
                    txn.converge(change.row.table, uuid=change.row.uuid, columns=change.columns)
            if txn.outcome == "committed":
                changed += len(drifted)
                for change in drifted:
                    logger.info("repair: set %s of %s (%s)", ", ".join(sorted(change.columns)),
                                self._label(change.row), change.reason)
        return len(entries) + changed


def plan_unclaimed(plan: RepairPlan, reader: NbReader, owners: OwnerRegistry,
                   tables: Iterable[str] | None = None) -> None:
    """Add every row of ours whose (table, owner type) no enabled plugin or core claims."""
    plan.current_plugin = "core"
    for table in tables if tables is not None else reader.tables_with_external_ids():
        # Only the rows of unclaimed types are copied (the owner types come from the index).
        if all(owners.get(table, t) is not None for t in reader.owner_types(table)):
            continue
        for row in reader.controller_rows(table):
            owner_type = row.owner_type or ""
            if owners.get(table, owner_type) is None:
                plan.stale(row, reason=f"owner type {owner_type or '(none)'} in {table} is not claimed by any enabled plugin")
