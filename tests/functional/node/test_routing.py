"""ip rules and routes by owner (``NetFacade.set_rules`` / ``set_routes``) against the real kernel, in a
network namespace of the test's own; every check reads the kernel with ``ip -j`` itself."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from ovnk.core.node.net import NetError
from ovnk.core.node.net import NetFacade
from ovnk.core.node.owners import MemoryLedger
from ovnk.core.node.owners import Owners
from ovnk.core.node.owners import OwnershipError
from ovnk.core.node.routing import IpRule
from ovnk.core.node.routing import TableRoute

pytestmark = pytest.mark.node

OWNER = "egressip"


@pytest.fixture
def netns() -> Iterator[str]:
    """A namespace with a veth pair (both ends inside): eg0 10.50.0.2/24 + fd50::2/64, up."""
    name = f"ovnk-rt-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    for argv in (["link", "add", "eg0", "type", "veth", "peer", "name", "eg1"],
                 ["link", "set", "eg0", "up"], ["link", "set", "eg1", "up"], ["link", "set", "lo", "up"],
                 ["addr", "add", "10.50.0.2/24", "dev", "eg0"], ["-6", "addr", "add", "fd50::2/64", "dev", "eg0",
                                                                  "nodad"]):
        subprocess.run(["ip", "-n", name, *argv], check=True)
    yield name
    subprocess.run(["ip", "netns", "delete", name], check=False)


def ip(netns: str, *args: str) -> list[dict[str, Any]]:
    out = subprocess.run(["ip", "-n", netns, "-j", *args], capture_output=True, text=True, check=True).stdout
    return list(json.loads(out or "[]"))


def rules(netns: str) -> set[tuple[int, str, str]]:
    """(priority, selector, table) of every rule of both families, as ``ip rule`` prints them."""
    found = set()
    for family in ("-4", "-6"):
        for rule in ip(netns, family, "rule", "show"):
            selector = " ".join(f"{k}={rule[k]}" for k in ("src", "srclen", "dst", "dstlen", "fwmark", "fwmask",
                                                            "iif", "oif") if k in rule and rule[k] != "all")
            found.add((int(rule["priority"]), selector, str(rule.get("table"))))
    return found


def routes(netns: str, table: str) -> dict[str, dict[str, Any]]:
    found = {}
    for family in ("-4", "-6"):
        for route in ip(netns, family, "route", "show", "table", table):
            found[route["dst"]] = route
    return found


def test_ip_rules_converge_and_leave_foreign_rules_alone(netns: str) -> None:
    ledger = MemoryLedger(Owners([OWNER]))
    net = NetFacade(f"/run/netns/{netns}", ledger=ledger)
    try:
        subprocess.run(["ip", "-n", netns, "rule", "add", "prio", "5002", "from", "10.9.9.9", "lookup", "100"],
                       check=True)
        subprocess.run(["ip", "-n", netns, "rule", "add", "prio", "6000", "from", "10.1.0.7", "lookup", "101"],
                       check=True)
        foreign = rules(netns)
        wanted = [IpRule(priority=5000, src=ipaddress.ip_network("10.1.0.5/32"), table=100),
                  IpRule(priority=5999, fwmark=0x3F0, table=254, iif="lo"),
                  IpRule(priority=6000, dst=ipaddress.ip_network("fd00:10::/64"), table=1000),
                  IpRule(priority=6000, src=ipaddress.ip_network("10.1.0.7/32"), table=101)]  # exists: not ours
        assert net.set_rules(OWNER, wanted) is True
        now = rules(netns)
        assert (5000, "src=10.1.0.5", "100") in now
        assert (5999, "fwmark=0x3f0 iif=lo", "main") in now
        assert (6000, "dst=fd00:10:: dstlen=64", "1000") in now
        assert foreign <= now
        assert {r.priority for r in net.rules_of(OWNER)} == {5000, 5999, 6000}
        assert IpRule(priority=6000, src=ipaddress.ip_network("10.1.0.7/32"), table=101) not in net.rules_of(OWNER)

        assert net.set_rules(OWNER, wanted) is False, "nothing to do the second time"
        # An agent restart: a new facade with the same ledger changes nothing either.
        again = NetFacade(f"/run/netns/{netns}", ledger=ledger)
        try:
            assert again.set_rules(OWNER, wanted) is False
        finally:
            again.close()

        # Fewer wishes: ours go, the foreign ones (also the one identical to a wish) stay.
        assert net.set_rules(OWNER, wanted[:1]) is True
        now = rules(netns)
        assert (5999, "fwmark=0x3f0 iif=lo", "main") not in now
        assert (6000, "dst=fd00:10:: dstlen=64", "1000") not in now
        assert (6000, "src=10.1.0.7", "101") in now
        assert foreign <= now

        assert net.release_routing(OWNER) is True
        assert rules(netns) == foreign
        assert ledger.owned("ip-rules") == {}
        with pytest.raises(OwnershipError):
            net.set_rules("someone-else", wanted)
    finally:
        net.close()


def test_table_routes_converge_conflict_and_release(netns: str) -> None:
    ledger = MemoryLedger(Owners([OWNER]))
    net = NetFacade(f"/run/netns/{netns}", ledger=ledger)
    try:
        subprocess.run(["ip", "-n", netns, "route", "add", "10.30.0.0/16", "dev", "eg0", "table", "100"], check=True)
        default = TableRoute(dst=ipaddress.ip_network("0.0.0.0/0"), table=100, dev="eg0",
                             gateway=ipaddress.ip_address("10.50.0.1"))
        subnet = TableRoute(dst=ipaddress.ip_network("10.20.0.0/16"), table=100, dev="eg0")
        six = TableRoute(dst=ipaddress.ip_network("fd60::/64"), table=100, dev="eg0",
                         gateway=ipaddress.ip_address("fd50::1"))
        assert net.set_routes(OWNER, [default, subnet, six]) is True
        table = routes(netns, "100")
        assert table["default"]["gateway"] == "10.50.0.1" and table["default"]["dev"] == "eg0"
        assert table["10.20.0.0/16"]["dev"] == "eg0"
        assert table["fd60::/64"]["gateway"] == "fd50::1"
        assert "10.30.0.0/16" in table
        assert net.set_routes(OWNER, [default, subnet, six]) is False

        # Another gateway for the default route: replaced in place.
        moved = TableRoute(dst=ipaddress.ip_network("0.0.0.0/0"), table=100, dev="eg0",
                           gateway=ipaddress.ip_address("10.50.0.254"))
        assert net.set_routes(OWNER, [moved, subnet]) is True
        table = routes(netns, "100")
        assert table["default"]["gateway"] == "10.50.0.254"
        assert "fd60::/64" not in table
        assert "10.30.0.0/16" in table

        # A destination a foreign route holds is a conflict, and nothing is written.
        clash = TableRoute(dst=ipaddress.ip_network("10.30.0.0/16"), table=100,
                           gateway=ipaddress.ip_address("10.50.0.9"))
        extra = TableRoute(dst=ipaddress.ip_network("10.31.0.0/16"), table=100, dev="eg0")
        with pytest.raises(NetError, match="exists and is not ours"):
            net.set_routes(OWNER, [moved, subnet, extra, clash])
        table = routes(netns, "100")
        assert "10.31.0.0/16" not in table and "gateway" not in table["10.30.0.0/16"]
        with pytest.raises(NetError, match="nosuch0 does not exist"):
            net.set_routes(OWNER, [TableRoute(dst=ipaddress.ip_network("10.32.0.0/16"), table=100, dev="nosuch0")])

        assert net.release_routing(OWNER) is True
        assert set(routes(netns, "100")) == {"10.30.0.0/16"}
        assert ledger.owned("ip-routes") == {}
    finally:
        net.close()
