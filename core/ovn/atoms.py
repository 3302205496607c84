"""A quicker ``Atom.from_json`` for python-ovs: plain strings and uuids skip the general path.

The IDL turns every value of every row it receives into atoms through ``Atom.from_json``, which
for each one builds a tuple of number types, compares the type against four others, converts
floats and checks constraints. Nearly all of an NB database's atoms are strings without
constraints (names, addresses, matches, external_ids) and row uuids: at 10,000 pods the initial
dump of a restart holds a few hundred thousand of them, and that general path was the largest
part of loading it. :func:`install` puts a function in front that returns the same atom for
those two cases and hands everything else (constrained strings, enums, numbers, booleans,
named uuids, anything malformed) to the original, so results and errors do not change.

Short strings are interned: external_ids keys and values, option keys, chassis and namespace
names repeat in every row of a kind, and one copy each is kept instead of one per row (~2 MB
less RSS at 2,000 pods).
"""

from __future__ import annotations

import sys
import threading
import uuid
from typing import Any

from ovs import ovsuuid
from ovs.db import data as ovs_data
from ovs.db import types as ovs_types

#: Strings up to this length are interned (keys, owner types, names); longer ones (matches) rarely repeat.
INTERN_MAX_LENGTH = 64
_original: Any = None
_install_lock = threading.Lock()


def _from_json(base: Any, json: Any, symtab: Any = None) -> ovs_data.Atom:
    atomic_type = base.type
    if atomic_type is ovs_types.StringType:
        if type(json) is str and base.enum is None and base.min_length == 0 and base.max_length == sys.maxsize:
            return ovs_data.Atom(atomic_type, sys.intern(json) if len(json) <= INTERN_MAX_LENGTH else json)
    elif atomic_type is ovs_types.UuidType and type(json) is list and len(json) == 2 and json[0] == "uuid":
        text = json[1]
        if type(text) is str and ovsuuid.uuidRE.match(text):
            return ovs_data.Atom(atomic_type, uuid.UUID(text))
    return _original(base, json, symtab)


def install() -> bool:
    """Put the quick path in front of ``Atom.from_json`` (once per process); False if it already is."""
    global _original
    with _install_lock:
        if _original is not None:
            return False
        _original = ovs_data.Atom.from_json
        ovs_data.Atom.from_json = staticmethod(_from_json)
        return True
