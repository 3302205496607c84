"""The NB transaction manager against a real ovsdb-server."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ovnk.core.ovn.commands import ForeignRowError
from ovnk.core.ovn.commands import Match
from ovnk.core.ovn.commands import Parent
from ovnk.core.ovn.commands import Ref
from ovnk.core.ovn.commands import RowNotFoundError
from ovnk.core.ovn.reader import NbReader
from ovnk.core.ovn.txn import NotLeaderError
from ovnk.core.ovn.txn import TxnManager
from ovnk_lab.procs import wait_for
from tests.functional.ovn.conftest import CONTROLLER
from tests.functional.ovn.conftest import NODE_SWITCH
from tests.functional.ovn.conftest import POD_PORT
from tests.functional.ovn.conftest import TEST_ACL
from tests.functional.ovn.conftest import TEST_PG


def program(txns: TxnManager, *, pods: int, mac_suffix: str = "") -> str:
    """One reconcile: a switch, its ports, a port group with them and an ACL."""
    with txns.transaction(reason="test", owner="test") as txn:
        txn.ensure("Logical_Switch", name="node1", ids=NODE_SWITCH.ids(CONTROLLER, name="node1"),
                   columns={"other_config": {"subnet": "10.244.0.0/24", "exclude_ips": "10.244.0.2"}})
        for i in range(pods):
            txn.ensure(
                "Logical_Switch_Port", name=f"ns_pod{i}", ids=POD_PORT.ids(CONTROLLER, name=f"ns_pod{i}"),
                columns={"addresses": [f"0a:58:0a:f4:00:{i + 3:02x}{mac_suffix} 10.244.0.{i + 3}"],
                         "options": {"requested-chassis": "node1", "iface-id-ver": f"uid{i}"}},
                external_ids={"namespace": "ns", "pod": "true"},
                parent=Parent(Match.of("Logical_Switch", name="node1"), "ports"),
            )
        pg = TEST_PG.ids(CONTROLLER, name="ns")
        txn.ensure("Port_Group", name=pg.hashed_name, ids=pg)
        txn.add_to(Match.of("Port_Group", name=pg.hashed_name), "ports",
                   [Ref(Match.of("Logical_Switch_Port", name=f"ns_pod{i}")) for i in range(pods)])
        acl = TEST_ACL.ids(CONTROLLER, name="ns", rule_index=0)
        txn.ensure("ACL", ids=acl, columns={"priority": 1001, "direction": "to-lport", "action": "allow-related",
                                            "match": f"outport == @{pg.hashed_name}"},
                   parent=Parent(Match.of("Port_Group", name=pg.hashed_name), "acls"))
    return str(txn.outcome)


def nb_json(central: Any, table: str) -> list[dict[str, Any]]:
    out = central.nbctl("--format=json", "list", table)
    doc = json.loads(out)
    return [dict(zip(doc["headings"], row, strict=True)) for row in doc["data"]]


def test_txn_second_identical_reconcile_writes_nothing(ovn_central, txns) -> None:
    assert program(txns, pods=20) == "committed"
    # ovn-northd writes back to NB (NB_Global) after our commit; let it finish before measuring.
    ovn_central.wait_northd()
    mark = ovn_central.nb.mark()
    assert program(txns, pods=20) == "unchanged"
    assert ovn_central.nb.writes_since(mark) == [], "an unchanged reconcile must not write to the database"
    assert len(nb_json(ovn_central, "Logical_Switch_Port")) == 20
    assert len(nb_json(ovn_central, "ACL")) == 1
    # And the file reader sees a real write: one more pod is one transaction that adds a port.
    assert program(txns, pods=21) == "committed"
    written = ovn_central.nb.writes_since(mark)
    # ovn-northd may already have set the new port's `up` in its own transaction: not ours.
    ours = [record for record in written if record.get("_comment") != "ovn-northd"]
    assert len(ours) == 1 and "Logical_Switch_Port" in ours[0], written


def test_txn_drift_is_fixed_with_minimal_writes(ovn_central, txns, nb_client) -> None:
    program(txns, pods=5)
    ovn_central.nbctl("set", "Logical_Switch_Port", "ns_pod1", "options:requested-chassis=wrong",
                      "options:extra=1", "addresses=bogus")
    ovn_central.nbctl("remove", "Logical_Switch", "node1", "other_config", "exclude_ips")
    # Both drifts must reach our IDL copy before the repair: plans are made against it, and a
    # drift that arrives after the repair would make the final reconcile write again.
    reader = NbReader(nb_client, controller=CONTROLLER)

    def both_drifts_seen() -> bool:
        switch = reader.get("Logical_Switch", name="node1", columns=["other_config"])
        port = reader.get("Logical_Switch_Port", name="ns_pod1", columns=["addresses"])
        return (switch is not None and "exclude_ips" not in switch.columns["other_config"]
                and port is not None and list(port.columns["addresses"]) == ["bogus"])

    wait_for("both drifts in our IDL", both_drifts_seen, timeout=10)
    assert program(txns, pods=5) == "committed"
    port = next(p for p in nb_json(ovn_central, "Logical_Switch_Port") if p["name"] == "ns_pod1")
    assert port["options"] == ["map", [["iface-id-ver", "uid1"], ["requested-chassis", "node1"]]]
    assert port["addresses"] == "0a:58:0a:f4:00:04 10.244.0.4"
    assert program(txns, pods=5) == "unchanged"


def test_txn_error_midway_leaves_nb_unchanged(ovn_central, txns) -> None:
    program(txns, pods=3)
    ovn_central.wait_northd()
    before = ovn_central.nbctl("show")
    size = ovn_central.nb.mark()
    with pytest.raises(RuntimeError, match="boom"), txns.transaction(reason="test", owner="test") as txn:
        txn.ensure("Logical_Switch_Port", name="ns_new", ids=POD_PORT.ids(CONTROLLER, name="ns_new"),
                   parent=Parent(Match.of("Logical_Switch", name="node1"), "ports"))
        raise RuntimeError("boom")
    with pytest.raises(RowNotFoundError, match="parent Logical_Switch name=nope"), \
            txns.transaction(reason="test", owner="test") as txn:
        txn.ensure("Logical_Switch_Port", name="ns_other", ids=POD_PORT.ids(CONTROLLER, name="ns_other"))
        txn.ensure("Logical_Switch_Port", name="ns_orphan", ids=POD_PORT.ids(CONTROLLER, name="ns_orphan"),
                   parent=Parent(Match.of("Logical_Switch", name="nope"), "ports"))
    assert ovn_central.nbctl("show") == before
    assert ovn_central.nb.mark() == size


def test_txn_never_modifies_foreign_rows(ovn_central, txns, nb_client) -> None:
    ovn_central.nbctl("ls-add", "node1", "--", "set", "Logical_Switch", "node1", "external_ids:owner=someone-else")
    # Plans are made against our IDL copy, which learns of ovn-nbctl's write a moment later.
    reader = NbReader(nb_client, controller=CONTROLLER)
    wait_for("the foreign switch in our IDL", lambda: reader.get("Logical_Switch", name="node1") is not None,
             timeout=10)
    with pytest.raises(ForeignRowError, match="owned by 'nobody'"):
        program(txns, pods=1)
    assert nb_json(ovn_central, "Logical_Switch")[0]["external_ids"] == ["map", [["owner", "someone-else"]]]


def test_txn_remove_drops_references_and_is_idempotent(ovn_central, txns) -> None:
    program(txns, pods=4)
    with txns.transaction(reason="test", owner="test") as txn:
        txn.remove("Logical_Switch_Port", name="ns_pod2")
    assert txn.outcome == "committed"
    names = sorted(p["name"] for p in nb_json(ovn_central, "Logical_Switch_Port"))
    assert names == ["ns_pod0", "ns_pod1", "ns_pod3"]
    pg = nb_json(ovn_central, "Port_Group")[0]
    assert len(pg["ports"][1]) == 3
    with txns.transaction(reason="test", owner="test") as txn:
        txn.remove("Logical_Switch_Port", name="ns_pod2")
    assert txn.outcome == "unchanged"


def test_txn_large_sets_change_by_mutation(ovn_central, txns) -> None:
    aset = TEST_PG.ids(CONTROLLER, name="big")
    addresses = [f"10.1.{i // 250}.{i % 250}" for i in range(2000)]
    with txns.transaction(reason="test", owner="test") as txn:
        txn.ensure("Address_Set", name=aset.hashed_name, ids=aset, columns={"addresses": addresses})
    size = ovn_central.nb.mark()
    with txns.transaction(reason="test", owner="test") as txn:
        txn.ensure("Address_Set", name=aset.hashed_name, ids=aset, columns={"addresses": [*addresses[1:], "10.9.9.9"]})
    assert txn.outcome == "committed"
    # A mutation of two values is a small record, not the 2000-address set again.
    assert ovn_central.nb.mark() - size < 2000
    rows = nb_json(ovn_central, "Address_Set")
    assert len(rows[0]["addresses"][1]) == 2000
    assert "10.9.9.9" in rows[0]["addresses"][1] and "10.1.0.0" not in rows[0]["addresses"][1]


def test_txn_fence_stops_writes(txns) -> None:
    leader = {"value": True}
    txns.fence = lambda: leader["value"]
    program(txns, pods=1)
    leader["value"] = False
    with pytest.raises(NotLeaderError):
        program(txns, pods=2)
    # An unchanged reconcile needs no write, so it does not need leadership either.
    assert program(txns, pods=1) == "unchanged"


def test_reader_snapshots_owned_rows(txns, nb_client) -> None:
    program(txns, pods=3)
    reader = NbReader(nb_client, controller=CONTROLLER)
    ports = reader.owned(POD_PORT, columns=("addresses",))
    assert sorted(p.name for p in ports) == ["ns_pod0", "ns_pod1", "ns_pod2"]
    assert ports[0].owner_type == "Pod"
    switch = reader.get("Logical_Switch", name="node1", columns=("ports",))
    assert switch is not None and len(switch["ports"]) == 3
    assert reader.get("Logical_Switch", name="absent") is None


def test_txn_add_to_if_exists_skips_a_missing_row_and_fills_an_existing_one(ovn_central, txns) -> None:
    aset = TEST_PG.ids(CONTROLLER, name="early")
    match = Match.of("Address_Set", name=aset.hashed_name)
    with pytest.raises(RowNotFoundError, match="does not exist"), txns.transaction(reason="test", owner="test") as txn:
        txn.add_to(match, "addresses", ["10.2.0.1"])
    # An early writer that does not own the set: nothing to add to yet, and nothing fails.
    with txns.transaction(reason="test", owner="test") as txn:
        txn.add_to(match, "addresses", ["10.2.0.1"], if_exists=True)
    assert txn.outcome == "unchanged"
    assert nb_json(ovn_central, "Address_Set") == []
    with txns.transaction(reason="test", owner="test") as txn:
        txn.ensure("Address_Set", name=aset.hashed_name, ids=aset)
    with txns.transaction(reason="test", owner="test") as txn:
        txn.add_to(match, "addresses", ["10.2.0.1"], if_exists=True)
    assert txn.outcome == "committed"
    assert nb_json(ovn_central, "Address_Set")[0]["addresses"] == "10.2.0.1"
