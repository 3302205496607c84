"""Ownership of ``Open_vSwitch`` row keys: the ovsdbapp commands behind ``OvsFacade.set_owned_keys`` and
``OvsFacade.set_bridge_mappings``.

The ledger entry ``external_ids:ovnk-owned-ovs-keys:<owner>`` lists the
owner's keys as ``<column>:<key>``; ``ovnk-owned-bridge-mappings:<owner>``
lists the physical network names the owner maps in the shared key
``external_ids:ovn-bridge-mappings`` (see :mod:`ovnk.core.node.owners`). Each
command reads every owner's entry and changes the keys and the entry in the
same IDL transaction, so two owners can never both take one key or network.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

from ovsdbapp.backend.ovs_idl import command as ovs_command

from ovnk.core.node.owners import BRIDGE_MAPPINGS
from ovnk.core.node.owners import LEDGER_PREFIX
from ovnk.core.node.owners import OVS_KEYS
from ovnk.core.node.owners import OwnershipError
from ovnk.core.node.owners import ledger_key
from ovnk.core.node.owners import parse_ledger_key

logger = logging.getLogger(__name__)

MAPPINGS_KEY = "ovn-bridge-mappings"
# Keys of several owners at once: set through their own facade method, never as an owned key.
SHARED_KEYS = {f"external_ids:{MAPPINGS_KEY}": "set_bridge_mappings"}


def decode_items(external_ids: Mapping[str, str], key: str) -> list[Any]:
    try:
        items = json.loads(external_ids.get(key, "[]"))
    except ValueError:
        logger.warning("ignoring the unreadable ledger entry %s=%r", key, external_ids.get(key))
        return []
    return list(items) if isinstance(items, list) else []


def encode_items(items: Sequence[Any]) -> str:
    return json.dumps(list(items), sort_keys=True, separators=(",", ":"))


class SetOwnedKeys(ovs_command.BaseCommand):  # type: ignore[misc]
    """Converge ``owner``'s keys of one map column of the Open_vSwitch row, with its ledger entry.

    Runs on the connection thread against the current IDL, so the check of other
    owners' entries and the write are one atomic step. ``column=None`` releases
    every key of the owner (both columns). ``result``: whether anything changed.
    """

    def __init__(self, api: Any, *, owner: str, column: str | None, values: Mapping[str, str | None]) -> None:
        super().__init__(api)
        self.owner, self.column, self.values = owner, column, dict(values)

    def run_idl(self, txn: Any) -> None:
        row = next(iter(self.api.idl.tables["Open_vSwitch"].rows.values()))
        ids = dict(row.external_ids)
        mine_key = ledger_key(OVS_KEYS, self.owner)
        mine = {str(item) for item in decode_items(ids, mine_key)}
        taken: dict[str, str] = {}
        for key in ids:
            parsed = parse_ledger_key(key)
            if parsed is not None and parsed[0] == OVS_KEYS and parsed[1] != self.owner:
                for item in decode_items(ids, key):
                    taken[str(item)] = parsed[1]
        wanted: dict[str, str] = {}
        for key, value in self.values.items():
            if value is None:
                continue
            item = f"{self.column}:{key}"
            if self.column == "external_ids" and key.startswith(LEDGER_PREFIX):
                raise OwnershipError(f"Open_vSwitch external_ids:{key} is core's ownership ledger")
            if item in SHARED_KEYS:
                raise OwnershipError(f"Open_vSwitch {item} is shared; use OvsFacade.{SHARED_KEYS[item]}")
            if item in taken:
                raise OwnershipError(f"Open_vSwitch {item} belongs to {taken[item]!r}; "
                                     f"{self.owner!r} cannot set it")
            wanted[item] = value
        changed = False
        for item in sorted(mine):
            column, _, key = item.partition(":")
            if (self.column is None or column == self.column) and item not in wanted:
                if key in getattr(row, column):
                    row.delkey(column, key)
                    changed = True
        for item, value in wanted.items():
            column, _, key = item.partition(":")
            if getattr(row, column).get(key) != value:
                row.setkey(column, key, value)
                changed = True
        kept = {i for i in mine if self.column is not None and not i.startswith(f"{self.column}:")}
        items = sorted(kept | set(wanted))
        if items != sorted(mine):
            if items:
                row.setkey("external_ids", mine_key, encode_items(items))
            else:
                row.delkey("external_ids", mine_key)
            changed = True
        self.result = changed


def parse_bridge_mappings(text: str) -> dict[str, str]:
    """``ovn-bridge-mappings`` (``physnet:bridge,...``) as a dict, in order."""
    mappings: dict[str, str] = {}
    for item in text.split(","):
        network, sep, bridge = item.strip().partition(":")
        if sep and network:
            mappings[network] = bridge
    return mappings


class SetBridgeMappings(ovs_command.BaseCommand):  # type: ignore[misc]
    """Converge ``owner``'s physical networks in ``external_ids:ovn-bridge-mappings`` (``None``: release all).

    Networks of other owners and networks nobody owns are kept; a network another owner maps is
    refused; a network nobody owns that the owner asks for is taken over. ``result``: whether
    anything changed.
    """

    def __init__(self, api: Any, *, owner: str, mappings: Mapping[str, str] | None) -> None:
        super().__init__(api)
        self.owner, self.mappings = owner, dict(mappings or {})

    def run_idl(self, txn: Any) -> None:
        row = next(iter(self.api.idl.tables["Open_vSwitch"].rows.values()))
        ids = dict(row.external_ids)
        mine_key = ledger_key(BRIDGE_MAPPINGS, self.owner)
        mine = {str(item) for item in decode_items(ids, mine_key)}
        for key in ids:
            parsed = parse_ledger_key(key)
            if parsed is None or parsed[0] != BRIDGE_MAPPINGS or parsed[1] == self.owner:
                continue
            for network in decode_items(ids, key):
                if network in self.mappings:
                    raise OwnershipError(f"physical network {network!r} of {MAPPINGS_KEY} belongs to {parsed[1]!r}; "
                                         f"{self.owner!r} cannot map it")
        current = parse_bridge_mappings(ids.get(MAPPINGS_KEY, ""))
        wanted = {n: b for n, b in current.items() if n not in mine}
        wanted.update(self.mappings)
        value = ",".join(f"{network}:{bridge}" for network, bridge in sorted(wanted.items()))
        changed = False
        if wanted != current:
            if value:
                row.setkey("external_ids", MAPPINGS_KEY, value)
            else:
                row.delkey("external_ids", MAPPINGS_KEY)
            changed = True
        items = sorted(self.mappings)
        if items != sorted(mine):
            if items:
                row.setkey("external_ids", mine_key, encode_items(items))
            else:
                row.delkey("external_ids", mine_key)
            changed = True
        self.result = changed
