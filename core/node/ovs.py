"""The node's local Open_vSwitch database, through ovsdbapp (never ``ovs-vsctl`` per pod).

:class:`OvsFacade` wraps one :class:`~ovnk.core.ovn.connection.OvsdbClient`
on the ``Open_vSwitch`` schema. Writes are small ovsdbapp commands run in one
transaction each; reads copy what they need out of the IDL under the
connection lock and return plain values (:class:`InterfaceInfo`), never Row
objects.

Two kinds of transactions: ``wait_vswitchd=True`` behaves like ``ovs-vsctl``
(it returns once ovs-vswitchd applied the change, so a new internal port's
kernel device exists), ``False`` like ``ovs-vsctl --no-wait`` (a pod port: ADD
waits for ``ovn-installed`` anyway, which implies vswitchd has the port).

Waiting (:meth:`OvsFacade.wait_for`) reacts to IDL updates: a row listener on
the connection bumps a generation counter and wakes waiters, which re-check
their condition; nothing sleeps and polls the database.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from typing import TypeVar

from ovsdbapp.backend.ovs_idl import command as ovs_command
from ovsdbapp.backend.ovs_idl import transaction as ovs_transaction

from ovnk.core.node.changes import ChangeSignal
from ovnk.core.node.changes import WaitStopped
from ovnk.core.ovn.connection import OvsdbClient
from ovnk.core.ovn.connection import rows_by_name

logger = logging.getLogger(__name__)

T = TypeVar("T")

INTEGRATION_BRIDGE = "br-int"

#: What the agent monitors of the Open_vSwitch schema: enough for every facade method and for
#: ovsdbapp's vswitchd wait (``cur_cfg``/``next_cfg``); not the columns vswitchd rewrites every few
#: seconds per interface (``statistics``, ``status``...), which would cost CPU per pod.
MONITORED_COLUMNS: dict[str, tuple[str, ...]] = {
    "Open_vSwitch": ("bridges", "cur_cfg", "next_cfg", "external_ids", "other_config"),
    "Bridge": ("name", "ports", "datapath_type", "fail_mode", "other_config", "external_ids", "protocols"),
    "Port": ("name", "interfaces", "other_config", "external_ids", "tag"),
    "Interface": ("name", "type", "ofport", "external_ids", "other_config", "mac_in_use", "error", "mac",
                  "mtu_request", "options"),
}


class OvsError(Exception):
    """An Open_vSwitch transaction or wait failed; the message says which and why."""


class OvsTimeout(OvsError):
    """A wait ran out of time."""


class OvsAborted(OvsError):
    """A wait was aborted because its ``abort`` callback gave a reason."""


@dataclass(frozen=True)
class InterfaceInfo:
    """A copy of one Interface row (and the Port and Bridge holding it)."""

    uuid: str
    name: str
    type: str
    ofport: int | None
    external_ids: Mapping[str, str]
    other_config: Mapping[str, str]
    mac_in_use: str
    error: str
    port: str | None
    bridge: str | None

    @property
    def iface_id(self) -> str:
        return self.external_ids.get("iface-id", "")

    @property
    def ovn_installed(self) -> bool:
        return self.external_ids.get("ovn-installed") == "true"


def _scalar(value: Any) -> Any:
    """An optional column ([] or [x] in the Python IDL) as a value or None."""
    if isinstance(value, list):
        return value[0] if value else None
    return value


def _row_info(row: Any, owners: Mapping[str, tuple[str, str]]) -> InterfaceInfo:
    port, bridge = owners.get(str(row.uuid), (None, None))
    ofport = _scalar(row.ofport)
    return InterfaceInfo(
        uuid=str(row.uuid), name=str(row.name), type=str(row.type), ofport=int(ofport) if ofport is not None else None,
        external_ids=dict(row.external_ids), other_config=dict(row.other_config),
        mac_in_use=str(_scalar(row.mac_in_use) or ""), error=str(_scalar(row.error) or ""),
        port=port, bridge=bridge,
    )


def _interface_owners(idl: Any) -> dict[str, tuple[str, str]]:
    """Interface uuid -> (port name, bridge name)."""
    owners: dict[str, tuple[str, str]] = {}
    for bridge in idl.tables["Bridge"].rows.values():
        for port in bridge.ports:
            for iface in port.interfaces:
                owners[str(iface.uuid)] = (str(port.name), str(bridge.name))
    return owners


# ---------------------------------------------------------------------------
# Commands (run on the connection thread inside one IDL transaction)
# ---------------------------------------------------------------------------


class _UpdateMap(ovs_command.BaseCommand):  # type: ignore[misc]
    """Set and remove keys of a map column of one row, as mutations (no read-modify-write)."""

    def __init__(self, api: Any, *, table: str, name: str | None, column: str,
                 values: Mapping[str, str | None]) -> None:
        super().__init__(api)
        self.table, self.name, self.column, self.values = table, name, column, dict(values)

    def run_idl(self, txn: Any) -> None:
        rows = self.api.idl.tables[self.table].rows
        if self.name is None:
            row = next(iter(rows.values()))
        else:
            found = rows_by_name(self.api.idl, self.table, self.name)
            if not found:
                raise OvsError(f"{self.table} {self.name} does not exist")
            row = found[0]
        current = getattr(row, self.column)
        for key, value in self.values.items():
            if value is None:
                if key in current:
                    row.delkey(self.column, key)
            elif current.get(key) != value:
                row.setkey(self.column, key, value)


class _EnsureBridge(ovs_command.BaseCommand):  # type: ignore[misc]
    def __init__(self, api: Any, *, name: str, datapath_type: str, columns: Mapping[str, Any],
                 other_config: Mapping[str, str]) -> None:
        super().__init__(api)
        self.name, self.datapath_type, self.columns, self.other_config = name, datapath_type, columns, other_config

    def run_idl(self, txn: Any) -> None:
        idl = self.api.idl
        found = rows_by_name(idl, "Bridge", self.name)
        self.result = not found
        if not found:
            # A row inserted in this transaction has no readable columns and takes no
            # mutations: set every column we care about as a whole.
            iface = _insert(txn, idl, "Interface", self.name)
            iface.type = "internal"
            port = _insert(txn, idl, "Port", self.name)
            port.interfaces = [iface]
            bridge = _insert(txn, idl, "Bridge", self.name)
            bridge.ports = [port]
            bridge.datapath_type = self.datapath_type
            bridge.other_config = dict(self.other_config)
            for column, value in self.columns.items():
                setattr(bridge, column, value)
            ovs = next(iter(idl.tables["Open_vSwitch"].rows.values()))
            ovs.addvalue("bridges", bridge)
            return
        bridge = found[0]
        if bridge.datapath_type != self.datapath_type:
            bridge.datapath_type = self.datapath_type
        for column, value in self.columns.items():
            if getattr(bridge, column) != value:
                setattr(bridge, column, value)
        for key, value in self.other_config.items():
            if bridge.other_config.get(key) != value:
                bridge.setkey("other_config", key, value)


class _EnsurePort(ovs_command.BaseCommand):  # type: ignore[misc]
    """Add ``port`` (one interface of the same name) to ``bridge``, or update it in place.

    Interfaces of other ports whose ``external_ids:iface-id`` equals
    ``evict_iface_id`` are removed with their ports first (a stale sandbox of
    the same pod). An existing port of the same name on another bridge is moved.
    """

    def __init__(self, api: Any, *, bridge: str, port: str, iface_type: str, external_ids: Mapping[str, str],
                 other_config: Mapping[str, str], mac: str | None, mtu_request: int | None,
                 evict_iface_id: str | None, replace_external_ids: bool) -> None:
        super().__init__(api)
        self.bridge, self.port, self.iface_type = bridge, port, iface_type
        self.external_ids, self.other_config = dict(external_ids), dict(other_config)
        self.mac, self.mtu_request = mac, mtu_request
        self.evict_iface_id, self.replace_external_ids = evict_iface_id, replace_external_ids

    def run_idl(self, txn: Any) -> None:
        idl = self.api.idl
        bridges = rows_by_name(idl, "Bridge", self.bridge)
        if not bridges:
            raise OvsError(f"bridge {self.bridge} does not exist")
        bridge = bridges[0]
        evicted = []
        if self.evict_iface_id:
            # Find first, then delete: deleting a row removes it from the table being iterated,
            # and a deleted row's columns can no longer be read (so the names are taken first).
            stale = [other for other in idl.tables["Port"].rows.values() if other.name != self.port
                     and any(i.external_ids.get("iface-id") == self.evict_iface_id for i in other.interfaces)]
            for other in stale:
                evicted.append(str(other.name))
                _delete_port_row(idl, other)
        found = rows_by_name(idl, "Port", self.port)
        if found:
            port = found[0]
            iface = next((i for i in port.interfaces if i.name == self.port), None)
            holder = next((b for b in idl.tables["Bridge"].rows.values() if port in b.ports), None)
            if holder is not bridge:
                if holder is not None:
                    holder.delvalue("ports", port)
                bridge.addvalue("ports", port)
        else:
            port = _insert(txn, idl, "Port", self.port)
            bridge.addvalue("ports", port)
            iface = None
        if iface is None:
            iface = _insert(txn, idl, "Interface", self.port)
            iface.type = self.iface_type
            # Mutations cannot target a row inserted in the same transaction: set whole columns.
            iface.external_ids = self.external_ids
            iface.other_config = self.other_config
            if self.mac is not None:
                iface.mac = [self.mac]
            if self.mtu_request is not None:
                iface.mtu_request = [self.mtu_request]
            port.interfaces = [iface]
            self.result = evicted
            return
        if iface.type != self.iface_type:
            iface.type = self.iface_type
        if self.replace_external_ids:
            if dict(iface.external_ids) != self.external_ids:
                iface.external_ids = self.external_ids
        else:
            for key, value in self.external_ids.items():
                if iface.external_ids.get(key) != value:
                    iface.setkey("external_ids", key, value)
        for key, value in self.other_config.items():
            if iface.other_config.get(key) != value:
                iface.setkey("other_config", key, value)
        if self.mac is not None and _scalar(iface.mac) != self.mac:
            iface.mac = [self.mac]
        if self.mtu_request is not None and _scalar(iface.mtu_request) != self.mtu_request:
            iface.mtu_request = [self.mtu_request]
        self.result = evicted


def evicted_names(results: list[Any]) -> list[str]:
    """The port names an :class:`_EnsurePort` evicted, from its transaction's results."""
    names: list[str] = results[0] if results and results[0] else []
    return names


