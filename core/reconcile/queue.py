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
* Two lanes: ``add(key, bulk=True)`` queues a key of a bulk pass (the initial
  list of every object, a periodic resync) behind the live lane, where every
  other key goes (watch events, retries). Workers take live keys first, but
  after ``live_burst`` live keys in a row one bulk key, so neither lane
  starves. A bulk key that gets a live ``add`` moves to the live lane. A new
  leader thus reconciles what changed since it listed (a pod created as the
  old leader died) without waiting behind its whole initial pass (client-go
  serves a relist's keys in the one FIFO; ovn-kubernetes' level-driven
  controllers do the same, which is what the scale bench's failover showed).
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


#: Live keys handed out in a row, while bulk keys wait, before one bulk key is.
LIVE_BURST = 8


class WorkQueue:
    def __init__(self, *, base_delay: float = 0.005, max_delay: float = 60.0,
                 clock: Callable[[], float] = time.monotonic, live_burst: int = LIVE_BURST) -> None:
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.live_burst = max(1, live_burst)
        self._clock = clock
        self._cond = threading.Condition()
        # The lanes may hold stale entries (a key moved to the live lane, or already handed
        # out): a key is due in a lane only while ``_dirty`` maps it to that lane (True: bulk).
        self._queue: deque[str] = deque()
        self._bulk: deque[str] = deque()
        self._dirty: dict[str, bool] = {}
        self._queued = 0
        self._live_streak = 0
        self._processing: set[str] = set()
        self._failures: dict[str, int] = {}
        # (due, order, key, planned): planned entries come from schedule(), the rest are retries.
        self._delayed: list[tuple[float, int, str, bool]] = []
        self._planned = 0
        self._counter = itertools.count()
        self._shutdown = False

    # -- adding --------------------------------------------------------------

    def add(self, key: str, *, bulk: bool = False) -> None:
        """Queue ``key`` (once); ``bulk`` puts it in the bulk lane unless it is queued live already."""
        with self._cond:
            self._add_locked(key, bulk=bulk)

    def _add_locked(self, key: str, *, bulk: bool = False) -> None:
        if self._shutdown:
            return
        was_bulk = self._dirty.get(key)
        if was_bulk is not None and (bulk or not was_bulk):
            return  # queued already, in this lane or the live one
        self._dirty[key] = bulk
        if key in self._processing:
            return  # done() queues it
        if was_bulk is None:
            self._queued += 1
        (self._bulk if bulk else self._queue).append(key)
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
                key = self._pop_locked()
                if key is not None:
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

    def _pop_locked(self) -> str | None:
        """The next due key (live first, one bulk key after ``live_burst`` live ones), or None."""
        while self._queued:
            take_bulk = bool(self._bulk) and (not self._queue or self._live_streak >= self.live_burst)
            lane = self._bulk if take_bulk else self._queue
            key = lane.popleft()
            if self._dirty.get(key) is not take_bulk or key in self._processing:
                continue  # stale entry: the key moved lanes or is handed out already
            del self._dirty[key]
            self._queued -= 1
            self._live_streak = 0 if take_bulk else self._live_streak + 1
            return key
        self._queue.clear()
        self._bulk.clear()
        return None

    def _promote_due(self) -> None:
        now = self._clock()
        while self._delayed and self._delayed[0][0] <= now:
            _, _, key, planned = heapq.heappop(self._delayed)
            self._planned -= planned
            self._add_locked(key)

    def done(self, key: str) -> None:
        with self._cond:
            self._processing.discard(key)
            bulk = self._dirty.get(key)
            if bulk is not None:
                self._queued += 1
                (self._bulk if bulk else self._queue).append(key)
                self._cond.notify()

    # -- state ---------------------------------------------------------------

    def __len__(self) -> int:
        with self._cond:
            return self._queued

    def pending(self) -> int:
        """Keys queued, delayed or being processed."""
        with self._cond:
            return self._queued + len(self._delayed) + len(self._processing)

    def idle(self) -> bool:
        """Nothing queued, processing or waiting for a retry (planned ``schedule`` keys do not count)."""
        with self._cond:
            self._promote_due()
            return not self._queued and not self._processing and len(self._delayed) == self._planned

    def shutdown(self) -> None:
        with self._cond:
            self._shutdown = True
            self._cond.notify_all()
