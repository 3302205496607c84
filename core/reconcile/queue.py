"""A per-key work queue with client-go semantics and per-key exponential backoff.

* A key is queued at most once; adding a key that is being processed marks it
  dirty so it is processed again right after (never by two workers at once).
* ``add_after`` schedules a key; ``add_rate_limited`` schedules it after the
  key's backoff (``base * 2**failures``, capped) and counts a failure;
  ``forget`` resets the count.
* ``schedule`` is ``add_after`` for work planned ahead (a periodic re-check, a
  DNS answer's TTL): such keys do not make the queue busy (:meth:`WorkQueue.idle`)
  until they are due, so a controller that always has a next check planned can
  still be idle.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable


class ShutDown(Exception):
    """The queue was shut down."""


class WorkQueue:
    def __init__(self, *, base_delay: float = 0.005, max_delay: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._clock = clock
        self._cond = threading.Condition()
        self._queue: deque[str] = deque()
        self._dirty: set[str] = set()
        self._processing: set[str] = set()
        self._failures: dict[str, int] = {}
        # (due, order, key, planned): planned entries come from schedule(), the rest are retries.
        self._delayed: list[tuple[float, int, str, bool]] = []
        self._planned = 0
        self._counter = itertools.count()
        self._shutdown = False

    # -- adding --------------------------------------------------------------

    def add(self, key: str) -> None:
        with self._cond:
            self._add_locked(key)

    def _add_locked(self, key: str) -> None:
        if self._shutdown or key in self._dirty:
            return
        self._dirty.add(key)
        if key not in self._processing:
            self._queue.append(key)
            self._cond.notify()

    def add_after(self, key: str, delay: float) -> None:
        self._push_delayed(key, delay, scheduled=False)

    def schedule(self, key: str, delay: float) -> None:
        """Add ``key`` after ``delay`` seconds as planned work (see the module docstring)."""
        self._push_delayed(key, delay, scheduled=True)

    def _push_delayed(self, key: str, delay: float, *, scheduled: bool) -> None:
        if delay <= 0:
            self.add(key)
            return
        with self._cond:
            if self._shutdown:
                return
            heapq.heappush(self._delayed, (self._clock() + delay, next(self._counter), key, scheduled))
            self._planned += scheduled
            self._cond.notify()

    def backoff(self, key: str) -> float:
        """The delay the next ``add_rate_limited(key)`` will use."""
        failures = self._failures.get(key, 0)
        return float(min(self.max_delay, self.base_delay * (2 ** failures)))

    def add_rate_limited(self, key: str) -> float:
        with self._cond:
            delay = self.backoff(key)
            self._failures[key] = self._failures.get(key, 0) + 1
        self.add_after(key, delay)
        return delay

    def count_failure(self, key: str) -> None:
        """Count a failed attempt without scheduling (the caller chose the delay)."""
        with self._cond:
            self._failures[key] = self._failures.get(key, 0) + 1

    def forget(self, key: str) -> None:
        with self._cond:
            self._failures.pop(key, None)

    def failures(self, key: str) -> int:
        with self._cond:
            return self._failures.get(key, 0)

    # -- consuming -----------------------------------------------------------

    def get(self, timeout: float | None = None) -> str:
        """Next key to process (blocks); raises :class:`ShutDown` when shut down, ``TimeoutError`` on timeout."""
        deadline = None if timeout is None else self._clock() + timeout
        with self._cond:
            while True:
                self._promote_due()
                if self._queue:
                    key = self._queue.popleft()
                    self._dirty.discard(key)
                    self._processing.add(key)
                    return key
                if self._shutdown:
                    raise ShutDown()
                wait = None
                if self._delayed:
                    wait = max(0.0, self._delayed[0][0] - self._clock())
                if deadline is not None:
                    remaining = deadline - self._clock()
                    if remaining <= 0:
                        raise TimeoutError()
                    wait = remaining if wait is None else min(wait, remaining)
                self._cond.wait(wait)

    def _promote_due(self) -> None:
        now = self._clock()
        while self._delayed and self._delayed[0][0] <= now:
            _, _, key, planned = heapq.heappop(self._delayed)
            self._planned -= planned
            self._add_locked(key)

    def done(self, key: str) -> None:
        with self._cond:
            self._processing.discard(key)
            if key in self._dirty:
                self._queue.append(key)
                self._cond.notify()

    # -- state ---------------------------------------------------------------

    def __len__(self) -> int:
        with self._cond:
            return len(self._queue)

    def pending(self) -> int:
        """Keys queued, delayed or being processed."""
        with self._cond:
            return len(self._queue) + len(self._delayed) + len(self._processing)

    def idle(self) -> bool:
        """Nothing queued, processing or waiting for a retry (planned ``schedule`` keys do not count)."""
        with self._cond:
            self._promote_due()
            return not self._queue and not self._processing and len(self._delayed) == self._planned

    def shutdown(self) -> None:
        with self._cond:
            self._shutdown = True
            self._cond.notify_all()
