"""Startup repair: plan, then apply or log (``[controller] repair-mode``).

After the caches are synced and before workers start, each owner type's rows
are compared with what the cluster says should exist. Plugins add their stale
rows through ``ovnk_repair``; core adds every row that carries our controller
but an owner type no enabled plugin claims (that is how switching a plugin off
removes what it created). Missing and drifted rows need no plan: every key is
reconciled right after repair, and reconciles converge rows to the desired state.

Rows without our ``k8s.ovn.org/owner-controller`` are never in a plan.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

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


class RepairPlan:
    """Rows to delete at startup, with the reason and who planned each."""

    def __init__(self, *, controller: str) -> None:
        self.controller = controller
        self.current_plugin = "core"
        self._entries: dict[tuple[str, str], StaleRow] = {}

    def stale(self, row: RowSnapshot, *, reason: str) -> None:
        """Plan the deletion of ``row`` (must be ours: carry our owner-controller)."""
        if row.external_ids.get("k8s.ovn.org/owner-controller") != self.controller:
            raise ValueError(f"refusing to plan deletion of {row.table} {row.uuid}: not owned by {self.controller}")
        self._entries.setdefault((row.table, row.uuid), StaleRow(row=row, reason=reason, planned_by=self.current_plugin))

    @property
    def entries(self) -> list[StaleRow]:
        return list(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def log(self) -> None:
        for entry in self.entries:
            logger.info(
                "repair plan: delete %s %s (%s; planned by %s)",
                entry.row.table, entry.row.name or entry.row.primary_id or entry.row.uuid, entry.reason, entry.planned_by,
            )

    def apply(self, manager: TxnManager, *, batch: int = 1000) -> int:
        """Delete the planned rows in transactions of at most ``batch`` rows; returns how many."""
        entries = self.entries
        for start in range(0, len(entries), batch):
            chunk = entries[start:start + batch]
            with manager.transaction(reason=f"repair ({len(chunk)} stale rows)", owner="repair") as txn:
                for entry in chunk:
                    txn.remove(entry.row.table, uuid=entry.row.uuid)
            for entry in chunk:
                logger.info("repair: deleted %s %s (%s)", entry.row.table,
                            entry.row.name or entry.row.primary_id or entry.row.uuid, entry.reason)
        return len(entries)


def plan_unclaimed(plan: RepairPlan, reader: NbReader, owners: OwnerRegistry,
                   tables: Iterable[str] | None = None) -> None:
    """Add every row of ours whose (table, owner type) no enabled plugin or core claims."""
    plan.current_plugin = "core"
    for table in tables if tables is not None else reader.tables_with_external_ids():
        for row in reader.controller_rows(table):
            owner_type = row.owner_type or ""
            if owners.get(table, owner_type) is None:
                plan.stale(row, reason=f"owner type {owner_type or '(none)'} in {table} is not claimed by any enabled plugin")
