"""Informers: a thread per watched collection keeping a :class:`Store` current and
telling handlers what changed.

The loop (client-go's reflector, kopf's ``continuous_watch``):

1. **List**, replace the store and deliver the *difference* with what it held
   before: objects gone since are deleted, new ones added, changed ones
   (another resourceVersion) updated, unchanged ones produce nothing. The
   first list marks the informer synced.
2. **Watch** from the list's resourceVersion with bookmarks, remembering the
   last resourceVersion seen (events and bookmarks advance it). A watch the
   server ends normally is reopened from it.
3. On a broken connection or an unreachable API server, reconnect with capped
   exponential backoff, resuming from the last resourceVersion; on
   ``410 Gone`` (the version was compacted) go back to 1.

An event whose resourceVersion equals the cached object's is not delivered
again, and a delete of an object the cache no longer holds is dropped, so a
resumed or repeated watch never doubles a delivery.

Handlers run on the informer thread, in event order, after the store has
been updated. They must be cheap (enqueue a key); an exception is logged with
the object's key and never stops the informer.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from typing import Protocol

from prometheus_client import CollectorRegistry
from prometheus_client import Counter

from ovnk.core.kube.cache import Indexer
from ovnk.core.kube.cache import JsonObject
from ovnk.core.kube.cache import Store
from ovnk.core.kube.cache import Transform
from ovnk.core.kube.cache import default_indexers
from ovnk.core.kube.cache import default_transform
from ovnk.core.kube.cache import resource_version
from ovnk.core.kube.cache import strip_object
from ovnk.core.kube.cache import strip_pod
from ovnk.core.kube.client import KubeClient
from ovnk.core.kube.client import WatchEvent
from ovnk.core.kube.client import WatchStream
from ovnk.core.kube.errors import KubeError
from ovnk.core.kube.errors import ResourceExpired
from ovnk.core.kube.errors import Unavailable
from ovnk.core.kube.resources import Resource
from ovnk.core.kube.resources import object_key

logger = logging.getLogger(__name__)

__all__ = [
    "CallbackHandler",
    "EventHandler",
    "Informer",
    "InformerFactory",
    "InformerMetrics",
    "Store",
    "strip_object",
    "strip_pod",
]

# A watch that the server ends sooner than this after it opened is treated like a
# failure (backoff), so a server that closes watches at once cannot make us spin.
_MIN_HEALTHY_WATCH_SECONDS = 1.0


class EventHandler(Protocol):
    """Receives an informer's changes on the informer thread, in event order; must be cheap."""

    def on_add(self, obj: JsonObject) -> None: ...

    def on_update(self, old: JsonObject, new: JsonObject) -> None: ...

    def on_delete(self, obj: JsonObject) -> None: ...


class CallbackHandler:
    """An :class:`EventHandler` made of optional callables (missing ones ignore the event)."""

    def __init__(
        self,
        *,
        on_add: Callable[[JsonObject], None] | None = None,
        on_update: Callable[[JsonObject, JsonObject], None] | None = None,
        on_delete: Callable[[JsonObject], None] | None = None,
    ) -> None:
        self._on_add = on_add
        self._on_update = on_update
        self._on_delete = on_delete

    def on_add(self, obj: JsonObject) -> None:
        if self._on_add:
            self._on_add(obj)

    def on_update(self, old: JsonObject, new: JsonObject) -> None:
        if self._on_update:
            self._on_update(old, new)

    def on_delete(self, obj: JsonObject) -> None:
        if self._on_delete:
            self._on_delete(obj)


