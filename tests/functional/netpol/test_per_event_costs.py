"""What one pod event costs NetworkPolicy's shared rows, against a real NB (issue 22).

A namespace-selecting peer's address set holds a share of every pod of the cluster: a pod joining
it must plan and write that pod's address only, not read or converge the whole column (which made
every pod event O(cluster)); the pod's own transaction carries the address early; an edit by
someone else is still noticed and undone. A namespace's default-deny groups are re-planned on every pod event there:
the ports already in them must not be looked up one by one under the NB lock. A key that meets a pod
without its port waits for the port's NB row, not for a timer.
"""

from __future__ import annotations

from typing import Any

import pytest

from ovnk.core.builtin.common import ip_holder
from ovnk.core.builtin.netpol import controller as netpol_controller
from ovnk.core.errors import TemporaryError
from ovnk.core.hookspecs import hookimpl
from ovnk.core.kube.resources import PODS
from ovnk.core.ovn.commands import EnsureRow
from ovnk.core.ovn.commands import Match
from ovnk.core.ovn.commands import SetMembership
from ovnk.core.ovn.ids import hashed_name
from ovnk.core.reconcile.spec import ReconcileRequest
from tests.functional.netpol.conftest import NetpolCluster
from tests.functional.netpol.conftest import as_list
from tests.functional.netpol.conftest import wait_for
from tests.functional.topology.conftest import nb_value

pytestmark = [pytest.mark.kube, pytest.mark.ovn, pytest.mark.slow]


class CommitSpy:
    """Records the commands of every PodSelector (peer address set) transaction, and the peer-set
    memberships that Pod transactions carry."""

    def __init__(self) -> None:
        self.commands: list[Any] = []
        self.pod_memberships: list[SetMembership] = []

    @hookimpl(tryfirst=True)
    def ovnk_nb_commit(self, txn: Any) -> None:
        if txn.owner == "PodSelector":
            self.commands.extend(txn.commands)
        elif txn.owner == "Pod":
            self.pod_memberships.extend(c for c in txn.commands if isinstance(c, SetMembership)
                                        and c.match.table in ("Address_Set", "Port_Group"))

    def added(self) -> set[str]:
        return {v for c in self.commands if isinstance(c, SetMembership) for v in c.add_values}

    def removed(self) -> set[str]:
        return {v for c in self.commands if isinstance(c, SetMembership) for v in c.remove_values}


def addresses(cluster: NetpolCluster, name: str) -> set[str]:
    for row in cluster.env.nb_rows("Address_Set"):
        if nb_value(row["name"]) == name:
            return set(as_list(nb_value(row["addresses"])))
    return set()


def test_a_pod_joining_a_namespace_selected_set_writes_its_address_only(
        cluster: NetpolCluster, monkeypatch: pytest.MonkeyPatch) -> None:
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
    whole_reads = WholeSetReads(monkeypatch)
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
    # The set's row is ensured without its addresses column; only the new address is planned, and the
    # set's members were not read: the controller knows what its last commit left there.
    ensured = [c for c in spy.commands if isinstance(c, EnsureRow)]
    assert ensured and all("addresses" not in c.columns for c in ensured)
    assert spy.added() == {late.ip} and not spy.removed()
    assert whole_reads.names == []
    # The pod's own transaction carried its address into the peer set (whichever commit came first
    # wrote it): a policy admitting it does so from the moment its port exists.
    early = [c for c in spy.pod_memberships if c.match.name == set_name]
    assert early and all(c.add_values == [late.ip] and c.missing_ok for c in early)
    # A deleted pod: its address only is removed.
    spy.commands.clear()
    process.ctx.pm.register(spy, name="test-commit-spy")
    try:
        cluster.env.delete_pod(source, "p0")
        wait_for("the deleted pod's address gone", lambda: pods["p0"].ip not in addresses(cluster, set_name))
        cluster.settle()
    finally:
        process.ctx.pm.unregister(spy)
    assert spy.removed() == {pods["p0"].ip} and not spy.added()
    assert whole_reads.names == []
    wanted = {p.ip for name, p in pods.items() if name != "p0"} | {late.ip}
    assert addresses(cluster, set_name) == wanted
    # Someone else removes an address: the next pass sees the set's size differ from what it left,
    # compares the whole set and puts the address back.
    set_uuid = next(row["_uuid"][1] for row in cluster.env.nb_rows("Address_Set") if nb_value(row["name"]) == set_name)
    cluster.central.nbctl("remove", "Address_Set", set_uuid, "addresses", f'"{late.ip}"')
    peers = cluster.runtime.address_sets
    wait_for("the controller's NB replica sees the edit",
             lambda: peers._observe({set_name: (set(), set())})[set_name].count == len(wanted) - 1)
    peers.reconcile(ReconcileRequest(key=key))
    assert whole_reads.names == [set_name]
    assert addresses(cluster, set_name) == wanted
    # An address a pod transaction added early, for a pod whose annotation the cache does not show
    # yet (played here: the IPAM holds one more IP for "late", and it is in the set), is not removed
    # until the IPAM lets it go.
    cached = process.ctx.cache(PODS).get(f"{source}/late")
    holder = ip_holder(cached)
    pool = next(p for p in process.ctx.topology.pools("np-a") if p.subnet.version == 4)
    extra = pool.subnet.network_address + pool.subnet.num_addresses - 6
    assert pool.holder(extra) is None
    pool.reserve(extra, holder)
    try:
        cluster.central.nbctl("add", "Address_Set", set_uuid, "addresses", f'"{extra}"')
        wait_for("the controller's NB replica sees the early address",
                 lambda: peers._observe({set_name: (set(), set())})[set_name].count == len(wanted) + 1)
        peers.reconcile(ReconcileRequest(key=key))
        assert addresses(cluster, set_name) == wanted | {str(extra)}
    finally:
        pool.release(extra, holder)
    peers.reconcile(ReconcileRequest(key=key))
    assert addresses(cluster, set_name) == wanted


