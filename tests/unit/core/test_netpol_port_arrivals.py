"""PortArrivals: which keys an LSP's creation wakes, and that a key waits only for what its last pass missed."""

from __future__ import annotations

from types import SimpleNamespace

from ovnk.core.builtin.netpol.controller import MISSING_PORT_RECHECK
from ovnk.core.builtin.netpol.controller import PortArrivals


def row(table: str, name: str) -> SimpleNamespace:
    return SimpleNamespace(_table=SimpleNamespace(name=table), name=name)


def test_a_key_is_woken_at_once_by_its_last_port_and_by_the_sweep_after_some() -> None:
    woken: list[tuple[str, str]] = []
    arrivals = PortArrivals(lambda controller, key: woken.append((controller, key)))
    arrivals.await_ports("netpol-namespaces", "a", {"a_p1", "a_p2"})
    arrivals.await_ports("netpol-policies", "a/allow", {"a_p1"})
    arrivals.on_row("create", row("Logical_Switch_Port", "a_p1"))
    assert woken == [("netpol-policies", "a/allow")]
    assert arrivals.waiting() == {("netpol-namespaces", "a"): {"a_p2"}}
    arrivals.on_row("create", row("Logical_Switch_Port", "a_p1"))
    assert len(woken) == 1
    arrivals.sweep()  # a_p1 appeared for "a": one pass for every port that appeared since its last
    assert woken[1:] == [("netpol-namespaces", "a")]
    arrivals.sweep()
    assert len(woken) == 2
    arrivals.on_row("create", row("Logical_Switch_Port", "a_p2"))
    assert woken[2:] == [("netpol-namespaces", "a")]
    assert arrivals.waiting() == {}


def test_a_pass_before_the_sweep_takes_the_partial_wake_up() -> None:
    woken: list[tuple[str, str]] = []
    arrivals = PortArrivals(lambda controller, key: woken.append((controller, key)))
    arrivals.await_ports("netpol-namespaces", "a", {"a_p1", "a_p2"})
    arrivals.on_row("create", row("Logical_Switch_Port", "a_p1"))
    arrivals.await_ports("netpol-namespaces", "a", {"a_p2"})  # its pass ran for another reason
    arrivals.sweep()
    assert woken == []


def test_only_a_port_creation_wakes_a_key() -> None:
    woken: list[tuple[str, str]] = []
    arrivals = PortArrivals(lambda controller, key: woken.append((controller, key)))
    arrivals.await_ports("netpol-namespaces", "a", {"a_p1"})
    arrivals.on_row("update", row("Logical_Switch_Port", "a_p1"))
    arrivals.on_row("delete", row("Logical_Switch_Port", "a_p1"))
    arrivals.on_row("create", row("Port_Group", "a_p1"))
    arrivals.on_row("create", row("Logical_Switch_Port", "b_p1"))
    assert woken == []


def test_a_new_pass_replaces_what_a_key_waits_for() -> None:
    woken: list[tuple[str, str]] = []
    arrivals = PortArrivals(lambda controller, key: woken.append((controller, key)))
    arrivals.await_ports("netpol-namespaces", "a", {"a_p1", "a_p2"})
    arrivals.await_ports("netpol-namespaces", "a", {"a_p2"})
    arrivals.on_row("create", row("Logical_Switch_Port", "a_p1"))
    assert woken == []
    arrivals.await_ports("netpol-namespaces", "a", set())
    assert arrivals.waiting() == {}
    arrivals.on_row("create", row("Logical_Switch_Port", "a_p2"))
    assert woken == []


def test_a_stopped_controller_is_skipped() -> None:
    def enqueue(controller: str, key: str) -> None:
        raise KeyError(controller)

    arrivals = PortArrivals(enqueue)
    arrivals.await_ports("netpol-namespaces", "a", {"a_p1"})
    arrivals.on_row("create", row("Logical_Switch_Port", "a_p1"))
    assert arrivals.waiting() == {}


def test_the_sweep_requeues_only_keys_that_have_waited_long_enough() -> None:
    now = [100.0]
    woken: list[tuple[str, str]] = []
    arrivals = PortArrivals(lambda controller, key: woken.append((controller, key)), clock=lambda: now[0])
    arrivals.await_ports("netpol-namespaces", "old", {"old_p1"})
    now[0] += MISSING_PORT_RECHECK / 2
    arrivals.await_ports("netpol-namespaces", "new", {"new_p1"})
    arrivals.await_ports("netpol-policies", "done", {"done_p1"})
    arrivals.await_ports("netpol-policies", "done", set())
    now[0] += MISSING_PORT_RECHECK / 2
    arrivals.sweep()
    assert woken == [("netpol-namespaces", "old")]
    arrivals.sweep()  # not again before that pass has had its time
    assert woken == [("netpol-namespaces", "old")]
    now[0] += MISSING_PORT_RECHECK
    arrivals.sweep()
    assert sorted(woken[1:]) == [("netpol-namespaces", "new"), ("netpol-namespaces", "old")]
