"""ovsdbapp commands that converge rows to a desired state, writing only differences.

Every command here is idempotent and computes its changes against the IDL when
the transaction runs (on the ovsdbapp connection thread), so:

* running a reconcile twice writes nothing the second time: a command whose
  row already matches touches nothing, and a transaction where no command
  changes anything is never sent (``NbTxn`` even skips queuing it, see
  :meth:`Command.plan`);
* a transaction retried after ``TRY_AGAIN`` (e.g. a RAFT leader change after
  the server applied it but before we saw the reply) re-plans against the fresh
  IDL and cannot insert duplicates;
* large set and map columns (port-group ports, address-set addresses,
  external_ids) change through mutations, so only the difference goes on the
  wire and concurrent writers do not overwrite each other.

Rows are found by :class:`Match`: the indexed ``name`` column, the indexed
primary id (``external_ids:k8s.ovn.org/id``), the uuid, or column equality
among a parent's children. Rows inserted earlier in the same transaction are
found through the transaction's :class:`TxnScope`.
"""

from __future__ import annotations

import uuid as uuid_mod
from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from ovs.db import data as ovs_data
from ovs.db import error as ovs_error
from ovs.db import idl as ovs_idl
from ovsdbapp.backend.ovs_idl import command as ovsdbapp_command

from ovnk.core.ovn import connection as conn_mod
from ovnk.core.ovn.datums import checked_datum
from ovnk.core.ovn.datums import comparison_datum
from ovnk.core.ovn.datums import contains
from ovnk.core.ovn.datums import contains_atom
from ovnk.core.ovn.datums import current_datum
from ovnk.core.ovn.datums import key_atom
from ovnk.core.ovn.datums import owner_controller


class RowNotFoundError(RuntimeError):
    """A row a command depends on (a parent, a referenced row) does not exist."""


class ForeignRowError(RuntimeError):
    """A row with the name we want exists but is not owned by us; we never take over rows."""


@dataclass(frozen=True)
class Match:
    """How to find one row.

    Exactly one of ``name``, ``primary_id`` or ``uuid`` is normally given;
    ``where`` adds column equality conditions (used for rows without a name or
    id, among the children of a parent).
    """

    table: str
    name: str | None = None
    primary_id: str | None = None
    uuid: str | None = None
    where: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def of(cls, table: str, **kwargs: Any) -> Match:
        where = kwargs.pop("where", None)
        return cls(table=table, where=tuple(sorted((where or {}).items())), **kwargs)

    def describe(self) -> str:
        for attr in ("name", "primary_id", "uuid"):
            value = getattr(self, attr)
            if value is not None:
                return f"{self.table} {attr}={value}"
        return f"{self.table} where {dict(self.where)}"

    @property
    def scope_key(self) -> tuple[Any, ...]:
        return (self.table, self.name, self.primary_id, self.uuid, self.where)


@dataclass(frozen=True)
class Parent:
    """The row whose ``column`` must reference the child (e.g. a switch's ``ports``)."""

    match: Match
    column: str


@dataclass(frozen=True)
class Ref:
    """A reference to another row, resolved when the command runs."""

    match: Match


@dataclass
class TxnScope:
    """Rows inserted or deleted so far in one attempt of one transaction."""

    created: dict[tuple[Any, ...], Any] = field(default_factory=dict)
    deleted: set[uuid_mod.UUID] = field(default_factory=set)
    # table -> referenced row uuid -> [(referring table, column, referring row)]
    referrers: dict[str, dict[uuid_mod.UUID, list[tuple[Any, str, Any]]]] = field(default_factory=dict)

    def reset(self) -> None:
        self.created.clear()
        self.deleted.clear()
        self.referrers.clear()


# ---------------------------------------------------------------------------
# lookups (run under the connection lock or on the connection thread)


def _matches_where(row: Any, where: tuple[tuple[str, Any], ...]) -> bool:
    for column, value in where:
        current = _python(row, column)
        if isinstance(current, list) and not isinstance(value, list):
            current = current[0] if current else None
        if current != value:
            return False
    return True


