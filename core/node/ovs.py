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
their condition; nothing sleeps and polls the database. The same listener
calls the callbacks given to :meth:`OvsFacade.subscribe` (node controllers
queue a key from there).

The facade is also the node's ownership ledger (:mod:`~ovnk.core.node.owners`):
ledger entries are keys ``ovnk-owned-<kind>:<owner>`` of ``Open_vSwitch .
external_ids``, and :meth:`OvsFacade.set_owned_keys` gives ``other_config`` and
``external_ids`` keys of the ``Open_vSwitch`` row to one owner each, checked
and written in the same transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from typing import Any
from typing import Literal
from typing import TypeVar

from ovsdbapp.backend.ovs_idl import command as ovs_command
from ovsdbapp.backend.ovs_idl import transaction as ovs_transaction

from ovnk.core.errors import OvnkError
from ovnk.core.node.changes import ChangeSignal
from ovnk.core.node.changes import WaitStopped
from ovnk.core.node.ovs_owned import SetBridgeMappings
from ovnk.core.node.ovs_owned import SetOwnedKeys
from ovnk.core.node.ovs_owned import decode_items
from ovnk.core.node.ovs_owned import encode_items
from ovnk.core.node.owners import BRIDGES
from ovnk.core.node.owners import PORTS
from ovnk.core.node.owners import Owners
from ovnk.core.node.owners import OwnershipError
from ovnk.core.node.owners import ledger_key
from ovnk.core.node.owners import parse_ledger_key
from ovnk.core.ovn.connection import OvsdbClient
from ovnk.core.ovn.connection import rows_by_name

logger = logging.getLogger(__name__)

T = TypeVar("T")

INTEGRATION_BRIDGE = "br-int"

#: What the agent monitors of the Open_vSwitch schema: enough for every facade method and for
#: ovsdbapp's vswitchd wait (``cur_cfg``/``next_cfg``); not the columns vswitchd rewrites every few
#: seconds per interface (``statistics``, ``status``...), which would cost CPU per pod.
MONITORED_COLUMNS: dict[str, tuple[str, ...]] = {
    "Open_vSwitch": ("bridges", "cur_cfg", "next_cfg", "external_ids", "other_config", "ovs_version",
                     "datapath_types"),
    "Bridge": ("name", "ports", "datapath_type", "fail_mode", "other_config", "external_ids", "protocols"),
    "Port": ("name", "interfaces", "other_config", "external_ids", "tag"),
    "Interface": ("name", "type", "ofport", "external_ids", "other_config", "mac_in_use", "error", "mac",
                  "mtu_request", "options"),
}


class OvsError(OvnkError):
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
    options: Mapping[str, str] = field(default_factory=dict)

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
        port=port, bridge=bridge, options=dict(row.options),
    )


def _interface_owners(idl: Any) -> dict[str, tuple[str, str]]:
    """Interface uuid -> (port name, bridge name), for every interface (a full scan: O(ports))."""
    owners: dict[str, tuple[str, str]] = {}
    for bridge in idl.tables["Bridge"].rows.values():
        for port in bridge.ports:
            for iface in port.interfaces:
                owners[str(iface.uuid)] = (str(port.name), str(bridge.name))
    return owners


