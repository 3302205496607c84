"""The learnt groups in Kubernetes terms (SB rows in, group -> members out)."""

from __future__ import annotations

from ovnk import RowSnapshot
from ovnk.plugins.multicast.groups import Member
from ovnk.plugins.multicast.groups import learnt_groups
from ovnk.plugins.multicast.groups import pod_of


def binding(uuid: str, port: str, **ids: str) -> RowSnapshot:
    return RowSnapshot(table="Port_Binding", uuid=uuid, name=None, external_ids=ids, columns={"logical_port": port})


def group(uuid: str, address: str, datapath: list[str], ports: list[str]) -> RowSnapshot:
    return RowSnapshot(table="IGMP_Group", uuid=uuid, name=None, external_ids={},
                       columns={"address": address, "datapath": datapath, "ports": ports})


def datapath(uuid: str, name: str) -> RowSnapshot:
    return RowSnapshot(table="Datapath_Binding", uuid=uuid, name=None, external_ids={"name": name})


def test_pod_of_a_binding() -> None:
    assert pod_of(binding("p", "team-a_web-1", namespace="team-a", pod="true")) == "team-a/web-1"
    assert pod_of(binding("p", "k8s-node-1")) is None  # the management port
    assert pod_of(binding("p", "other_x", namespace="team-a", pod="true")) is None  # not <namespace>_<pod>


def test_groups_by_address_with_members_by_node_and_pod() -> None:
    ports = {p.uuid: p for p in (binding("p1", "team_b", namespace="team", pod="true"),
                                 binding("p2", "team_a", namespace="team", pod="true"),
                                 binding("p3", "stor-n2"))}
    datapaths = {d.uuid: d for d in (datapath("d1", "n1"), datapath("d2", "n2"))}
    rows = [group("g1", "239.1.1.1", ["d2"], ["p3"]), group("g2", "239.1.1.1", ["d1"], ["p1", "p2", "gone"]),
            group("g3", "224.0.0.251", [], ["p1"]), group("g4", "ff3e::1", ["d1"], [])]
    assert learnt_groups(rows, ports=ports, datapaths=datapaths) == {
        "224.0.0.251": [Member(node="?", pod="team/b", port="team_b")],
        "239.1.1.1": [Member(node="n1", pod="team/a", port="team_a"), Member(node="n1", pod="team/b", port="team_b"),
                      Member(node="n2", pod=None, port="stor-n2")],
        "ff3e::1": [],
    }
