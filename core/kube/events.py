"""Kubernetes Events about the objects we reconcile (``kubectl describe`` shows them).

Reporting must never break a reconcile: :meth:`EventRecorder.event` logs
instead of raising. Repeats of the same event (same object uid, type, reason
and message) are folded into one Event whose ``count`` and ``lastTimestamp``
are patched, as client-go's EventCorrelator does, so a reconcile failing in
a loop does not flood etcd.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC
from datetime import datetime
from typing import Any
from typing import Literal

from ovnk.core.kube.client import KubeClient
from ovnk.core.kube.errors import NotFound
from ovnk.core.kube.resources import EVENTS

logger = logging.getLogger(__name__)

EventType = Literal["Normal", "Warning"]
MAX_MESSAGE_LENGTH = 1024


@dataclass
class _Aggregate:
    namespace: str
    name: str
    count: int


def _timestamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class EventRecorder:
    """Writes core/v1 Events on behalf of ``component`` (running on ``host``).

    :param max_tracked: how many distinct events are remembered for aggregation
        (least recently used are forgotten first).
    """

    def __init__(self, client: KubeClient, *, component: str, host: str = "", max_tracked: int = 4096) -> None:
        self.client = client
        self.component = component
        self.host = host
        self._max_tracked = max_tracked
        self._lock = threading.Lock()
        self._recent: OrderedDict[tuple[str, str, str, str], _Aggregate] = OrderedDict()

    def event(self, obj: Mapping[str, Any], *, type: EventType, reason: str, message: str) -> None:
        """Record an event about ``obj`` (a Kubernetes object dict); never raises."""
        try:
            self._record(obj, event_type=type, reason=reason, message=message)
        except Exception as exc:
            metadata = obj.get("metadata") if isinstance(obj, Mapping) else None
            name = (metadata or {}).get("name", "?") if isinstance(metadata, Mapping) else "?"
            logger.warning("could not record %s event %s on %s: %s (message: %s)", type, reason, name, exc, message)

    def _record(self, obj: Mapping[str, Any], *, event_type: str, reason: str, message: str) -> None:
        metadata = obj.get("metadata") or {}
        name = str(metadata["name"])
        object_namespace = str(metadata.get("namespace") or "")
        # Events about cluster-scoped objects live in "default" (the API's convention).
        namespace = object_namespace or "default"
        message = message[:MAX_MESSAGE_LENGTH]
        identity = str(metadata.get("uid") or f"{obj.get('kind')}/{object_namespace}/{name}")
        key = (identity, event_type, reason, message)
        now = _timestamp()

        count = 0
        with self._lock:
            aggregate = self._recent.get(key)
            if aggregate is not None:
                self._recent.move_to_end(key)
                aggregate.count += 1
                count = aggregate.count
        if aggregate is not None:
            try:
                self.client.patch(EVENTS, aggregate.name, {"count": count, "lastTimestamp": now},
                                  namespace=aggregate.namespace)
                return
            except NotFound:
                pass  # the Event expired (the API server's TTL): start a new one

        involved = {
            "kind": obj.get("kind", ""),
            "apiVersion": obj.get("apiVersion", ""),
            "name": name,
            "uid": metadata.get("uid", ""),
            "resourceVersion": metadata.get("resourceVersion", ""),
        }
        if object_namespace:
            involved["namespace"] = object_namespace
        source = {"component": self.component}
        if self.host:
            source["host"] = self.host
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{name[:200]}.{time.time_ns():x}", "namespace": namespace},
            "involvedObject": {k: v for k, v in involved.items() if v},
            "type": event_type,
            "reason": reason,
            "message": message,
            "source": source,
            "reportingComponent": self.component,
            "reportingInstance": self.host,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        created = self.client.create(EVENTS, body, namespace=namespace)
        with self._lock:
            self._recent[key] = _Aggregate(namespace, str(created["metadata"]["name"]), 1)
            self._recent.move_to_end(key)
            while len(self._recent) > self._max_tracked:
                self._recent.popitem(last=False)
