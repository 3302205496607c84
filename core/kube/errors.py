"""Errors of the Kubernetes client, mapped from HTTP statuses and ``Status`` objects.

Callers branch on the class: ``NotFound`` (404), ``Conflict`` (409: stale
``resourceVersion`` or ``AlreadyExists``), ``ResourceExpired`` (410: the
resourceVersion was compacted, re-list), ``Invalid`` (422), and
``Unavailable`` (the API server could not be reached, or answered 429/5xx:
retry later). Everything else is a plain ``KubeError``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ovnk.core.errors import OvnkError


class KubeError(OvnkError):
    """A request to the API server failed.

    :param status: HTTP status code (0 when no response arrived).
    :param reason: machine-readable reason (``NotFound``, ``Conflict``, ``Expired`` ...).
    :param message: human-readable message from the server (or the transport error).
    """

    def __init__(self, message: str, *, status: int = 0, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


class NotFound(KubeError):
    """404: the object (or the collection) does not exist."""


class Conflict(KubeError):
    """409: optimistic-concurrency conflict or the object already exists (see ``reason``)."""


class ResourceExpired(KubeError):
    """410 Gone: the requested resourceVersion is too old; list again."""


class Invalid(KubeError):
    """422: the server rejected the object (validation)."""


class Unavailable(KubeError):
    """The API server is unreachable (refused, reset, timed out) or answered 429/5xx."""


def error_from_status(status: int, body: Mapping[str, Any] | None, *, context: str) -> KubeError:
    """Build the right error from an HTTP status and the (optional) ``Status`` object the server sent.

    ``context`` (``"GET /api/v1/..."``) prefixes the message so logs say which call failed.
    """
    body = body or {}
    code = int(body.get("code") or status)
    reason = str(body.get("reason") or "")
    detail = str(body.get("message") or reason or f"HTTP {code}")
    message = f"{context}: {detail}"
    cls: type[KubeError]
    if code == 404:
        cls = NotFound
    elif code == 409:
        cls = Conflict
    elif code == 410:
        cls = ResourceExpired
    elif code == 422:
        cls = Invalid
    elif code == 429 or code >= 500:
        cls = Unavailable
    else:
        cls = KubeError
    return cls(message, status=code, reason=reason)
