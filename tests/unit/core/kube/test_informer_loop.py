"""The informer loop's bookkeeping, driven by a scripted fake client (our own seam).

The functional tests run the loop against a real API server; these pin down the
cases a healthy server rarely produces on demand: an event repeating the cached
resourceVersion, a delete of an object the cache never had, bookmarks, and which
resourceVersion each reconnect resumes from.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry

from ovnk.core.kube.client import WatchEvent
from ovnk.core.kube.errors import ResourceExpired
from ovnk.core.kube.errors import Unavailable
from ovnk.core.kube.informer import CallbackHandler
from ovnk.core.kube.informer import Informer
from ovnk.core.kube.informer import InformerMetrics
from ovnk.core.kube.resources import CONFIGMAPS


def cm(name: str, version: str, **data: str) -> dict[str, Any]:
    return {"kind": "ConfigMap", "apiVersion": "v1",
            "metadata": {"name": name, "namespace": "ns", "resourceVersion": version}, "data": data}


class FakeClient:
    """Answers list() and watch() from scripts; a script entry is a list of events or an exception."""

    request_timeout = 1.0

    def __init__(self, lists: list[tuple[list[dict[str, Any]], str]], watches: list[Any]) -> None:
        self.lists = lists
        self.watches = watches
        self.watched_from: list[str] = []
        self.list_calls = 0
        self.exhausted = threading.Event()

    def list(self, resource: Any, **kwargs: Any) -> tuple[list[dict[str, Any]], str]:
        self.list_calls += 1
        items, version = self.lists.pop(0)
        return [dict(i) for i in items], version

    def watch(self, resource: Any, *, resource_version: str, **kwargs: Any) -> Iterator[WatchEvent]:
        if self.exhausted.is_set():
            # The informer retries until the test stops it; how often it gets to is timing, not script.
            raise Unavailable("script finished")
        self.watched_from.append(resource_version)
        if not self.watches:
            self.exhausted.set()
            raise Unavailable("script finished")
        step = self.watches.pop(0)
        if isinstance(step, Exception):
            raise step
        return _Stream(step)


class _Stream:
    def __init__(self, events: list[WatchEvent]) -> None:
        self._events = iter(events)

    def __iter__(self) -> _Stream:
        return self

    def __next__(self) -> WatchEvent:
        event = next(self._events)
        if isinstance(event, Exception):
            raise event
        return event

    def close(self) -> None:
        pass


def run(client: FakeClient) -> tuple[Informer, list[tuple[str, str, str]], CollectorRegistry]:
    registry = CollectorRegistry()
    calls: list[tuple[str, str, str]] = []

    def record(kind: str) -> Any:
        return lambda *objs: calls.append((kind, objs[-1]["metadata"]["name"], objs[-1]["metadata"]["resourceVersion"]))

    informer = Informer(client, CONFIGMAPS, namespace="ns", metrics=InformerMetrics(registry),  # type: ignore[arg-type]
                        backoff_initial=0.001, backoff_max=0.002)
    informer.add_handler(CallbackHandler(on_add=record("add"), on_update=record("update"), on_delete=record("delete")))
    informer.start()
    assert client.exhausted.wait(10)
    informer.stop()
    return informer, calls, registry


def test_informer_drops_repeated_versions_and_unknown_deletes() -> None:
    client = FakeClient(
        lists=[([cm("a", "5")], "7")],
        watches=[[
            WatchEvent("ADDED", cm("a", "5")),            # what the list already gave: nothing
            WatchEvent("MODIFIED", cm("a", "8", v="1")),
            WatchEvent("MODIFIED", cm("a", "8", v="1")),  # repeated: nothing
            WatchEvent("DELETED", cm("ghost", "9")),      # never cached: nothing
            WatchEvent("BOOKMARK", {"kind": "ConfigMap", "metadata": {"resourceVersion": "12"}}),
        ]],
    )
    informer, calls, registry = run(client)
    assert calls == [("add", "a", "5"), ("update", "a", "8")]
    assert informer.store.resource_versions() == {"ns/a": "8"}
    # The second watch resumed from the bookmark, not from the last object event.
    assert client.watched_from == ["7", "12"]
    assert registry.get_sample_value("ovnk_kube_watch_events_total",
                                     {"resource": "configmaps", "type": "BOOKMARK"}) == 1


def test_informer_resumes_after_disconnect_and_relists_after_expiry() -> None:
    client = FakeClient(
        lists=[([cm("a", "5"), cm("b", "6")], "6"), ([cm("a", "5"), cm("c", "20")], "21")],
        watches=[
            [WatchEvent("MODIFIED", cm("b", "10")), Unavailable("connection reset")],
            Unavailable("connection refused"),
            [WatchEvent("ADDED", cm("d", "11")), ResourceExpired("too old", status=410)],
            [],
        ],
    )
    informer, calls, registry = run(client)
    assert client.watched_from == ["6", "10", "10", "21", "21"]
    # After the re-list: b and d deleted, c added, a (same version) untouched.
    assert calls == [("add", "a", "5"), ("add", "b", "6"), ("update", "b", "10"), ("add", "d", "11"),
                     ("delete", "b", "10"), ("delete", "d", "11"), ("add", "c", "20")]
    assert informer.store.resource_versions() == {"ns/a": "5", "ns/c": "20"}
    assert client.list_calls == 2
    labels = {"resource": "configmaps"}
    assert registry.get_sample_value("ovnk_kube_relists_total", {**labels, "reason": "expired"}) == 1
    assert registry.get_sample_value("ovnk_kube_watch_reconnects_total", labels) >= 2
