"""The controller runner's scheduling logic, with an in-memory informer stand-in (pure logic).

Informers against the real API server are tested in tests/functional/kube.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from prometheus_client import CollectorRegistry

from ovnk.core.errors import PermanentError
from ovnk.core.errors import TemporaryError
from ovnk.core.kube.resources import PODS
from ovnk.core.reconcile.runner import ControllerRunner
from ovnk.core.reconcile.spec import ControllerSpec
from ovnk.core.reconcile.spec import PeriodicTask
from ovnk.core.reconcile.spec import ReconcileRequest
from ovnk.core.reconcile.spec import Watch


class MemoryStore:
    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}

    def get(self, key: str) -> dict[str, Any] | None:
        return self.objects.get(key)

    def keys(self) -> list[str]:
        return list(self.objects)

    def list(self) -> list[dict[str, Any]]:
        return list(self.objects.values())


class MemoryInformer:
    def __init__(self) -> None:
        self.store = MemoryStore()
        self.handlers: list[Any] = []
        self.synced = False

    def add_handler(self, handler: Any) -> None:
        self.handlers.append(handler)

    def remove_handler(self, handler: Any) -> None:
        self.handlers = [h for h in self.handlers if h is not handler]

    def has_synced(self) -> bool:
        return self.synced

    def add(self, obj: dict[str, Any]) -> None:
        key = f"{obj['metadata']['namespace']}/{obj['metadata']['name']}"
        old = self.store.objects.get(key)
        self.store.objects[key] = obj
        for h in self.handlers:
            if old is None:
                h.on_add(obj)
            else:
                h.on_update(old, obj)

    def delete(self, key: str) -> None:
        obj = self.store.objects.pop(key)
        for h in self.handlers:
            h.on_delete(obj)


class MemoryFactory:
    def __init__(self) -> None:
        self.informers: dict[Any, MemoryInformer] = {}

    def informer(self, resource: Any, **_: Any) -> MemoryInformer:
        return self.informers.setdefault(resource, MemoryInformer())

    def start(self) -> None:
        for informer in self.informers.values():
            informer.synced = True


class Events:
    def __init__(self) -> None:
        self.recorded: list[tuple[str, str]] = []

    def event(self, obj: Any, *, type: str, reason: str, message: str) -> None:
        self.recorded.append((reason, message))


def pod(name: str, rv: str = "1") -> dict[str, Any]:
    return {"metadata": {"namespace": "ns", "name": name, "resourceVersion": rv}}


def test_runner_reconciles_each_key_and_never_one_key_concurrently() -> None:
    factory = MemoryFactory()
    running: set[str] = set()
    overlap = []
    seen: list[str] = []
    lock = threading.Lock()

    def reconcile(req: ReconcileRequest) -> None:
        with lock:
            if req.key in running:
                overlap.append(req.key)
            running.add(req.key)
        time.sleep(0.005)
        with lock:
            running.discard(req.key)
            seen.append(req.key)

    runner = ControllerRunner([ControllerSpec(name="pods", watches=(Watch(PODS),), reconcile=reconcile)],
                              informers=factory, workers=4)
    runner.start_watches()
    assert runner.wait_for_sync(1)
    informer = factory.informers[PODS]
    for i in range(20):
        informer.add(pod(f"p{i}"))
    runner.start_workers()
    for round_ in range(5):
        for i in range(20):
            informer.add(pod(f"p{i}", rv=str(round_ + 2)))
    assert runner.wait_idle(10)
    runner.stop()
    assert not overlap
    assert set(seen) == {f"ns/p{i}" for i in range(20)}


def test_runner_retries_with_backoff_then_reports_final_error() -> None:
    factory = MemoryFactory()
    attempts: dict[str, int] = {}
    events = Events()
    registry = CollectorRegistry()

    def reconcile(req: ReconcileRequest) -> None:
        attempts[req.key] = attempts.get(req.key, 0) + 1
        if req.key == "ns/flaky" and attempts[req.key] < 3:
            raise RuntimeError("transient")
        if req.key == "ns/broken":
            raise RuntimeError("always broken")

    runner = ControllerRunner([ControllerSpec(name="pods", watches=(Watch(PODS),), reconcile=reconcile,
                                              max_attempts=4)],
                              informers=factory, registry=registry, events=events)
    runner.start_watches()
    informer = factory.informers[PODS]
    for name in ("ok", "flaky", "broken"):
        informer.add(pod(name))
    runner.start_workers()
    assert runner.wait_idle(10, settle=0.3)
    runner.stop()
    assert attempts == {"ns/ok": 1, "ns/flaky": 3, "ns/broken": 4}
    assert events.recorded == [("ReconcileFailed", "pods: RuntimeError: always broken")]
    assert registry.get_sample_value("ovnk_controller_final_failures_total", {"controller": "pods"}) == 1


def test_runner_temporary_error_uses_its_delay_and_permanent_error_stops_at_once() -> None:
    factory = MemoryFactory()
    calls: dict[str, list[float]] = {}

    def reconcile(req: ReconcileRequest) -> None:
        calls.setdefault(req.key, []).append(time.monotonic())
        if req.key == "ns/wait" and len(calls[req.key]) == 1:
            raise TemporaryError("node switch not there yet", delay=0.2)
        if req.key == "ns/bad":
            raise PermanentError("invalid spec")

    runner = ControllerRunner([ControllerSpec(name="pods", watches=(Watch(PODS),), reconcile=reconcile)],
                              informers=factory)
    runner.start_watches()
    informer = factory.informers[PODS]
    informer.add(pod("wait"))
    informer.add(pod("bad"))
    runner.start_workers()
    assert runner.wait_idle(10, settle=0.4)
    runner.stop()
    assert len(calls["ns/wait"]) == 2 and calls["ns/wait"][1] - calls["ns/wait"][0] >= 0.19
    assert len(calls["ns/bad"]) == 1


def test_runner_passes_last_state_of_deleted_objects() -> None:
    factory = MemoryFactory()
    requests: list[ReconcileRequest] = []
    runner = ControllerRunner([ControllerSpec(name="pods", watches=(Watch(PODS),), reconcile=requests.append)],
                              informers=factory)
    runner.start_watches()
    informer = factory.informers[PODS]
    informer.add(pod("gone"))
    informer.delete("ns/gone")
    runner.start_workers()
    assert runner.wait_idle(5)
    runner.stop()
    assert requests[-1].key == "ns/gone"
    assert requests[-1].deleted is not None and requests[-1].deleted["metadata"]["name"] == "gone"


def test_runner_secondary_watch_maps_objects_to_other_keys() -> None:
    factory = MemoryFactory()
    keys: list[str] = []
    from ovnk.core.kube.resources import NAMESPACES

    spec = ControllerSpec(
        name="namespaces",
        watches=(Watch(NAMESPACES), Watch(PODS, keys=lambda obj: [obj["metadata"]["namespace"]])),
        reconcile=lambda req: keys.append(req.key),
    )
    runner = ControllerRunner([spec], informers=factory)
    runner.start_watches()
    factory.informers[PODS].add(pod("a"))
    runner.start_workers()
    assert runner.wait_idle(5)
    runner.stop()
    assert keys == ["ns"]


def _pod(name: str) -> dict[str, Any]:
    return {"metadata": {"namespace": "ns", "name": name, "resourceVersion": "1"}}


def test_enqueue_runs_a_key_of_any_controller_now_or_later() -> None:
    factory = MemoryFactory()
    seen: list[tuple[str, float]] = []
    started = time.monotonic()
    spec = ControllerSpec(name="c", watches=(Watch(PODS),),
                          reconcile=lambda req: seen.append((req.key, time.monotonic() - started)))
    runner = ControllerRunner([spec], informers=factory, workers=1)
    runner.start_watches()
    runner.start_workers()
    runner.enqueue("c", "ns/now")
    runner.enqueue("c", "ns/later", after=0.3)
    assert runner.wait_idle(5), "planned work must not keep the runner busy"
    deadline = time.monotonic() + 5
    while len(seen) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [key for key, _ in seen] == ["ns/now", "ns/later"]
    assert seen[1][1] >= 0.3
    try:
        runner.enqueue("nope", "x")
    except KeyError as exc:
        assert "no controller named 'nope'" in str(exc)
    else:
        raise AssertionError("enqueue to an unknown controller must raise")
    runner.stop()


def test_controllers_added_and_removed_at_runtime() -> None:
    factory = MemoryFactory()
    seen: list[str] = []
    runner = ControllerRunner([], informers=factory, workers=1)
    runner.start_watches()
    runner.start_workers()
    factory.informer(PODS).add(_pod("before"))
    runner.add(ControllerSpec(name="late", watches=(Watch(PODS),), reconcile=lambda req: seen.append(req.key)))
    factory.start()  # the informer (re)lists: the late controller's workers start once it has synced
    factory.informer(PODS).add(_pod("after"))
    assert runner.wait_idle(5)
    deadline = time.monotonic() + 5
    while "ns/after" not in seen and time.monotonic() < deadline:
        time.sleep(0.01)
    assert "ns/after" in seen
    assert runner.names() == ["late"]
    assert runner.remove("late") is True
    assert runner.remove("late") is False
    seen.clear()
    factory.informer(PODS).add(_pod("gone"))
    time.sleep(0.1)
    assert seen == [] and factory.informer(PODS).handlers == []
    try:
        runner.add(ControllerSpec(name="late", watches=(Watch(PODS),), reconcile=lambda req: None))
        runner.add(ControllerSpec(name="late", watches=(Watch(PODS),), reconcile=lambda req: None))
    except ValueError as exc:
        assert "already running" in str(exc)
    else:
        raise AssertionError("two controllers of one name must be refused")
    runner.stop()


def test_periodic_tasks_run_only_between_start_workers_and_stop() -> None:
    rounds: list[float] = []
    failures = {"n": 0}

    def tick() -> None:
        rounds.append(time.monotonic())
        if len(rounds) == 2:
            failures["n"] += 1
            raise RuntimeError("one bad round")

    runner = ControllerRunner([], informers=MemoryFactory(), tasks=[PeriodicTask(name="t", interval=0.05, run=tick)])
    runner.start_watches()
    time.sleep(0.15)
    assert rounds == [], "tasks wait for the workers (leadership)"
    runner.start_workers()
    deadline = time.monotonic() + 5
    while len(rounds) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(rounds) >= 4 and failures["n"] == 1, "a failing round does not stop the task"
    runner.stop()
    count = len(rounds)
    time.sleep(0.15)
    assert len(rounds) == count


def test_resync_queues_the_watch_keys_of_cached_objects_and_the_initial_keys() -> None:
    """A resync maps objects through the primary watch's ``keys`` (a per-bridge node controller keyed by a
    bridge, not by pod) and also queues the initial keys (a controller without watches, repaired by resync)."""
    factory = MemoryFactory()
    seen: list[str] = []
    lock = threading.Lock()

    def record(request: ReconcileRequest) -> None:
        with lock:
            seen.append(request.key)

    by_node = ControllerSpec(name="by-node", watches=(Watch(PODS, keys=lambda pod: (pod["spec"]["nodeName"],)),),
                             reconcile=record, resync_period=0.1)
    no_watch = ControllerSpec(name="no-watch", watches=(), reconcile=record, initial_keys=lambda: ["bridge"],
                              resync_period=0.1)
    runner = ControllerRunner([by_node, no_watch], informers=factory, workers=1)
    runner.start_watches()
    informer = factory.informer(PODS)
    for i in range(3):
        informer.add({"metadata": {"namespace": "ns", "name": f"p{i}"}, "spec": {"nodeName": "node-a"}})
    assert runner.runner("by-node").resync_keys() == {"node-a"}
    assert runner.runner("no-watch").resync_keys() == {"bridge"}
    runner.start_workers()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with lock:
                if seen.count("bridge") >= 3 and seen.count("node-a") >= 3:
                    break
            time.sleep(0.02)
        with lock:
            assert seen.count("bridge") >= 3, seen
            assert set(seen) == {"node-a", "bridge"}, "never a raw cache key (ns/p0...)"
    finally:
        runner.stop()


def test_network_programming_duration_and_retry_failures_are_recorded() -> None:
    """``extra["programming_kind"]``: events after the workers started are timed to their successful
    reconcile; the initial list is not (it measures start-up); a key given up counts in
    ovnkube_resource_retry_failures_total and is not timed."""
    factory = MemoryFactory()
    registry = CollectorRegistry()

    def reconcile(req: ReconcileRequest) -> None:
        if req.key == "ns/broken":
            raise PermanentError("bad spec")
        time.sleep(0.05)

    runner = ControllerRunner([ControllerSpec(name="pods", watches=(Watch(PODS),), reconcile=reconcile,
                                              extra={"programming_kind": "pod"})],
                              informers=factory, registry=registry)
    runner.start_watches()
    informer = factory.informers[PODS]
    informer.add(pod("before"))
    runner.start_workers()
    assert runner.wait_idle(10, settle=0.2)

    def count() -> float:
        return registry.get_sample_value("ovnkube_controller_network_programming_duration_seconds_count",
                                         {"kind": "pod"}) or 0.0
    assert count() == 0  # the initial list is start-up, not programming
    informer.add(pod("after"))
    informer.add(pod("broken"))
    assert runner.wait_idle(10, settle=0.2)
    runner.stop()
    assert count() == 1
    total = registry.get_sample_value("ovnkube_controller_network_programming_duration_seconds_sum", {"kind": "pod"})
    assert total is not None and 0.05 <= total < 5
    assert registry.get_sample_value("ovnkube_resource_retry_failures_total") == 1
    # The node agent's runner uses its own names and records no controller-only metric.
    node_registry = CollectorRegistry()
    ControllerRunner([ControllerSpec(name="flows", watches=(Watch(PODS),), reconcile=reconcile,
                                     extra={"programming_kind": "pod"})],
                     informers=MemoryFactory(), registry=node_registry, metrics_prefix="ovnk_node_controller")
    names = {m.name for m in node_registry.collect()}
    assert "ovnk_node_controller_reconcile" in names and "ovnk_controller_reconcile" not in names
    assert "ovnkube_controller_network_programming_duration_seconds" not in names


def test_new_leader_reconciles_recent_changes_before_its_first_pass() -> None:
    """A standby queues every object of its first list and every later change; when it becomes
    leader, the keys that changed within ``recent`` seconds (what the old leader may have missed,
    such as a pod created as it died) are reconciled first, not behind the whole first pass."""
    factory = MemoryFactory()
    seen: list[str] = []

    def reconcile(req: ReconcileRequest) -> None:
        seen.append(req.key)

    runner = ControllerRunner([ControllerSpec(name="pods", watches=(Watch(PODS),), reconcile=reconcile)],
                              informers=factory, workers=1)
    runner.start_watches()
    informer = factory.informers[PODS]
    informer.synced = False
    for i in range(200):  # the first list
        informer.add(pod(f"p{i}"))
    informer.synced = True
    informer.add(pod("p7", rv="2"))  # changes seen while standing by
    informer.add(pod("created-as-the-leader-died"))
    runner.start_workers(recent=60.0)
    assert runner.wait_idle(10)
    runner.stop()
    assert seen[:2] == ["ns/p7", "ns/created-as-the-leader-died"]
    assert sorted(seen) == sorted({f"ns/p{i}" for i in range(200)} | {"ns/created-as-the-leader-died"})


def test_without_recent_window_the_first_pass_keeps_event_order() -> None:
    factory = MemoryFactory()
    seen: list[str] = []
    runner = ControllerRunner([ControllerSpec(name="pods", watches=(Watch(PODS),),
                                              reconcile=lambda req: seen.append(req.key))],
                              informers=factory, workers=1)
    runner.start_watches()
    for name in ("a", "b", "c"):
        factory.informers[PODS].add(pod(name))
    runner.start_workers()
    assert runner.wait_idle(10)
    runner.stop()
    assert seen == ["ns/a", "ns/b", "ns/c"]
