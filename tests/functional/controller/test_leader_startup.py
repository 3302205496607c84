"""A new leader's start-up (restore, repair) runs beside the lease renewals, not in their way (issue 22).

At 10,000 pods restore and repair take seconds; run on the elector's thread they kept the first
renewals from being sent, so with a short lease the new leader passed its renew deadline and
exited. Here a plugin's restore takes twice the renew deadline: the leader must keep its lease.
"""

from __future__ import annotations

import time
import uuid

import pytest

from tests.functional.topology.conftest import ClusterEnv

RENEW_DEADLINE = 1.5
PLUGIN = f'''
import time
from ovnk import hookimpl

@hookimpl
def ovnk_restore(ctx):
    time.sleep({2 * RENEW_DEADLINE})
'''


@pytest.mark.kube
@pytest.mark.ovn
def test_a_slow_restore_does_not_cost_the_new_leader_its_lease(env: ClusterEnv, fake_dists) -> None:
    fake_dists.add("ovnk-slowrestore", plugins={"slowrestore": "slowrestore_plugin"},
                   modules={"slowrestore_plugin": PLUGIN})
    process = env.start_controller(
        "plugins.enabled=slowrestore", "controller.leader-election=true", "controller.lease-duration=2",
        f"controller.renew-deadline={RENEW_DEADLINE}", "controller.retry-period=0.25",
        f"controller.lease-name=test-{uuid.uuid4().hex[:8]}", f"controller.identity=slow-{uuid.uuid4().hex[:6]}")
    assert process.elector is not None and process.runner is not None and process.lost_leadership is not None
    deadline = time.monotonic() + 60
    while not process.runner._workers_started:
        assert not process.lost_leadership.is_set(), "lost the lease during its own start-up"
        assert time.monotonic() < deadline, "workers never started"
        time.sleep(0.05)
    time.sleep(2 * RENEW_DEADLINE)
    assert process.elector.is_leader()
    assert not process.lost_leadership.is_set()
    assert process.failure is None
