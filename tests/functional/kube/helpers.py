"""Helpers shared by the ``ovnk.core.kube`` functional tests."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

from ovnk.core.kube.cache import resource_version
from ovnk.core.kube.client import KubeClient
from ovnk.core.kube.errors import Conflict
from ovnk.core.kube.errors import Unavailable
from ovnk.core.kube.resources import CONFIGMAPS
from ovnk.core.kube.resources import object_key

# Every ConfigMap the tests write carries this label and informers/lists select on it:
# kube-controller-manager adds its own ConfigMap (kube-root-ca.crt) to each new namespace
# at a moment of its choosing.
TEST_LABEL = "ovnk.test/owned"
SELECTOR = f"{TEST_LABEL}=yes"


def retrying(action: Callable[[], Any], *, timeout: float = 60.0) -> Any:
    """Run a write until the API server takes it (it may be down for a restart).

    A create whose response was lost shows up as Conflict on the retry: it happened.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            return action()
        except Conflict as exc:
            if exc.reason == "AlreadyExists":
                return None
            raise
        except Unavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def wait_until(predicate: Callable[[], bool], *, timeout: float, interval: float = 0.05, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


class RecordingHandler:
    """Checks the informer protocol as events arrive and keeps the last seen state per key.

    ``state[key]`` is the last delivered resourceVersion, or None once deleted.
    Violations (an add for a live key, an update whose ``old`` is not what was
    delivered last, a delete of an unknown key, a resourceVersion delivered twice)
    are collected rather than raised, since handlers run on the informer thread.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.state: dict[str, str | None] = {}
        self.calls: list[tuple[str, str, str]] = []
        self.violations: list[str] = []
        self._delivered: set[tuple[str, str]] = set()

    def _deliver(self, kind: str, key: str, version: str) -> None:
        if (key, version) in self._delivered:
            self.violations.append(f"{kind} {key}@{version}: resourceVersion delivered twice")
        self._delivered.add((key, version))
        self.calls.append((kind, key, version))

    def on_add(self, obj: dict[str, Any]) -> None:
        key, version = object_key(obj), resource_version(obj)
        with self.lock:
            if self.state.get(key) is not None:
                self.violations.append(f"add {key}@{version} while live at {self.state[key]}")
            self._deliver("add", key, version)
            self.state[key] = version

    def on_update(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        key, version = object_key(new), resource_version(new)
        with self.lock:
            if self.state.get(key) != resource_version(old):
                self.violations.append(f"update {key}: old {resource_version(old)} but last seen {self.state.get(key)}")
            if version == resource_version(old):
                self.violations.append(f"update {key}@{version} without a change")
            self._deliver("update", key, version)
            self.state[key] = version

    def on_delete(self, obj: dict[str, Any]) -> None:
        key = object_key(obj)
        with self.lock:
            if self.state.get(key) is None:
                self.violations.append(f"delete of {key} which is not live")
            self.calls.append(("delete", key, resource_version(obj)))
            self.state[key] = None

    def live(self) -> dict[str, str]:
        with self.lock:
            return {key: version for key, version in self.state.items() if version is not None}

    def calls_for(self, key: str) -> list[tuple[str, str, str]]:
        with self.lock:
            return [call for call in self.calls if call[1] == key]


def listed_versions(client: KubeClient, namespace: str) -> dict[str, str]:
    items, _ = client.list(CONFIGMAPS, namespace=namespace, label_selector=SELECTOR)
    return {object_key(item): resource_version(item) for item in items}


def assert_converged(informer: Any, handler: RecordingHandler, client: KubeClient, namespace: str,
                     *, timeout: float = 60.0) -> dict[str, str]:
    """Wait until the store and the handler's last-seen state equal a fresh list; return it."""
    expected: dict[str, str] = {}

    def converged() -> bool:
        nonlocal expected
        try:
            expected = listed_versions(client, namespace)
        except Unavailable:
            return False
        return informer.store.resource_versions() == expected and handler.live() == expected

    with contextlib.suppress(AssertionError):
        wait_until(converged, timeout=timeout, interval=0.2, what="informer convergence")
    store = informer.store.resource_versions()
    live = handler.live()
    assert store == expected, _diff("store", store, expected)
    assert live == expected, _diff("handler", live, expected)
    assert not handler.violations, handler.violations[:20]
    return expected


def _diff(what: str, got: dict[str, str], expected: dict[str, str]) -> str:
    missing = sorted(set(expected) - set(got))[:10]
    extra = sorted(set(got) - set(expected))[:10]
    stale = sorted(k for k in set(got) & set(expected) if got[k] != expected[k])[:10]
    return f"{what} differs from a fresh list: missing {missing}, extra {extra}, stale {stale}"


def configmap(name: str, namespace: str, **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace, "labels": {TEST_LABEL: "yes"}},
            "data": dict(data)}
