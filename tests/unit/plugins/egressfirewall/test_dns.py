"""When a DNS name is asked again, and what an answer does to what the controller knows (pure)."""

from __future__ import annotations

import ipaddress
import time

from ovnk.plugins.egressfirewall.dns import NXDOMAIN
from ovnk.plugins.egressfirewall.dns import TIMEOUT
from ovnk.plugins.egressfirewall.dns import Answer
from ovnk.plugins.egressfirewall.dns import NameState
from ovnk.plugins.egressfirewall.dns import TokenBucket
from ovnk.plugins.egressfirewall.dns import next_interval

A = (ipaddress.ip_address("198.18.0.1"),)
B = (ipaddress.ip_address("198.18.0.2"),)


def test_next_interval_is_the_ttl_or_the_minimum_for_ttl_zero() -> None:
    assert next_interval(Answer(addresses=A, ttl=30), failures=0, min_interval=5, max_backoff=120) == 30
    assert next_interval(Answer(addresses=A, ttl=1), failures=0, min_interval=5, max_backoff=120) == 1
    assert next_interval(Answer(addresses=A, ttl=0), failures=0, min_interval=5, max_backoff=120) == 5


def test_failures_back_off_doubling_up_to_the_cap() -> None:
    failed = Answer(failure=TIMEOUT, detail="no answer")
    waits = [next_interval(failed, failures=n, min_interval=5, max_backoff=120) for n in range(1, 8)]
    assert waits == [5, 10, 20, 40, 80, 120, 120]


def test_a_failure_keeps_the_last_addresses_and_nxdomain_clears_them() -> None:
    state = NameState()
    assert state.record(Answer(addresses=A, ttl=10), now=100.0, min_interval=5, max_backoff=120) == 10
    assert state.addresses == A and state.due == 110.0 and state.problem is None and state.changed_at == 100.0
    assert state.record(Answer(failure=TIMEOUT, detail="no answer"), now=110.0, min_interval=5, max_backoff=120) == 5
    assert state.addresses == A and state.failures == 1 and "the last answer's addresses stay" in (state.problem or "")
    assert state.record(Answer(failure=NXDOMAIN, detail="gone"), now=115.0, min_interval=5, max_backoff=120) == 10
    assert state.addresses == () and state.problem == "does not exist (NXDOMAIN)" and state.changed_at == 115.0
    assert state.record(Answer(addresses=B, ttl=0), now=125.0, min_interval=5, max_backoff=120) == 5
    assert state.addresses == B and state.failures == 0 and state.problem is None


def test_a_first_failure_says_the_name_cannot_be_resolved() -> None:
    state = NameState()
    state.record(Answer(failure=TIMEOUT, detail="no answer from 10.0.0.1"), now=1.0, min_interval=5, max_backoff=120)
    assert state.problem == "cannot be resolved (no answer from 10.0.0.1)" and not state.answered


def test_token_bucket_spaces_queries_beyond_the_burst() -> None:
    bucket = TokenBucket(rate=50, burst=5)
    started = time.monotonic()
    for _ in range(15):
        bucket.acquire()
    # 5 at once, then 10 more at 50/s: at least 0.2 s.
    assert time.monotonic() - started >= 0.18
