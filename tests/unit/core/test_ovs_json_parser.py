"""python-ovs's JSON parser: the C extension is used where the system provides one (issue 22)."""

from __future__ import annotations

import json
from pathlib import Path

import ovs.json
import pytest

from ovnk.core.ovn import jsonparser

DEBIAN = Path("/usr/lib/python3/dist-packages/ovs")


def test_the_c_parser_is_in_use_where_the_system_has_one_and_parses_like_the_python_one() -> None:
    if not any(DEBIAN.glob("_json*.so")):
        pytest.skip("no system python3-openvswitch C parser on this machine")
    assert jsonparser.use_c_parser() == "C"
    assert ovs.json.PARSER == ovs.json.PARSER_C
    message = {"id": 3, "error": None, "result": {"ACL": {f"uuid-{i}": {"initial": {
        "match": f'ip4.src == 10.0.0.{i} && inport == "x\\u00e9"', "priority": i, "log": False,
        "external_ids": ["map", [["k8s.ovn.org/name", f"ns/p{i}"]]]}} for i in range(50)}}}
    text = json.dumps(message)
    parser = ovs.json.Parser()
    # Fed in pieces, as the JSON-RPC connection does: it reports what it consumed.
    consumed = 0
    for start in range(0, len(text), 97):
        consumed += parser.feed(text[start:start + 97])
    assert parser.is_done()
    assert parser.finish() == message
    assert ovs.json.from_string(text) == message


def test_without_a_usable_extension_the_python_parser_stays(tmp_path: Path) -> None:
    (tmp_path / "_json.cpython-311-x86_64-linux-gnu.so").write_bytes(b"not an ELF file")
    if ovs.json.PARSER == ovs.json.PARSER_C:
        assert jsonparser.use_c_parser((str(tmp_path),)) == "C"  # already switched: nothing to do
    else:
        assert jsonparser.use_c_parser((str(tmp_path),)) == "Python"
        assert ovs.json.PARSER == ovs.json.PARSER_PY
