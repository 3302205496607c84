"""IDL indexes that are cheap to maintain: keys computed straight from the row's datum.

The python IDL's stock index converts the indexed column of every row to a
Python value on every insert, update and delete (``getattr(row, column)``), and
keeps duplicate keys in a sorted list whose removal scans every equal key. With
tens of thousands of rows, most of them sharing a key (all rows without our
ownership keys), that made the initial sync ~1 ms per row and each update
O(n). Here:

* keys are read from the row's ``Datum`` without conversion;
* keys of the ownership indexes end with the row uuid, so every key is unique
  and removal is O(log n);
* rows inserted in a transaction before their indexed columns are set are
  tolerated (raw ovsdbapp commands insert rows without ``external_ids``).

Indexes: ``name`` (the stock name index ovsdbapp's own lookups also use),
``ovnk_id`` (primary id) and ``ovnk_owner`` (owner-controller, owner-type,
``k8s.ovn.org/name``), and on tables with another unique string column than
``name`` (:data:`KEY_COLUMNS`), that column.
"""

from __future__ import annotations

import uuid as uuid_mod
from collections.abc import Callable
from collections.abc import Iterable
from typing import Any

import sortedcontainers
from ovs.db import custom_index
from ovs.db import data as ovs_data
from ovs.db import types as ovs_types

from ovnk.core.ovn import ids

NAME_INDEX = "name"
#: Tables whose rows are told apart by a string column other than ``name`` (OVN's schema indexes it).
KEY_COLUMNS = {"Chassis_Template_Var": "chassis"}
ID_INDEX = "ovnk_id"
OWNER_INDEX = "ovnk_owner"

UUID_LO = uuid_mod.UUID(int=0)
UUID_HI = uuid_mod.UUID(int=(1 << 128) - 1)
MAX_TEXT = "\U0010ffff"

_ATOMS = {key: ovs_data.Atom(ovs_types.StringType, key) for key in (
    ids.PRIMARY_ID_KEY, ids.OWNER_CONTROLLER_KEY, ids.OWNER_TYPE_KEY, ids.OBJECT_NAME_KEY)}


class Entry:
    """What an index stores for one row: its uuid and key (hashable, comparable by value)."""

    __slots__ = ("_table", "key", "uuid")

    def __init__(self, table: Any, key: tuple[Any, ...], uuid: uuid_mod.UUID | None) -> None:
        self._table = table
        self.key = key
        self.uuid = uuid

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Entry) and self.key == other.key and self.uuid == other.uuid

    def __hash__(self) -> int:
        return hash((self.key, self.uuid))


def _datum(row: Any, column: str) -> ovs_data.Datum | None:
    changes = row._changes
    if changes and column in changes:
        return changes[column]
    data = row._data
    if data is None:
        return None
    return data.get(column)


def column_datum(row: Any, column: str) -> ovs_data.Datum | None:
    """The row's datum of ``column`` as this process sees it (its own uncommitted changes first); None
    when the IDL holds none (a column at its default value, or a row not filled in yet)."""
    return _datum(row, column)


def _map_value(datum: ovs_data.Datum | None, key: str) -> str:
    if datum is None:
        return ""
    atom = datum.values.get(_ATOMS[key])
    return str(atom.value) if atom is not None else ""


def _column_key(column: str) -> Callable[[Any], tuple[Any, ...] | None]:
    """The key of a scalar string column: ``(value,)``, ``("",)`` when empty, None when not read yet."""
    def key_of(row: Any) -> tuple[Any, ...] | None:
        datum = _datum(row, column)
        if datum is None:
            return None
        for atom in datum.values:
            return (atom.value,)
        return ("",)
    return key_of


name_key = _column_key("name")


def id_key(row: Any) -> tuple[Any, ...] | None:
    datum = _datum(row, "external_ids")
    if datum is None:
        return None
    return (_map_value(datum, ids.PRIMARY_ID_KEY), row.uuid)


def owner_key(row: Any) -> tuple[Any, ...] | None:
    datum = _datum(row, "external_ids")
    if datum is None:
        return None
    return (_map_value(datum, ids.OWNER_CONTROLLER_KEY), _map_value(datum, ids.OWNER_TYPE_KEY),
            _map_value(datum, ids.OBJECT_NAME_KEY), row.uuid)


def _entry_key(entry: Any) -> Any:
    if isinstance(entry, Entry):
        return entry.key
    # ovsdbapp's own lookups search the name index with the IDL's IndexEntry(name=...)
    return (entry.name,)


