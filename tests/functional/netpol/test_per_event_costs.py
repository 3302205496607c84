"""What one pod event costs NetworkPolicy's shared rows, against a real NB (issue 22).

A namespace-selecting peer's address set holds a share of every pod of the cluster: a pod joining
it must plan and write that pod's address only, not converge the whole column (which made every
pod event O(cluster)). A namespace's default-deny groups are re-planned on every pod event there:
the ports already in them must not be looked up one by one under the NB lock.
"""

from __future__ import annotations

from typing import Any

import pytest

from ovnk.core.builtin.netpol import controller as netpol_controller
from ovnk.core.hookspecs import hookimpl
from ovnk.core.ovn.commands import EnsureRow
from ovnk.core.ovn.commands import SetMembership
from ovnk.core.ovn.ids import hashed_name
from ovnk.core.reconcile.spec import ReconcileRequest
from tests.functional.netpol.conftest import NetpolCluster
from tests.functional.netpol.conftest import as_list
from tests.functional.netpol.conftest import wait_for
from tests.functional.topology.conftest import nb_value

pytestmark = [pytest.mark.kube, pytest.mark.ovn, pytest.mark.slow]


class CommitSpy:
    """Records the commands of every PodSelector (peer address set) transaction."""

    def __init__(self) -> None:
        self.commands: list[Any] = []

    @hookimpl(tryfirst=True)
    def ovnk_nb_commit(self, txn: Any) -> None:
        if txn.owner == "PodSelector":
            self.commands.extend(txn.commands)


def addresses(cluster: NetpolCluster, name: str) -> set[str]:
    for row in cluster.env.nb_rows("Address_Set"):
        if nb_value(row["name"]) == name:
            return set(as_list(nb_value(row["addresses"])))
    return set()


def test_a_pod_joining_a_namespace_selected_set_writes_its_address_only(cluster: NetpolCluster) -> None:
    team = f"t{id(cluster) % 100000}"
    source = cluster.namespace("as-src", labels={"scale-team": team})
    target = cluster.namespace("as-dst")
    for index in range(12):
        cluster.pod(source, f"p{index}", node=("np-a", "np-b")[index % 2], labels={"role": "client"})
    pods = cluster.pods(source, 12)
    cluster.policy(target, "from-team", {"podSelector": {}, "ingress": [{"from": [
        {"namespaceSelector": {"matchLabels": {"scale-team": team}}}]}]})
    key = f"LS{{ML:{{scale-team: {team},}},}}_nil"
    set_name = hashed_name(f"default-network-controller:PodSelector:{key}:v4")
    wait_for("the peer set holds every pod", lambda: addresses(cluster, set_name) == {p.ip for p in pods.values()})
    cluster.settle()
    process = cluster.env.process
    assert process is not None and process.ctx is not None
    spy = CommitSpy()
    process.ctx.pm.register(spy, name="test-commit-spy")
    try:
        cluster.pod(source, "late", node="np-a", labels={"role": "client"})
        late = cluster.pods(source, 13)["late"]
        wait_for("the new pod's address in the set", lambda: late.ip in addresses(cluster, set_name))
        cluster.settle()
    finally:
        process.ctx.pm.unregister(spy)
    assert addresses(cluster, set_name) == {p.ip for p in pods.values()} | {late.ip}
    assert spy.commands, "the pod event reconciled the set"
    # The set's row is ensured without its addresses column; only the new address is planned.
    ensured = [c for c in spy.commands if isinstance(c, EnsureRow)]
    assert ensured and all("addresses" not in c.columns for c in ensured)
    added = [v for c in spy.commands if isinstance(c, SetMembership) for v in c.add_values]
    removed = [v for c in spy.commands if isinstance(c, SetMembership) for v in c.remove_values]
    assert set(added) == {late.ip} and not removed


def test_replanning_a_namespace_default_deny_looks_up_no_port_already_in_its_groups(
        cluster: NetpolCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    ns = cluster.namespace("deny-cost")
    for index in range(15):
        cluster.pod(ns, f"p{index}", node=("np-a", "np-b")[index % 2], labels={"app": "x"})
    cluster.pods(ns, 15)
    cluster.policy(ns, "deny-all", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})
    group = hashed_name(f"default-network-controller:NetpolNamespace:{ns}:Ingress")
    wait_for("every pod in the default-deny group", lambda: len(_group_ports(cluster, group)) == 15)
    cluster.settle()
    lookups: list[str] = []
    real_find_one = netpol_controller.find_one

    def counting_find_one(idl: Any, match: Any, *args: Any, **kwargs: Any) -> Any:
        if match.table == "Logical_Switch_Port":
            lookups.append(str(match.name))
        return real_find_one(idl, match, *args, **kwargs)

    monkeypatch.setattr(netpol_controller, "find_one", counting_find_one)
    runtime = cluster.runtime
    runtime.namespaces.reconcile(ReconcileRequest(key=ns))
    assert lookups == []
    # After a new pod joined (its port looked up once, then added), a re-plan again looks up nothing.
    cluster.pod(ns, "late", node="np-a", labels={"app": "x"})
    cluster.pods(ns, 16)
    wait_for("the new pod in the group", lambda: len(_group_ports(cluster, group)) == 16)
    lookups.clear()
    runtime.namespaces.reconcile(ReconcileRequest(key=ns))
    assert lookups == []


def _group_ports(cluster: NetpolCluster, name: str) -> list[Any]:
    for row in cluster.env.nb_rows("Port_Group"):
        if nb_value(row["name"]) == name:
            return as_list(nb_value(row["ports"]))
    return []