def find_rows(idl: ovs_idl.Idl, match: Match, scope: TxnScope | None = None, *,
              candidates: Iterable[Any] | None = None) -> list[Any]:
    """Rows matching ``match`` (rows created in ``scope`` first; deleted ones excluded)."""
    if scope is not None:
        row = scope.created.get(match.scope_key)
        if row is not None:
            return [row]
    table = idl.tables[match.table]
    if match.uuid is not None:
        try:
            rows = [table.rows[uuid_mod.UUID(match.uuid)]]
        except KeyError:
            rows = []
    elif match.name is not None:
        rows = conn_mod.rows_by_name(idl, match.table, match.name)
        if not rows and match.primary_id is not None:
            # Our row under another name (e.g. renamed by someone): found by identity, renamed by the caller.
            rows = conn_mod.rows_by_id(idl, match.table, match.primary_id)
    elif match.primary_id is not None:
        rows = conn_mod.rows_by_id(idl, match.table, match.primary_id)
    elif candidates is not None:
        rows = list(candidates)
    else:
        rows = list(table.rows.values())
    if match.where:
        rows = [r for r in rows if _matches_where(r, match.where)]
    if scope is not None and scope.deleted:
        rows = [r for r in rows if r.uuid not in scope.deleted]
    return rows


def find_one(idl: ovs_idl.Idl, match: Match, scope: TxnScope | None = None, *,
             candidates: Iterable[Any] | None = None) -> Any | None:
    rows = find_rows(idl, match, scope, candidates=candidates)
    if len(rows) > 1:
        # Duplicates can only come from other writers; pick a stable one.
        rows.sort(key=lambda r: str(r.uuid))
    return rows[0] if rows else None


def _resolve(idl: ovs_idl.Idl, value: Any, scope: TxnScope) -> Any:
    """Turn ``Ref``/commands inside a column value into rows."""
    if isinstance(value, Ref):
        row = find_one(idl, value.match, scope)
        if row is None:
            raise RowNotFoundError(f"referenced row {value.match.describe()} does not exist")
        return row
    if isinstance(value, Command):
        if value.row is None:
            raise RowNotFoundError(f"command {value!r} has no row yet (add it to the transaction first)")
        return value.row
    if isinstance(value, dict):
        return {_resolve(idl, k, scope): _resolve(idl, v, scope) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_resolve(idl, v, scope) for v in value]
    return value


def _is_plain(value: Any) -> bool:
    """Whether ``value`` holds no ``Ref`` or command: its datum does not depend on the IDL's rows."""
    # Loops, not all() over generators: this runs for every column of every command of a resync.
    if value is None or isinstance(value, (str, int, float)):
        return True
    if isinstance(value, (Ref, Command)):
        return False
    if isinstance(value, dict):
        for key, item in value.items():
            if not (_is_plain(key) and _is_plain(item)):
                return False
        return True
    if isinstance(value, (list, tuple, set, frozenset)):
        for item in value:
            if not _is_plain(item):
                return False
    return True


def _python(row: Any, column_name: str) -> Any:
    """A column's python value; columns of rows inserted in this transaction may be unset."""
    try:
        return getattr(row, column_name)
    except AttributeError:
        column = row._table.columns[column_name]
        return {} if column.type.is_map() else []


# ---------------------------------------------------------------------------
# commands


class Command(ovsdbapp_command.BaseCommand):  # type: ignore[misc]
    """Base of our commands: ``plan`` answers "would this write?" without writing."""

    def __init__(self, api: Any, scope: TxnScope) -> None:
        super().__init__(api)
        self.scope = scope
        self.row: Any = None

    def prepare(self, idl: ovs_idl.Idl) -> None:
        """Compute, without the connection lock, what does not depend on the IDL's rows.

        Only the schema is read (fixed once connected), so any thread may call it; it is
        idempotent. ``plan`` and ``run_idl`` then run under the lock with less to do: a
        reconcile whose rows all match (every key of a restart's first pass) costs a
        few lookups and comparisons there, not the building of every desired value.
        """

    def plan(self, idl: ovs_idl.Idl) -> bool:
        """True if running this command now would change the database (read-only)."""
        raise NotImplementedError

    def run_idl(self, txn: ovs_idl.Transaction) -> None:
        raise NotImplementedError

    @property
    def idl(self) -> ovs_idl.Idl:
        return self.api.idl


