"""PortArrivals: which keys an LSP's creation wakes, and that a key waits only for what its last pass missed."""

from __future__ import annotations

from types import SimpleNamespace

from ovnk.core.builtin.netpol.controller import MISSING_PORT_RECHECK
from ovnk.core.builtin.netpol.controller import PortArrivals


def row(table: str, name: str) -> SimpleNamespace:
    return SimpleNamespace(_table=SimpleNamespace(name=table), name=name)


class Groups:
    """Port-group membership as the NB shows it when the port's row appears."""

    def __init__(self) -> None:
        self.members: dict[str, set[str]] = {}

    def holds(self, port: SimpleNamespace, group: str) -> bool:
        return port.name in self.members.get(group, set())


def arrivals_with(groups: Groups, woken: list[tuple[str, str]], **kwargs: object) -> PortArrivals:
    return PortArrivals(lambda controller, key: woken.append((controller, key)), in_group=groups.holds,
                        **kwargs)  # type: ignore[arg-type]


def test_a_port_already_in_its_groups_wakes_nobody() -> None:
    groups, woken = Groups(), []
    arrivals = arrivals_with(groups, woken)
    arrivals.await_ports("netpol-namespaces", "a", {"a_p1": ["deny-in", "deny-out"], "a_p2": ["deny-in"]})
    groups.members = {"deny-in": {"a_p1"}, "deny-out": {"a_p1"}}  # the pod's transaction put it there
    arrivals.on_row("create", row("Logical_Switch_Port", "a_p1"))
    assert woken == []
    assert arrivals.waiting() == {("netpol-namespaces", "a"): {"a_p2"}}


def test_a_port_missing_from_a_group_wakes_each_key_that_wants_it_there() -> None:
    groups, woken = Groups(), []
    arrivals = arrivals_with(groups, woken)
    arrivals.await_ports("netpol-namespaces", "a", {"a_p1": ["deny-in"], "a_p2": ["deny-in"]})
    arrivals.await_ports("netpol-policies", "a/allow", {"a_p1": ["allow"]})
    groups.members = {"deny-in": {"a_p1"}}  # the policy's group did not exist when the pod committed
    arrivals.on_row("create", row("Logical_Switch_Port", "a_p1"))
    assert woken == [("netpol-policies", "a/allow")]
    assert arrivals.waiting() == {("netpol-namespaces", "a"): {"a_p2"}}
    arrivals.on_row("create", row("Logical_Switch_Port", "a_p1"))
    assert len(woken) == 1


def test_only_a_port_creation_counts() -> None:
    groups, woken = Groups(), []
    arrivals = arrivals_with(groups, woken)
    arrivals.await_ports("netpol-namespaces", "a", {"a_p1": ["deny-in"]})
    arrivals.on_row("update", row("Logical_Switch_Port", "a_p1"))
    arrivals.on_row("delete", row("Logical_Switch_Port", "a_p1"))
    arrivals.on_row("create", row("Port_Group", "a_p1"))
    arrivals.on_row("create", row("Logical_Switch_Port", "b_p1"))
    assert woken == []
    assert arrivals.waiting() == {("netpol-namespaces", "a"): {"a_p1"}}


def test_a_new_pass_replaces_what_a_key_waits_for() -> None:
    groups, woken = Groups(), []
    arrivals = arrivals_with(groups, woken)
    arrivals.await_ports("netpol-namespaces", "a", {"a_p1": ["deny-in"], "a_p2": ["deny-in"]})
    arrivals.await_ports("netpol-namespaces", "a", {"a_p2": ["deny-in"]})
    arrivals.on_row("create", row("Logical_Switch_Port", "a_p1"))
    assert woken == []
    arrivals.await_ports("netpol-namespaces", "a", {})
    assert arrivals.waiting() == {}
    arrivals.on_row("create", row("Logical_Switch_Port", "a_p2"))
    assert woken == []


def test_a_stopped_controller_is_skipped() -> None:
    def enqueue(controller: str, key: str) -> None:
        raise KeyError(controller)

    arrivals = PortArrivals(enqueue, in_group=lambda port, group: False)
    arrivals.await_ports("netpol-namespaces", "a", {"a_p1": ["deny-in"]})
    arrivals.on_row("create", row("Logical_Switch_Port", "a_p1"))
    assert arrivals.waiting() == {}


def test_the_sweep_requeues_only_keys_that_have_waited_long_enough() -> None:
    now = [100.0]
    groups, woken = Groups(), []
    arrivals = arrivals_with(groups, woken, clock=lambda: now[0])
    arrivals.await_ports("netpol-namespaces", "old", {"old_p1": ["g"]})
    now[0] += MISSING_PORT_RECHECK / 2
    arrivals.await_ports("netpol-namespaces", "new", {"new_p1": ["g"]})
    arrivals.await_ports("netpol-policies", "done", {"done_p1": ["g"]})
    arrivals.await_ports("netpol-policies", "done", {})
    now[0] += MISSING_PORT_RECHECK / 2
    arrivals.sweep()
    assert woken == [("netpol-namespaces", "old")]
    arrivals.sweep()  # not again before that pass has had its time
    assert woken == [("netpol-namespaces", "old")]
    now[0] += MISSING_PORT_RECHECK
    arrivals.sweep()
    assert sorted(woken[1:]) == [("netpol-namespaces", "new"), ("netpol-namespaces", "old")]


def test_a_key_whose_ports_keep_appearing_is_not_swept() -> None:
    now = [100.0]
    groups, woken = Groups(), []
    arrivals = arrivals_with(groups, woken, clock=lambda: now[0])
    groups.members = {"g": {"a_p1", "a_p2"}}
    arrivals.await_ports("netpol-namespaces", "a", {"a_p1": ["g"], "a_p2": ["g"], "a_p3": ["g"]})
    now[0] += MISSING_PORT_RECHECK * 0.9
    arrivals.on_row("create", row("Logical_Switch_Port", "a_p1"))
    now[0] += MISSING_PORT_RECHECK * 0.9
    arrivals.on_row("create", row("Logical_Switch_Port", "a_p2"))
    now[0] += MISSING_PORT_RECHECK * 0.9
    arrivals.sweep()
    assert woken == []
    now[0] += MISSING_PORT_RECHECK * 0.2
    arrivals.sweep()  # a_p3 is stuck
    assert woken == [("netpol-namespaces", "a")]
