"""Consistent, read-only snapshots of NB rows for reconcilers and repair.

Reads take the connection lock briefly and copy plain Python values out of the
IDL (references become uuid strings), so no caller ever holds an IDL row.
"""

from __future__ import annotations

import uuid as uuid_mod
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from typing import Any
from typing import TypeVar

from ovs.db import idl as ovs_idl

from ovnk.core.ovn import connection as conn_mod
from ovnk.core.ovn import ids
from ovnk.core.ovn import indexes
from ovnk.core.ovn.commands import Match
from ovnk.core.ovn.commands import find_one
from ovnk.core.ovn.connection import OvsdbClient

T = TypeVar("T")


@dataclass(frozen=True)
class RowSnapshot:
    """A copy of one row: table, uuid, name, external_ids and the requested columns."""

    table: str
    uuid: str
    name: str | None
    external_ids: Mapping[str, str]
    columns: Mapping[str, Any] = field(default_factory=dict)

    @property
    def owner_type(self) -> str | None:
        return self.external_ids.get(ids.OWNER_TYPE_KEY)

    @property
    def primary_id(self) -> str | None:
        return self.external_ids.get(ids.PRIMARY_ID_KEY)

    def __getitem__(self, column: str) -> Any:
        return self.columns[column]


def _plain(value: Any) -> Any:
    if isinstance(value, uuid_mod.UUID):
        return str(value)
    if hasattr(value, "uuid") and hasattr(value, "_table"):
        return str(value.uuid)
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_plain(v) for v in value]
    return value


def _atom_value(atom: Any) -> Any:
    value = atom.value
    return str(value) if isinstance(value, uuid_mod.UUID) else value


def _string_map(row: Any, column: str) -> dict[str, str]:
    """A string-to-string map column read from its datum (no conversion of the row's value)."""
    datum = indexes.column_datum(row, column)
    if datum is None:
        return {}
    return {key.value: value.value for key, value in datum.values.items()}


def snapshot(table: str, row: Any, columns: Iterable[str] = ()) -> RowSnapshot:
    """Copy ``row`` (call under the connection lock)."""
    cols = {c: _plain(getattr(row, c)) for c in columns}
    name = getattr(row, "name", None) if "name" in row._table.columns else None
    if isinstance(name, list):
        name = name[0] if name else None
    ext = _string_map(row, "external_ids") if "external_ids" in row._table.columns else {}
    return RowSnapshot(table=table, uuid=str(row.uuid), name=name, external_ids=ext, columns=cols)


