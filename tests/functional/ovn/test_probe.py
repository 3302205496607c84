"""The controller's OVN health probe against real ovsdb-servers: each member's RAFT role from its
``_Server`` database, standalone servers, and a server that does not answer."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from ovnk.core.metrics import controller_metrics
from ovnk.core.ovn.probe import E2eTimestampProbe
from ovnk.core.ovn.probe import query_server
from ovnk_lab.ovn import OvnCentral
from ovnk_lab.procs import free_port

pytestmark = pytest.mark.ovn


@pytest.fixture
def raft(lab_dir: Path) -> Iterator[OvnCentral]:
    central = OvnCentral(lab_dir / f"ovn-probe-{uuid.uuid4().hex[:8]}", cluster=3)
    central.start()
    yield central
    central.destroy()


def test_raft_members_report_one_leader_and_standalone_and_unreachable_servers(
        raft: OvnCentral, lab_dir: Path) -> None:
    members = raft.nb_address.split(",")
    assert len(members) == 3
    # Followers report connected once they joined the cluster (a few seconds after start).
    deadline = time.monotonic() + 60
    while True:
        statuses = [query_server(m, "OVN_Northbound") for m in members]
        if all(s is not None and s.connected for s in statuses) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert all(s is not None and s.model == "clustered" and s.connected for s in statuses), statuses
    assert sorted(s.role for s in statuses if s is not None) == ["follower", "follower", "leader"]
    gone = f"tcp:127.0.0.1:{free_port()}"
    assert query_server(gone, "OVN_Northbound", timeout=2) is None
    assert query_server(members[0], "No_Such_Database") is None

    # The probe turns that into gauges (no NB write needed for this part).
    registry = CollectorRegistry()
    metrics = controller_metrics(registry)
    probe = E2eTimestampProbe(nb=None, sb=None, txns=None, metrics=metrics,  # type: ignore[arg-type]
                              servers={"OVN_Northbound": (f"{raft.nb_address},{gone}", None),
                                       "OVN_Southbound": (raft.sb_address, None)})
    probe.record_servers()

    def value(name: str, **labels: str) -> float:
        return registry.get_sample_value(name, labels) or 0.0
    leaders = [m for m in members if value("ovn_db_cluster_server_role", db_name="OVN_Northbound", server=m,
                                           server_role="leader") == 1]
    assert len(leaders) == 1
    assert value("ovn_db_cluster_server_role", db_name="OVN_Northbound", server=gone, server_role="unreachable") == 1
    assert value("ovn_db_cluster_server_connected", db_name="OVN_Northbound", server=gone) == 0
    sb_members = raft.sb_address.split(",")
    assert sum(value("ovn_db_cluster_server_role", db_name="OVN_Southbound", server=m, server_role=role)
               for m in sb_members for role in ("leader", "follower")) == 3

    standalone = OvnCentral(lab_dir / f"ovn-probe-{uuid.uuid4().hex[:8]}")
    standalone.start()
    try:
        status = query_server(standalone.nb_address, "OVN_Northbound")
        assert status is not None and status.role == "standalone" and status.connected
    finally:
        standalone.destroy()
