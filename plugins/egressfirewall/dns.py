"""Resolving the names of ``dnsName`` rules: answers with their TTLs, and when to ask again.

The controller asks the configured servers (``[egressfirewall] dns-servers``,
else ``/etc/resolv.conf``) directly with dnspython: no cache sits between, so
the TTL of each answer is the server's. Names are shared: a name in the rules
of a hundred namespaces is one name here, asked once per TTL.

When to ask again (:func:`next_interval`): after the answer's TTL; after
``dns-min-interval`` (5 s) when the TTL is 0; after a failure (timeout, no
server answered, the name does not exist) with a doubling backoff from
``dns-min-interval`` up to ``dns-max-backoff`` (2 min). A failure keeps the
addresses of the last answer (a flapping server must not flap the rules); a
name that does not exist (NXDOMAIN) or has no address resolves to nothing.

A query storm is impossible by construction: one pending query per name at a
time (the controller's queue never runs a key twice at once), ``dns-workers``
names resolved in parallel, and a token bucket of ``dns-queries-per-second``
shared by every query of the process.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import dns.exception
import dns.nameserver
import dns.rdatatype
import dns.resolver

from ovnk.names import IPAddress

TIMEOUT = "timeout"
NXDOMAIN = "nxdomain"
NO_SERVER = "servfail"
ERROR = "error"


@dataclass(frozen=True)
class Answer:
    """What one resolution of a name found.

    :ivar addresses: the A/AAAA addresses (sorted, no duplicates).
    :ivar ttl: the smallest TTL of the records; ``None`` without records.
    :ivar failure: why the resolution failed (:data:`TIMEOUT`, :data:`NXDOMAIN`,
        :data:`NO_SERVER`, :data:`ERROR`); ``None`` on success.
    :ivar detail: a human sentence about the failure.
    """

    addresses: tuple[IPAddress, ...] = ()
    ttl: int | None = None
    failure: str | None = None
    detail: str = ""

    @property
    def authoritative(self) -> bool:
        """The server answered (records, none, or "no such name"): the addresses are what the name is now."""
        return self.failure in (None, NXDOMAIN)


def next_interval(answer: Answer, *, failures: int, min_interval: float, max_backoff: float) -> float:
    """Seconds until the name is asked again.

    :param failures: failed resolutions in a row, this one included (0 after a success).
    """
    if answer.failure is not None or not answer.addresses:
        return float(min(max_backoff, min_interval * 2 ** max(0, failures - 1)))
    if not answer.ttl:
        return float(min_interval)
    return float(answer.ttl)


class TokenBucket:
    """At most ``rate`` acquisitions per second on average, bursts of ``burst`` (thread-safe)."""

    def __init__(self, *, rate: float, burst: float | None = None) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate)
        self._tokens = self.burst
        self._stamp = time.monotonic()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Take one token, sleeping until there is one; returns the seconds waited."""
        waited = 0.0
        while True:
            with self._lock:
                now = time.monotonic()
                self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
                self._stamp = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return waited
                pause = (1 - self._tokens) / self.rate
            time.sleep(pause)
            waited += pause


class DnsClient:
    """Blocking A/AAAA resolution against fixed servers, every query through one rate limit.

    :param servers: ``(address, port)`` of each server; empty: the system's ``/etc/resolv.conf``.
    :param timeout: seconds one resolution (every server tried) may take.
    :param queries_per_second: the shared rate limit.
    """

    def __init__(self, *, servers: Sequence[tuple[str, int]], timeout: float, queries_per_second: float) -> None:
        resolver = dns.resolver.Resolver(configure=not servers)
        if servers:
            resolver.nameservers = [dns.nameserver.Do53Nameserver(address, port) for address, port in servers]
        resolver.timeout = timeout
        resolver.lifetime = timeout
        resolver.cache = None  # TTLs must be the server's, and a changed answer seen at once
        self.resolver = resolver
        self.limit = TokenBucket(rate=queries_per_second)

    def describe_servers(self) -> str:
        return ", ".join(str(ns) for ns in self.resolver.nameservers) or "none"

    def resolve(self, name: str, *, versions: Sequence[int]) -> Answer:
        """The addresses of ``name`` for the IP versions in use (A for 4, AAAA for 6)."""
        addresses: set[IPAddress] = set()
        ttl: int | None = None
        for version in sorted(set(versions)):
            self.limit.acquire()
            rdtype = dns.rdatatype.A if version == 4 else dns.rdatatype.AAAA
            try:
                result = self.resolver.resolve(f"{name}.", rdtype, search=False, raise_on_no_answer=False)
            except dns.resolver.NXDOMAIN:
                return Answer(failure=NXDOMAIN, detail=f"{name} does not exist (NXDOMAIN)")
            except dns.resolver.NoNameservers as exc:
                return Answer(failure=NO_SERVER, detail=f"no server answered for {name}: {exc}")
            except dns.exception.Timeout:
                return Answer(failure=TIMEOUT, detail=f"no answer for {name} from {self.describe_servers()} "
                                                      f"within {self.resolver.lifetime:g}s")
            except dns.exception.DNSException as exc:
                return Answer(failure=ERROR, detail=f"resolving {name} failed: {type(exc).__name__}: {exc}")
            if result.rrset is None:
                continue
            ttl = result.rrset.ttl if ttl is None else min(ttl, result.rrset.ttl)
            for record in result.rrset:
                addresses.add(ipaddress.ip_address(record.address))
        return Answer(addresses=tuple(sorted(addresses, key=lambda ip: (ip.version, ip))), ttl=ttl)


@dataclass
class NameState:
    """What the controller knows of one name.

    :ivar addresses: of the last authoritative answer (kept through failures).
    :ivar answered: an authoritative answer came at least once.
    :ivar due: monotonic time of the next resolution (0: now).
    :ivar planned: monotonic time the planned re-check fires (0: none planned).
    :ivar failures: failed resolutions in a row.
    :ivar problem: why the rule of this name may not match what the user expects (status text), or None.
    :ivar changed_at: monotonic time the addresses last changed.
    """

    addresses: tuple[IPAddress, ...] = ()
    answered: bool = False
    due: float = 0.0
    planned: float = 0.0
    failures: int = 0
    problem: str | None = None
    changed_at: float = 0.0

    def record(self, answer: Answer, *, now: float, min_interval: float, max_backoff: float) -> float:
        """Take an answer in; returns the seconds until the next resolution."""
        if answer.failure is None and answer.addresses:
            self.failures = 0
            self.problem = None
        else:
            self.failures += 1
            if answer.failure is None:
                self.problem = "has no address"
            elif answer.failure == NXDOMAIN:
                self.problem = "does not exist (NXDOMAIN)"
            elif self.answered and self.addresses:
                self.problem = f"cannot be resolved now ({answer.detail}); the last answer's addresses stay"
            else:
                self.problem = f"cannot be resolved ({answer.detail})"
        if answer.authoritative:
            if answer.addresses != self.addresses:
                self.changed_at = now
            self.addresses = answer.addresses
            self.answered = True
        interval = next_interval(answer, failures=self.failures, min_interval=min_interval, max_backoff=max_backoff)
        self.due = now + interval
        return interval
