"""What planning a transaction that changes nothing costs under the NB lock (issue 22: restart resync).

A restart's first pass plans every key and writes nothing: the workers and the IDL thread share one
connection lock, so what the plan does while holding it is the resync's critical path. Desired
values (datums, atoms) are built from the schema alone, outside the lock; under it only lookups
and comparisons remain. A command also says whether it inserted its row, so a reconcile need not
read NB separately (another lock hold) to learn that.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from ovs.db import data as ovs_data

from ovnk.core.ovn.commands import EnsureRow
from ovnk.core.ovn.commands import Match
from ovnk.core.ovn.commands import Parent
from ovnk.core.ovn.connection import OvsdbClient
from ovnk.core.ovn.ids import OBJECT_NAME_KEY
from ovnk.core.ovn.reader import NbReader
from ovnk.core.ovn.txn import UNCHANGED
from ovnk.core.ovn.txn import TxnManager
from tests.functional.ovn.conftest import CONTROLLER
from tests.functional.ovn.conftest import NODE_SWITCH
from tests.functional.ovn.conftest import POD_PORT
from tests.functional.ovn.test_txn import program

pytestmark = [pytest.mark.ovn]


class LockWatch:
    """Counts this thread's holds of the client's connection lock and the values built while holding it."""

    def __init__(self, client: OvsdbClient, monkeypatch: pytest.MonkeyPatch) -> None:
        self.holds = 0
        self.built_under_lock = 0
        self._held = threading.local()
        original_locked = client.locked
        watch = self

        @contextmanager
        def locked() -> Iterator[Any]:
            with original_locked() as idl:
                watch.holds += 1
                watch._held.value = True
                try:
                    yield idl
                finally:
                    watch._held.value = False

        monkeypatch.setattr(client, "locked", locked)
        for cls, name in ((ovs_data.Datum, "from_python"), (ovs_data.Atom, "from_python")):
            original = getattr(cls, name)

            def counted(*args: Any, _original: Any = original) -> Any:
                if getattr(watch._held, "value", False):
                    watch.built_under_lock += 1
                return _original(*args)

            monkeypatch.setattr(cls, name, staticmethod(counted))


def test_an_unchanged_transaction_is_planned_in_one_lock_hold_without_building_values_there(
        txns: TxnManager, nb_client: OvsdbClient, monkeypatch: pytest.MonkeyPatch) -> None:
    assert program(txns, pods=20) == "committed"
    watch = LockWatch(nb_client, monkeypatch)
    assert program(txns, pods=20) == UNCHANGED
    assert watch.holds == 1
    # 20 ports with three plain columns, a group membership of 20 references, a switch, an ACL:
    # their datums and atoms were ~180 conversions under the lock; a reference's atom is the uuid
    # of the row found (no conversion).
    assert watch.built_under_lock == 0


def test_ensure_says_whether_it_inserted_its_row(txns: TxnManager) -> None:
    def ensure_port(mac: str) -> tuple[EnsureRow, str]:
        with txns.transaction(reason="test", owner="test") as txn:
            txn.ensure("Logical_Switch", name="node1", ids=NODE_SWITCH.ids(CONTROLLER, name="node1"))
            port = txn.ensure("Logical_Switch_Port", name="ns_p", ids=POD_PORT.ids(CONTROLLER, name="ns_p"),
                              columns={"addresses": [f"{mac} 10.244.0.3"]},
                              parent=Parent(Match.of("Logical_Switch", name="node1"), "ports"))
        return port, str(txn.outcome)

    port, outcome = ensure_port("0a:58:0a:f4:00:03")
    assert (port.inserted, outcome) == (True, "committed")
    port, outcome = ensure_port("0a:58:0a:f4:00:03")
    assert (port.inserted, outcome) == (False, UNCHANGED)
    port, outcome = ensure_port("0a:58:0a:f4:00:04")
    assert (port.inserted, outcome) == (False, "committed")


def test_owned_values_read_from_datums_equal_the_row_snapshots(txns: TxnManager, nb_client: OvsdbClient) -> None:
    assert program(txns, pods=5) == "committed"
    reader = NbReader(nb_client, controller=CONTROLLER)
    columns = ("addresses", "options", "port_security")
    snapshots = {row.external_ids[OBJECT_NAME_KEY]: {c: row[c] for c in columns}
                 for row in reader.owned(POD_PORT, columns=columns)}
    values = dict(reader.owned_values(POD_PORT, columns))
    assert len(values) == 5
    assert values == snapshots
    assert values["ns_pod2"]["options"] == {"requested-chassis": "node1", "iface-id-ver": "uid2"}
    assert values["ns_pod2"]["port_security"] == []
