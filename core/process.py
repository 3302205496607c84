"""What every long-running ovnk process does with signals."""

from __future__ import annotations

import faulthandler
import gc
import logging
import signal
import threading
from typing import Any

logger = logging.getLogger(__name__)


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT; ``kill -USR1 <pid>`` dumps every thread's stack to stderr.

    The stack dump is the way to see what a stuck process waits for.
    """
    stop = threading.Event()

    def handle(signum: int, _frame: Any) -> None:
        logger.info("signal %d: shutting down", signum)
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    return stop


# glibc's mallopt parameter (malloc.h): the most arenas malloc creates for threads.
_M_ARENA_MAX = -8
#: Arenas for a controller: with its ~60 threads glibc would make 8 per core, each keeping the
#: freed memory of what its threads allocated (the JSON of a 10,000-pod list among it) as RSS.
#: Python's own small-object allocator does not use them; the GIL serialises most calls anyway.
MALLOC_ARENAS = 2


def _libc() -> Any:
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas (call before threads start); False where that is not glibc."""
    libc = _libc()
    if libc is None or not hasattr(libc, "mallopt"):
        return False
    return bool(libc.mallopt(_M_ARENA_MAX, arenas))


def release_free_memory() -> bool:
    """Give the heap's free pages back to the kernel (glibc ``malloc_trim``): after a burst such
    as the first list of every pod, the freed memory otherwise stays in the process's RSS."""
    libc = _libc()
    if libc is None or not hasattr(libc, "malloc_trim"):
        return False
    libc.malloc_trim(0)
    return True


#: Allocations between young collections while a controller starts (Python's default: 700).
#: Start-up allocates millions of long-lived objects (every cached object, every NB row): with
#: the default, the collector ran some 350 times per 1,000 pods and its full collections walk
#: everything allocated so far, over and over; little of that garbage is cyclic.
STARTUP_GC_THRESHOLD = 50_000


def defer_garbage_collection(threshold: int = STARTUP_GC_THRESHOLD) -> tuple[int, int, int]:
    """Collect garbage less often until :func:`restore_garbage_collection`; returns the thresholds before."""
    previous = gc.get_threshold()
    gc.set_threshold(threshold, previous[1], previous[2])
    return previous


def restore_garbage_collection(previous: tuple[int, int, int], *, freeze: bool = False) -> None:
    """Back to ``previous`` thresholds; with ``freeze``, what start-up built moves out of the collector's way.

    Frozen (``gc.freeze``, after a collection of the young generations only) is what is alive
    now, the caches and the NB replica: later full collections do not walk it again. A full
    collection here instead paused every thread for seconds at 10,000 pods, long enough for a
    2 s lease renewal deadline to pass (the first full-shape run lost its leader that way at the
    end of its first pass).
    """
    if freeze:
        gc.collect(1)
        gc.freeze()
    gc.set_threshold(*previous)
