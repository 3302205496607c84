"""The resolver of dnsName rules against a real DNS server (dnsmasq on loopback): TTLs, changed
answers, names that do not exist, a server that does not answer, and the shared rate limit."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ovnk.plugins.egressfirewall.dns import NXDOMAIN
from ovnk.plugins.egressfirewall.dns import TIMEOUT
from ovnk.plugins.egressfirewall.dns import DnsClient
from ovnk_lab.outside import Dnsmasq
from ovnk_lab.procs import free_port


@pytest.fixture
def dnsmasq(tmp_path: Path) -> Iterator[Dnsmasq]:
    server = Dnsmasq(tmp_path / "dns", address="127.0.0.1", port=free_port(), ttl=7)
    server.start({"www.ovnk.test": ["198.18.0.1", "198.18.0.2"], "v6.ovnk.test": ["2001:db8::5"]})
    try:
        yield server
    finally:
        server.stop()


def client(server: Dnsmasq, *, qps: float = 100.0, timeout: float = 2.0) -> DnsClient:
    return DnsClient(servers=[(server.address, server.port)], timeout=timeout, queries_per_second=qps)


def test_answers_carry_the_servers_ttl_and_follow_a_changed_hosts_file(dnsmasq: Dnsmasq) -> None:
    resolver = client(dnsmasq)
    answer = resolver.resolve("www.ovnk.test", versions=[4])
    assert answer.failure is None and answer.ttl == 7
    assert answer.addresses == (ipaddress.ip_address("198.18.0.1"), ipaddress.ip_address("198.18.0.2"))
    both = resolver.resolve("v6.ovnk.test", versions=[4, 6])
    assert both.failure is None and both.addresses == (ipaddress.ip_address("2001:db8::5"),)
    dnsmasq.set_hosts({"www.ovnk.test": ["198.18.0.9"]})
    deadline = time.monotonic() + 10
    while resolver.resolve("www.ovnk.test", versions=[4]).addresses != (ipaddress.ip_address("198.18.0.9"),):
        assert time.monotonic() < deadline, "the new answer never came"
        time.sleep(0.05)


def test_a_name_that_does_not_exist_and_a_server_that_does_not_answer(dnsmasq: Dnsmasq) -> None:
    missing = client(dnsmasq).resolve("nope.ovnk.test", versions=[4])
    assert missing.failure == NXDOMAIN and missing.authoritative and missing.addresses == ()
    # A port where nothing listens on a loopback address nothing uses: the query times out.
    silent = DnsClient(servers=[("127.0.0.1", free_port())], timeout=0.5, queries_per_second=100)
    started = time.monotonic()
    answer = silent.resolve("www.ovnk.test", versions=[4])
    assert answer.failure is not None and not answer.authoritative
    assert answer.failure == TIMEOUT or "no server answered" in answer.detail, answer
    assert time.monotonic() - started < 3


def test_many_names_at_once_stay_within_the_rate_limit(dnsmasq: Dnsmasq) -> None:
    names = {f"n{i}.ovnk.test": [f"198.18.1.{i}"] for i in range(1, 61)}
    dnsmasq.set_hosts(names)
    probe = client(dnsmasq)
    deadline = time.monotonic() + 10
    while probe.resolve("n60.ovnk.test", versions=[4]).failure is not None:  # dnsmasq re-read its hosts file
        assert time.monotonic() < deadline, "dnsmasq never answered from the new hosts file"
        time.sleep(0.05)
    resolver = client(dnsmasq, qps=40)
    before = dnsmasq.queries()
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(lambda n: resolver.resolve(n, versions=[4]), names))
    elapsed = time.monotonic() - started
    assert all(a.failure is None and len(a.addresses) == 1 for a in answers)
    # 40 at once (the burst), the other 20 at 40/s: at least half a second, never a storm.
    assert elapsed >= 0.45, elapsed
    deadline = time.monotonic() + 5
    while dnsmasq.queries() - before < 60:
        assert time.monotonic() < deadline, f"dnsmasq logged {dnsmasq.queries() - before} queries"
        time.sleep(0.05)
    assert dnsmasq.queries() - before == 60
