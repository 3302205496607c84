"""Start-up defers the garbage collector and gives it back (issue 22: restart resync CPU)."""

from __future__ import annotations

import gc

from ovnk.core.process import STARTUP_GC_THRESHOLD
from ovnk.core.process import defer_garbage_collection
from ovnk.core.process import restore_garbage_collection


def test_deferring_raises_the_young_threshold_and_restoring_gives_back_the_old_ones() -> None:
    before = gc.get_threshold()
    previous = defer_garbage_collection()
    try:
        assert previous == before
        assert gc.get_threshold() == (STARTUP_GC_THRESHOLD, before[1], before[2])
        frozen = gc.get_freeze_count()
    finally:
        restore_garbage_collection(previous, freeze=True)
    try:
        assert gc.get_threshold() == before
        # What start-up built is out of later full collections' way, without one now.
        assert gc.get_freeze_count() > frozen
    finally:
        gc.unfreeze()


def test_restoring_without_freezing_only_gives_back_the_thresholds() -> None:
    before = gc.get_threshold()
    frozen = gc.get_freeze_count()
    restore_garbage_collection(defer_garbage_collection())
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == frozen
