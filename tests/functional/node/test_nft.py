"""The nftables facade against the real kernel, in a network namespace of the test's own (no OVS needed).

Every check reads the kernel with ``nft`` itself, independent of the facade.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from ovnk.core.node.nft import NftChain
from ovnk.core.node.nft import NftError
from ovnk.core.node.nft import NftFacade
from ovnk.core.node.nft import NftMap
from ovnk.core.node.nft import NftRule
from ovnk.core.node.nft import NftSet
from ovnk.core.node.nft import NftTable
from ovnk.core.node.owners import MemoryLedger
from ovnk.core.node.owners import Owners
from ovnk.core.node.owners import OwnershipError
from ovnk.core.reconcile.spec import ReconcileRequest
from ovnk_lab import paths

pytestmark = pytest.mark.node

OWNER = "egsvc"


def saddr_in(set_name: str) -> dict[str, Any]:
    return {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": f"@{set_name}"}}


ICMP_ECHO_DROP = NftRule(expr=(
    {"match": {"op": "==", "left": {"payload": {"protocol": "icmp", "field": "type"}}, "right": "echo-request"}},
    {"counter": None},
    {"drop": None},
), comment="no ping")


def table(*, elements: tuple[str, ...] = ("10.244.1.5", "10.244.2.0/24"), drop_ping: bool = False) -> NftTable:
    snat_rule = NftRule(expr=(saddr_in("egress-service-pods-v4"), {"counter": None},
                              {"snat": {"family": "ip", "addr": "172.18.0.5"}}))
    output_rules = (ICMP_ECHO_DROP,) if drop_ping else ()
    return NftTable(
        chains=(
            NftChain("egress-services", rules=(snat_rule,), type="nat", hook="postrouting", priority=100),
            NftChain("output", rules=output_rules, type="filter", hook="output", priority=0),
            NftChain("helper", rules=(NftRule(expr=({"accept": None},)),)),
        ),
        sets=(NftSet("egress-service-pods-v4", type="ipv4_addr", flags=("interval",),
                     elements=tuple({"prefix": {"addr": e.split("/")[0], "len": int(e.split("/")[1])}}
                                    if "/" in e else e for e in elements)),),
        maps=(NftMap("snat-v4", type="ipv4_addr", map="ipv4_addr", elements=(("10.244.1.5", "172.18.0.5"),)),),
    )


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"ovnk-nft-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
    yield name
    subprocess.run(["ip", "netns", "delete", name], check=False)


def nft(netns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([paths.system_bin("nsenter"), f"--net=/run/netns/{netns}", "--",
                           paths.system_bin("nft"), *args], capture_output=True, text=True, check=check)


def kernel_table(netns: str, family: str = "inet", name: str = f"ovnk-{OWNER}") -> list[dict[str, Any]] | None:
    done = nft(netns, "-j", "list", "table", family, name, check=False)
    if done.returncode != 0:
        return None
    return [item for item in json.loads(done.stdout)["nftables"] if "metainfo" not in item]


def kinds(items: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [item[kind] for item in items if kind in item]


def ping(netns: str) -> bool:
    return subprocess.run([paths.system_bin("nsenter"), f"--net=/run/netns/{netns}", "--", paths.system_bin("ping"),
                           "-c", "1", "-W", "1", "127.0.0.1"], capture_output=True, check=False).returncode == 0


def test_nft_table_set_no_op_replace_and_delete(netns: str) -> None:
    facade = NftFacade(netns=f"/run/netns/{netns}", ledger=MemoryLedger(Owners([OWNER])))
    nft(netns, "add", "table", "inet", "foreign")
    nft(netns, "add", "chain", "inet", "foreign", "c", "{ type filter hook input priority 0; }")
    assert ping(netns)

    assert facade.set_table(OWNER, table(drop_ping=True)) is True
    items = kernel_table(netns)
    assert items is not None
    handle = kinds(items, "table")[0]["handle"]
    chains = {c["name"]: c for c in kinds(items, "chain")}
    assert set(chains) == {"egress-services", "output", "helper"}
    assert (chains["egress-services"]["type"], chains["egress-services"]["hook"],
            chains["egress-services"]["prio"]) == ("nat", "postrouting", 100)
    assert "hook" not in chains["helper"]
    assert kinds(items, "set")[0]["elem"] == ["10.244.1.5", {"prefix": {"addr": "10.244.2.0", "len": 24}}]
    assert kinds(items, "map")[0]["elem"] == [["10.244.1.5", "172.18.0.5"]]
    rules = {r["chain"]: r for r in kinds(items, "rule")}
    assert rules["egress-services"]["expr"][0]["match"]["right"] == "@egress-service-pods-v4"
    assert rules["output"]["comment"] == "no ping"
    assert not ping(netns), "the table is in force: the output chain drops the echo request"
    assert facade.tables() == {OWNER: "inet"}

    # The same table again: nothing written (the table keeps its handle, the counter its packets).
    assert facade.set_table(OWNER, table(drop_ping=True)) is False
    again = kernel_table(netns)
    assert again is not None and kinds(again, "table")[0]["handle"] == handle
    counted = kinds(again, "rule")
    assert next(r for r in counted if r["chain"] == "output")["expr"][1]["counter"]["packets"] >= 1

    # A new content replaces the old one whole.
    assert facade.set_table(OWNER, table(elements=("10.244.3.7",))) is True
    replaced = kernel_table(netns)
    assert replaced is not None
    assert kinds(replaced, "set")[0]["elem"] == ["10.244.3.7"]
    assert [r for r in kinds(replaced, "rule") if r["chain"] == "output"] == []
    assert ping(netns)

    # Someone changed our table by hand: the next call (same wishes) puts it back.
    nft(netns, "add", "rule", "inet", f"ovnk-{OWNER}", "helper", "counter", "drop")
    assert facade.set_table(OWNER, table(elements=("10.244.3.7",))) is True
    restored = kernel_table(netns)
    assert restored is not None and len([r for r in kinds(restored, "rule") if r["chain"] == "helper"]) == 1

    # The foreign table was never touched; deleting ours leaves it too.
    assert kernel_table(netns, name="foreign") is not None
    assert facade.delete_table(OWNER) is True
    assert kernel_table(netns) is None
    assert facade.delete_table(OWNER) is False
    assert kernel_table(netns, name="foreign") is not None
    assert facade.tables() == {}


def test_nft_refused_table_changes_nothing_and_owners_are_checked(netns: str) -> None:
    ledger = MemoryLedger(Owners([OWNER]))
    facade = NftFacade(netns=f"/run/netns/{netns}", ledger=ledger)
    facade.set_table(OWNER, table())
    before = kernel_table(netns)
    bad = NftTable(chains=(NftChain("c", rules=(NftRule(expr=({"jump": {"target": "no-such-chain"}},)),)),))
    with pytest.raises(NftError) as refused:
        facade.set_table(OWNER, bad)
    assert "no-such-chain" in str(refused.value) or "No such file" in str(refused.value)
    assert kernel_table(netns) == before, "the refused batch changed nothing (atomic)"

    with pytest.raises(OwnershipError, match="not-enabled"):
        facade.set_table("not-enabled", table())
    with pytest.raises(ValueError, match="base chain needs both"):
        NftChain("x", type="nat")

    # Another family for the same owner: the table moves (the inet one goes).
    assert facade.set_table(OWNER, NftTable(family="ip", chains=(NftChain("only"),))) is True
    assert kernel_table(netns) is None
    assert kernel_table(netns, family="ip") is not None
    # A facade that starts over with the same ledger (an agent restart) writes nothing.
    assert NftFacade(netns=f"/run/netns/{netns}", ledger=ledger).set_table(
        OWNER, NftTable(family="ip", chains=(NftChain("only"),))) is False
    assert facade.release(OWNER) is True
    assert kernel_table(netns, family="ip") is None
    assert ledger.owned("nft") == {}


def documented_example() -> str:
    """The code block of docs/hooks.md's ``ovnk_node_controllers`` section."""
    doc = (Path(__file__).resolve().parents[3] / "docs" / "hooks.md").read_text()
    section = doc[doc.index("### ovnk_node_controllers("):]
    return section[section.index("```python\n") + len("```python\n"):section.index("```\n", section.index("```python"))]