def _owner_of(idl: Any, iface: Any) -> dict[str, tuple[str, str]]:
    """The same map for one interface, without scanning every port.

    The port is looked up by the interface's name (the indexed case: ``add-port`` names both
    alike), its bridge among the few bridges; only an interface whose port is named otherwise
    (a bond member) falls back to the full scan. Per-change callers (the CNI wait, the gateway's
    ofports) run on every OVS update, so a full scan there costs O(pods) per pod event.
    """
    uuid = iface.uuid
    for port in rows_by_name(idl, "Port", str(iface.name)):
        if any(i.uuid == uuid for i in port.interfaces):
            for bridge in idl.tables["Bridge"].rows.values():
                if any(p.uuid == port.uuid for p in bridge.ports):
                    return {str(uuid): (str(port.name), str(bridge.name))}
            return {}
    return _interface_owners(idl)


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
            # ovn-controller creates br-int itself when it starts first: verifying the bridge
            # list turns that race into TRY_AGAIN (and a re-run that finds its bridge) instead
            # of a name-index constraint violation, as ovs-vsctl add-br does.
            ovs.verify("bridges")
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
                 other_config: Mapping[str, str], options: Mapping[str, str], mac: str | None,
                 mtu_request: int | None, evict_iface_id: str | None, replace_external_ids: bool) -> None:
        super().__init__(api)
        self.bridge, self.port, self.iface_type = bridge, port, iface_type
        self.external_ids, self.other_config = dict(external_ids), dict(other_config)
        self.options = dict(options)
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
            if self.options:
                iface.options = self.options
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
        # Options are the interface's configuration (a patch port's peer, a tunnel's remote): exactly these.
        if self.options and dict(iface.options) != self.options:
            iface.options = self.options
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
    :param owners: the owners that may hold state (:meth:`set_owned_keys`, the
        other facades' ledger entries); default: any owner.
    """

    def __init__(self, client: OvsdbClient, *, timeout: float = 30.0, owners: Owners | None = None) -> None:
        self.client = client
        self.timeout = timeout
        self.owners = owners or Owners()
        self._changes = ChangeSignal()
        self._subscribers: list[Callable[[], None]] = []
        client.add_row_listener(self._on_row_change)

    # -- change notification -------------------------------------------------------

    def _on_row_change(self, event: str, row: Any, updates: Any) -> None:
        self.wake()
        for callback in self._subscribers:
            try:
                callback()
            except Exception:
                # Never let a subscriber break the IDL thread (a controller not running yet, say).
                logger.debug("OVS change subscriber %r failed", callback, exc_info=True)

    def subscribe(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` after every change of the monitored tables (bridges, ports, interfaces,
        the ``Open_vSwitch`` row), also those the agent makes itself.

        It runs on the OVSDB connection thread with the connection lock held, once per changed
        row: it must be cheap and must not block or read the database. Queue work instead:
        ``ctx.ovs.subscribe(lambda: ctx.enqueue("mycontroller", "br-ext"))``. An exception is
        logged at debug level and ignored.
        """
        self._subscribers.append(callback)

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
        except (OvsError, OwnershipError):
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

    def other_config(self) -> dict[str, str]:
        """``Open_vSwitch . other_config`` of the local database."""
        with self.client.locked() as idl:
            rows = list(idl.tables["Open_vSwitch"].rows.values())
            return dict(rows[0].other_config) if rows else {}

    def ovs_version(self) -> str:
        """``Open_vSwitch . ovs_version`` (what ovs-vswitchd reported at start; empty before)."""
        with self.client.locked() as idl:
            rows = list(idl.tables["Open_vSwitch"].rows.values())
            return str(_scalar(rows[0].ovs_version) or "") if rows else ""

    def datapath_types(self) -> list[str]:
        """``Open_vSwitch . datapath_types``: the datapaths this ovs-vswitchd can run (``system``, ``netdev``)."""
        with self.client.locked() as idl:
            rows = list(idl.tables["Open_vSwitch"].rows.values())
            return sorted(str(t) for t in rows[0].datapath_types) if rows else []

    def set_owned_keys(self, owner: str, column: Literal["other_config", "external_ids"],
                       values: Mapping[str, str | None]) -> bool:
        """Converge ``owner``'s keys of ``Open_vSwitch . <column>`` to ``values`` in one transaction.

        Keys in ``values`` are set (``None``: not wanted); keys of this column the owner
        set before and does not give now are removed; keys of other owners are left
        alone. A key that exists without an owner (set by hand, or by an older agent) is
        taken over. The ledger (``external_ids:ovnk-owned-ovs-keys:<owner>``) records
        the owner's keys, so switching the plugin off removes them at the next start.
        ``hwoffload`` would call ``ctx.ovs.set_owned_keys("hwoffload", "other_config",
        {"hw-offload": "true"})``.

        :returns: whether anything changed.
        :raises OwnershipError: another owner has one of the keys (the message names it),
            ``owner`` is not enabled here, or a key is a ledger key.
        """
        if column not in ("other_config", "external_ids"):
            raise ValueError(f"column must be other_config or external_ids, not {column!r}")
        self.owners.check(owner)
        results = self._commit([SetOwnedKeys(self.client.api, owner=owner, column=column, values=values)],
                               what=f"set {owner}'s Open_vSwitch {column} keys", wait_vswitchd=False)
        return bool(results and results[0])

    def release_owned_keys(self, owner: str) -> bool:
        """Remove every ``Open_vSwitch`` key ``owner`` holds (both columns) and its ledger entry.

        Core calls it at start for owners that are not enabled any more; no owner check.
        """
        results = self._commit([SetOwnedKeys(self.client.api, owner=owner, column=None, values={})],
                               what=f"release {owner}'s Open_vSwitch keys", wait_vswitchd=False)
        return bool(results and results[0])

    def set_bridge_mappings(self, owner: str, mappings: Mapping[str, str]) -> bool:
        """Converge ``owner``'s entries of ``external_ids:ovn-bridge-mappings`` (physical network -> bridge).

        The key is shared: core maps ``physnet`` to the gateway bridge, a plugin maps its own
        networks (secondary networks' localnet ``ctx.ovs.set_bridge_mappings("secondary_networks",
        {"blue": "br-blue"})``). Networks the owner mapped before and does not give now are removed;
        other owners' and unowned ones are kept. Recorded in the ledger, so switching the plugin off
        removes its mappings at the next start.

        :returns: whether anything changed.
        :raises OwnershipError: another owner maps one of the networks, or ``owner`` is not enabled.
        """
        self.owners.check(owner)
        results = self._commit([SetBridgeMappings(self.client.api, owner=owner, mappings=mappings)],
                               what=f"set {owner}'s bridge mappings", wait_vswitchd=False)
        return bool(results and results[0])

    def release_bridge_mappings(self, owner: str) -> bool:
        """Remove every bridge mapping ``owner`` holds (start-up clean-up; no owner check)."""
        results = self._commit([SetBridgeMappings(self.client.api, owner=owner, mappings=None)],
                               what=f"release {owner}'s bridge mappings", wait_vswitchd=False)
        return bool(results and results[0])

    # -- the ownership ledger (ovnk.core.node.owners.Ledger) ------------------------

    def owned(self, kind: str) -> dict[str, list[Any]]:
        """Owner -> items of one kind of state in the ledger."""
        ids = self.external_ids()
        found: dict[str, list[Any]] = {}
        for key in ids:
            parsed = parse_ledger_key(key)
            if parsed is not None and parsed[0] == kind:
                found[parsed[1]] = decode_items(ids, key)
        return found

    def record(self, kind: str, owner: str, items: Sequence[Any]) -> None:
        """Replace ``owner``'s ledger entry of ``kind`` (an empty list removes it); writes only on change."""
        key = ledger_key(kind, owner)
        value = encode_items(items) if items else None
        if self.external_ids().get(key) == value:
            return
        self._commit([_UpdateMap(self.client.api, table="Open_vSwitch", name=None, column="external_ids",
                                 values={key: value})], what=f"record {kind} of {owner}", wait_vswitchd=False)

    # -- bridges and ports ---------------------------------------------------------

    def bridges(self) -> list[str]:
        with self.client.locked() as idl:
            return sorted(str(b.name) for b in idl.tables["Bridge"].rows.values())

    def bridge_exists(self, name: str) -> bool:
        with self.client.locked() as idl:
            return bool(rows_by_name(idl, "Bridge", name))

    def bridge_ports(self, bridge: str) -> list[InterfaceInfo]:
        """Interfaces of every port of ``bridge`` (empty when it does not exist); reads that bridge only."""
        with self.client.locked() as idl:
            infos = []
            for row in rows_by_name(idl, "Bridge", bridge):
                for port in row.ports:
                    owner = (str(port.name), str(row.name))
                    infos += [_row_info(iface, {str(iface.uuid): owner}) for iface in port.interfaces]
            return infos

    def bridge_datapath_type(self, name: str) -> str | None:
        with self.client.locked() as idl:
            found = rows_by_name(idl, "Bridge", name)
            return str(found[0].datapath_type) if found else None

    def ensure_bridge(self, name: str, *, datapath_type: str, hwaddr: str | None = None,
                      fail_mode: str | None = None, external_ids: Mapping[str, str] | None = None,
                      owner: str | None = None) -> bool:
        """Create ``name`` (with its internal port) or fix its columns; waits for vswitchd; ``True`` if created.

        :param owner: a plugin's bridge (``br-ext`` of the hybrid overlay): recorded in the ledger,
            so the agent deletes it when the plugin is switched off. Core's bridges pass none.
        :raises OwnershipError: ``owner`` is not enabled here.
        """
        if owner is not None:
            self.owners.check(owner)
            owned = self.owned(BRIDGES).get(owner, [])
            if name not in owned:
                self.record(BRIDGES, owner, sorted({*owned, name}))
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

    def delete_bridge(self, name: str) -> bool:
        """Delete bridge ``name`` with its ports (no-op when it does not exist); ``True`` if it existed."""
        if not self.bridge_exists(name):
            return False
        self._commit([self.client.api.del_br(name, if_exists=True)], what=f"delete bridge {name}",
                     wait_vswitchd=True)
        return True

    def release_bridges(self, owner: str) -> list[str]:
        """Delete every bridge ``owner`` created and its ledger entry (start-up clean-up; no owner check)."""
        names = [str(n) for n in self.owned(BRIDGES).get(owner, [])]
        for name in names:
            self.delete_bridge(name)
        self.record(BRIDGES, owner, [])
        return names

    def ensure_port(
        self,
        bridge: str,
        port: str,
        *,
        iface_type: str = "",
        external_ids: Mapping[str, str] | None = None,
        other_config: Mapping[str, str] | None = None,
        options: Mapping[str, str] | None = None,
        mac: str | None = None,
        mtu_request: int | None = None,
        evict_iface_id: str | None = None,
        replace_external_ids: bool = False,
        wait_vswitchd: bool = True,
        owner: str | None = None,
    ) -> list[str]:
        """Create or update ``port`` on ``bridge`` in one transaction; returns the names of evicted ports.

        :param options: the interface's ``options``, exactly (a patch port's ``peer``, a tunnel's
            ``remote_ip``/``key``/``dst_port``); ``None`` leaves them alone.
        :param evict_iface_id: first delete other ports whose interface has this ``iface-id``.
        :param replace_external_ids: make the interface's ``external_ids`` exactly ``external_ids``
            (otherwise only the given keys are set).
        :param wait_vswitchd: return only once ovs-vswitchd applied the change.
        :param owner: a plugin's port on a bridge it does not own (the hybrid overlay's patch port
            ``int`` on ``br-int``): recorded in the ledger, so the agent deletes it when the plugin
            is switched off (ports on a plugin's own bridge go with the bridge). Core's ports pass none.
        :raises OwnershipError: ``owner`` is not enabled here.
        """
        if owner is not None:
            self.owners.check(owner)
            owned = self.owned(PORTS).get(owner, [])
            if port not in owned:
                self.record(PORTS, owner, sorted({*owned, port}))
        results = self._commit(
            [_EnsurePort(self.client.api, bridge=bridge, port=port, iface_type=iface_type,
                         external_ids=external_ids or {}, other_config=other_config or {}, options=options or {},
                         mac=mac, mtu_request=mtu_request, evict_iface_id=evict_iface_id,
                         replace_external_ids=replace_external_ids)],
            what=f"add port {port} to {bridge}", wait_vswitchd=wait_vswitchd)
        return evicted_names(results)

    def delete_owned_ports(self, owner: str, names: Iterable[str]) -> list[str]:
        """Delete ports ``owner`` created with :meth:`ensure_port` and drop them from its ledger entry.

        :returns: the ports deleted (those that existed).
        :raises OwnershipError: ``owner`` is not enabled here.
        """
        self.owners.check(owner)
        wanted = [str(n) for n in names]
        deleted = self.delete_ports(wanted, wait_vswitchd=True)
        owned = self.owned(PORTS).get(owner, [])
        self.record(PORTS, owner, sorted(p for p in owned if p not in wanted))
        return deleted

    def release_ports(self, owner: str) -> list[str]:
        """Delete every port ``owner`` recorded and its ledger entry (start-up clean-up; no owner check)."""
        names = [str(n) for n in self.owned(PORTS).get(owner, [])]
        deleted = self.delete_ports(names, wait_vswitchd=True) if names else []
        self.record(PORTS, owner, [])
        return deleted

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
            return _row_info(found[0], _owner_of(idl, found[0]))

    def interfaces(self, where: Callable[[InterfaceInfo], bool] | None = None) -> list[InterfaceInfo]:
        with self.client.locked() as idl:
            owners = _interface_owners(idl)
            infos = [_row_info(row, owners) for row in idl.tables["Interface"].rows.values()]
        return [i for i in infos if where is None or where(i)]

    def interfaces_with_iface_id(self, iface_id: str) -> list[InterfaceInfo]:
        with self.client.locked() as idl:
            rows = [r for r in idl.tables["Interface"].rows.values() if r.external_ids.get("iface-id") == iface_id]
            return [_row_info(r, _owner_of(idl, r)) for r in rows]
