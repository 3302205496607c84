"""What a plugin (or core) declares to get a level-driven reconciler.

A :class:`ControllerSpec` names the resources it watches and a ``reconcile``
function called with one key at a time. Events only enqueue keys; the
reconcile reads the current state from the shared informer caches and
converges the world to it, so it is level-driven: it never depends on which
event happened, only on what exists now.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from ovnk.core.kube.resources import Resource
from ovnk.core.kube.resources import object_key


def _default_keys(obj: Mapping[str, Any]) -> Iterable[str]:
    return (object_key(obj),)


def _resource_version_changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    return bool(old.get("metadata", {}).get("resourceVersion") != new.get("metadata", {}).get("resourceVersion"))


@dataclass(frozen=True)
class Watch:
    """One watched resource of a controller.

    :param resource: what to watch (any group/version/kind, CRDs included).
    :param keys: maps an object to the reconcile keys it affects (default: its
        own ``ns/name`` key). A pod watch of a namespace controller maps each pod
        to its namespace, for example.
    :param needs_update: filters update events (default: any change).
    :param namespace: restrict the watch to one namespace.
    :param label_selector: restrict the watch by labels.
    :param field_selector: restrict the watch by fields.
    """

    resource: Resource
    keys: Callable[[Mapping[str, Any]], Iterable[str]] = _default_keys
    needs_update: Callable[[Mapping[str, Any], Mapping[str, Any]], bool] = _resource_version_changed
    namespace: str | None = None
    label_selector: str | None = None
    field_selector: str | None = None


@dataclass(frozen=True)
class ReconcileRequest:
    """One unit of work: a key, and the last state of the object if it was deleted.

    ``deleted`` is the last known object when the latest event of the
    controller's *primary* watch (its first) for this key was a deletion; it
    lets cleanup use data (IPs, namespace, labels) the cache no longer has.
    """

    key: str
    deleted: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class ControllerSpec:
    """A level-driven reconciler contributed through ``ovnk_controllers``.

    :param name: short unique name (``pods``, ``egressip``); used in logs and metrics.
    :param watches: watched resources; the first is the primary one.
    :param reconcile: converges one key; raise ``TemporaryError(delay=...)`` to
        retry after a delay, ``PermanentError`` to give up at once, anything else
        to retry with exponential backoff (5 ms doubling, capped) until
        ``max_attempts``.
    :param workers: parallel workers (a key is never processed by two at once);
        default ``[controller] workers``.
    :param max_attempts: attempts before the final error; default ``[controller] max-attempts``.
    :param on_failure: called after the last attempt (core already logs the
        error and records a Warning event on the object when it can).
    :param initial_keys: keys to enqueue once at start even without objects
        (e.g. a cluster-wide singleton key).
    :param resync_period: this often (seconds; 0 = never), queue again the keys
        of every object in the primary cache (mapped by the primary watch's
        ``keys``) and the initial keys: periodic repair of state that can drift
        without an event (kernel and OVS state on the node).
    :param extra: free-form settings core reads by key; ``programming_kind`` (``pod``,
        ``service``, ``networkpolicy``...) makes the controller's runner record
        ``ovnkube_controller_network_programming_duration_seconds{kind=...}``: from a
        Kubernetes event to the end of the reconcile that programmed it.
    """

    name: str
    watches: tuple[Watch, ...]
    reconcile: Callable[[ReconcileRequest], None]
    workers: int | None = None
    max_attempts: int | None = None
    on_failure: Callable[[str, BaseException], None] | None = None
    initial_keys: Callable[[], Iterable[str]] | None = None
    resync_period: float = 0.0
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.watches and self.initial_keys is None:
            raise ValueError(f"controller {self.name!r} needs at least one watch or initial keys")


@dataclass(frozen=True)
class PeriodicTask:
    """Work that runs on a timer rather than per key, contributed through ``ovnk_controller_tasks``.

    Core calls ``run()`` once when the task starts and then every ``interval``
    seconds, in a thread of its own, only while this controller leads: the task
    stops when leadership is lost or the process stops (EgressIP's node health
    checks, for example). ``run`` should do one bounded round of work and return;
    what it finds is usually acted on with ``ctx.enqueue(controller, key)``. An
    exception is logged (with the task's name) and the next round runs as planned.

    :param name: short unique name, used in logs and the thread name.
    :param interval: seconds between the starts of two rounds.
    :param run: one round.
    """

    name: str
    interval: float
    run: Callable[[], None]

    def __post_init__(self) -> None:
        if self.interval <= 0:
            raise ValueError(f"task {self.name!r}: interval must be positive, not {self.interval}")
