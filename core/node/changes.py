"""Waiting for a condition that other threads' events may make true.

The node agent waits on two kinds of events: pod events from its informer and
changes of its Open_vSwitch database. Both sides keep a :class:`ChangeSignal`:
the event side calls :meth:`~ChangeSignal.bump`, the waiting side calls
:meth:`~ChangeSignal.wait_for`, which re-checks its condition after each bump
(and at least once a second) instead of polling.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

# The longest a waiter sleeps without re-checking: bounds how late a change of ``stop``
# (which nobody bumps for) is seen.
MAX_SLICE = 1.0


class WaitStopped(Exception):
    """``stop()`` gave a reason to stop waiting; the reason is the message."""


class ChangeSignal:
    """A generation counter that waiters block on until it moves."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._generation = 0

    def bump(self) -> None:
        """Make every :meth:`wait_for` re-check its condition."""
        with self._changed:
            self._generation += 1
            self._changed.notify_all()

    def wait_for(self, check: Callable[[], T | None], *, timeout: float,
                 stop: Callable[[], str | None] | None = None) -> T | None:
        """``check()``'s first non-None value, re-checked after every bump; ``None`` after ``timeout`` seconds.

        :raises WaitStopped: ``stop()`` returned a reason.
        """
        deadline = time.monotonic() + timeout
        while True:
            with self._changed:
                generation = self._generation
            result = check()
            if result is not None:
                return result
            if stop is not None:
                reason = stop()
                if reason:
                    raise WaitStopped(reason)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            with self._changed:
                if self._generation == generation:
                    self._changed.wait(min(remaining, MAX_SLICE))
