"""Pure logic of node state by owner: owner names, the nft batch, rule and route values (no kernel)."""

from __future__ import annotations

import ipaddress

import pytest

from ovnk.core.node.nft import NftChain
from ovnk.core.node.nft import NftMap
from ovnk.core.node.nft import NftRule
from ovnk.core.node.nft import NftSet
from ovnk.core.node.nft import NftTable
from ovnk.core.node.nft import _strip
from ovnk.core.node.owners import MemoryLedger
from ovnk.core.node.owners import Owners
from ovnk.core.node.owners import OwnershipError
from ovnk.core.node.owners import ledger_key
from ovnk.core.node.owners import parse_ledger_key
from ovnk.core.node.routing import IpRule
from ovnk.core.node.routing import TableRoute


def test_owners_core_and_enabled_plugins_and_their_parts() -> None:
    owners = Owners(["egressip"])
    for allowed in ("core", "core.services", "egressip", "egressip.snat"):
        assert owners.allows(allowed)
        owners.check(allowed)
    for refused in ("multicast", "egressipx", "", "bad name", "x" * 64):
        assert not owners.allows(refused)
    with pytest.raises(OwnershipError, match="enabled: egressip"):
        owners.check("multicast")
    assert Owners().allows("anything.goes")
    assert parse_ledger_key(ledger_key("nft", "egressip.snat")) == ("nft", "egressip.snat")
    assert parse_ledger_key("system-id") is None


def test_memory_ledger_records_and_forgets() -> None:
    ledger = MemoryLedger()
    ledger.record("nft", "a", [{"family": "inet"}])
    ledger.record("ip-rules", "a", [1])
    assert ledger.owned("nft") == {"a": [{"family": "inet"}]}
    ledger.record("nft", "a", [])
    assert ledger.owned("nft") == {}
    assert ledger.owned("ip-rules") == {"a": [1]}


def test_nft_table_batch_replaces_the_table_whole() -> None:
    table = NftTable(
        chains=[NftChain("egress-services", type="nat", hook="postrouting", priority=100,
                         rules=[NftRule(expr=[{"accept": None}], comment="c")]),
                NftChain("plain")],
        sets=[NftSet("pods", type="ipv4_addr", elements=["10.0.0.1"])],
        maps=[NftMap("snat", type=("ipv4_addr", "inet_service"), map="ipv4_addr",
                     elements=[({"concat": ["10.0.0.1", 80]}, "1.2.3.4")])],
    )
    batch = table.commands("ovnk-x")
    assert batch[:3] == [{"add": {"table": {"family": "inet", "name": "ovnk-x"}}},
                         {"delete": {"table": {"family": "inet", "name": "ovnk-x"}}},
                         {"add": {"table": {"family": "inet", "name": "ovnk-x"}}}]
    ops = [next(iter(op["add"])) for op in batch[3:]]
    assert ops == ["set", "map", "chain", "chain", "rule"], "sets and maps before the rules that use them"
    chain = batch[5]["add"]["chain"]
    assert chain == {"family": "inet", "table": "ovnk-x", "name": "egress-services", "type": "nat",
                     "hook": "postrouting", "prio": 100, "policy": "accept"}
    assert batch[4]["add"]["map"]["type"] == ["ipv4_addr", "inet_service"]
    assert batch[-1]["add"]["rule"] == {"family": "inet", "table": "ovnk-x", "chain": "egress-services",
                                        "expr": [{"accept": None}], "comment": "c"}
    assert table == NftTable(chains=tuple(table.chains), sets=tuple(table.sets), maps=tuple(table.maps))


def test_nft_values_are_checked() -> None:
    with pytest.raises(ValueError, match="family"):
        NftTable(family="inet6")
    with pytest.raises(ValueError, match="repeat"):
        NftTable(chains=(NftChain("a"), NftChain("a")))
    with pytest.raises(ValueError, match="one key"):
        NftRule(expr=({"accept": None, "drop": None},))
    with pytest.raises(ValueError, match="only a base chain"):
        NftChain("a", policy="drop")


def test_listing_fingerprint_ignores_handles_and_counter_values() -> None:
    listed = [{"rule": {"handle": 7, "expr": [{"counter": {"packets": 9, "bytes": 900}}, {"accept": None}]}}]
    assert _strip(listed) == [{"rule": {"expr": [{"counter": None}, {"accept": None}]}}]


def test_ip_rule_values() -> None:
    rule = IpRule(priority=5000, src="10.1.0.5", table=100)  # type: ignore[arg-type]
    assert rule.src == ipaddress.ip_network("10.1.0.5/32") and rule.ip_version == 4
    assert str(rule) == "prio 5000 from 10.1.0.5/32 lookup 100"
    marked = IpRule(priority=5999, fwmark=0x3F0, table=254)
    assert marked.fwmask == 0xFFFFFFFF
    assert IpRule.from_json(marked.to_json()) == marked
    assert IpRule(priority=1, dst=ipaddress.ip_network("fd00::/64"), table=9).ip_version == 6
    with pytest.raises(ValueError, match="mixes"):
        IpRule(priority=1, src=ipaddress.ip_network("10.0.0.0/8"), dst=ipaddress.ip_network("fd00::/8"), table=9)
    with pytest.raises(ValueError, match="fwmask without fwmark"):
        IpRule(priority=1, fwmask=1, table=9)


def test_table_route_values() -> None:
    route = TableRoute(dst="0.0.0.0/0", table=100, gateway="10.0.0.1")  # type: ignore[arg-type]
    assert route.slot == (100, "0.0.0.0/0")
    assert TableRoute.from_json(route.to_json()) == route
    with pytest.raises(ValueError, match="give dev, gateway or both"):
        TableRoute(dst=ipaddress.ip_network("10.0.0.0/8"), table=100)
    with pytest.raises(ValueError, match="another IP version"):
        TableRoute(dst=ipaddress.ip_network("10.0.0.0/8"), table=100, gateway=ipaddress.ip_address("fd00::1"))
