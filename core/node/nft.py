"""nftables, declaratively: one table per owner, replaced whole and atomically (``ctx.nft``).

A plugin describes the table it wants as an :class:`NftTable` (chains with
their rules, sets and maps with their elements) and calls
:meth:`NftFacade.set_table`. The owner's table is ``ovnk-<owner>`` in the
table's family (``inet`` unless it says otherwise). Applying it is one
``nft -j -f -`` batch that creates the table if needed, deletes it and adds
it again with everything in it: the kernel commits the batch atomically, so
packets see the old table or the new one, never a half-written one, and a
batch the kernel refuses changes nothing. No shell is involved; the batch is
JSON on ``nft``'s standard input.

Rules are nftables JSON expressions (the ``expr`` array of a rule in
``libnftables-json(5)``), so anything ``nft`` can express can be written,
and ``nft -j list table inet ovnk-<owner>`` shows the same vocabulary back::

    NftRule(expr=(
        {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                   "right": "@egress-service-pods-v4"}},
        {"counter": None},
        {"snat": {"family": "ip", "addr": "172.18.0.5"}},
    ))

Applying is a no-op when the kernel already holds exactly what was applied
last: the facade compares ``nft -j list table`` (without handles and counter
values) with the listing it read right after its last write of the same
desired table. Both fingerprints live in the ownership ledger
(:mod:`~ovnk.core.node.owners`), so an agent restart with unchanged tables
writes nothing, while a table someone changed by hand is rewritten at the
next call. Chain names follow upstream where a plugin mirrors it (chain
``egress-services`` in table ``ovnk-egressservice``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ovnk.core.errors import OvnkError
from ovnk.core.node.owners import NFT_TABLES
from ovnk.core.node.owners import Ledger
from ovnk.core.node.owners import MemoryLedger

logger = logging.getLogger(__name__)

TABLE_PREFIX = "ovnk-"
FAMILIES = ("inet", "ip", "ip6", "arp", "bridge", "netdev")
CHAIN_TYPES = ("filter", "nat", "route")
_SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


class NftError(OvnkError):
    """``nft`` refused a batch or could not run; the message has its error output."""


def _frozen(obj: object, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)


@dataclass(frozen=True)
class NftRule:
    """One rule: nftables JSON expressions (``libnftables-json(5)``, the ``expr`` array), and a comment."""

    expr: tuple[Mapping[str, Any], ...]
    comment: str = ""

    def __post_init__(self) -> None:
        _frozen(self, "expr", tuple(self.expr))
        if not self.expr:
            raise ValueError("a rule needs at least one expression")
        for item in self.expr:
            if not isinstance(item, Mapping) or len(item) != 1:
                raise ValueError(f"a rule expression is an object with one key (a statement), not {item!r}")


@dataclass(frozen=True)
class NftChain:
    """A chain and its rules, in order.

    A *base* chain (one the kernel calls) has ``type`` (``filter``, ``nat``,
    ``route``), ``hook`` (``prerouting``, ``input``, ``forward``, ``output``,
    ``postrouting``, ``ingress``) and ``priority`` (an integer: ``srcnat`` is
    100, ``dstnat`` -100, ``filter`` 0); ``policy`` is ``accept`` (default) or
    ``drop``. A chain without ``hook`` is a regular chain, reached by ``jump``
    or ``goto``.
    """

    name: str
    rules: tuple[NftRule, ...] = ()
    type: str | None = None
    hook: str | None = None
    priority: int = 0
    policy: str | None = None

    def __post_init__(self) -> None:
        _frozen(self, "rules", tuple(self.rules))
        if (self.type is None) != (self.hook is None):
            raise ValueError(f"chain {self.name}: a base chain needs both type and hook")
        if self.type is not None and self.type not in CHAIN_TYPES:
            raise ValueError(f"chain {self.name}: type must be one of {', '.join(CHAIN_TYPES)}")
        if self.policy not in (None, "accept", "drop"):
            raise ValueError(f"chain {self.name}: policy must be accept or drop")
        if self.policy is not None and self.hook is None:
            raise ValueError(f"chain {self.name}: only a base chain has a policy")


@dataclass(frozen=True)
class NftSet:
    """A named set: ``type`` is an nftables data type (``ipv4_addr``, ``ipv6_addr``, ``inet_service``,
    ``mark``...) or a tuple of them for concatenations; ``flags`` such as ``interval`` (prefixes)."""

    name: str
    type: str | tuple[str, ...]
    elements: tuple[Any, ...] = ()
    flags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _frozen(self, "elements", tuple(self.elements))
        _frozen(self, "flags", tuple(self.flags))
        if not isinstance(self.type, str):
            _frozen(self, "type", tuple(self.type))


@dataclass(frozen=True)
class NftMap:
    """A named map from ``type`` keys to ``map`` values (``elements`` are (key, value) pairs)."""

    name: str
    type: str | tuple[str, ...]
    map: str
    elements: tuple[tuple[Any, Any], ...] = ()
    flags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _frozen(self, "elements", tuple((k, v) for k, v in self.elements))
        _frozen(self, "flags", tuple(self.flags))
        if not isinstance(self.type, str):
            _frozen(self, "type", tuple(self.type))


@dataclass(frozen=True)
class NftTable:
    """Everything in one owner's table; its name comes from the owner (``ovnk-<owner>``)."""

    chains: tuple[NftChain, ...] = ()
    sets: tuple[NftSet, ...] = ()
    maps: tuple[NftMap, ...] = ()
    family: str = "inet"

    def __post_init__(self) -> None:
        for name in ("chains", "sets", "maps"):
            _frozen(self, name, tuple(getattr(self, name)))
        if self.family not in FAMILIES:
            raise ValueError(f"table family must be one of {', '.join(FAMILIES)}, not {self.family!r}")
        names = [c.name for c in self.chains]
        if len(set(names)) != len(names):
            raise ValueError(f"chain names repeat: {names}")
        named = [s.name for s in self.sets] + [m.name for m in self.maps]
        if len(set(named)) != len(named):
            raise ValueError(f"set and map names repeat: {named}")

    def commands(self, name: str) -> list[dict[str, Any]]:
        """The batch that replaces table ``name`` with this content (``nft -j`` commands)."""
        table = {"family": self.family, "name": name}
        ref = {"family": self.family, "table": name}
        cmds: list[dict[str, Any]] = [{"add": {"table": table}}, {"delete": {"table": table}},
                                      {"add": {"table": table}}]
        for nset in self.sets:
            body: dict[str, Any] = {**ref, "name": nset.name, "type": _type(nset.type)}
            if nset.flags:
                body["flags"] = list(nset.flags)
            if nset.elements:
                body["elem"] = list(nset.elements)
            cmds.append({"add": {"set": body}})
        for nmap in self.maps:
            body = {**ref, "name": nmap.name, "type": _type(nmap.type), "map": nmap.map}
            if nmap.flags:
                body["flags"] = list(nmap.flags)
            if nmap.elements:
                body["elem"] = [[k, v] for k, v in nmap.elements]
            cmds.append({"add": {"map": body}})
        for chain in self.chains:
            body = {**ref, "name": chain.name}
            if chain.hook is not None:
                body.update(type=chain.type, hook=chain.hook, prio=chain.priority, policy=chain.policy or "accept")
            cmds.append({"add": {"chain": body}})
        for chain in self.chains:
            for rule in chain.rules:
                body = {**ref, "chain": chain.name, "expr": [dict(e) for e in rule.expr]}
                if rule.comment:
                    body["comment"] = rule.comment
                cmds.append({"add": {"rule": body}})
        return cmds