class EnsureRow(Command):
    """Create the row if missing, else set the given columns where they differ.

    ``columns`` are complete desired values of those columns (other columns are
    left alone). When ``parent`` is given the row is also added to the parent's
    reference column. An existing row that is not owned by ``controller``
    (its ``k8s.ovn.org/owner-controller`` differs) is never modified. With
    ``create=False`` a missing row stays missing (repair converging a row that
    may have been deleted meanwhile).
    """

    def __init__(self, api: Any, scope: TxnScope, *, match: Match, columns: Mapping[str, Any],
                 parent: Parent | None = None, controller: str | None = None, create: bool = True) -> None:
        super().__init__(api, scope)
        self.match = match
        self.columns = dict(columns)
        self.parent = parent
        self.controller = controller
        self.create = create
        #: Whether the last run inserted the row (it did not exist): the caller's "new" signal.
        self.inserted = False
        # Column name -> (value, desired datum, whether that datum was checked) of columns without
        # references (see prepare).
        self._plain: dict[str, tuple[Any, ovs_data.Datum, bool]] | None = None

    def __repr__(self) -> str:
        return f"EnsureRow({self.match.describe()})"

    def prepare(self, idl: ovs_idl.Idl) -> None:
        if self._plain is not None:
            return
        columns = idl.tables[self.match.table].columns
        plain = {}
        for name, value in self.columns.items():
            if _is_plain(value):
                quick = comparison_datum(columns[name].type, value)
                if quick is not None:
                    plain[name] = (value, quick, False)
                else:
                    plain[name] = (value, checked_datum(columns[name], value, table=self.match.table), True)
        self._plain = plain

    def _find(self, idl: ovs_idl.Idl) -> Any | None:
        candidates = None
        if self.parent is not None and self.match.name is None and self.match.primary_id is None and self.match.uuid is None:
            parent_row = find_one(idl, self.parent.match, self.scope)
            candidates = _python(parent_row, self.parent.column) if parent_row is not None else []
        return find_one(idl, self.match, self.scope, candidates=candidates)

    def _check_owner(self, row: Any) -> None:
        if self.controller is None:
            return
        owner = owner_controller(row)
        if owner != self.controller:
            raise ForeignRowError(
                f"{self.match.describe()} exists but is owned by {owner or 'nobody'!r}, not {self.controller!r}; "
                "refusing to modify it"
            )

    def _column_changes(self, idl: ovs_idl.Idl, row: Any) -> list[tuple[str, Any, ovs_data.Datum]]:
        self.prepare(idl)
        assert self._plain is not None
        table = idl.tables[self.match.table]
        changes = []
        for name, value in self.columns.items():
            prepared = self._plain.get(name)
            if prepared is not None:
                resolved, desired, checked = prepared
                if not checked and current_datum(row, name) != desired:
                    # It will be written: the checked datum (an invalid value raises here, loudly).
                    desired = checked_datum(table.columns[name], resolved, table=self.match.table)
            else:
                resolved = _resolve(idl, value, self.scope)
                desired = checked_datum(table.columns[name], resolved, table=self.match.table)
            if current_datum(row, name) != desired:
                changes.append((name, resolved, desired))
        return changes

    def _parent_change(self, idl: ovs_idl.Idl, row: Any | None) -> Any | None:
        """The parent row if the child must still be added to it."""
        if self.parent is None:
            return None
        parent_row = find_one(idl, self.parent.match, self.scope)
        if parent_row is None:
            raise RowNotFoundError(f"parent {self.parent.match.describe()} of {self.match.describe()} does not exist")
        if row is None:
            return parent_row
        column = parent_row._table.columns[self.parent.column]
        if column.type.is_map():
            present = any(getattr(r, "uuid", None) == row.uuid for r in _python(parent_row, self.parent.column).values())
        else:
            present = contains(parent_row, self.parent.column, row)
        return None if present else parent_row

    def plan(self, idl: ovs_idl.Idl) -> bool:
        row = self._find(idl)
        if row is None:
            return self.create
        self._check_owner(row)
        try:
            if self._column_changes(idl, row):
                return True
            return self._parent_change(idl, row) is not None
        except RowNotFoundError:
            return True  # let the real run raise with the same message

    def run_idl(self, txn: ovs_idl.Transaction) -> None:
        idl = self.idl
        row = self._find(idl)
        table = idl.tables[self.match.table]
        if row is None and not self.create:
            self.result = None
            return
        self.inserted = row is None
        if row is None:
            row = txn.insert(table)
            for name, value in self.columns.items():
                resolved = _resolve(idl, value, self.scope)
                checked_datum(table.columns[name], resolved, table=self.match.table)  # validate loudly
                setattr(row, name, [] if resolved is None else resolved)
        else:
            self._check_owner(row)
            for name, resolved, desired in self._column_changes(idl, row):
                self._write(row, table.columns[name], resolved, desired)
        self.scope.created[self.match.scope_key] = row
        parent_row = self._parent_change(idl, row)
        if parent_row is not None:
            parent_row.addvalue(self.parent.column, row)  # type: ignore[union-attr]
        self.row = row
        self.result = row.uuid

    @staticmethod
    def _write(row: Any, column: Any, resolved: Any, desired: ovs_data.Datum) -> None:
        """Write one column: mutations for maps and sets of existing rows, plain set otherwise."""
        current = current_datum(row, column.name)
        col_type = column.type
        if current is None or (column.name in (row._changes or {})):
            setattr(row, column.name, [] if resolved is None else resolved)
            return
        if col_type.is_map():
            old = _python(row, column.name)
            new = dict(resolved or {})
            for key in old:
                if key not in new:
                    row.delkey(column.name, key)
            for key, value in new.items():
                if key not in old or old[key] != value:
                    row.setkey(column.name, key, value)
            return
        # A set that must never be empty (Logical_Router_Port.networks) is written whole: the
        # server checks the "delete" mutation's result on its own, before the "insert".
        if col_type.is_set() and col_type.n_max > 1 and col_type.n_min == 0:
            old_values = {_hashable(v) for v in _python(row, column.name)}
            new_list = list(resolved or [])
            new_values = {_hashable(v) for v in new_list}
            for value in _python(row, column.name):
                if _hashable(value) not in new_values:
                    row.delvalue(column.name, value)
            for value in new_list:
                if _hashable(value) not in old_values:
                    row.addvalue(column.name, value)
            return
        setattr(row, column.name, [] if resolved is None else resolved)


