"""A pod whose rows already match NB costs one lock hold and no write (issue 22: restart resync).

Every pod is reconciled again when a controller restarts. The NB connection lock is shared by the
workers and the IDL thread, so each hold is a place where the first pass queues; the pod reconcile
learns whether its port is new from its own commit, not from a separate NB read before it.
"""

from __future__ import annotations

import uuid

import pytest

from ovnk.core.reconcile.spec import ReconcileRequest
from ovnk_lab.procs import wait_for
from tests.functional.ovn.test_resync_costs import LockWatch
from tests.functional.topology.conftest import ClusterEnv
from tests.functional.topology.conftest import nb_value

pytestmark = [pytest.mark.kube, pytest.mark.ovn, pytest.mark.slow]


def test_reconciling_an_unchanged_pod_takes_the_nb_lock_once_and_writes_nothing(
        env: ClusterEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    namespace = f"resync-{uuid.uuid4().hex[:6]}"
    process = env.start_controller()
    env.create_node("rc-n1", 0)
    env.create_namespace(namespace)
    for index in range(3):
        env.create_pod(namespace, f"p{index}", "rc-n1")
    wanted = {f"{namespace}_p{index}" for index in range(3)}

    def ports() -> set[str]:
        return {nb_value(row["name"]) for row in env.nb_rows("Logical_Switch_Port")} & wanted

    wait_for("the pods' ports", lambda: ports() == wanted, timeout=120)
    env.wait_idle()
    assert process.ctx is not None and process.nb is not None
    runtime = process.ctx.pm.get_plugin("core.pods:runtime")
    committed = env.metric("ovnk_nb_txn_total", {"owner": "Pod", "result": "committed"})
    watch = LockWatch(process.nb, monkeypatch)
    runtime.pods.reconcile(ReconcileRequest(key=f"{namespace}/p1"))
    assert watch.holds == 1
    assert watch.built_under_lock == 0
    assert env.metric("ovnk_nb_txn_total", {"owner": "Pod", "result": "committed"}) == committed