class WholeSetReads:
    """Counts the peer controller's reads of every address of a set (the fallback that costs O(set))."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.names: list[str] = []
        real = netpol_controller.AddressSetController._current_addresses

        def counting(controller: Any, names: list[str]) -> dict[str, set[str]]:
            self.names.extend(names)
            return real(controller, names)

        monkeypatch.setattr(netpol_controller.AddressSetController, "_current_addresses", counting)


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


def test_a_new_pods_own_transaction_puts_its_port_in_the_groups_that_select_it(cluster: NetpolCluster) -> None:
    ns = cluster.namespace("pg-early")
    for index in range(3):
        cluster.pod(ns, f"p{index}", node=("np-a", "np-b")[index % 2], labels={"app": "x"})
    cluster.pods(ns, 3)
    cluster.policy(ns, "deny-all", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})
    cluster.policy(ns, "allow-x", {"podSelector": {"matchLabels": {"app": "x"}}, "ingress": [{}]})
    groups = {hashed_name(f"default-network-controller:NetpolNamespace:{ns}:{d}") for d in ("Ingress", "Egress")}
    groups.add(hashed_name(f"default-network-controller:NetworkPolicy:{ns}:allow-x"))
    wait_for("every pod in every group", lambda: all(len(_group_ports(cluster, g)) == 3 for g in groups))
    cluster.settle()
    process = cluster.env.process
    assert process is not None and process.ctx is not None
    spy = CommitSpy()
    process.ctx.pm.register(spy, name="test-commit-spy")
    try:
        cluster.pod(ns, "late", node="np-a", labels={"app": "x"})
        cluster.pods(ns, 4)
        wait_for("the new pod in every group", lambda: all(len(_group_ports(cluster, g)) == 4 for g in groups))
        cluster.settle()
    finally:
        process.ctx.pm.unregister(spy)
    early = {c.match.name for c in spy.pod_memberships if c.match.table == "Port_Group" and c.missing_ok
             and [getattr(v, "match", None) and v.match.name for v in c.add_values] == [f"{ns}_late"]}
    assert groups <= early, "the pod's transaction carries its port into each group that selects it"


class HoldPodPort:
    """Holds back one pod's NB transaction (its annotation is written, its LSP is not), then lets it
    commit without the port-group memberships it carries, so only the netpol controllers can put the
    port in its groups."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        self.holding = True

    @hookimpl(tryfirst=True)
    def ovnk_nb_commit(self, txn: Any) -> None:
        if txn.owner != "Pod" or txn.reason != self.reason:
            return
        if self.holding:
            raise TemporaryError("held by the test", delay=0.2)
        txn.commands[:] = [c for c in txn.commands
                           if not (isinstance(c, SetMembership) and c.match.table == "Port_Group")]


def test_a_key_waiting_for_a_pods_port_is_woken_by_the_ports_nb_row(
        cluster: NetpolCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    ns = cluster.namespace("port-wait")
    cluster.pod(ns, "p0", node="np-a", labels={"app": "x"})
    cluster.pods(ns, 1)
    cluster.policy(ns, "deny-in", {"podSelector": {}, "policyTypes": ["Ingress"]})
    group = hashed_name(f"default-network-controller:NetpolNamespace:{ns}:Ingress")
    wait_for("the first pod in the default-deny group", lambda: len(_group_ports(cluster, group)) == 1)
    cluster.settle()
    # The periodic re-check is out of reach: only the LSP's row can wake the key in time.
    monkeypatch.setattr(netpol_controller, "MISSING_PORT_RECHECK", 3600.0)
    process = cluster.env.process
    assert process is not None and process.ctx is not None
    hold = HoldPodPort(f"pod {ns}/late")
    process.ctx.pm.register(hold, name="test-hold-pod-port")
    arrivals = cluster.runtime.arrivals
    waiter = (netpol_controller.NAMESPACES, ns)
    try:
        cluster.pod(ns, "late", node="np-b", labels={"app": "x"})
        cluster.pods(ns, 2)  # annotated, with no LSP
        wait_for("the namespace waits for the new pod's port",
                 lambda: arrivals.waiting().get(waiter) == {f"{ns}_late"})
        assert len(_group_ports(cluster, group)) == 1
        hold.holding = False
        wait_for("the woken namespace key puts the port in its group",
                 lambda: len(_group_ports(cluster, group)) == 2, timeout=30)
        assert waiter not in arrivals.waiting()
    finally:
        process.ctx.pm.unregister(hold)
    assert f"{ns}_late" in cluster.port_group_members(group)
    # The membership check the NB row listener makes, against the real IDL's rows.
    other = hashed_name(f"default-network-controller:NetpolNamespace:{ns}:Egress")  # never created

    def in_groups(idl: Any) -> tuple[bool, bool]:
        port = netpol_controller.find_one(idl, Match.of("Logical_Switch_Port", name=f"{ns}_late"))
        return netpol_controller._in_group(port, group), netpol_controller._in_group(port, other)

    assert process.ctx.nb.reader.read(in_groups) == (True, False)
