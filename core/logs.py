"""Logging setup. Every line logged while a key is reconciled names that key.

Reconcile workers set :data:`current_key` (a context variable); a filter adds
it to every record as ``ovnk_key`` so plugins' own loggers get it for free.
"""

from __future__ import annotations

import contextvars
import logging
import sys

current_key: contextvars.ContextVar[str] = contextvars.ContextVar("ovnk_key", default="")

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(ovnk_key)s%(message)s"


class KeyFilter(logging.Filter):
    """Adds ``ovnk_key`` (``"[<controller> <key>] "`` or ``""``) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        key = current_key.get()
        record.ovnk_key = f"[{key}] " if key else ""
        return True


def setup(level: str = "info", file: str = "") -> None:
    """Configure the root logger once per process."""
    handler: logging.Handler
    handler = logging.FileHandler(file) if file else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(KeyFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Third-party chatter stays at warning unless we debug.
    for noisy in ("urllib3", "kubernetes", "ovsdbapp", "pyroute2"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if level == "debug" else logging.WARNING)
