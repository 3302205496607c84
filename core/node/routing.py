"""Policy routing by owner: ip rules and routes in other tables (``ctx.net.set_rules`` / ``set_routes``).

An owner declares the whole set it wants (:class:`IpRule`, :class:`TableRoute`)
and the facade converges the kernel to it through pyroute2: what is missing is
added, what the owner created before and no longer wants is deleted, and
nothing the owner did not create is ever touched. "Created" is what the
ownership ledger (:mod:`~ovnk.core.node.owners`) lists, so the set survives
agent restarts: after a restart with the same wishes nothing is written.

* A wanted rule that already exists without being the owner's (someone else
  made the same rule) counts as present and is not taken over: it is not
  deleted when the owner stops wanting it.
* A route is identified by (table, destination). A wanted route whose
  destination is taken in that table by a route that is not the owner's is
  a conflict (:class:`~ovnk.core.node.net.NetError`), never overwritten.

egressservice's rules would be ``IpRule(priority=5000, src=<endpoint>/32,
table=<network's table>)``; egressip's per-interface tables are
``TableRoute(dst=0.0.0.0/0, table=<n>, dev=<interface>, gateway=<gw>)``.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import socket
from collections.abc import Callable
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

FR_ACT_TO_TBL = 1
RT_TABLE_COMPAT = 252
RTN_UNICAST = 1
RT_SCOPE_LINK = 253
RT_SCOPE_NOWHERE = 255
ALL_BITS = 0xFFFFFFFF


class RouteConflict(Exception):
    """A wanted route cannot be written without touching what is not the owner's."""


def _network(value: Any) -> IPNetwork | None:
    if value is None:
        return None
    return ipaddress.ip_network(value, strict=False)


def _address(value: Any) -> IPAddress | None:
    if value is None:
        return None
    return ipaddress.ip_address(value)


@dataclass(frozen=True)
class IpRule:
    """One ip rule that looks up ``table`` (``ip rule add prio P [from S] [to D] [fwmark M/K] [iif I] [oif O] lookup T``).

    :param priority: the rule's preference; lower runs first.
    :param table: the routing table (254 is ``main``).
    :param src: source prefix (an address means /32 or /128).
    :param dst: destination prefix.
    :param fwmark: packet mark to match, with ``fwmask`` (default all bits).
    :param iif: incoming interface name.
    :param oif: outgoing interface name.
    :param ip_version: 4 or 6; taken from ``src``/``dst`` when they are given, else 4.
    """

    priority: int
    table: int
    src: IPNetwork | None = None
    dst: IPNetwork | None = None
    fwmark: int | None = None
    fwmask: int | None = None
    iif: str | None = None
    oif: str | None = None
    ip_version: int | None = None

    def __post_init__(self) -> None:
        src, dst = _network(self.src), _network(self.dst)
        object.__setattr__(self, "src", src)
        object.__setattr__(self, "dst", dst)
        versions: set[int] = {n.version for n in (src, dst) if n is not None}
        if self.ip_version is not None:
            versions.add(self.ip_version)
        if len(versions) > 1 or not versions <= {4, 6}:
            raise ValueError(f"rule {self}: mixes IP versions or names an unknown one")
        object.__setattr__(self, "ip_version", versions.pop() if versions else 4)
        if self.fwmark is not None and self.fwmask is None:
            object.__setattr__(self, "fwmask", ALL_BITS)
        if self.fwmask is not None and self.fwmark is None:
            raise ValueError(f"rule {self}: fwmask without fwmark")
        if not 0 <= self.priority < 2**32 or not 0 < self.table < 2**32:
            raise ValueError(f"rule {self}: priority or table out of range")

    @property
    def family(self) -> int:
        return socket.AF_INET6 if self.ip_version == 6 else socket.AF_INET

    def netlink(self) -> dict[str, Any]:
        """Keyword arguments of pyroute2's ``IPRoute.rule()``."""
        spec: dict[str, Any] = {"family": self.family, "priority": self.priority, "table": self.table,
                                "action": FR_ACT_TO_TBL}
        if self.src is not None:
            spec.update(src=str(self.src.network_address), src_len=self.src.prefixlen)
        if self.dst is not None:
            spec.update(dst=str(self.dst.network_address), dst_len=self.dst.prefixlen)
        if self.fwmark is not None:
            spec.update(fwmark=self.fwmark, fwmask=self.fwmask)
        if self.iif is not None:
            spec["iifname"] = self.iif
        if self.oif is not None:
            spec["oifname"] = self.oif
        return spec

    def to_json(self) -> dict[str, Any]:
        """The ledger's form of the rule (and :meth:`from_json`'s input)."""
        data: dict[str, Any] = {"priority": self.priority, "table": self.table, "ip_version": self.ip_version}
        for name in ("src", "dst"):
            value = getattr(self, name)
            if value is not None:
                data[name] = str(value)
        for name in ("fwmark", "fwmask", "iif", "oif"):
            if getattr(self, name) is not None:
                data[name] = getattr(self, name)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> IpRule:
        return cls(**data)

    def __str__(self) -> str:
        parts = [f"prio {self.priority}"]
        if self.src is not None:
            parts.append(f"from {self.src}")
        if self.dst is not None:
            parts.append(f"to {self.dst}")
        if self.fwmark is not None:
            parts.append(f"fwmark {self.fwmark:#x}/{self.fwmask or 0:#x}")
        if self.iif is not None:
            parts.append(f"iif {self.iif}")
        if self.oif is not None:
            parts.append(f"oif {self.oif}")
        return " ".join([*parts, f"lookup {self.table}"])


