"""Two controllers with leader election: the leader is SIGKILLed in the middle of pod churn.

A 2-node sandbox of this module's own with ``controllers=2`` and short lease
timings. The standby takes over within lease duration + retry period (it must
wait the lease out: a SIGKILLed leader never releases it), finishes the
churn, and the killed controller, restarted, stays a standby.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from ovnk_lab.sandbox import SandboxOptions
from tests.e2e.conftest import Cluster
from tests.e2e.support import apply_pods
from tests.e2e.support import assert_nb_matches_pods
from tests.e2e.support import delete_pods
from tests.e2e.support import http_status
from tests.e2e.support import live_pods
from tests.e2e.support import metric
from tests.e2e.support import own_sandbox
from tests.e2e.support import unreachable
from tests.e2e.support import wait_gone
from tests.e2e.support import wait_ports_written
from tests.e2e.support import wait_ready

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]

LEASE_DURATION, RENEW_DEADLINE, RETRY_PERIOD = 6.0, 4.0, 1.0
# The standby polls every retry period (with client-go's jitter, up to 1.2x); scraping and a
# loaded 2-core machine get two more seconds.
TAKEOVER_BOUND = LEASE_DURATION + 1.2 * RETRY_PERIOD + 2.0


@pytest.fixture(scope="module")
def ha_cluster() -> Iterator[Cluster]:
    options = SandboxOptions(nodes=2, controllers=2, lease_duration=LEASE_DURATION, renew_deadline=RENEW_DEADLINE,
                             retry_period=RETRY_PERIOD)
    with own_sandbox("ha", options) as box:
        yield Cluster(box)


def leaders(cluster: Cluster) -> list[bool | None]:
    return [cluster.sandbox.controller_is_leader(i) for i in range(2)]


def wait_until(what: str, predicate: object, timeout: float) -> float:
    """Poll ``predicate`` every 50 ms; returns the seconds it took."""
    started = time.monotonic()
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() - started < timeout, f"{what} within {timeout:.0f}s"
        time.sleep(0.05)
    return time.monotonic() - started


def test_leader_killed_during_pod_churn_standby_takes_over(ha_cluster: Cluster) -> None:
    cluster = ha_cluster
    box = cluster.sandbox
    wait_until("one leader and one standby", lambda: sorted(map(str, leaders(cluster))) == ["False", "True"], 30)
    old = leaders(cluster).index(True)
    new = 1 - old
    assert metric(box, new, "ovnk_controller_leader") == 0.0
    ns = cluster.namespace()
    node1, node2 = cluster.nodes
    cluster.run_pods(ns, [{"name": "client", "node": node1}])

    first = {f"a-{i:02d}": (node1, node2)[i % 2] for i in range(20)}
    creating = threading.Thread(target=apply_pods, args=(cluster, ns, first))
    creating.start()
    # Kill the leader once it is busy with this batch (a port or two written, not all).
    written = wait_ports_written(box, ns, 2)  # the client's port was there before
    box.kill(f"ovnk-controller-{old}")  # SIGKILL: the lease is not released
    killed_at = time.monotonic()
    creating.join(60)
    print(f"killed leader {old} with {written}/20 ports of the first batch written")
    # Churn goes on while nobody leads.
    deleted = sorted(first)[::2]
    delete_pods(cluster, ns, deleted)
    second = {f"b-{i:02d}": (node1, node2)[i % 2] for i in range(10)}
    apply_pods(cluster, ns, second)

    waited = wait_until("the standby leads", lambda: box.controller_is_leader(new) is True, TAKEOVER_BOUND)
    took = time.monotonic() - killed_at
    print(f"controller {new} took over {took:.1f}s after controller {old} was killed")
    assert took <= TAKEOVER_BOUND and waited <= TAKEOVER_BOUND

    expected = [n for n in first if n not in deleted] + list(second)
    wait_ready(cluster, ns, expected, timeout=180)
    wait_gone(cluster, ns, deleted)
    pods = live_pods(cluster)
    ips = [pods[f"{ns}/{name}"]["status"]["podIP"] for name in expected]
    assert len(set(ips)) == len(ips), "every pod has its own address"
    assert unreachable(cluster, ns, "client", ips) == []
    assert_nb_matches_pods(cluster)

    # The killed controller comes back as a standby: ready (warm caches), not leading, and stays so.
    box.start_controller(old)
    wait_until(f"controller {old} serves /metrics again", lambda: box.controller_is_leader(old) is not None, 60)
    wait_until(f"controller {old} is ready", lambda: http_status(box, old, "/readyz") == 200, 60)
    deadline = time.monotonic() + 2 * RETRY_PERIOD + 1
    while time.monotonic() < deadline:
        assert leaders(cluster)[old] is False and leaders(cluster)[new] is True, leaders(cluster)
        time.sleep(0.2)
    # And the new leader keeps serving: one more pod comes up.
    apply_pods(cluster, ns, {"after": node2})
    wait_ready(cluster, ns, ["after"], timeout=120)
    assert unreachable(cluster, ns, "client", [cluster.pod_ip(ns, "after")]) == []