def _insert(txn: Any, idl: Any, table: str, name: str) -> Any:
    """A new row with ``name`` and empty ``external_ids`` set at once: the IDL's custom indexes
    read ``external_ids`` of every row, also when an aborted transaction drops a new one."""
    row = txn.insert(idl.tables[table])
    row.external_ids = {}
    row.name = name
    return row


def _delete_port_row(idl: Any, port: Any) -> None:
    for bridge in idl.tables["Bridge"].rows.values():
        if port in bridge.ports:
            bridge.delvalue("ports", port)
    port.delete()


class _DeletePorts(ovs_command.BaseCommand):  # type: ignore[misc]
    def __init__(self, api: Any, names: Iterable[str]) -> None:
        super().__init__(api)
        self.names = list(names)

    def run_idl(self, txn: Any) -> None:
        deleted = []
        for name in self.names:
            for port in rows_by_name(self.api.idl, "Port", name):
                _delete_port_row(self.api.idl, port)
                deleted.append(name)
        self.result = deleted


# ---------------------------------------------------------------------------
# The facade
# ---------------------------------------------------------------------------


class OvsFacade:
    """The node's Open_vSwitch database: what core and plugins may read and change.

    :param client: a started client on the ``Open_vSwitch`` schema.
    :param timeout: seconds one transaction may take.
    """

    def __init__(self, client: OvsdbClient, *, timeout: float = 30.0) -> None:
        self.client = client
        self.timeout = timeout
        self._changes = ChangeSignal()
        client.add_row_listener(self._on_row_change)

    # -- change notification -------------------------------------------------------

    def _on_row_change(self, event: str, row: Any, updates: Any) -> None:
        self.wake()

    def wake(self) -> None:
        """Make every :meth:`wait_for` re-check its condition (e.g. after a Kubernetes event)."""
        self._changes.bump()

    def wait_for(self, what: str, check: Callable[[], T | None], *, timeout: float,
                 abort: Callable[[], str | None] | None = None) -> T:
        """Return ``check()``'s first non-None value, re-checked on every database change.

        :raises OvsAborted: ``abort()`` returned a reason.
        :raises OvsTimeout: nothing within ``timeout`` seconds.
        """
        try:
            result = self._changes.wait_for(check, timeout=timeout, stop=abort)
        except WaitStopped as stopped:
            raise OvsAborted(f"stopped waiting for {what}: {stopped}") from None
        if result is None:
            raise OvsTimeout(f"timed out after {timeout:.1f}s waiting for {what}")
        return result

    # -- transactions --------------------------------------------------------------

    def _commit(self, commands: list[Any], *, what: str, wait_vswitchd: bool) -> list[Any]:
        api = self.client.api
        if wait_vswitchd:
            txn = api.create_transaction(check_error=True, log_errors=False)
            txn.timeout = self.timeout
        else:
            txn = ovs_transaction.Transaction(api, api.ovsdb_connection, timeout=self.timeout,
                                              check_error=True, log_errors=False)
        for cmd in commands:
            txn.add(cmd)
        try:
            result = txn.commit()
        except OvsError:
            raise
        except Exception as exc:
            # Some IDL errors carry no text (an AttributeError on a deleted row): name the type then.
            raise OvsError(f"{what}: {exc or type(exc).__name__}") from exc
        return list(result or [])

    # -- Open_vSwitch row ----------------------------------------------------------

    def external_ids(self) -> dict[str, str]:
        with self.client.locked() as idl:
            rows = list(idl.tables["Open_vSwitch"].rows.values())
            return dict(rows[0].external_ids) if rows else {}

    def set_external_ids(self, values: Mapping[str, str | None]) -> bool:
        """Set (``None``: remove) keys of ``Open_vSwitch . external_ids``; ``False`` when nothing changed."""
        current = self.external_ids()
        wanted = {k: v for k, v in values.items() if current.get(k) != v and not (v is None and k not in current)}
        if not wanted:
            return False
        self._commit([_UpdateMap(self.client.api, table="Open_vSwitch", name=None, column="external_ids",
                                 values=wanted)], what="set Open_vSwitch external_ids", wait_vswitchd=False)
        return True

    # -- bridges and ports ---------------------------------------------------------

    def bridges(self) -> list[str]:
        with self.client.locked() as idl:
            return sorted(str(b.name) for b in idl.tables["Bridge"].rows.values())

    def bridge_exists(self, name: str) -> bool:
        with self.client.locked() as idl:
            return bool(rows_by_name(idl, "Bridge", name))

    def bridge_ports(self, bridge: str) -> list[InterfaceInfo]:
        """Interfaces of every port of ``bridge`` (empty when it does not exist)."""
        return [i for i in self.interfaces() if i.bridge == bridge]

    def bridge_datapath_type(self, name: str) -> str | None:
        with self.client.locked() as idl:
            found = rows_by_name(idl, "Bridge", name)
            return str(found[0].datapath_type) if found else None

    def ensure_bridge(self, name: str, *, datapath_type: str, hwaddr: str | None = None,
                      fail_mode: str | None = None, external_ids: Mapping[str, str] | None = None) -> bool:
        """Create ``name`` (with its internal port) or fix its columns; waits for vswitchd; ``True`` if created."""
        columns: dict[str, Any] = {}
        if fail_mode is not None:
            columns["fail_mode"] = [fail_mode]
        if external_ids:
            with self.client.locked() as idl:
                found = rows_by_name(idl, "Bridge", name)
                merged = dict(found[0].external_ids) if found else {}
            merged.update(external_ids)
            columns["external_ids"] = merged
        other = {"hwaddr": hwaddr} if hwaddr else {}
        results = self._commit(
            [_EnsureBridge(self.client.api, name=name, datapath_type=datapath_type, columns=columns,
                           other_config=other)],
            what=f"ensure bridge {name}", wait_vswitchd=True)
        return bool(results and results[0])

    def ensure_port(
        self,
        bridge: str,
        port: str,
        *,
        iface_type: str = "",
        external_ids: Mapping[str, str] | None = None,
        other_config: Mapping[str, str] | None = None,
        mac: str | None = None,
        mtu_request: int | None = None,
        evict_iface_id: str | None = None,
        replace_external_ids: bool = False,
        wait_vswitchd: bool = True,
    ) -> list[str]:
        """Create or update ``port`` on ``bridge`` in one transaction; returns the names of evicted ports.

        :param evict_iface_id: first delete other ports whose interface has this ``iface-id``.
        :param replace_external_ids: make the interface's ``external_ids`` exactly ``external_ids``
            (otherwise only the given keys are set).
        :param wait_vswitchd: return only once ovs-vswitchd applied the change.
        """
        results = self._commit(
            [_EnsurePort(self.client.api, bridge=bridge, port=port, iface_type=iface_type,
                         external_ids=external_ids or {}, other_config=other_config or {}, mac=mac,
                         mtu_request=mtu_request, evict_iface_id=evict_iface_id,
                         replace_external_ids=replace_external_ids)],
            what=f"add port {port} to {bridge}", wait_vswitchd=wait_vswitchd)
        return evicted_names(results)

    def delete_ports(self, names: Iterable[str], *, wait_vswitchd: bool = False) -> list[str]:
        """Delete the ports called ``names`` where they exist; returns those deleted."""
        wanted = list(names)
        if not wanted:
            return []
        results = self._commit([_DeletePorts(self.client.api, wanted)], what=f"delete ports {', '.join(wanted)}",
                               wait_vswitchd=wait_vswitchd)
        deleted: list[str] = results[0] if results and results[0] else []
        return deleted

    def set_interface_external_ids(self, name: str, values: Mapping[str, str | None]) -> None:
        self._commit([_UpdateMap(self.client.api, table="Interface", name=name, column="external_ids",
                                 values=values)], what=f"set external_ids of interface {name}", wait_vswitchd=False)

    # -- interfaces ----------------------------------------------------------------

    def interface(self, name: str) -> InterfaceInfo | None:
        with self.client.locked() as idl:
            found = rows_by_name(idl, "Interface", name)
            if not found:
                return None
            return _row_info(found[0], _interface_owners(idl))

    def interfaces(self, where: Callable[[InterfaceInfo], bool] | None = None) -> list[InterfaceInfo]:
        with self.client.locked() as idl:
            owners = _interface_owners(idl)
            infos = [_row_info(row, owners) for row in idl.tables["Interface"].rows.values()]
        return [i for i in infos if where is None or where(i)]

    def interfaces_with_iface_id(self, iface_id: str) -> list[InterfaceInfo]:
        with self.client.locked() as idl:
            rows = [r for r in idl.tables["Interface"].rows.values() if r.external_ids.get("iface-id") == iface_id]
            if not rows:
                return []
            owners = _interface_owners(idl)
            return [_row_info(r, owners) for r in rows]
