"""Error classes shared by core and plugins.

Retry control follows kopf: a reconcile that raises ``TemporaryError`` is
retried after the delay it names; ``PermanentError`` is not retried; any other
exception is retried with exponential backoff up to the controller's attempt
limit.
"""

from __future__ import annotations


class OvnkError(Exception):
    """Base class of every error raised on purpose by ovnk."""


class ConfigError(OvnkError):
    """Invalid configuration: the message names the key and the value."""


class PluginError(OvnkError):
    """A plugin could not be loaded, enabled, or conflicts with another one.

    The message always names the plugin.
    """


class TemporaryError(OvnkError):
    """A reconcile failed for a reason that is expected to go away; retry after ``delay`` seconds."""

    def __init__(self, message: str, *, delay: float = 1.0) -> None:
        super().__init__(message)
        self.delay = delay


class PermanentError(OvnkError):
    """A reconcile failed in a way retrying cannot fix (bad input); report it and stop retrying."""


class StartupError(OvnkError):
    """A long-running process could not start; the message says why."""
