"""Owners of node state, and the ledger that remembers what each one created.

Everything core's node facades create for someone (nftables tables, ip rules,
routes in other tables, ``Open_vSwitch`` keys and bridge mappings, bridges and
the OpenFlow on them, ports on bridges the owner does not own, annotations of the Node) belongs to a named **owner**: ``core`` or ``core.<part>`` for
core's own state, the plugin's name or ``<plugin>.<part>`` for a plugin's.
:class:`Owners` knows which owners this agent runs (core and the enabled
plugins); the facades refuse an owner outside them, because state under a
name nobody runs would be removed again at the next start.

The **ledger** records, per kind of state and owner, exactly what the owner
created, so that the agent can remove it when the owner is gone even though
no code of that owner runs any more. The node agent keeps it in the local
Open_vSwitch database (:class:`~ovnk.core.node.ovs.OvsFacade` implements
:class:`Ledger`): one key ``ovnk-owned-<kind>:<owner>`` in
``Open_vSwitch . external_ids`` per owner and kind, whose value is a JSON
list. It lives as long as the node's OVS configuration, survives agent
restarts, and ``ovs-vsctl get Open_vSwitch . external_ids`` shows it.
:class:`MemoryLedger` is the same in memory (a pod's namespace, tests).

At start, after the plugins are loaded and before ``ovnk_node_setup``, the
agent releases the state of every owner in the ledger that is no longer
enabled (:mod:`ovnk.core.node.cleanup`): switching a plugin off and restarting
the agent removes what it created on the node.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from collections.abc import Sequence
from typing import Any
from typing import Protocol

from ovnk.core.errors import OvnkError

CORE_OWNER = "core"
LEDGER_PREFIX = "ovnk-owned-"

# Kinds of state in the ledger.
NFT_TABLES = "nft"
IP_RULES = "ip-rules"
IP_ROUTES = "ip-routes"
OVS_KEYS = "ovs-keys"
BRIDGE_MAPPINGS = "bridge-mappings"
FLOWS = "flows"
ANNOTATIONS = "annotations"
BRIDGES = "bridges"
PORTS = "ports"
KINDS = (NFT_TABLES, IP_RULES, IP_ROUTES, OVS_KEYS, BRIDGE_MAPPINGS, FLOWS, ANNOTATIONS, BRIDGES, PORTS)

# Owner names end up in nftables table names and OVS keys: keep them plain.
_OWNER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


class OwnershipError(OvnkError):
    """An owner may not hold this state: not enabled here, or the state belongs to another owner."""


def owner_root(owner: str) -> str:
    """The plugin (or ``core``) an owner name belongs to: the part before the first dot."""
    return owner.split(".", 1)[0]


def is_core(owner: str) -> bool:
    return owner_root(owner) == CORE_OWNER


def ledger_key(kind: str, owner: str) -> str:
    """The ``Open_vSwitch . external_ids`` key of one ledger entry."""
    return f"{LEDGER_PREFIX}{kind}:{owner}"


def parse_ledger_key(key: str) -> tuple[str, str] | None:
    """(kind, owner) of a ledger key, ``None`` for any other key."""
    if not key.startswith(LEDGER_PREFIX):
        return None
    kind, sep, owner = key[len(LEDGER_PREFIX):].partition(":")
    return (kind, owner) if sep and kind and owner else None


class Owners:
    """The owners that may hold node state in this process: core and the enabled plugins.

    :param enabled: names of the enabled plugins; ``None`` allows any well-formed
        owner (tools and tests that run no plugin set).
    """

    def __init__(self, enabled: Iterable[str] | None = None) -> None:
        self.enabled: frozenset[str] | None = None if enabled is None else frozenset(enabled)

    def allows(self, owner: str) -> bool:
        """Whether ``owner``'s state is wanted here (core's always is)."""
        if not _OWNER_NAME.match(owner):
            return False
        return self.enabled is None or is_core(owner) or owner_root(owner) in self.enabled

    def check(self, owner: str) -> None:
        """:raises OwnershipError: ``owner`` is malformed or names no enabled plugin."""
        if not _OWNER_NAME.match(owner):
            raise OwnershipError(f"invalid owner name {owner!r}: letters, digits, '_', '.', '-', at most 63")
        if not self.allows(owner):
            enabled = ", ".join(sorted(self.enabled or ())) or "none"
            raise OwnershipError(f"owner {owner!r} is neither core nor an enabled plugin (enabled: {enabled}); "
                                 f"name state after your plugin, or '<plugin>.<part>'")


class Ledger(Protocol):
    """What the node facades need from a ledger (see the module docstring)."""

    owners: Owners

    def owned(self, kind: str) -> dict[str, list[Any]]:
        """Owner -> the items it created, for one kind of state."""
        ...

    def record(self, kind: str, owner: str, items: Sequence[Any]) -> None:
        """Replace ``owner``'s items of ``kind`` (JSON values; an empty list removes the entry)."""
        ...


class MemoryLedger:
    """A :class:`Ledger` in memory: for state that need not outlive the process (and tests)."""

    def __init__(self, owners: Owners | None = None) -> None:
        self.owners = owners or Owners()
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str], list[Any]] = {}

    def owned(self, kind: str) -> dict[str, list[Any]]:
        with self._lock:
            return {owner: list(items) for (k, owner), items in self._entries.items() if k == kind}

    def record(self, kind: str, owner: str, items: Sequence[Any]) -> None:
        with self._lock:
            if items:
                self._entries[(kind, owner)] = list(items)
            else:
                self._entries.pop((kind, owner), None)