def _hashable(value: Any) -> Any:
    return value.uuid if hasattr(value, "uuid") and hasattr(value, "_table") else value


class RemoveRow(Command):
    """Delete the row if it exists: remove it from its parents and, for root tables, destroy it.

    Without ``parent``, every row referencing it (found through the schema's
    reference columns) drops the reference, so non-root rows are garbage
    collected by the server.
    """

    def __init__(self, api: Any, scope: TxnScope, *, match: Match, parent: Parent | None = None) -> None:
        super().__init__(api, scope)
        self.match = match
        self.parent = parent

    def __repr__(self) -> str:
        return f"RemoveRow({self.match.describe()})"

    def _find(self, idl: ovs_idl.Idl) -> Any | None:
        candidates = None
        if self.parent is not None and self.match.name is None and self.match.primary_id is None and self.match.uuid is None:
            parent_row = find_one(idl, self.parent.match, self.scope)
            if parent_row is None:
                return None
            candidates = _python(parent_row, self.parent.column)
        return find_one(idl, self.match, self.scope, candidates=candidates)

    def plan(self, idl: ovs_idl.Idl) -> bool:
        return self._find(idl) is not None

    def run_idl(self, txn: ovs_idl.Transaction) -> None:
        idl = self.idl
        row = self._find(idl)
        if row is None:
            return
        table = idl.tables[self.match.table]
        if self.parent is not None:
            parent_row = find_one(idl, self.parent.match, self.scope)
            if parent_row is not None:
                parent_row.delvalue(self.parent.column, row)
        else:
            for ref_table, ref_column, referrer in referrers(idl, self.match.table, row, self.scope):
                if ref_table.columns[ref_column].type.is_map():
                    current = getattr(referrer, ref_column)
                    for key, value in current.items():
                        if getattr(value, "uuid", None) == row.uuid:
                            referrer.delkey(ref_column, key)
                else:
                    referrer.delvalue(ref_column, row)
        if table.is_root:
            row.delete()
        self.scope.deleted.add(row.uuid)
        self.scope.created.pop(self.match.scope_key, None)
        self.result = row.uuid


def referrers(idl: ovs_idl.Idl, table_name: str, row: Any, scope: TxnScope | None = None) -> list[tuple[Any, str, Any]]:
    """(table, column, referring row) for every reference to ``row``.

    The reverse index of a table is built once per transaction attempt (one
    scan of the referring tables), so deleting many rows stays linear.
    """
    index = scope.referrers.get(table_name) if scope is not None else None
    if index is None:
        index = _build_referrer_index(idl, table_name)
        if scope is not None:
            scope.referrers[table_name] = index
    return [entry for entry in index.get(row.uuid, []) if entry[2].uuid not in (scope.deleted if scope else ())]


