"""Runs controller specs: watches feed per-controller work queues, workers reconcile keys.

Startup order (ovn-kubernetes' ``StartWithInitialSync``, kopf's ``LISTED``):
:meth:`ControllerRunner.start_watches` registers every watch on the shared
informers and starts them (events only enqueue keys); the caller waits for
:meth:`wait_for_sync`, runs repair, and only then calls :meth:`start_workers`.

Per controller: a :class:`~ovnk.core.reconcile.queue.WorkQueue`, N worker
threads, a key never processed by two workers at once, retries with per-key
exponential backoff up to ``max_attempts``, then a final error (log line and a
Warning event on the object). Every log line emitted while a key is reconciled
carries ``[<controller> <key>]`` (see :mod:`ovnk.core.logs`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any
from typing import Literal
from typing import Protocol

from prometheus_client import CollectorRegistry
from prometheus_client import Counter
from prometheus_client import Gauge
from prometheus_client import Histogram

from ovnk.core import logs
from ovnk.core import metrics
from ovnk.core.errors import PermanentError
from ovnk.core.errors import TemporaryError
from ovnk.core.reconcile.queue import ShutDown
from ovnk.core.reconcile.queue import WorkQueue
from ovnk.core.reconcile.spec import ControllerSpec
from ovnk.core.reconcile.spec import PeriodicTask
from ovnk.core.reconcile.spec import ReconcileRequest
from ovnk.core.reconcile.spec import Watch

logger = logging.getLogger(__name__)

#: Metric name prefixes: the controller's runner and the node agent's (their controllers differ).
CONTROLLER_PREFIX = "ovnk_controller"
NODE_PREFIX = "ovnk_node_controller"


class InformerLike(Protocol):
    @property
    def store(self) -> Any: ...

    def add_handler(self, handler: Any) -> None: ...

    def has_synced(self) -> bool: ...


class InformerSource(Protocol):
    """What the runner needs from ``ovnk.core.kube.informer.InformerFactory``."""

    def informer(self, resource: Any, *, namespace: str | None = None, label_selector: str | None = None,
                 field_selector: str | None = None) -> Any: ...

    def start(self) -> None: ...


class EventSink(Protocol):
    def event(self, obj: Mapping[str, Any], *, type: Literal["Normal", "Warning"], reason: str, message: str) -> None: ...


class _Metrics:
    def __init__(self, registry: CollectorRegistry | None, *, prefix: str) -> None:
        self.enabled = registry is not None
        self.programming: Histogram | None = None
        if registry is None:
            return
        self.reconciles = Counter(f"{prefix}_reconcile_total", "Reconciles by controller and result.",
                                  ["controller", "result"], registry=registry)
        self.duration = Histogram(f"{prefix}_reconcile_duration_seconds", "Time spent in one reconcile.",
                                  ["controller"], registry=registry,
                                  buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.depth = Gauge(f"{prefix}_queue_depth", "Keys waiting in the work queue.", ["controller"],
                           registry=registry)
        self.failures = Counter(f"{prefix}_final_failures_total", "Keys given up after the last attempt.",
                                ["controller"], registry=registry)
        self.retry_failures = metrics.retry_failures(registry)
        if prefix == CONTROLLER_PREFIX:
            self.programming = metrics.controller_metrics(registry).network_programming


class _Handler:
    """Informer event handler of one watch of one controller: maps events to keys.

    Keys of the informer's first list (and of the objects replayed to a handler registered on a
    synced informer) are the bulk pass; events after it are live (see :mod:`..queue`).
    """

    def __init__(self, runner: _SpecRunner, watch: Watch, *, primary: bool, informer: Any = None) -> None:
        self.runner = runner
        self.watch = watch
        self.primary = primary
        self.informer = informer
        #: True while ``add_handler`` replays the cached objects to this handler.
        self.replaying = True

    def _bulk(self) -> bool:
        return self.replaying or (self.informer is not None and not self.informer.has_synced())

    def _enqueue(self, obj: Mapping[str, Any]) -> None:
        bulk = self._bulk()
        for key in self.watch.keys(obj):
            self.runner.event(key, bulk=bulk)

    def on_add(self, obj: Mapping[str, Any]) -> None:
        self._enqueue(obj)

    def on_update(self, old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
        if not self.watch.needs_update(old, new):
            return
        keys = set(self.watch.keys(old)) | set(self.watch.keys(new))
        bulk = self._bulk()
        for key in keys:
            self.runner.event(key, bulk=bulk)

    def on_delete(self, obj: Mapping[str, Any]) -> None:
        if self.primary:
            for key in self.watch.keys(obj):
                self.runner.remember_deleted(key, obj)
        self._enqueue(obj)


class _SpecRunner:
    """Queue, workers and tombstones of one controller spec."""

    def __init__(self, spec: ControllerSpec, *, workers: int, max_attempts: int, max_backoff: float,
                 metrics: _Metrics, events: EventSink | None) -> None:
        self.spec = spec
        self.workers = workers
        self.max_attempts = max_attempts
        self.queue = WorkQueue(max_delay=max_backoff)
        self.metrics = metrics
        self.events = events
        self.informers: list[Any] = []
        self.primary_informer: Any = None
        self._deleted: dict[str, Mapping[str, Any]] = {}
        self._deleted_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self.active = 0
        self._active_lock = threading.Lock()
        # When the oldest event not yet programmed arrived, per key (network programming duration).
        self._pending_since: dict[str, float] = {}
        self._pending_lock = threading.Lock()
        self._measure = metrics_kind(spec) is not None and self.metrics.programming is not None
        # Until the workers start (a standby), every key is part of the first pass; the time of
        # each key's last change event is kept so that start(recent=...) can put those first.
        self._started = False
        self._changed_at: dict[str, float] = {}

    def event(self, key: str, *, bulk: bool = False) -> None:
        """A Kubernetes event maps to ``key``: queue it (and start timing it for the programming metric).

        ``bulk``: the key comes from an informer's first list, not from a change (queued behind live keys).
        Before the workers start every key is queued as bulk (the first pass).
        """
        if not self._started:
            with self._pending_lock:
                if not self._started:
                    if not bulk:
                        self._changed_at[key] = time.monotonic()
                    self.queue.add(key, bulk=True)
                    return
        if self._measure:
            # Only events after the workers started: the initial list measures start-up, not programming.
            with self._pending_lock:
                self._pending_since.setdefault(key, time.monotonic())
        self.queue.add(key, bulk=bulk)

    def _programmed(self, key: str, *, ok: bool) -> None:
        if not self._measure:
            return
        with self._pending_lock:
            since = self._pending_since.pop(key, None)
        if since is not None and ok and self.metrics.programming is not None:
            self.metrics.programming.labels(kind=metrics_kind(self.spec)).observe(time.monotonic() - since)

    # -- tombstones ----------------------------------------------------------

    def remember_deleted(self, key: str, obj: Mapping[str, Any]) -> None:
        with self._deleted_lock:
            self._deleted[key] = obj

    def _take_deleted(self, key: str) -> Mapping[str, Any] | None:
        with self._deleted_lock:
            return self._deleted.get(key)

    def _drop_deleted(self, key: str, obj: Mapping[str, Any] | None) -> None:
        if obj is None:
            return
        with self._deleted_lock:
            if self._deleted.get(key) is obj:
                del self._deleted[key]

    # -- workers -------------------------------------------------------------

    def start(self, *, recent: float = 0.0) -> None:
        """Start the workers. Keys whose last change event is at most ``recent`` seconds old go
        ahead of the first pass (a new leader: what the old one may not have handled)."""
        with self._pending_lock:
            self._started = True
            now = time.monotonic()
            fresh = sorted((at, key) for key, at in self._changed_at.items() if now - at <= recent)
            self._changed_at.clear()
        for _, key in fresh:
            self.queue.add(key)
        if fresh:
            logger.info("controller %s: %d key(s) changed in the last %.1fs go first", self.spec.name, len(fresh),
                        recent)
        if self.spec.initial_keys is not None:
            for key in self.spec.initial_keys():
                self.queue.add(key, bulk=True)
        for i in range(self.workers):
            thread = threading.Thread(target=self._work, name=f"{self.spec.name}-worker-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)
        if self.spec.resync_period > 0:
            thread = threading.Thread(target=self._resync, name=f"{self.spec.name}-resync", daemon=True)
            thread.start()
            self._threads.append(thread)

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        self.queue.shutdown()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _resync(self) -> None:
        while not self._stopping.wait(self.spec.resync_period):
            try:
                keys = self.resync_keys()
            except Exception:
                logger.exception("controller %s: computing the resync keys failed", self.spec.name)
                continue
            for key in keys:
                self.queue.add(key, bulk=True)

    def resync_keys(self) -> set[str]:
        """What a resync queues: the keys of every object in the primary cache (through the primary
        watch's ``keys``, as its events would) and the initial keys."""
        keys: set[str] = set()
        if self.primary_informer is not None:
            watch = self.spec.watches[0]
            for obj in self.primary_informer.store.list():
                keys.update(watch.keys(obj))
        if self.spec.initial_keys is not None:
            keys.update(self.spec.initial_keys())
        return keys

    def _work(self) -> None:
        name = self.spec.name
        while True:
            try:
                key = self.queue.get()
            except ShutDown:
                return
            with self._active_lock:
                self.active += 1
            token = logs.current_key.set(f"{name} {key}")
            started = time.monotonic()
            deleted = self._take_deleted(key)
            result = "ok"
            try:
                picked_up = time.monotonic()
                self.spec.reconcile(ReconcileRequest(key=key, deleted=deleted))
                self.queue.forget(key)
                self._drop_deleted(key, deleted)
                self._programmed_before(key, picked_up)
            except TemporaryError as exc:
                result = "retry"
                self._retry(key, exc, delay=exc.delay)
            except PermanentError as exc:
                result = "failed"
                self._give_up(key, exc, attempts=self.queue.failures(key) + 1)
            except Exception as exc:
                result = "error"
                self._retry(key, exc, delay=None)
            finally:
                if self.metrics.enabled:
                    self.metrics.reconciles.labels(controller=name, result=result).inc()
                    self.metrics.duration.labels(controller=name).observe(time.monotonic() - started)
                    self.metrics.depth.labels(controller=name).set(len(self.queue))
                logs.current_key.reset(token)
                with self._active_lock:
                    self.active -= 1
                self.queue.done(key)

    def _programmed_before(self, key: str, picked_up: float) -> None:
        """A successful reconcile programmed every event that arrived before it started."""
        if not self._measure:
            return
        with self._pending_lock:
            since = self._pending_since.get(key)
            if since is None or since > picked_up:
                return  # a newer event arrived during the reconcile: its own run will measure it
        self._programmed(key, ok=True)

    def _retry(self, key: str, exc: BaseException, *, delay: float | None) -> None:
        attempts = self.queue.failures(key) + 1
        if attempts >= self.max_attempts:
            self._give_up(key, exc, attempts=attempts)
            return
        if delay is None:
            delay = self.queue.add_rate_limited(key)
        else:
            self.queue.count_failure(key)
            self.queue.add_after(key, delay)
        log = logger.info if isinstance(exc, TemporaryError) else logger.warning
        log("attempt %d/%d failed, retrying in %.3fs: %s", attempts, self.max_attempts, delay, _describe(exc),
            exc_info=not isinstance(exc, TemporaryError) and logger.isEnabledFor(logging.DEBUG))

    def _give_up(self, key: str, exc: BaseException, *, attempts: int) -> None:
        self.queue.forget(key)
        message = f"giving up after {attempts} attempt(s): {_describe(exc)}"
        logger.error("%s", message, exc_info=not isinstance(exc, (TemporaryError, PermanentError)))
        self._programmed(key, ok=False)
        if self.metrics.enabled:
            self.metrics.failures.labels(controller=self.spec.name).inc()
            self.metrics.retry_failures.inc()
        if self.events is not None and self.primary_informer is not None:
            obj = self.primary_informer.store.get(key)
            if obj is not None:
                self.events.event(obj, type="Warning", reason="ReconcileFailed",
                                  message=f"{self.spec.name}: {_describe(exc)}")
        if self.spec.on_failure is not None:
            try:
                self.spec.on_failure(key, exc)
            except Exception:
                logger.exception("on_failure of %s raised", self.spec.name)

    def idle(self) -> bool:
        with self._active_lock:
            return self.active == 0 and self.queue.idle()


def metrics_kind(spec: ControllerSpec) -> str | None:
    """The ``kind`` label of the network programming metric for ``spec`` (``extra["programming_kind"]``)."""
    kind = spec.extra.get("programming_kind")
    return str(kind) if kind else None


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, (TemporaryError, PermanentError)) else f"{type(exc).__name__}: {text}"