def test_the_documented_node_controller_converges_its_table(netns: str) -> None:
    """docs/hooks.md's example, run as written against the kernel (its pods from a stand-in cache)."""
    namespace: dict[str, Any] = {}
    exec(compile(documented_example(), "docs/hooks.md", "exec"), namespace)
    pods = [{"metadata": {"name": f"p{i}", "namespace": "ns", "annotations": {"k8s.ovn.org/pod-networks": json.dumps(
        {"default": {"ip_addresses": [f"10.244.1.{i}/24"], "mac_address": f"0a:58:0a:f4:01:0{i}"}})}}}
        for i in (5, 6)]
    selectors: list[str | None] = []

    def cache(resource: Any, *, field_selector: str | None = None) -> Any:
        selectors.append(field_selector)
        return SimpleNamespace(list=lambda: pods)

    ctx = SimpleNamespace(node_name="node-1", cache=cache,
                          nft=NftFacade(netns=f"/run/netns/{netns}", ledger=MemoryLedger(Owners(["egressservice"]))))
    [spec] = namespace["EgressServiceNode"]().ovnk_node_controllers(ctx)
    assert spec.watches[0].field_selector == "spec.nodeName=node-1"
    assert list(spec.watches[0].keys(pods[0])) == ["table"]
    spec.reconcile(ReconcileRequest(key="table"))
    assert selectors == ["spec.nodeName=node-1"]
    items = kernel_table(netns, name="ovnk-egressservice")
    assert items is not None
    assert kinds(items, "set")[0]["elem"] == ["10.244.1.5", "10.244.1.6"]
    assert kinds(items, "chain")[0]["hook"] == "postrouting"