def _build_referrer_index(idl: ovs_idl.Idl, table_name: str) -> dict[uuid_mod.UUID, list[tuple[Any, str, Any]]]:
    index: dict[uuid_mod.UUID, list[tuple[Any, str, Any]]] = {}
    for table in idl.tables.values():
        for column in table.columns.values():
            ctype = column.type
            refers = ctype.key.ref_table_name == table_name or (
                ctype.value is not None and ctype.value.ref_table_name == table_name
            )
            if not refers:
                continue
            for candidate in table.rows.values():
                value = _python(candidate, column.name)
                if isinstance(value, dict):
                    targets = [v for v in value.values()] + [k for k in value]
                elif isinstance(value, list):
                    targets = value
                else:
                    targets = [value]
                for target in targets:
                    target_uuid = getattr(target, "uuid", None)
                    if target_uuid is not None:
                        index.setdefault(target_uuid, []).append((table, column.name, candidate))
    return index


class SetMembership(Command):
    """Add or remove values (or row references) in a set column of an existing row.

    A missing row is a no-op when removing. When adding it is an error (the
    caller must create it in the same transaction) unless ``missing_ok``: then
    the values go only into a row that exists, for a writer that is not the
    row's owner and adds early what the owner would add anyway.
    """

    def __init__(self, api: Any, scope: TxnScope, *, match: Match, column: str, add: Iterable[Any] = (),
                 remove: Iterable[Any] = (), missing_ok: bool = False) -> None:
        super().__init__(api, scope)
        self.match = match
        self.column = column
        self.add_values = list(add)
        self.remove_values = list(remove)
        self.missing_ok = missing_ok
        # Atoms of the plain (non-reference) values, by position in add_values/remove_values (see prepare).
        self._add_atoms: list[ovs_data.Atom | None] | None = None
        self._remove_atoms: list[ovs_data.Atom | None] | None = None

    def prepare(self, idl: ovs_idl.Idl) -> None:
        if self._add_atoms is not None:
            return
        key_type = idl.tables[self.match.table].columns[self.column].type.key

        def atom(value: Any) -> ovs_data.Atom | None:
            if not _is_plain(value):
                return None
            try:
                return ovs_data.Atom.from_python(key_type, value)
            except ovs_error.Error:
                return None

        self._remove_atoms = [atom(v) for v in self.remove_values]
        self._add_atoms = [atom(v) for v in self.add_values]

    def __repr__(self) -> str:
        return f"SetMembership({self.match.describe()}.{self.column} +{len(self.add_values)} -{len(self.remove_values)})"

    def _diff(self, idl: ovs_idl.Idl) -> tuple[Any, list[Any], list[Any]]:
        row = find_one(idl, self.match, self.scope)
        if row is None:
            if self.add_values and not self.missing_ok:
                raise RowNotFoundError(f"{self.match.describe()} does not exist")
            return None, [], []
        self.prepare(idl)
        assert self._add_atoms is not None and self._remove_atoms is not None
        to_add = []
        seen: set[Any] = set()
        for value, atom in zip(self.add_values, self._add_atoms, strict=True):
            if atom is not None:
                resolved = value
            else:
                resolved = _resolve(idl, value, self.scope)
                atom = key_atom(row, self.column, resolved)
            key = _hashable(resolved)
            if key not in seen and not contains_atom(row, self.column, atom):
                to_add.append(resolved)
            seen.add(key)
        to_remove = []
        for value, atom in zip(self.remove_values, self._remove_atoms, strict=True):
            if atom is None:
                try:
                    resolved = _resolve(idl, value, self.scope)
                except RowNotFoundError:
                    continue  # removing a reference to a row that is gone: nothing to do
                atom = key_atom(row, self.column, resolved)
            else:
                resolved = value
            if contains_atom(row, self.column, atom):
                to_remove.append(resolved)
        return row, to_add, to_remove

    def plan(self, idl: ovs_idl.Idl) -> bool:
        try:
            _row, to_add, to_remove = self._diff(idl)
        except RowNotFoundError:
            return True
        return bool(to_add or to_remove)

    def run_idl(self, txn: ovs_idl.Transaction) -> None:
        row, to_add, to_remove = self._diff(self.idl)
        for value in to_remove:
            row.delvalue(self.column, value)
        for value in to_add:
            row.addvalue(self.column, value)
        self.row = row