@dataclass(frozen=True)
class TableRoute:
    """A unicast route in routing table ``table``: to ``dst`` through ``dev`` and/or via ``gateway``."""

    dst: IPNetwork
    table: int
    dev: str | None = None
    gateway: IPAddress | None = None

    def __post_init__(self) -> None:
        dst = _network(self.dst)
        gateway = _address(self.gateway)
        assert dst is not None
        object.__setattr__(self, "dst", dst)
        object.__setattr__(self, "gateway", gateway)
        if self.dev is None and gateway is None:
            raise ValueError(f"route to {dst} in table {self.table}: give dev, gateway or both")
        if gateway is not None and gateway.version != dst.version:
            raise ValueError(f"route to {dst}: gateway {gateway} is another IP version")
        if not 0 < self.table < 2**32:
            raise ValueError(f"route to {dst}: table {self.table} out of range")

    @property
    def family(self) -> int:
        return socket.AF_INET6 if self.dst.version == 6 else socket.AF_INET

    @property
    def slot(self) -> tuple[int, str]:
        """What identifies the route in the kernel: (table, destination)."""
        return self.table, str(self.dst)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"dst": str(self.dst), "table": self.table}
        if self.dev is not None:
            data["dev"] = self.dev
        if self.gateway is not None:
            data["gateway"] = str(self.gateway)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TableRoute:
        return cls(**data)

    def __str__(self) -> str:
        via = f" via {self.gateway}" if self.gateway is not None else ""
        dev = f" dev {self.dev}" if self.dev is not None else ""
        return f"{self.dst}{via}{dev} table {self.table}"


def ledger_items(values: Iterable[IpRule | TableRoute]) -> list[dict[str, Any]]:
    """Ledger items of rules or routes: unique, in a stable order."""
    unique = {json.dumps(v.to_json(), sort_keys=True): v.to_json() for v in values}
    return [unique[k] for k in sorted(unique)]


# ---------------------------------------------------------------------------
# Kernel side (runs on the NetFacade's netlink thread)
# ---------------------------------------------------------------------------


def kernel_rules(ipr: IPRoute) -> set[IpRule]:
    """Every ``lookup <table>`` rule of both families, as :class:`IpRule` values."""
    found: set[IpRule] = set()
    for family, version in ((socket.AF_INET, 4), (socket.AF_INET6, 6)):
        for msg in ipr.get_rules(family=family):
            if msg["action"] != FR_ACT_TO_TBL:
                continue
            table = msg.get_attr("FRA_TABLE") or msg["table"]
            src, dst = msg.get_attr("FRA_SRC"), msg.get_attr("FRA_DST")
            fwmark = msg.get_attr("FRA_FWMARK")
            try:
                found.add(IpRule(
                    priority=int(msg.get_attr("FRA_PRIORITY") or 0), table=int(table),
                    src=ipaddress.ip_network(f"{src}/{msg['src_len']}") if src else None,
                    dst=ipaddress.ip_network(f"{dst}/{msg['dst_len']}") if dst else None,
                    fwmark=fwmark, fwmask=msg.get_attr("FRA_FWMASK") if fwmark is not None else None,
                    iif=msg.get_attr("FRA_IIFNAME"), oif=msg.get_attr("FRA_OIFNAME"), ip_version=version,
                ))
            except ValueError:
                continue  # nothing a plugin could have asked for (table 0, say)
    return found