def _type(value: str | tuple[str, ...]) -> str | list[str]:
    return value if isinstance(value, str) else list(value)


def _strip(value: Any) -> Any:
    """A listing without what changes by itself: handles and counter values."""
    if isinstance(value, dict):
        if set(value) == {"counter"} and isinstance(value["counter"], dict):
            return {"counter": None}
        return {k: _strip(v) for k, v in value.items() if k != "handle"}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:32]


@dataclass
class _Applied:
    family: str
    desired: str
    kernel: str

    def item(self) -> dict[str, Any]:
        return {"family": self.family, "desired": self.desired, "kernel": self.kernel}


class NftFacade:
    """nftables tables by owner (see the module docstring).

    :param ledger: where the tables and their fingerprints are recorded (the
        agent's Open_vSwitch ledger; default: in memory).
    :param netns: run ``nft`` in this network namespace (a path); default: the agent's.
    :param nft: the ``nft`` binary (default: found on ``PATH``, ``/usr/sbin``).
    :param timeout: seconds one ``nft`` run may take.
    """

    def __init__(self, *, ledger: Ledger | None = None, netns: str | None = None, nft: str | None = None,
                 timeout: float = 30.0) -> None:
        self.ledger: Ledger = ledger if ledger is not None else MemoryLedger()
        self.netns = netns
        self.nft = nft or shutil.which("nft", path=_SEARCH_PATH) or "nft"
        self.timeout = timeout
        self._lock = threading.Lock()

    def available(self) -> bool:
        """Whether the ``nft`` binary exists (a node without nftables has no tables of ours either)."""
        return shutil.which(self.nft, path=_SEARCH_PATH) is not None

    @staticmethod
    def table_name(owner: str) -> str:
        """The kernel name of ``owner``'s table: ``ovnk-<owner>``."""
        return f"{TABLE_PREFIX}{owner}"

    # -- nft -------------------------------------------------------------------------

    def _argv(self, *args: str) -> list[str]:
        argv = [self.nft, "-j", *args]
        if self.netns is not None:
            nsenter = shutil.which("nsenter", path=_SEARCH_PATH) or "nsenter"
            argv = [nsenter, f"--net={self.netns}", "--", *argv]
        return argv

    def _nft(self, *args: str, batch: list[dict[str, Any]] | None = None, what: str) -> str:
        argv = self._argv(*args)
        stdin = json.dumps({"nftables": [{"metainfo": {"json_schema_version": 1}}, *batch]}) if batch else None
        try:
            proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=self.timeout,
                                  check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise NftError(f"{what}: {exc}") from exc
        if proc.returncode != 0:
            raise NftError(f"{what}: {proc.stderr.strip() or proc.stdout.strip() or f'nft exited {proc.returncode}'}")
        return proc.stdout

    def _listing(self, family: str, name: str) -> list[Any] | None:
        """The table as ``nft -j list table`` shows it, stripped (:func:`_strip`); ``None`` if absent."""
        try:
            out = self._nft("list", "table", family, name, what=f"list table {family} {name}")
        except NftError as exc:
            if "No such file or directory" in str(exc):
                return None
            raise
        items = json.loads(out).get("nftables", [])
        stripped: list[Any] = _strip([i for i in items if "metainfo" not in i])
        return stripped

    def _kernel_tables(self) -> list[tuple[str, str]]:
        out = self._nft("list", "tables", what="list tables")
        return [(t["table"]["family"], t["table"]["name"]) for t in json.loads(out).get("nftables", [])
                if "table" in t]

    def _applied(self, owner: str) -> _Applied | None:
        items = self.ledger.owned(NFT_TABLES).get(owner) or []
        if not items or not isinstance(items[0], dict):
            return None
        entry = items[0]
        return _Applied(family=str(entry.get("family", "inet")), desired=str(entry.get("desired", "")),
                        kernel=str(entry.get("kernel", "")))

    def _delete(self, family: str, name: str) -> bool:
        if not any(f == family and n == name for f, n in self._kernel_tables()):
            return False
        table = {"family": family, "name": name}
        self._nft("-f", "-", batch=[{"add": {"table": table}}, {"delete": {"table": table}}],
                  what=f"delete table {family} {name}")
        return True

    # -- the API -----------------------------------------------------------------------

    def set_table(self, owner: str, table: NftTable) -> bool:
        """Make ``owner``'s table exactly ``table``, atomically; ``False`` when nothing had to change.

        :raises OwnershipError: ``owner`` is not core or an enabled plugin.
        :raises NftError: the kernel refused the table (nothing changed then).
        """
        self.ledger.owners.check(owner)
        name = self.table_name(owner)
        batch = table.commands(name)
        desired = _digest(batch)
        with self._lock:
            previous = self._applied(owner)
            listing = self._listing(table.family, name)
            if (previous is not None and listing is not None and previous.family == table.family
                    and previous.desired == desired and previous.kernel == _digest(listing)):
                return False
            if previous is not None and previous.family != table.family:
                self._delete(previous.family, name)
            self._nft("-f", "-", batch=batch, what=f"apply table {table.family} {name} of {owner}")
            after = self._listing(table.family, name)
            applied = _Applied(family=table.family, desired=desired, kernel=_digest(after))
            self.ledger.record(NFT_TABLES, owner, [applied.item()])
        logger.info("nftables: wrote table %s %s of %s (%d chains, %d sets, %d maps)", table.family, name, owner,
                    len(table.chains), len(table.sets), len(table.maps))
        return True

    def delete_table(self, owner: str) -> bool:
        """Remove ``owner``'s table; ``False`` when there was none."""
        self.ledger.owners.check(owner)
        return self.release(owner)

    def release(self, owner: str, *, family: str | None = None) -> bool:
        """Remove ``owner``'s table and its ledger entry without checking the owner (start-up clean-up of
        owners that are no longer enabled); ``False`` when there was no table.

        :param family: the table's family when the ledger does not know it (default: the ledger's, or inet).
        """
        name = self.table_name(owner)
        with self._lock:
            previous = self._applied(owner)
            families = {family or (previous.family if previous is not None else "inet")}
            if previous is not None:
                families.add(previous.family)
            deleted = False
            for each in sorted(families):
                deleted = self._delete(each, name) or deleted
            self.ledger.record(NFT_TABLES, owner, [])
        if deleted:
            logger.info("nftables: deleted table %s of %s", name, owner)
        return deleted

    def tables(self) -> dict[str, str]:
        """The tables of ours in the kernel: owner -> family (tables named ``ovnk-<owner>``)."""
        return {name[len(TABLE_PREFIX):]: family for family, name in self._kernel_tables()
                if name.startswith(TABLE_PREFIX)}

    def listing(self, owner: str) -> list[Any] | None:
        """``owner``'s table as the kernel lists it (JSON objects without handles and counter values)."""
        previous = self._applied(owner)
        family = previous.family if previous is not None else "inet"
        return self._listing(family, self.table_name(owner))
