"""OVSDB datums and atoms for the commands' plans: built once, compared cheaply (issue 22).

A plan compares what a command wants with the IDL's replica. Desired values without row
references become datums here, from the schema alone (no lock needed); under the lock only
lookups and comparisons remain. :func:`comparison_datum` skips ``Datum.from_python``'s checks
for plain strings, integers and booleans: equal to the checked datum whenever that exists, and a
value the checks would refuse just compares unequal, so the write builds the checked one (and
raises). Membership tests read the row's datum directly instead of converting the column.
"""

from __future__ import annotations

from typing import Any

from ovs.db import data as ovs_data
from ovs.db import error as ovs_error
from ovs.db import idl as ovs_idl
from ovs.db import types as ovs_types

from ovnk.core.ovn import ids


def checked_datum(column: Any, value: Any, *, table: str) -> ovs_data.Datum:
    """``value`` as a datum of ``column`` with every check of the schema (ValueError naming the column)."""
    if value is None:
        value = []
    try:
        return ovs_data.Datum.from_python(column.type, value, ovs_idl._row_to_uuid)
    except ovs_error.Error as exc:
        raise ValueError(f"invalid value for {table}.{column.name}: {value!r}: {exc}") from exc


def simple_python_type(atomic_type: Any) -> type | None:
    """The Python type whose values map to atoms of ``atomic_type`` one to one (``bool`` is not an ``int`` here)."""
    if atomic_type is ovs_types.StringType:
        return str
    if atomic_type is ovs_types.IntegerType:
        return int
    if atomic_type is ovs_types.BooleanType:
        return bool
    return None


def comparison_datum(column_type: Any, value: Any) -> ovs_data.Datum | None:
    """``value``'s datum built without ``Datum.from_python``'s checks, to compare with the IDL's.

    None when ``value`` is not a plain string, integer or boolean value (or a set or map of them)
    of the column's type. Equal to the checked datum whenever that one exists; a value the checks
    would refuse just compares unequal, and the write then builds the checked datum and raises.
    """
    key_type = column_type.key.type
    key_python = simple_python_type(key_type)
    if key_python is None:
        return None
    if column_type.is_map():
        value_type = column_type.value.type
        value_python = simple_python_type(value_type)
        if value_python is None or not isinstance(value, dict):
            return None
        pairs = {}
        for key, item in value.items():
            if type(key) is not key_python or type(item) is not value_python:
                return None
            pairs[ovs_data.Atom(key_type, key)] = ovs_data.Atom(value_type, item)
        return ovs_data.Datum(column_type, pairs)
    if value is None:
        items: Any = ()
    elif isinstance(value, (list, tuple, set, frozenset)):
        items = value
    else:
        items = (value,)
    keys: dict[ovs_data.Atom, None] = {}
    for key in items:
        if type(key) is not key_python:
            return None
        keys[ovs_data.Atom(key_type, key)] = None
    return ovs_data.Datum(column_type, keys)


def current_datum(row: Any, column_name: str) -> ovs_data.Datum | None:
    changes = row._changes or {}
    if column_name in changes:
        return changes[column_name]
    if row._data is None:
        return None
    datum = row._data.get(column_name)
    if datum is None and column_name in row._table.columns:
        # Updates leave out columns at their default value (an empty set or map), so the IDL has
        # no datum for them; comparing against None would plan a write that changes nothing.
        return ovs_data.Datum.default(row._table.columns[column_name].type)
    return datum


OWNER_KEY_ATOM = ovs_data.Atom(ovs_types.StringType, ids.OWNER_CONTROLLER_KEY)


def owner_controller(row: Any) -> str | None:
    """The row's ``k8s.ovn.org/owner-controller``, read from its datum (no conversion of the whole map)."""
    if "external_ids" not in row._table.columns:
        return None
    datum = current_datum(row, "external_ids")
    if datum is None:
        return None
    value = datum.values.get(OWNER_KEY_ATOM)
    return str(value.value) if value is not None else None


def key_atom(row: Any, column_name: str, value: Any) -> ovs_data.Atom | None:
    """``value`` as an atom of set/map column ``column_name``'s key type (None: it cannot be one)."""
    column = row._table.columns[column_name]
    key_type = column.type.key
    if key_type.type == ovs_types.UuidType and hasattr(value, "uuid") and hasattr(value, "_table"):
        return ovs_data.Atom(ovs_types.UuidType, value.uuid)  # a row: its uuid, nothing to check
    try:
        return ovs_data.Atom.from_python(key_type, ovs_idl._row_to_uuid(value))
    except ovs_error.Error:
        return None


def contains_atom(row: Any, column_name: str, atom: ovs_data.Atom | None) -> bool:
    datum = current_datum(row, column_name)
    return datum is not None and atom is not None and atom in datum.values


def contains(row: Any, column_name: str, value: Any) -> bool:
    """Whether set/map column ``column_name`` of ``row`` holds ``value`` (a key), in O(1).

    Reading ``row.<column>`` builds (and sorts) a Python list of every member:
    O(n) per check, which made port-group and switch membership O(n^2).
    """
    return contains_atom(row, column_name, key_atom(row, column_name, value))
