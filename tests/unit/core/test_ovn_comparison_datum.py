"""The unchecked datum a plan compares with the IDL's equals the checked one (issue 22: resync cost)."""

from __future__ import annotations

from typing import Any

import pytest
from ovs.db import data as ovs_data
from ovs.db import error as ovs_error
from ovs.db import types as ovs_types

from ovnk.core.ovn.datums import comparison_datum

STRING_SET = {"key": "string", "min": 0, "max": "unlimited"}
STRING_MAP = {"key": "string", "value": "string", "min": 0, "max": "unlimited"}
OPTIONAL_STRING = {"key": "string", "min": 0, "max": 1}
INTEGER = {"key": {"type": "integer", "minInteger": 0, "maxInteger": 32767}}
BOOLEAN = {"key": "boolean"}
REFERENCES = {"key": {"type": "uuid", "refTable": "ACL"}, "min": 0, "max": "unlimited"}


def checked(type_json: Any, value: Any) -> ovs_data.Datum:
    column_type = ovs_types.Type.from_json(type_json)
    return ovs_data.Datum.from_python(column_type, [] if value is None else value, lambda v: v)


@pytest.mark.parametrize(("type_json", "value"), [
    (STRING_SET, ["0a:58:0a:f4:00:03 10.244.0.3"]),
    (STRING_SET, ["b", "a", "b"]),
    (STRING_SET, []),
    (STRING_MAP, {"requested-chassis": "n1", "iface-id-ver": "uid"}),
    (STRING_MAP, {}),
    (OPTIONAL_STRING, "name"),
    (OPTIONAL_STRING, None),
    ("string", "x"),
    (INTEGER, 1001),
    (BOOLEAN, True),
    (BOOLEAN, False),
])
def test_the_comparison_datum_equals_the_checked_datum(type_json: Any, value: Any) -> None:
    column_type = ovs_types.Type.from_json(type_json)
    quick = comparison_datum(column_type, value)
    assert quick is not None
    assert quick == checked(type_json, value)
    assert quick.to_python(lambda v, _base: v) == checked(type_json, value).to_python(lambda v, _base: v)


@pytest.mark.parametrize(("type_json", "value"), [
    (INTEGER, True),  # a bool is not an integer here (from_python's float_to_int rules apply)
    (INTEGER, 1.0),
    (BOOLEAN, 1),
    (STRING_MAP, {"k": 1}),
    (STRING_SET, [1]),
    (REFERENCES, []),  # uuid columns always take the checked path
])
def test_values_of_other_python_types_take_the_checked_path(type_json: Any, value: Any) -> None:
    assert comparison_datum(ovs_types.Type.from_json(type_json), value) is None


def test_a_value_the_checks_refuse_compares_unequal_to_every_valid_datum() -> None:
    # Out of range: the checked datum raises; the comparison datum only differs, so a write is planned
    # and that write builds the checked datum (and raises).
    quick = comparison_datum(ovs_types.Type.from_json(INTEGER), 40000)
    assert quick is not None and quick != checked(INTEGER, 32767)
    with pytest.raises(ovs_error.Error):
        checked(INTEGER, 40000)