class InformerMetrics:
    """The informers' counters, registered once on one registry and shared by its informers."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.watch_events = Counter(
            "ovnk_kube_watch_events_total", "Watch events received, by resource and event type.",
            ["resource", "type"], registry=registry,
        )
        self.relists = Counter(
            "ovnk_kube_relists_total",
            "Full lists of a watched resource (initial, expired: 410 Gone, error: unexpected failure).",
            ["resource", "reason"], registry=registry,
        )
        self.reconnects = Counter(
            "ovnk_kube_watch_reconnects_total",
            "Watch or list attempts that failed to reach the API server and were retried after a backoff.",
            ["resource"], registry=registry,
        )


class Informer:
    """Keeps :attr:`store` equal to the API server's view of one collection.

    :param transform: applied to every object before caching; default
        :func:`strip_pod` for pods and :func:`strip_object` otherwise.
    :param indexers: extra indexes on top of the defaults (``namespace`` for
        namespaced resources, ``node`` for pods).
    :param name: for logs and the thread name; derived from the resource by default.
    :param metrics: shared counters (an :class:`InformerFactory` passes its own);
        by default a private registry.
    :param watch_timeout: a watch is reopened after between this and twice this
        many seconds (randomized so that informers do not reconnect in step).
    :param backoff_initial: first reconnect delay, doubled per failure ...
    :param backoff_max: ... up to this.
    """

    def __init__(
        self,
        client: KubeClient,
        resource: Resource,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        transform: Transform | None = None,
        indexers: Mapping[str, Indexer] | None = None,
        name: str | None = None,
        metrics: InformerMetrics | None = None,
        watch_timeout: int = 300,
        backoff_initial: float = 0.1,
        backoff_max: float = 10.0,
    ) -> None:
        self.client = client
        self.resource = resource
        self.namespace = namespace or None
        self.label_selector = label_selector or None
        self.field_selector = field_selector or None
        self.name = name or self._default_name()
        self.store = Store({**default_indexers(resource), **(indexers or {})})
        self.metrics = metrics or InformerMetrics(CollectorRegistry(auto_describe=True))
        self._transform = transform or default_transform(resource)
        self._watch_timeout = watch_timeout
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._label = resource.label
        self._handlers: list[EventHandler] = []
        # Held while the store changes and handlers run, so add_handler's replay and
        # live deliveries never interleave.
        self._dispatch_lock = threading.RLock()
        self._state_lock = threading.Lock()
        self._stop = threading.Event()
        self._synced = threading.Event()
        self._thread: threading.Thread | None = None
        self._stream: WatchStream | None = None
        self._last_resource_version = ""
        self._event_counters = {
            kind: self.metrics.watch_events.labels(resource=self._label, type=kind)
            for kind in ("ADDED", "MODIFIED", "DELETED", "BOOKMARK")
        }

    def _default_name(self) -> str:
        name = self.resource.label
        if self.namespace:
            name += f"@{self.namespace}"
        for selector in (self.label_selector, self.field_selector):
            if selector:
                name += f"[{selector}]"
        return name

    def __repr__(self) -> str:
        return f"<Informer {self.name} synced={self.has_synced()} rv={self._last_resource_version!r}>"

    # -- public ------------------------------------------------------------------

    @property
    def last_resource_version(self) -> str:
        """The newest resourceVersion seen (list, event or bookmark); "" before the first list."""
        return self._last_resource_version

    def add_handler(self, handler: EventHandler) -> None:
        """Register ``handler``; if already synced it first gets ``on_add`` for every cached object."""
        with self._dispatch_lock:
            if self._synced.is_set():
                for obj in self.store.list():
                    self._call(handler.on_add, "add", object_key(obj), obj)
            self._handlers.append(handler)

    def remove_handler(self, handler: EventHandler) -> None:
        """Stop delivering events to ``handler`` (a controller stopped at runtime); unknown ones are ignored."""
        with self._dispatch_lock:
            self._handlers = [h for h in self._handlers if h is not handler]

    def has_synced(self) -> bool:
        """True once the first list has been stored and delivered."""
        return self._synced.is_set()

    def wait_for_sync(self, timeout: float) -> bool:
        return self._synced.wait(timeout)

    def start(self) -> None:
        """Start the informer thread (no-op if running). After :meth:`stop` it resumes
        from the last resourceVersion, delivering what changed meanwhile."""
        with self._state_lock:
            previous = self._thread
            if previous is not None and previous.is_alive() and not self._stop.is_set():
                return
        if previous is not None and previous.is_alive():
            # Stopping, but not yet done (finishing a request): wait outside the lock,
            # which the old thread needs to wind down.
            previous.join(self.client.request_timeout + 5)
            if previous.is_alive():
                raise RuntimeError(f"informer {self.name}: the previous thread has not stopped yet")
        with self._state_lock:
            if self._thread is not previous:
                return  # another caller started it meanwhile
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=f"informer-{self.name}", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread: closes the running watch at once, then waits up to ``timeout``."""
        with self._state_lock:
            self._stop.set()
            stream = self._stream
            thread = self._thread
        if stream is not None:
            stream.close()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                logger.warning("informer %s: thread still busy %.0fs after stop", self.name, timeout)

    # -- the loop ------------------------------------------------------------------

    def _run(self) -> None:
        backoff = self._backoff_initial
        need_list = not (self._synced.is_set() and self._last_resource_version)
        reason = "initial"
        while not self._stop.is_set():
            try:
                if need_list:
                    items, list_version = self.client.list(
                        self.resource, namespace=self.namespace, label_selector=self.label_selector,
                        field_selector=self.field_selector, transform=self._transform,
                    )
                    if self._stop.is_set():
                        break
                    self._replace(items, list_version, transformed=True)
                    self.metrics.relists.labels(resource=self._label, reason=reason).inc()
                    need_list = False
                    backoff = self._backoff_initial
                opened = time.monotonic()
                received = self._watch_once()
                if self._stop.is_set():
                    break
                if received == 0 and time.monotonic() - opened < _MIN_HEALTHY_WATCH_SECONDS:
                    raise Unavailable(f"{self.name}: watch ended immediately")
                backoff = self._backoff_initial
            except ResourceExpired as exc:
                logger.info("informer %s: %s; listing again", self.name, exc.message)
                need_list, reason = True, "expired"
            except Unavailable as exc:
                if self._stop.is_set():
                    break
                self.metrics.reconnects.labels(resource=self._label).inc()
                delay = backoff * random.uniform(0.8, 1.0)
                logger.info("informer %s: %s; retrying from resourceVersion %s in %.2fs",
                            self.name, exc.message, self._last_resource_version or "(list)", delay)
                self._stop.wait(delay)
                backoff = min(backoff * 2, self._backoff_max)
            except Exception as exc:
                # 403, 404, an unexpected ERROR event, a bug in a transform: start over
                # from a fresh list after a backoff rather than die.
                if self._stop.is_set():
                    break
                level = logging.WARNING if isinstance(exc, KubeError) else logging.ERROR
                logger.log(level, "informer %s failed: %s; listing again in %.2fs", self.name, exc, backoff,
                           exc_info=not isinstance(exc, KubeError))
                need_list, reason = True, "error"
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self._backoff_max)
        logger.debug("informer %s stopped at resourceVersion %s", self.name, self._last_resource_version)

    def _watch_once(self) -> int:
        """Run one watch from the last resourceVersion; returns how many events it delivered."""
        timeout = int(self._watch_timeout * random.uniform(1.0, 2.0))
        stream = self.client.watch(
            self.resource, resource_version=self._last_resource_version, namespace=self.namespace,
            label_selector=self.label_selector, field_selector=self.field_selector,
            timeout_seconds=timeout, allow_bookmarks=True,
        )
        with self._state_lock:
            if self._stop.is_set():
                stream.close()
                return 0
            self._stream = stream
        received = 0
        try:
            for event in stream:
                if self._stop.is_set():  # events already buffered when stop() closed the stream
                    break
                self._handle(event)
                received += 1
        finally:
            with self._state_lock:
                self._stream = None
            stream.close()
        return received

    def _handle(self, event: WatchEvent) -> None:
        counter = self._event_counters.get(event.type)
        if counter is not None:
            counter.inc()
        if event.type == "BOOKMARK":
            version = resource_version(event.object)
            if version:
                self._last_resource_version = version
            return
        obj = self._transform(event.object)
        key = object_key(obj)
        version = resource_version(obj)
        with self._dispatch_lock:
            if event.type == "DELETED":
                old = self.store.remove(key)
                self._last_resource_version = version or self._last_resource_version
                if old is not None:
                    self._deliver_delete(key, obj)
                return
            old = self.store.get(key)
            if old is not None and resource_version(old) == version:
                return
            self.store.put(key, obj)
            self._last_resource_version = version or self._last_resource_version
            if old is None:
                self._deliver_add(key, obj)
            else:
                self._deliver_update(key, old, obj)

    def _replace(self, items: Iterable[JsonObject], list_version: str, *, transformed: bool = False) -> None:
        fresh: dict[str, JsonObject] = {}
        for item in items:
            obj = item if transformed else self._transform(item)
            fresh[object_key(obj)] = obj
        with self._dispatch_lock:
            previous = self.store.replace(fresh)
            self._last_resource_version = list_version
            # Deletes first: whatever the gone objects held (IPs, ports) is freed before
            # new objects may claim it.
            for key, gone in previous.items():
                if key not in fresh:
                    self._deliver_delete(key, gone)
            for key, obj in fresh.items():
                old = previous.get(key)
                if old is None:
                    self._deliver_add(key, obj)
                elif resource_version(old) != resource_version(obj):
                    self._deliver_update(key, old, obj)
            if not self._synced.is_set():
                logger.info("informer %s synced: %d objects at resourceVersion %s",
                            self.name, len(fresh), list_version)
            self._synced.set()

    # -- delivery ------------------------------------------------------------------

    def _deliver_add(self, key: str, obj: JsonObject) -> None:
        for handler in self._handlers:
            self._call(handler.on_add, "add", key, obj)

    def _deliver_update(self, key: str, old: JsonObject, new: JsonObject) -> None:
        for handler in self._handlers:
            try:
                handler.on_update(old, new)
            except Exception:
                logger.exception("informer %s: handler %r failed on update of %s", self.name, handler, key)

    def _deliver_delete(self, key: str, obj: JsonObject) -> None:
        for handler in self._handlers:
            self._call(handler.on_delete, "delete", key, obj)

    def _call(self, method: Callable[[JsonObject], None], what: str, key: str, obj: JsonObject) -> None:
        try:
            method(obj)
        except Exception:
            logger.exception("informer %s: handler %r failed on %s of %s", self.name, method, what, key)