def converge_rules(ipr: IPRoute, *, wanted: Iterable[IpRule], previous: Iterable[IpRule],
                   log: Callable[[str], None], added: list[IpRule]) -> list[IpRule]:
    """Add the missing ``wanted`` rules, delete the ``previous`` ones no longer wanted; returns the
    rules now owned (those of ``wanted`` that were ours or that this call added).

    Each rule added is appended to ``added`` at once, so a caller whose call fails half-way still
    knows what it created.
    """
    wanted_set, previous_set = set(wanted), set(previous)
    present = kernel_rules(ipr)
    owned: list[IpRule] = []
    for rule in sorted(wanted_set, key=str):
        if rule in present:
            if rule in previous_set:
                owned.append(rule)
            continue
        try:
            ipr.rule("add", **rule.netlink())
        except NetlinkError as exc:
            if exc.code != errno.EEXIST:
                raise
        added.append(rule)
        log(f"added ip rule {rule}")
        owned.append(rule)
    for rule in sorted(previous_set - wanted_set, key=str):
        if rule in present:
            try:
                ipr.rule("del", **rule.netlink())
            except NetlinkError as exc:
                if exc.code not in (errno.ENOENT, errno.ESRCH):
                    raise
                continue
            log(f"deleted ip rule {rule}")
    return owned


def _kernel_routes(ipr: IPRoute, *, tables: set[int], names: dict[int, str]) -> dict[tuple[int, str], TableRoute]:
    found: dict[tuple[int, str], TableRoute] = {}
    for family in (socket.AF_INET, socket.AF_INET6):
        for table in sorted(tables):
            for msg in ipr.get_routes(family=family, table=table):
                if msg["type"] != RTN_UNICAST or (msg.get_attr("RTA_TABLE") or msg["table"]) != table:
                    continue
                default = "0.0.0.0" if family == socket.AF_INET else "::"
                dst = ipaddress.ip_network(f"{msg.get_attr('RTA_DST') or default}/{msg['dst_len']}")
                oif = msg.get_attr("RTA_OIF")
                try:
                    route = TableRoute(dst=dst, table=table, dev=names.get(oif) if oif is not None else None,
                                       gateway=_address(msg.get_attr("RTA_GATEWAY")))
                except ValueError:
                    continue  # multipath or blackhole-like routes: not ours to model
                found[route.slot] = route
    return found


def converge_routes(ipr: IPRoute, *, wanted: Iterable[TableRoute], previous: Iterable[TableRoute],
                    log: Callable[[str], None], added: list[TableRoute]) -> list[TableRoute]:
    """Routes by (table, destination): add or replace the owner's, delete those it no longer wants.

    Conflicts are found before anything is written; each route written is appended to
    ``added`` at once (see :func:`converge_rules`).

    :returns: the routes now owned.
    :raises RouteConflict: a destination another route holds, or a missing interface.
    """
    wanted_by_slot = {r.slot: r for r in wanted}
    previous_by_slot = {r.slot: r for r in previous}
    names = {int(link["index"]): str(link.get_attr("IFLA_IFNAME")) for link in ipr.get_links()}
    indexes = {name: index for index, name in names.items()}
    tables = {r.table for r in wanted_by_slot.values()} | {r.table for r in previous_by_slot.values()}
    present = _kernel_routes(ipr, tables=tables, names=names)
    owned: list[TableRoute] = []
    writes: list[tuple[TableRoute, dict[str, Any]]] = []
    for slot, route in sorted(wanted_by_slot.items()):
        current = present.get(slot)
        if current == route:
            if slot in previous_by_slot:
                owned.append(route)
            continue
        if current is not None and slot not in previous_by_slot:
            raise RouteConflict(f"route to {route.dst} in table {route.table} exists and is not ours ({current})")
        spec: dict[str, Any] = {"family": route.family, "dst": str(route.dst), "table": route.table}
        if route.dev is not None:
            if route.dev not in indexes:
                raise RouteConflict(f"route {route}: interface {route.dev} does not exist")
            spec["oif"] = indexes[route.dev]
        if route.gateway is not None:
            spec["gateway"] = str(route.gateway)
        else:
            spec["scope"] = RT_SCOPE_LINK  # as `ip route add <dst> dev <dev>` does: on the link
        writes.append((route, spec))
    for route, spec in writes:
        ipr.route("replace", **spec)
        added.append(route)
        log(f"set route {route}")
        owned.append(route)
    for slot, route in sorted(previous_by_slot.items()):
        if slot in wanted_by_slot or slot not in present:
            continue
        try:
            # Scope "nowhere" matches a route of any scope, as `ip route del` does (the default,
            # universe, would miss a link-scope route).
            ipr.route("del", family=route.family, dst=str(route.dst), table=route.table, scope=RT_SCOPE_NOWHERE)
        except NetlinkError as exc:
            if exc.code not in (errno.ENOENT, errno.ESRCH):
                raise
            continue
        log(f"deleted route {route}")
    return owned
