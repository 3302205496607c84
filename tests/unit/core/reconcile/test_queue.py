"""Work queue semantics (pure logic)."""

from __future__ import annotations

import threading
import time

import pytest

from ovnk.core.reconcile.queue import ShutDown
from ovnk.core.reconcile.queue import WorkQueue


def test_queue_deduplicates_and_keeps_order() -> None:
    q = WorkQueue()
    for key in ["a", "b", "a", "c", "b"]:
        q.add(key)
    assert [q.get(timeout=1) for _ in range(3)] == ["a", "b", "c"]
    with pytest.raises(TimeoutError):
        q.get(timeout=0.01)


def test_queue_key_added_while_processing_is_requeued_after_done_not_in_parallel() -> None:
    q = WorkQueue()
    q.add("a")
    assert q.get(timeout=1) == "a"
    q.add("a")
    with pytest.raises(TimeoutError):
        q.get(timeout=0.05)  # "a" is being processed: not handed out twice
    q.done("a")
    assert q.get(timeout=1) == "a"


def test_queue_backoff_doubles_and_caps_and_forget_resets() -> None:
    q = WorkQueue(base_delay=0.005, max_delay=0.04)
    delays = [q.add_rate_limited("k") for _ in range(6)]
    assert delays == [0.005, 0.01, 0.02, 0.04, 0.04, 0.04]
    q.forget("k")
    assert q.backoff("k") == 0.005


def test_queue_add_after_delivers_later() -> None:
    q = WorkQueue()
    started = time.monotonic()
    q.add_after("late", 0.1)
    q.add("now")
    assert q.get(timeout=1) == "now"
    assert q.get(timeout=1) == "late"
    assert time.monotonic() - started >= 0.09


def test_queue_shutdown_wakes_getters() -> None:
    q = WorkQueue()
    errors = []

    def getter() -> None:
        try:
            q.get()
        except ShutDown:
            errors.append("shutdown")

    thread = threading.Thread(target=getter)
    thread.start()
    time.sleep(0.05)
    q.shutdown()
    thread.join(1)
    assert errors == ["shutdown"]


def test_queue_serves_live_keys_ahead_of_a_bulk_pass_without_starving_it() -> None:
    q = WorkQueue(live_burst=2)
    for i in range(5):
        q.add(f"bulk{i}", bulk=True)
    for key in ("live0", "live1", "live2"):
        q.add(key)
    assert len(q) == 8
    order = [q.get(timeout=1) for _ in range(8)]
    # Two live keys, then one bulk key (no starvation), then the last live key, then the rest in order.
    assert order == ["live0", "live1", "bulk0", "live2", "bulk1", "bulk2", "bulk3", "bulk4"]
    assert len(q) == 0


def test_queue_bulk_key_with_a_live_event_moves_to_the_live_lane_once() -> None:
    q = WorkQueue()
    for i in range(100):
        q.add(f"k{i}", bulk=True)
    q.add("k99")  # a watch event for an object of the pass: it jumps the queue
    q.add("k98", bulk=True)  # a second bulk add changes nothing
    assert q.get(timeout=1) == "k99"
    rest = [q.get(timeout=1) for _ in range(99)]
    assert rest == [f"k{i}" for i in range(99)]
    with pytest.raises(TimeoutError):
        q.get(timeout=0.01)  # k99's stale bulk entry is not handed out again
    assert q.idle() is False  # 99 keys are still being processed
    for key in ["k99", *rest]:
        q.done(key)
    assert q.idle()


def test_queue_key_requeued_after_done_keeps_its_lane() -> None:
    q = WorkQueue()
    q.add("a", bulk=True)
    assert q.get(timeout=1) == "a"
    q.add("a", bulk=True)  # dirty while processing, bulk
    q.add("b", bulk=True)
    q.add("c")
    q.done("a")
    assert [q.get(timeout=1) for _ in range(3)] == ["c", "b", "a"]
    assert q.pending() == 3
