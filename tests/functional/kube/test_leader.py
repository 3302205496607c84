"""Leader election on a real Lease: one leader, failover on death, fast handover on release,
and leadership that ends on time when the API server stops answering."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from ovnk.core.kube.client import KubeClient
from ovnk.core.kube.leader import LeaderElector
from ovnk.core.kube.leader import micro_time
from ovnk.core.kube.resources import LEASES
from ovnk.core.kube.resources import NAMESPACES
from tests.functional.kube.conftest import ApiServerControl
from tests.functional.kube.helpers import wait_until

pytestmark = pytest.mark.kube

LEASE_DURATION, RENEW_DEADLINE, RETRY_PERIOD = 2.0, 1.5, 0.3


class Candidate:
    """One elector plus a log of its callbacks (with is_leader() as seen inside them)."""

    def __init__(self, kubeconfig: str, *, namespace: str, lease: str, identity: str,
                 request_timeout: float = 5.0) -> None:
        self.client = KubeClient(kubeconfig=kubeconfig, request_timeout=request_timeout)
        self.identity = identity
        self.log: list[tuple[str, bool, float]] = []
        self.elector = LeaderElector(
            self.client, namespace=namespace, name=lease, identity=identity,
            lease_duration=LEASE_DURATION, renew_deadline=RENEW_DEADLINE, retry_period=RETRY_PERIOD,
            on_started_leading=lambda: self._record("started"),
            on_stopped_leading=lambda: self._record("stopped"),
        )

    def _record(self, what: str) -> None:
        self.log.append((what, self.elector.is_leader(), time.monotonic()))

    def events(self) -> list[str]:
        return [what for what, _, _ in self.log]


@pytest.fixture
def candidates(kubeconfig: str, namespace: str) -> Iterator[Any]:
    made: list[Candidate] = []
    lease = f"lease-{uuid.uuid4().hex[:6]}"

    def make(identity: str, **kwargs: Any) -> Candidate:
        candidate = Candidate(kubeconfig, namespace=namespace, lease=lease, identity=identity, **kwargs)
        made.append(candidate)
        return candidate

    make.lease = lease  # type: ignore[attr-defined]
    yield make
    for candidate in made:
        candidate.elector.stop(release=False)
        candidate.client.close()


def leaders(*candidates: Candidate) -> list[str]:
    return [c.identity for c in candidates if c.elector.is_leader()]


def test_leader_exactly_one_and_failover_after_death(candidates: Any, namespace: str) -> None:
    a, b = candidates("a"), candidates("b")
    a.elector.start()
    b.elector.start()
    wait_until(lambda: len(leaders(a, b)) == 1, timeout=10, what="a leader")
    samples = []
    end = time.monotonic() + 2.5
    while time.monotonic() < end:
        samples.append(leaders(a, b))
        time.sleep(0.01)
    assert all(len(s) == 1 for s in samples), [s for s in samples if len(s) != 1][:5]
    assert len({s[0] for s in samples}) == 1, "leadership must not move while the leader is healthy"
    leader, standby = (a, b) if samples[0] == ["a"] else (b, a)
    assert leader.events() == ["started"] and standby.events() == []
    assert leader.log[0][1] is True  # is_leader() already True inside on_started_leading

    lease = leader.client.get(LEASES, candidates.lease, namespace=namespace)
    assert lease is not None
    assert lease["spec"]["holderIdentity"] == leader.identity
    assert lease["spec"]["leaseDurationSeconds"] == 2
    transitions = lease["spec"]["leaseTransitions"]

    died = time.monotonic()
    leader.elector.stop(release=False)  # a crash: the lease is left to expire
    assert not leader.elector.is_leader()
    while not standby.elector.is_leader():
        assert not leader.elector.is_leader()
        assert time.monotonic() - died < LEASE_DURATION + 2 * RETRY_PERIOD + 1.5, "standby did not take over"
        time.sleep(0.01)
    takeover = time.monotonic() - died
    # Not before the lease could have expired (the last renew was at most a retry period earlier).
    assert takeover >= LEASE_DURATION - RETRY_PERIOD - 0.1, takeover
    lease = standby.client.get(LEASES, candidates.lease, namespace=namespace)
    assert lease is not None
    assert lease["spec"]["holderIdentity"] == standby.identity
    assert lease["spec"]["leaseTransitions"] == transitions + 1


def test_leader_release_hands_over_at_once(candidates: Any, namespace: str) -> None:
    a, b = candidates("a"), candidates("b")
    a.elector.start()
    wait_until(a.elector.is_leader, timeout=10, what="a leads")
    b.elector.start()
    time.sleep(3 * RETRY_PERIOD)
    assert leaders(a, b) == ["a"]
    released = time.monotonic()
    a.elector.stop(release=True)
    assert a.events() == ["started", "stopped"]
    assert a.log[1][1] is False  # is_leader() already False inside on_stopped_leading
    wait_until(b.elector.is_leader, timeout=5, interval=0.01, what="b leads")
    handover = time.monotonic() - released
    assert handover < 2 * RETRY_PERIOD + 0.5, handover
    lease = b.client.get(LEASES, candidates.lease, namespace=namespace)
    assert lease is not None and lease["spec"]["holderIdentity"] == "b"


def test_leader_creates_missing_namespace_and_lease(kubeconfig: str) -> None:
    namespace = f"t-lease-{uuid.uuid4().hex[:8]}"
    started = threading.Event()
    with KubeClient(kubeconfig=kubeconfig) as client:
        elector = LeaderElector(
            client, namespace=namespace, name="ovnk-controller", identity="only",
            lease_duration=LEASE_DURATION, renew_deadline=RENEW_DEADLINE, retry_period=RETRY_PERIOD,
            on_started_leading=started.set, on_stopped_leading=lambda: None,
        )
        try:
            elector.start()
            assert started.wait(10)
            lease = client.get(LEASES, "ovnk-controller", namespace=namespace)
            assert lease is not None
            spec = lease["spec"]
            assert spec["holderIdentity"] == "only" and spec["leaseTransitions"] == 0
            first_renew = spec["renewTime"]
            assert len(first_renew) == len("2006-01-02T15:04:05.000000Z") and first_renew.endswith("Z")
            wait_until(lambda: (client.get(LEASES, "ovnk-controller", namespace=namespace) or {})
                       .get("spec", {}).get("renewTime") != first_renew, timeout=5, what="a renew")
            elector.stop(release=True)
            released = client.get(LEASES, "ovnk-controller", namespace=namespace)
            assert released is not None and released["spec"].get("holderIdentity", "") == ""
        finally:
            elector.stop(release=False)
            client.delete(NAMESPACES, namespace)


def test_leader_is_leader_turns_false_at_renew_deadline_before_callback(
    candidates: Any, apiserver: ApiServerControl
) -> None:
    leader = candidates("a", request_timeout=6.0)
    leader.elector.start()
    wait_until(leader.elector.is_leader, timeout=10, what="a leads")
    time.sleep(2 * RETRY_PERIOD)
    apiserver.pause()  # connections hang: the elector thread blocks inside its renew
    paused = time.monotonic()
    try:
        wait_until(lambda: not leader.elector.is_leader(), timeout=RENEW_DEADLINE + 1, interval=0.005,
                   what="is_leader() False after the renew deadline")
        lost = time.monotonic() - paused
        assert RENEW_DEADLINE - RETRY_PERIOD - 0.1 <= lost <= RENEW_DEADLINE + 0.2, lost
        # The elector thread is still stuck in its request: no callback has run yet.
        assert leader.events() == ["started"]
    finally:
        apiserver.resume()
    wait_until(lambda: "stopped" in leader.events(), timeout=10, what="on_stopped_leading")
    stopped = leader.log[leader.events().index("stopped")]
    assert stopped[1] is False
    # Still the holder once the server answers again: it leads again, in a new term.
    wait_until(lambda: leader.events() == ["started", "stopped", "started"], timeout=10, what="re-election")
    assert leader.elector.is_leader()


def test_leader_rejects_inconsistent_timings(kubeconfig: str) -> None:
    with KubeClient(kubeconfig=kubeconfig) as client, pytest.raises(ValueError, match="renew_deadline"):
        LeaderElector(client, namespace="x", name="y", identity="z", lease_duration=1, renew_deadline=2,
                      retry_period=0.2, on_started_leading=lambda: None, on_stopped_leading=lambda: None)
    assert micro_time().endswith("Z")
