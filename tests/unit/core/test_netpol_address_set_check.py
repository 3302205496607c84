"""When a peer address set may be updated from the changed shares alone (pure logic)."""

from __future__ import annotations

from ovnk.core.builtin.netpol.controller import _SetObservation


def seen(count: int, *, added: int = 0, still_there: int = 0, exists: bool = True) -> _SetObservation:
    return _SetObservation(exists=exists, count=count, added=added, still_there=still_there)


def test_a_set_as_our_last_commit_left_it_is_trusted() -> None:
    # 10.0.0.2 is gone, yet the size is what we left: some other address came in.
    assert seen(10).explained_by(10, {"10.0.0.1"}, {"10.0.0.2"}) is False
    assert seen(10, still_there=1).explained_by(10, {"10.0.0.1"}, {"10.0.0.2"})
    assert seen(10).explained_by(10, set(), set())


def test_addresses_a_pod_transaction_added_early_are_accounted_for() -> None:
    assert seen(11, added=1, still_there=1).explained_by(10, {"10.0.0.1"}, {"10.0.0.2"})
    # Ours added early and ours removed early: both pending changes already applied.
    assert seen(10, added=1).explained_by(10, {"10.0.0.1"}, {"10.0.0.2"})


def test_anything_else_sends_the_pass_to_a_whole_comparison() -> None:
    assert not seen(9, still_there=1).explained_by(10, set(), {"10.0.0.2"})  # an unrelated address is gone
    assert not seen(12, added=1).explained_by(10, {"10.0.0.1"}, set())  # an unrelated address appeared
    assert not seen(10).explained_by(None, set(), set())  # nothing written by us yet
    assert not seen(0, exists=False).explained_by(0, set(), set())  # the set was deleted
