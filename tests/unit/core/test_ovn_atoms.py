"""The quick ``Atom.from_json`` returns what python-ovs' own returns, and raises where it raises."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from ovs.db import data as ovs_data
from ovs.db import error as ovs_error
from ovs.db import types as ovs_types

from ovnk.core.ovn import atoms

STRING = ovs_types.BaseType.from_json("string")
NAME = ovs_types.BaseType.from_json({"type": "string", "minLength": 1, "maxLength": 8})
ACTION = ovs_types.BaseType.from_json({"type": "string", "enum": ["set", ["allow", "drop"]]})
REFERENCE = ovs_types.BaseType.from_json({"type": "uuid", "refTable": "ACL"})
INTEGER = ovs_types.BaseType.from_json({"type": "integer", "minInteger": 0, "maxInteger": 10})
BOOLEAN = ovs_types.BaseType.from_json("boolean")
ROW = "6f1c3c6e-2b1a-4c9e-9d1e-5a3b2c1d0e0f"

CASES: list[tuple[Any, Any, Any]] = [
    (STRING, "10.244.0.3", None), (STRING, "", None), (STRING, "ns_p\u00e9", None),
    (NAME, "abc", None), (NAME, "", None), (NAME, "123456789", None),
    (ACTION, "allow", None), (ACTION, "reject", None),
    (REFERENCE, ["uuid", ROW], None), (REFERENCE, ["uuid", ROW.upper()], None),
    (REFERENCE, ["uuid", "not-a-uuid"], None), (REFERENCE, ["uuid", ROW.replace("-", "")], None),
    (REFERENCE, ["named-uuid", "row1"], {"row1": uuid.UUID(ROW)}), (REFERENCE, ["named-uuid", "row1"], None),
    (REFERENCE, ["uuid", ROW, "extra"], None), (REFERENCE, ROW, None),
    (STRING, 5, None), (STRING, ["uuid", ROW], None),
    (INTEGER, 3, None), (INTEGER, 3.0, None), (INTEGER, 11, None), (BOOLEAN, True, None), (BOOLEAN, "true", None),
]


def outcome(function: Any, base: Any, json: Any, symtab: Any) -> tuple[str, Any]:
    try:
        atom = function(base, json, symtab)
    except ovs_error.Error as exc:
        return "error", str(exc)
    return "atom", (atom.type, atom.value, type(atom.value))


@pytest.fixture(scope="module")
def original() -> Any:
    atoms.install()
    assert atoms._original is not None
    return atoms._original


@pytest.mark.parametrize(("base", "json", "symtab"), CASES)
def test_the_quick_path_gives_the_same_atom_or_error(original: Any, base: Any, json: Any, symtab: Any) -> None:
    assert outcome(ovs_data.Atom.from_json, base, json, symtab) == outcome(original, base, json, symtab)


def test_it_is_installed_once_and_used_by_datums(original: Any) -> None:
    assert atoms.install() is False
    assert ovs_data.Atom.from_json is atoms._from_json
    column = ovs_types.Type.from_json({"key": "string", "value": "string", "min": 0, "max": "unlimited"})
    datum = ovs_data.Datum.from_json(column, ["map", [["k8s.ovn.org/name", "ns/p"]]])
    assert datum.to_python(lambda value, _base: value) == {"k8s.ovn.org/name": "ns/p"}


def test_short_strings_are_shared_between_rows(original: Any) -> None:
    first = ovs_data.Atom.from_json(STRING, "".join(["k8s.ovn.org/", "owner-type"]))
    second = ovs_data.Atom.from_json(STRING, "".join(["k8s.ovn.org/", "owner-type"]))
    assert first.value is second.value
    long_text = "x" * (atoms.INTERN_MAX_LENGTH + 1)
    assert ovs_data.Atom.from_json(STRING, long_text).value == long_text
