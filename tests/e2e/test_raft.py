"""NB and SB as 3-member RAFT clusters: the NB leader dies in the middle of pod churn.

A 2-node sandbox of this module's own (``SandboxOptions(db_cluster=3)``). While
pods are being created and deleted, the NB leader is SIGKILLed; the controller
must resume on the new leader without losing or doubling a write: every pod
comes up Ready and answers a ping, and NB holds exactly one port per live pod.
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
from tests.e2e.support import live_pods
from tests.e2e.support import metric
from tests.e2e.support import own_sandbox
from tests.e2e.support import unreachable
from tests.e2e.support import wait_gone
from tests.e2e.support import wait_ports_written
from tests.e2e.support import wait_ready

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]


@pytest.fixture(scope="module")
def raft_cluster() -> Iterator[Cluster]:
    with own_sandbox("raft", SandboxOptions(nodes=2, db_cluster=3)) as box:
        yield Cluster(box)


def test_nb_leader_killed_during_pod_churn(raft_cluster: Cluster) -> None:
    cluster = raft_cluster
    box = cluster.sandbox
    assert box.central is not None and len(box.central.nb.members) == 3
    assert box.db_remote("nb").count("unix:") == 3, "the controller knows every NB member"
    ns = cluster.namespace()
    node1, node2 = cluster.nodes
    cluster.run_pods(ns, [{"name": "client", "node": node1}])

    first = {f"a-{i:02d}": (node1, node2)[i % 2] for i in range(20)}
    creating = threading.Thread(target=apply_pods, args=(cluster, ns, first))
    creating.start()
    # Kill the leader once the controller is busy writing this batch (a port or two in, not all).
    written = wait_ports_written(box, ns, 2)  # the client's port was there before
    killed = box.kill_nb_leader()
    creating.join(60)
    print(f"killed NB member {killed} with {written}/20 ports of the first batch written")
    # Churn goes on while NB elects a new leader.
    deleted = sorted(first)[::2]
    delete_pods(cluster, ns, deleted)
    second = {f"b-{i:02d}": (node1, node2)[i % 2] for i in range(10)}
    apply_pods(cluster, ns, second)

    expected = [n for n in first if n not in deleted] + list(second)
    churn_started = time.monotonic()
    wait_ready(cluster, ns, expected, timeout=180)
    print(f"all {len(expected)} pods Ready {time.monotonic() - churn_started:.1f}s after the churn")
    wait_gone(cluster, ns, deleted)
    print(f"deleted pods gone {time.monotonic() - churn_started:.1f}s after the churn")
    assert box.central.leader_index(box.central.nb) not in (None, killed), "a surviving member leads NB"

    pods = live_pods(cluster)
    ips = [pods[f"{ns}/{name}"]["status"]["podIP"] for name in expected]
    assert len(set(ips)) == len(ips), "every pod has its own address"
    assert unreachable(cluster, ns, "client", ips) == []
    print(f"all pods answered pings {time.monotonic() - churn_started:.1f}s after the churn")
    assert_nb_matches_pods(cluster)
    reconnects = metric(box, 0, "ovnk_ovsdb_nb_reconnects_total")
    assert reconnects is not None and reconnects >= 1, "the controller followed the NB leader change"