class KeyIndex(custom_index.MultiColumnIndex):  # type: ignore[misc]
    """A sorted index whose key is computed from the row's datum by ``key_of``."""

    def __init__(self, name: str, table: Any, key_of: Callable[[Any], tuple[Any, ...] | None], column: str) -> None:
        super().__init__(name)
        self.table = table
        self.key_of = key_of
        self.columns.append(custom_index.ColumnIndex(column, custom_index.OVSDB_INDEX_ASC, _entry_key))

    def clear(self) -> None:
        # Sorted by the key tuple itself (compared in C): the stock index sorts through
        # ``cmp_to_key`` of a Python comparison, a Python call per step of every bisection,
        # which made each lookup, insert and removal cost tens of microseconds.
        self.values = sortedcontainers.SortedKeyList(key=_entry_key)

    def index_entry_from_row(self, row: Any) -> Entry | None:
        key = self.key_of(row)
        return None if key is None else Entry(self.table, key, row.uuid)

    def add(self, row: Any) -> None:
        entry = self.index_entry_from_row(row)
        if entry is not None:
            self.values.add(entry)

    def remove(self, row: Any) -> None:
        entry = self.index_entry_from_row(row)
        if entry is None:
            return
        try:
            self.values.remove(entry)
        except ValueError:
            pass  # never added (inserted before its indexed columns were set)

    def range(self, lo: tuple[Any, ...], hi: tuple[Any, ...]) -> Iterable[Any]:
        """Rows whose key is within [lo, hi]."""
        rows = self.table.rows
        for entry in self.values.irange(Entry(self.table, lo, None), Entry(self.table, hi, None)):
            yield rows[entry.uuid]


def install(table: Any) -> None:
    """Create our indexes on one IDL table (before the first connect)."""
    columns = table.columns
    indexes = table.rows.indexes
    if "name" in columns and columns["name"].type.is_scalar():
        indexes[NAME_INDEX] = KeyIndex(NAME_INDEX, table, name_key, "name")
    if "external_ids" in columns:
        indexes[ID_INDEX] = KeyIndex(ID_INDEX, table, id_key, "external_ids")
        indexes[OWNER_INDEX] = KeyIndex(OWNER_INDEX, table, owner_key, "external_ids")
    key_column = KEY_COLUMNS.get(table.name)
    if key_column is not None and key_column in columns:
        indexes[key_column] = KeyIndex(key_column, table, _column_key(key_column), key_column)


def by_name(table: Any, name: str) -> list[Any]:
    index = table.rows.indexes.get(NAME_INDEX)
    if index is None:
        return [r for r in table.rows.values() if r.name == name]
    return list(index.range((name,), (name,)))


def by_key_column(table: Any, value: str) -> list[Any]:
    """Rows whose :data:`KEY_COLUMNS` column equals ``value``."""
    column = KEY_COLUMNS[table.name]
    index = table.rows.indexes.get(column)
    if index is None:
        return [r for r in table.rows.values() if getattr(r, column, None) == value]
    return list(index.range((value,), (value,)))


def by_id(table: Any, primary_id: str) -> list[Any]:
    return list(table.rows.indexes[ID_INDEX].range((primary_id, UUID_LO), (primary_id, UUID_HI)))


def by_owner(table: Any, controller: str, owner_type: str | None = None, name: str | None = None) -> list[Any]:
    """Rows of ``controller`` (optionally one owner type, optionally one ``k8s.ovn.org/name``)."""
    index = table.rows.indexes[OWNER_INDEX]
    if owner_type is None:
        return list(index.range((controller, "", "", UUID_LO), (controller, MAX_TEXT, MAX_TEXT, UUID_HI)))
    if name is None:
        return list(index.range((controller, owner_type, "", UUID_LO), (controller, owner_type, MAX_TEXT, UUID_HI)))
    return list(index.range((controller, owner_type, name, UUID_LO), (controller, owner_type, name, UUID_HI)))


def owner_types(table: Any, controller: str) -> set[str]:
    """The owner types of ``controller``'s rows in ``table``, read from the index keys alone (no row is
    converted: at 10,000 pods a new leader's repair checked every row of ours this way)."""
    index = table.rows.indexes[OWNER_INDEX]
    lo, hi = Entry(table, (controller, "", "", UUID_LO), None), Entry(table, (controller, MAX_TEXT, MAX_TEXT, UUID_HI), None)
    found: set[str] = set()
    values = index.values
    while True:
        entry = next(iter(values.irange(lo, hi)), None)
        if entry is None:
            return found
        owner_type = entry.key[1]
        found.add(owner_type)
        # Skip every other row of this owner type (keys sort by type, then name, then uuid).
        lo = Entry(table, (controller, owner_type, MAX_TEXT, UUID_HI), None)


def owner_names(table: Any, controller: str, owner_type: str) -> list[tuple[str, uuid_mod.UUID]]:
    """(``k8s.ovn.org/name``, row uuid) of every row of one owner type, from the index keys alone."""
    index = table.rows.indexes[OWNER_INDEX]
    lo = Entry(table, (controller, owner_type, "", UUID_LO), None)
    hi = Entry(table, (controller, owner_type, MAX_TEXT, UUID_HI), None)
    return [(entry.key[2], entry.uuid) for entry in index.values.irange(lo, hi)]