class NbReader:
    """Read access for one controller (``controller`` = our ``k8s.ovn.org/owner-controller``)."""

    def __init__(self, client: OvsdbClient, *, controller: str) -> None:
        self.client = client
        self.controller = controller

    def read(self, fn: Callable[[ovs_idl.Idl], T]) -> T:
        """Run ``fn(idl)`` under the connection lock; ``fn`` must copy what it returns."""
        with self.client.locked() as idl:
            return fn(idl)

    def get(self, table: str, *, name: str | None = None, primary_id: str | None = None,
            uuid: str | None = None, columns: Iterable[str] = ()) -> RowSnapshot | None:
        match = Match.of(table, name=name, primary_id=primary_id, uuid=uuid)
        cols = tuple(columns)

        def read(idl: ovs_idl.Idl) -> RowSnapshot | None:
            row = find_one(idl, match)
            return snapshot(table, row, cols) if row is not None else None

        return self.read(read)

    def owned(self, owner: ids.OwnerType, *, columns: Iterable[str] = ()) -> list[RowSnapshot]:
        """Every row of ``owner``'s table with our controller and ``owner``'s type."""
        cols = tuple(columns)

        def read(idl: ovs_idl.Idl) -> list[RowSnapshot]:
            if owner.table not in idl.tables:
                return []
            rows = conn_mod.rows_by_owner(idl, owner.table, self.controller, owner.name)
            return [snapshot(owner.table, r, cols) for r in rows]

        return self.read(read)

    def owned_names(self, owner: ids.OwnerType) -> list[tuple[str, str]]:
        """(``k8s.ovn.org/name``, uuid) of every row of ``owner`` (nothing else is copied: cheap at
        10,000 rows, for repair to find the few stale ones and :meth:`get` those by uuid)."""

        def read(idl: ovs_idl.Idl) -> list[tuple[str, str]]:
            if owner.table not in idl.tables:
                return []
            return [(name, str(uuid)) for name, uuid in
                    indexes.owner_names(idl.tables[owner.table], self.controller, owner.name)]

        return self.read(read)

    def owned_values(self, owner: ids.OwnerType, columns: Iterable[str]) -> list[tuple[str, dict[str, Any]]]:
        """(``k8s.ovn.org/name``, {column: value}) of every row of ``owner``, read straight from the datums.

        Sets and scalars come as sorted lists, maps as dicts, references as uuid strings; no row is
        converted (a restart reads every pod port's addresses this way: 10,000 snapshots cost seconds).
        """
        cols = tuple(columns)

        def value(row: Any, column: str) -> Any:
            datum = indexes.column_datum(row, column)
            is_map = row._table.columns[column].type.is_map()
            if datum is None:
                return {} if is_map else []
            if is_map:
                return {_atom_value(k): _atom_value(v) for k, v in datum.values.items()}
            return sorted(_atom_value(atom) for atom in datum.values)

        def read(idl: ovs_idl.Idl) -> list[tuple[str, dict[str, Any]]]:
            if owner.table not in idl.tables:
                return []
            table = idl.tables[owner.table]
            found = []
            for name, uuid in indexes.owner_names(table, self.controller, owner.name):
                row = table.rows.get(uuid)
                if row is not None:
                    found.append((name, {column: value(row, column) for column in cols}))
            return found

        return self.read(read)

    def owned_by_name(self, owner: ids.OwnerType, name: str, *, columns: Iterable[str] = ()) -> list[RowSnapshot]:
        """Rows of ``owner`` whose ``k8s.ovn.org/name`` is ``name`` (e.g. every row of one node)."""
        cols = tuple(columns)

        def read(idl: ovs_idl.Idl) -> list[RowSnapshot]:
            if owner.table not in idl.tables:
                return []
            rows = conn_mod.rows_by_owner_name(idl, owner.table, self.controller, owner.name, name)
            return [snapshot(owner.table, r, cols) for r in rows]

        return self.read(read)

    def keyed(self, table: str, value: str, *, columns: Iterable[str] = ()) -> list[RowSnapshot]:
        """Rows of ``table`` whose key column (:data:`indexes.KEY_COLUMNS`: a Chassis_Template_Var's
        ``chassis``) is ``value``, whoever owns them (indexed)."""
        cols = tuple(columns)

        def read(idl: ovs_idl.Idl) -> list[RowSnapshot]:
            if table not in idl.tables:
                return []
            return [snapshot(table, r, cols) for r in indexes.by_key_column(idl.tables[table], value)]

        return self.read(read)

    def controller_rows(self, table: str, *, columns: Iterable[str] = ()) -> list[RowSnapshot]:
        """Every row of ``table`` carrying our controller, whatever its owner type."""
        cols = tuple(columns)

        def read(idl: ovs_idl.Idl) -> list[RowSnapshot]:
            if table not in idl.tables or "external_ids" not in idl.tables[table].columns:
                return []
            return [snapshot(table, r, cols) for r in conn_mod.rows_by_controller(idl, table, self.controller)]

        return self.read(read)

    def owner_types(self, table: str) -> set[str]:
        """The owner types (``""`` for none) of the rows of ``table`` carrying our controller."""

        def read(idl: ovs_idl.Idl) -> set[str]:
            if table not in idl.tables or "external_ids" not in idl.tables[table].columns:
                return set()
            return indexes.owner_types(idl.tables[table], self.controller)

        return self.read(read)

    def tables_with_external_ids(self) -> list[str]:
        return self.read(lambda idl: sorted(t for t, spec in idl.tables.items() if "external_ids" in spec.columns))