class _TaskRunner:
    """One :class:`PeriodicTask` in a thread: a round at start, then one every interval until stopped."""

    def __init__(self, task: PeriodicTask) -> None:
        self.task = task
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=f"task-{self.task.name}", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.task.run()
            except Exception:
                logger.exception("task %s failed; next round in %.1fs", self.task.name, self.task.interval)
            self._stop.wait(max(0.0, self.task.interval - (time.monotonic() - started)))

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)


class ControllerRunner:
    """Runs controller specs on shared informers, and periodic tasks.

    Controllers are given at construction or added later with :meth:`add`
    (one per secondary network, say) and removed with :meth:`remove`. Before
    :meth:`start_workers` events only fill the queues; a controller added
    afterwards starts its workers once its own watches have synced.

    :param specs: the controllers (from ``ovnk_controllers``).
    :param informers: the shared informer factory.
    :param workers: default worker count per controller.
    :param max_attempts: default attempts before the final error.
    :param max_backoff: cap of the per-key backoff, seconds.
    :param registry: Prometheus registry for controller metrics.
    :param events: where final errors are reported as Warning events.
    :param tasks: periodic tasks, run only between :meth:`start_workers` and :meth:`stop`.
    :param metrics_prefix: ``ovnk_controller`` (the controller, which also records
        ``ovnkube_controller_network_programming_duration_seconds``) or ``ovnk_node_controller``.
    """

    def __init__(self, specs: Sequence[ControllerSpec] = (), *, informers: InformerSource, workers: int = 4,
                 max_attempts: int = 15, max_backoff: float = 60.0, registry: CollectorRegistry | None = None,
                 events: EventSink | None = None, tasks: Sequence[PeriodicTask] = (),
                 metrics_prefix: str = CONTROLLER_PREFIX) -> None:
        self.informers = informers
        self.workers = workers
        self.max_attempts = max_attempts
        self.max_backoff = max_backoff
        self.events = events
        self._metrics = _Metrics(registry, prefix=metrics_prefix)
        self._lock = threading.RLock()
        self.runners: list[_SpecRunner] = []
        self._handlers: dict[str, list[tuple[Any, _Handler]]] = {}
        self._all_informers: list[Any] = []
        self._tasks: list[_TaskRunner] = []
        self._watching = False
        self._workers_started = False
        self._stopped = False
        for spec in specs:
            self._add_runner(spec)
        for task in tasks:
            self.add_task(task)

    # -- controllers -----------------------------------------------------------------

    def _add_runner(self, spec: ControllerSpec) -> _SpecRunner:
        with self._lock:
            if any(r.spec.name == spec.name for r in self.runners):
                raise ValueError(f"controller names must be unique: {spec.name} is already running")
            runner = _SpecRunner(spec, workers=spec.workers or self.workers,
                                 max_attempts=spec.max_attempts or self.max_attempts,
                                 max_backoff=self.max_backoff, metrics=self._metrics, events=self.events)
            self.runners.append(runner)
            return runner

    def _register_watches(self, runner: _SpecRunner) -> None:
        handlers = []
        for index, watch in enumerate(runner.spec.watches):
            informer = self.informers.informer(
                watch.resource, namespace=watch.namespace, label_selector=watch.label_selector,
                field_selector=watch.field_selector,
            )
            handler = _Handler(runner, watch, primary=index == 0, informer=informer)
            informer.add_handler(handler)
            handler.replaying = False
            handlers.append((informer, handler))
            runner.informers.append(informer)
            if index == 0:
                runner.primary_informer = informer
            if informer not in self._all_informers:
                self._all_informers.append(informer)
        self._handlers[runner.spec.name] = handlers

    def add(self, spec: ControllerSpec, *, sync_timeout: float = 120.0) -> None:
        """Run one more controller (its watches start now; its workers once they have synced)."""
        runner = self._add_runner(spec)
        with self._lock:
            if not self._watching:
                return  # start_watches registers it with the others
            self._register_watches(runner)
            start_now = self._workers_started
        if start_now:
            def start_when_synced() -> None:
                deadline = time.monotonic() + sync_timeout
                while not all(i.has_synced() for i in runner.informers):
                    if time.monotonic() > deadline or runner.stopping:
                        logger.error("controller %s: watches not synced within %.0fs; not started", spec.name,
                                     sync_timeout)
                        return
                    time.sleep(0.02)
                with self._lock:
                    if runner in self.runners and not self._stopped:
                        runner.start()
                        logger.info("started controller %s (%d workers)", spec.name, runner.workers)

            threading.Thread(target=start_when_synced, name=f"start-{spec.name}", daemon=True).start()

    def remove(self, name: str) -> bool:
        """Stop controller ``name`` (its queued keys are dropped); ``False`` if it does not run."""
        with self._lock:
            runner = next((r for r in self.runners if r.spec.name == name), None)
            if runner is None:
                return False
            self.runners.remove(runner)
            for informer, handler in self._handlers.pop(name, []):
                informer.remove_handler(handler)
        runner.stop()
        logger.info("stopped controller %s", name)
        return True

    def names(self) -> list[str]:
        with self._lock:
            return [r.spec.name for r in self.runners]

    def enqueue(self, name: str, key: str, *, after: float = 0.0) -> None:
        """Queue ``key`` for controller ``name``, now or in ``after`` seconds (planned work: it does
        not keep :meth:`idle` false while it waits).

        :raises KeyError: no controller of that name runs.
        """
        runner = self.runner(name)
        if after > 0:
            runner.queue.schedule(key, after)
        else:
            runner.queue.add(key)

    # -- tasks -------------------------------------------------------------------------

    def add_task(self, task: PeriodicTask) -> None:
        with self._lock:
            if any(t.task.name == task.name for t in self._tasks):
                raise ValueError(f"task names must be unique: {task.name} is already registered")
            runner = _TaskRunner(task)
            self._tasks.append(runner)
            if self._workers_started and not self._stopped:
                runner.start()

    # -- lifecycle -----------------------------------------------------------------------

    def start_watches(self) -> None:
        """Register every watch's handler on its shared informer and start the informers."""
        with self._lock:
            self._watching = True
            for runner in self.runners:
                if runner.spec.name not in self._handlers:
                    self._register_watches(runner)
        self.informers.start()

    def unsynced(self) -> list[str]:
        with self._lock:
            informers = list(self._all_informers)
        return [str(getattr(i, "name", i)) for i in informers if not i.has_synced()]

    def wait_for_sync(self, timeout: float) -> bool:
        """Wait until every informer listed once; False on timeout."""
        deadline = time.monotonic() + timeout
        while self.unsynced():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def start_workers(self, *, recent: float = 0.0) -> None:
        """Start every controller's workers and the periodic tasks (once).

        :param recent: keys changed within this many seconds are reconciled ahead of the first
            pass over everything queued (a new leader passes its lease duration: changes made
            after the old leader's last renewal may not have been handled).
        """
        with self._lock:
            if self._workers_started:
                return
            self._workers_started = True
            runners = list(self.runners)
            tasks = list(self._tasks)
        for runner in runners:
            runner.start(recent=recent)
        for task in tasks:
            task.start()
        logger.info("started %d controllers: %s%s", len(runners),
                    ", ".join(f"{r.spec.name}({r.workers})" for r in runners),
                    f"; tasks: {', '.join(t.task.name for t in tasks)}" if tasks else "")

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            runners = list(self.runners)
            tasks = list(self._tasks)
        for task in tasks:
            task.stop()
        for runner in runners:
            runner.stop()

    def idle(self) -> bool:
        with self._lock:
            runners = list(self.runners)
        return all(r.idle() for r in runners)

    def wait_idle(self, timeout: float, *, settle: float = 0.1) -> bool:
        """Wait until every queue is empty and no worker is busy for ``settle`` seconds (tests, benchmarks)."""
        deadline = time.monotonic() + timeout
        quiet_since: float | None = None
        while time.monotonic() < deadline:
            if self.idle():
                quiet_since = quiet_since or time.monotonic()
                if time.monotonic() - quiet_since >= settle:
                    return True
            else:
                quiet_since = None
            time.sleep(0.01)
        return False

    def runner(self, name: str) -> _SpecRunner:
        with self._lock:
            for runner in self.runners:
                if runner.spec.name == name:
                    return runner
        raise KeyError(f"no controller named {name!r} runs (running: {', '.join(self.names()) or 'none'})")