class InformerFactory:
    """One shared :class:`Informer` per (resource, namespace, selectors), all on one metrics registry.

    :param registry: where the ``ovnk_kube_*`` watch counters live (never
        prometheus' global registry); a private one when omitted.
    """

    def __init__(self, client: KubeClient, *, registry: CollectorRegistry | None = None) -> None:
        self.client = client
        self.metrics = InformerMetrics(registry or CollectorRegistry(auto_describe=True))
        self._informers: dict[tuple[Resource, str | None, str | None, str | None], Informer] = {}
        self._lock = threading.Lock()
        self._started = False

    def informer(
        self,
        resource: Resource,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        indexers: Mapping[str, Indexer] | None = None,
    ) -> Informer:
        """The shared informer (created on first use; started at once if the factory is running).

        ``indexers`` are added to an existing informer's store; an index name
        already bound to another function is a ``ValueError``.
        """
        key = (resource, namespace or None, label_selector or None, field_selector or None)
        with self._lock:
            existing = self._informers.get(key)
            if existing is None:
                informer = Informer(
                    self.client, resource, namespace=namespace, label_selector=label_selector,
                    field_selector=field_selector, indexers=indexers, metrics=self.metrics,
                )
                self._informers[key] = informer
                if self._started:
                    informer.start()
                return informer
            for name, indexer in (indexers or {}).items():
                existing.store.add_indexer(name, indexer)
            return existing

    def informers(self) -> list[Informer]:
        with self._lock:
            return list(self._informers.values())

    def start(self) -> None:
        """Start every informer (and those created later)."""
        with self._lock:
            self._started = True
            informers = list(self._informers.values())
        for informer in informers:
            informer.start()

    def stop(self) -> None:
        with self._lock:
            self._started = False
            informers = list(self._informers.values())
        for informer in informers:
            informer.stop()

    def wait_for_sync(self, timeout: float) -> bool:
        """True when every informer has synced within ``timeout`` seconds overall."""
        deadline = time.monotonic() + timeout
        for informer in self.informers():
            if not informer.wait_for_sync(max(0.0, deadline - time.monotonic())):
                logger.warning("informer %s not synced after %.0fs", informer.name, timeout)
                return False
        return True
