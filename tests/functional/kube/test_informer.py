"""Informers against the real API server, including its death, restarts and 410 Gone."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from ovnk.core.kube.cache import Store
from ovnk.core.kube.cache import strip_object
from ovnk.core.kube.cache import strip_pod
from ovnk.core.kube.client import KubeClient
from ovnk.core.kube.informer import CallbackHandler
from ovnk.core.kube.informer import Informer
from ovnk.core.kube.informer import InformerFactory
from ovnk.core.kube.resources import CONFIGMAPS
from ovnk.core.kube.resources import NAMESPACES
from ovnk.core.kube.resources import PODS
from ovnk.core.kube.resources import Resource
from tests.functional.kube.conftest import ApiServerControl
from tests.functional.kube.helpers import SELECTOR
from tests.functional.kube.helpers import RecordingHandler
from tests.functional.kube.helpers import assert_converged
from tests.functional.kube.helpers import configmap
from tests.functional.kube.helpers import listed_versions
from tests.functional.kube.helpers import retrying
from tests.functional.kube.helpers import wait_until

pytestmark = pytest.mark.kube

SERVICEACCOUNTS = Resource("", "v1", "ServiceAccount", "serviceaccounts")


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def informers() -> Iterator[list[Informer]]:
    """Informers a test starts; all stopped at the end."""
    started: list[Informer] = []
    yield started
    for informer in started:
        informer.stop()


def configmap_informer(client: KubeClient, namespace: str, registry: CollectorRegistry,
                       informers: list[Informer]) -> tuple[Informer, RecordingHandler]:
    factory = InformerFactory(client, registry=registry)
    informer = factory.informer(CONFIGMAPS, namespace=namespace, label_selector=SELECTOR)
    handler = RecordingHandler()
    informer.add_handler(handler)
    informers.append(informer)
    informer.start()
    assert informer.wait_for_sync(30)
    return informer, handler


def metric(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, {"resource": "configmaps", **labels}) or 0.0


# -- basics -------------------------------------------------------------------------


def test_informer_initial_sync_equals_list(
    client: KubeClient, writer: KubeClient, namespace: str, registry: CollectorRegistry,
    informers: list[Informer],
) -> None:
    for i in range(12):
        writer.create(CONFIGMAPS, configmap(f"cm-{i}", namespace, i=str(i)))
    informer, handler = configmap_informer(client, namespace, registry, informers)
    expected = listed_versions(writer, namespace)
    assert informer.store.resource_versions() == expected
    assert handler.live() == expected
    assert sorted(kind for kind, _, _ in handler.calls) == ["add"] * len(expected)
    assert int(informer.last_resource_version) >= max(int(v) for v in expected.values())
    assert metric(registry, "ovnk_kube_relists_total", reason="initial") == 1
    cached = informer.store.get(f"{namespace}/cm-3")
    assert cached is not None and cached["data"] == {"i": "3"} and cached["kind"] == "ConfigMap"
    assert len(informer.store.by_index("namespace", namespace)) == len(expected)


def test_informer_delivers_changes_in_order(
    client: KubeClient, writer: KubeClient, namespace: str, registry: CollectorRegistry,
    informers: list[Informer],
) -> None:
    informer, handler = configmap_informer(client, namespace, registry, informers)
    baseline = len(handler.calls)
    writer.create(CONFIGMAPS, configmap("x", namespace, v="1"))
    writer.patch(CONFIGMAPS, "x", {"data": {"v": "2"}}, namespace=namespace)
    writer.patch(CONFIGMAPS, "x", {"data": {"v": "3"}}, namespace=namespace)
    writer.delete(CONFIGMAPS, "x", namespace=namespace)
    key = f"{namespace}/x"
    wait_until(lambda: len(handler.calls_for(key)) == 4, timeout=20, what="4 events for x")
    assert [kind for kind, _, _ in handler.calls_for(key)] == ["add", "update", "update", "delete"]
    versions = [int(v) for _, _, v in handler.calls_for(key)]
    assert versions == sorted(versions)
    assert len(handler.calls) == baseline + 4
    assert key not in informer.store
    assert not handler.violations
    assert metric(registry, "ovnk_kube_watch_events_total", type="MODIFIED") == 2
    assert metric(registry, "ovnk_kube_watch_events_total", type="DELETED") == 1


def test_informer_handler_added_after_sync_gets_existing_objects(
    client: KubeClient, writer: KubeClient, namespace: str, registry: CollectorRegistry,
    informers: list[Informer],
) -> None:
    for i in range(5):
        writer.create(CONFIGMAPS, configmap(f"e-{i}", namespace))
    informer, _ = configmap_informer(client, namespace, registry, informers)
    late = RecordingHandler()
    informer.add_handler(late)
    assert late.live() == informer.store.resource_versions()
    writer.create(CONFIGMAPS, configmap("after", namespace))
    wait_until(lambda: f"{namespace}/after" in late.live(), timeout=20, what="late handler sees new object")
    assert not late.violations


def test_informer_survives_failing_handler(
    client: KubeClient, writer: KubeClient, namespace: str, registry: CollectorRegistry,
    informers: list[Informer], caplog: pytest.LogCaptureFixture,
) -> None:
    def explode(obj: dict[str, Any]) -> None:
        raise RuntimeError(f"boom on {obj['metadata']['name']}")

    informer, handler = configmap_informer(client, namespace, registry, informers)
    informer.add_handler(CallbackHandler(on_add=explode))
    with caplog.at_level(logging.ERROR, logger="ovnk.core.kube.informer"):
        writer.create(CONFIGMAPS, configmap("bad", namespace))
        writer.create(CONFIGMAPS, configmap("good", namespace))
        wait_until(lambda: f"{namespace}/good" in handler.live(), timeout=20, what="informer goes on")
    messages = [r.getMessage() for r in caplog.records]
    assert any("failed on add" in m and f"{namespace}/bad" in m for m in messages), messages
    assert f"{namespace}/bad" in informer.store


def test_informer_pods_are_stripped_and_indexed_by_node(
    client: KubeClient, writer: KubeClient, namespace: str, informers: list[Informer],
) -> None:
    pod = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "namespace": namespace, "labels": {"app": "web"},
                     "annotations": {"k8s.ovn.org/test": "1",
                                     "kubectl.kubernetes.io/last-applied-configuration": "{}"}},
        "spec": {"nodeName": "node-a", "automountServiceAccountToken": False,
                 "containers": [{"name": "c", "image": "pause", "env": [{"name": "A", "value": "x"}],
                                 "ports": [{"containerPort": 8080, "protocol": "TCP"}]}],
                 "volumes": [{"name": "v", "emptyDir": {}}]},
    }
    # Pod admission needs the namespace's "default" service account; create it rather than
    # wait for kube-controller-manager, whose timing is not what this test is about.
    retrying(lambda: writer.create(SERVICEACCOUNTS, {"metadata": {"name": "default", "namespace": namespace}}))
    writer.create(PODS, pod)
    informer = Informer(client, PODS, namespace=namespace)
    informers.append(informer)
    informer.start()
    assert informer.wait_for_sync(30)
    cached = informer.store.get(f"{namespace}/p")
    assert cached is not None
    assert cached["kind"] == "Pod" and cached["apiVersion"] == "v1"
    assert cached["metadata"]["annotations"] == {"k8s.ovn.org/test": "1"}
    assert "managedFields" not in cached["metadata"]
    assert cached["spec"] == {"nodeName": "node-a", "containers": [
        {"name": "c", "ports": [{"containerPort": 8080, "protocol": "TCP"}]}]}
    assert set(cached["status"]) <= {"phase", "podIPs", "podIP", "conditions"}
    assert cached["status"]["phase"] == "Pending"
    assert [p["metadata"]["name"] for p in informer.store.by_index("node", "node-a")] == ["p"]
    assert informer.store.by_index("node", "node-b") == []
    assert informer.store.index_keys("namespace", namespace) == [f"{namespace}/p"]


def test_informer_stop_and_immediate_restart(
    client: KubeClient, writer: KubeClient, namespace: str, registry: CollectorRegistry,
    informers: list[Informer],
) -> None:
    informer, handler = configmap_informer(client, namespace, registry, informers)
    for round_ in range(3):
        informer.stop()
        started = time.monotonic()
        informer.start()
        informer.start()  # no-op while running
        assert time.monotonic() - started < 2
        writer.create(CONFIGMAPS, configmap(f"round-{round_}", namespace))
        wait_until(lambda r=round_: f"{namespace}/round-{r}" in handler.live(), timeout=20, what="event after restart")
    threads = [t for t in threading.enumerate() if t.name == f"informer-{informer.name}"]
    assert len(threads) == 1
    assert not handler.violations
    assert metric(registry, "ovnk_kube_relists_total", reason="initial") == 1  # resumed, never re-listed


def test_strip_functions_do_not_modify_their_input() -> None:
    obj = {"kind": "ConfigMap", "metadata": {"name": "a", "managedFields": [{}],
                                             "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "x",
                                                             "keep": "1"}}}
    stripped = strip_object(obj)
    assert stripped["metadata"] == {"name": "a", "annotations": {"keep": "1"}}
    assert "managedFields" in obj["metadata"]
    assert strip_object({"metadata": {"name": "b"}})["metadata"] == {"name": "b"}
    pod = strip_pod({"metadata": {"name": "p", "managedFields": []}, "spec": {"containers": [{"name": "c"}]}})
    assert pod == {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                   "spec": {"containers": [{"name": "c"}]}, "status": {}}


def test_store_indexes_follow_updates() -> None:
    def by_color(obj: dict[str, Any]) -> list[str]:
        return [obj["color"]] if "color" in obj else []

    store = Store({"color": by_color})
    store.put("a", {"color": "red"})
    store.put("b", {"color": "red"})
    store.put("a", {"color": "blue"})
    assert store.index_keys("color", "red") == ["b"]
    assert store.index_values("color") == ["blue", "red"]
    store.remove("b")
    assert store.index_values("color") == ["blue"]
    with pytest.raises(KeyError, match="no index"):
        store.by_index("size", "1")
    store.add_indexer("color", by_color)  # same function: no-op
    with pytest.raises(ValueError, match="already exists"):
        store.add_indexer("color", lambda obj: [])
    store.replace({"c": {"color": "green"}})
    assert store.index_values("color") == ["green"] and store.keys() == ["c"]


def test_informer_factory_shares_informers(
    client: KubeClient, namespace: str, registry: CollectorRegistry,
) -> None:
    factory = InformerFactory(client, registry=registry)
    first = factory.informer(CONFIGMAPS, namespace=namespace)
    assert factory.informer(CONFIGMAPS, namespace=namespace) is first
    other = factory.informer(CONFIGMAPS, namespace=namespace, label_selector="a=b")
    assert other is not first
    cluster = factory.informer(NAMESPACES)
    factory.start()
    try:
        assert factory.wait_for_sync(30)
        assert namespace in cluster.store
        late = factory.informer(CONFIGMAPS, namespace=namespace, field_selector="metadata.name=x")
        assert late.wait_for_sync(30), "informers created after start() start at once"
        assert registry.get_sample_value(
            "ovnk_kube_relists_total", {"resource": "namespaces", "reason": "initial"}) == 1
    finally:
        factory.stop()
    assert all(not informer._thread or not informer._thread.is_alive() for informer in factory.informers())


# -- the acceptance scenarios ------------------------------------------------------------


def test_informer_rewatches_from_last_version_when_watches_end(
    client: KubeClient, writer: KubeClient, namespace: str, informers: list[Informer],
) -> None:
    # Watches the server ends after 1-2 s: every reopen must resume exactly where it stopped.
    informer = Informer(client, CONFIGMAPS, namespace=namespace, label_selector=SELECTOR, watch_timeout=1)
    handler = RecordingHandler()
    informer.add_handler(handler)
    informers.append(informer)
    informer.start()
    assert informer.wait_for_sync(30)
    versions_seen = {informer.last_resource_version}
    deadline = time.monotonic() + 4.5
    step = 0
    while time.monotonic() < deadline:
        name = f"r-{step % 7}"
        if step % 7 == step % 11:
            writer.delete(CONFIGMAPS, name, namespace=namespace)
        elif writer.get(CONFIGMAPS, name, namespace=namespace) is None:
            writer.create(CONFIGMAPS, configmap(name, namespace, step=str(step)))
        else:
            writer.patch(CONFIGMAPS, name, {"data": {"step": str(step)}}, namespace=namespace)
        step += 1
        versions_seen.add(informer.last_resource_version)
        time.sleep(0.02)
    assert_converged(informer, handler, writer, namespace)
    assert len(handler.calls) > 50
    assert len(versions_seen) > 10


def test_informer_consistent_across_apiserver_kill_during_1000_changes(
    client: KubeClient, writer: KubeClient, namespace: str, registry: CollectorRegistry,
    informers: list[Informer], apiserver: ApiServerControl,
) -> None:
    informer, handler = configmap_informer(client, namespace, registry, informers)
    rng = random.Random(20)
    live: set[str] = set()
    done = threading.Event()
    progress = [0]
    failures: list[BaseException] = []

    def write_changes() -> None:
        try:
            for step in range(1000):
                name = f"o-{rng.randrange(80)}"
                data = {"step": str(step)}
                if name not in live:
                    retrying(lambda n=name, d=data: writer.create(CONFIGMAPS, configmap(n, namespace, **d)))
                    live.add(name)
                elif rng.random() < 0.7:
                    retrying(lambda n=name, d=data: writer.patch(CONFIGMAPS, n, {"data": d}, namespace=namespace))
                else:
                    retrying(lambda n=name: writer.delete(CONFIGMAPS, n, namespace=namespace))
                    live.discard(name)
                progress[0] = step + 1
        except BaseException as exc:
            failures.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=write_changes, name="writer", daemon=True)
    thread.start()
    wait_until(lambda: progress[0] >= 300 or done.is_set(), timeout=60, what="300 changes")
    apiserver.kill()
    killed_at = progress[0]
    time.sleep(0.5)
    apiserver.start()
    assert done.wait(120), "writer did not finish"
    assert not failures, failures
    assert progress[0] == 1000
    assert killed_at < 900, "the API server must die in the middle of the changes"

    expected = assert_converged(informer, handler, writer, namespace)
    assert {key.split("/", 1)[1] for key in expected} >= live
    assert metric(registry, "ovnk_kube_watch_reconnects_total") >= 1


def test_informer_relists_after_410_and_delivers_the_difference(
    kube_cp: Any, client: KubeClient, writer: KubeClient, namespace: str, registry: CollectorRegistry,
    informers: list[Informer], apiserver: ApiServerControl,
) -> None:
    for i in range(30):
        writer.create(CONFIGMAPS, configmap(f"p-{i}", namespace, v="0"))
    informer, handler = configmap_informer(client, namespace, registry, informers)

    # Hold the informer thread inside a handler: its watch stays at the "blocker" version
    # while the API server restarts and changes happen that it cannot see.
    gate, blocked = threading.Event(), threading.Event()

    def hold(obj: dict[str, Any]) -> None:
        if obj["metadata"]["name"] == "blocker":
            blocked.set()
            gate.wait(120)

    informer.add_handler(CallbackHandler(on_add=hold))
    try:
        writer.create(CONFIGMAPS, configmap("blocker", namespace))
        assert blocked.wait(20)
        # A write outside the watched collection moves etcd past the blocker's version.
        writer.patch(NAMESPACES, namespace, {"metadata": {"annotations": {"ovnk.test/bump": "1"}}})
        apiserver.kill()
        kube_cp.compact_etcd()
        apiserver.start()
        for i in range(10):
            retrying(lambda i=i: writer.delete(CONFIGMAPS, f"p-{i}", namespace=namespace))
        for i in range(10, 20):
            retrying(lambda i=i: writer.patch(CONFIGMAPS, f"p-{i}", {"data": {"v": "1"}}, namespace=namespace))
        for i in range(10):
            retrying(lambda i=i: writer.create(CONFIGMAPS, configmap(f"n-{i}", namespace)))
        retrying(lambda: writer.create(CONFIGMAPS, configmap("ghost", namespace)))
        retrying(lambda: writer.delete(CONFIGMAPS, "ghost", namespace=namespace))
    finally:
        gate.set()

    assert_converged(informer, handler, writer, namespace)
    assert metric(registry, "ovnk_kube_relists_total", reason="expired") >= 1
    for i in range(10):
        assert [kind for kind, _, _ in handler.calls_for(f"{namespace}/p-{i}")] == ["add", "delete"]
    for i in range(10, 20):
        assert [kind for kind, _, _ in handler.calls_for(f"{namespace}/p-{i}")] == ["add", "update"]
    for i in range(20, 30):  # unchanged objects: nothing after the first add
        assert [kind for kind, _, _ in handler.calls_for(f"{namespace}/p-{i}")] == ["add"]
    for i in range(10):
        assert [kind for kind, _, _ in handler.calls_for(f"{namespace}/n-{i}")] == ["add"]
    assert handler.calls_for(f"{namespace}/ghost") == []  # came and went while we were away


def test_informer_restart_catches_up_on_changes_made_while_stopped(
    client: KubeClient, writer: KubeClient, namespace: str, registry: CollectorRegistry,
    informers: list[Informer],
) -> None:
    for i in range(20):
        writer.create(CONFIGMAPS, configmap(f"s-{i}", namespace, v="0"))
    informer, handler = configmap_informer(client, namespace, registry, informers)
    writer.patch(CONFIGMAPS, "s-19", {"data": {"v": "seen"}}, namespace=namespace)
    wait_until(lambda: len(handler.calls_for(f"{namespace}/s-19")) == 2, timeout=20, what="update of s-19")
    informer.stop()
    stopped_at = informer.last_resource_version
    delivered = len(handler.calls)
    for i in range(5):
        writer.delete(CONFIGMAPS, f"s-{i}", namespace=namespace)
    for i in range(5, 10):
        writer.patch(CONFIGMAPS, f"s-{i}", {"data": {"v": "1"}}, namespace=namespace)
        writer.patch(CONFIGMAPS, f"s-{i}", {"data": {"v": "2"}}, namespace=namespace)
    for i in range(5):
        writer.create(CONFIGMAPS, configmap(f"new-{i}", namespace))
    writer.create(CONFIGMAPS, configmap("brief", namespace))
    writer.delete(CONFIGMAPS, "brief", namespace=namespace)
    time.sleep(0.5)
    assert informer.last_resource_version == stopped_at  # really stopped
    assert len(handler.calls) == delivered

    informer.start()
    assert_converged(informer, handler, writer, namespace)
    for i in range(5):
        assert handler.state[f"{namespace}/s-{i}"] is None
    for i in range(10, 19):
        assert [kind for kind, _, _ in handler.calls_for(f"{namespace}/s-{i}")] == ["add"]
    assert informer.store.get(f"{namespace}/s-7")["data"] == {"v": "2"}  # type: ignore[index]
