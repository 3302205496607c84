"""What every long-running ovnk process does with signals."""

from __future__ import annotations

import faulthandler
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
