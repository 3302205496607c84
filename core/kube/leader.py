"""Leader election on a ``coordination.k8s.io/v1`` Lease, with client-go's semantics.

Each candidate polls the Lease every ``retry_period``. A candidate takes it
when it has no holder, or when its record has not changed for
``leaseDurationSeconds`` *as timed by this process's monotonic clock* from
the moment it last saw the record change (client-go's ``observedTime``):
the holder's ``renewTime`` is never compared with the local wall clock, so
clock skew between nodes cannot cause two leaders. Writes are PUTs carrying
the Lease's ``resourceVersion``; of two candidates racing for a free Lease,
one gets 409 Conflict and stays standby.

The leader renews every ``retry_period``. :meth:`LeaderElector.is_leader`
turns False the moment ``renew_deadline`` has passed since the last renew that
succeeded, even while the elector thread is still stuck in a request, and
before ``on_stopped_leading`` runs. Since ``renew_deadline < lease_duration``,
the old leader has stopped believing it leads before anyone else may take over.
"""

from __future__ import annotations

import enum
import logging
import math
import random
import threading
import time
from collections.abc import Callable
from datetime import UTC
from datetime import datetime
from typing import Any

from ovnk.core.kube.client import KubeClient
from ovnk.core.kube.errors import Conflict
from ovnk.core.kube.errors import NotFound
from ovnk.core.kube.resources import LEASES
from ovnk.core.kube.resources import NAMESPACES

logger = logging.getLogger(__name__)

# client-go's JitterFactor for the acquire loop: standbys do not poll in step.
_ACQUIRE_JITTER = 1.2


def micro_time(moment: datetime | None = None) -> str:
    """Kubernetes MicroTime: ``2006-01-02T15:04:05.000000Z`` (UTC, microseconds)."""
    return (moment or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class _Attempt(enum.Enum):
    HELD = "held"            # we hold the Lease (acquired or renewed)
    FAILED = "failed"        # could not reach it or lost a write race: try again
    OTHER = "other"          # another candidate holds a valid Lease


class LeaderElector:
    """Elect one leader among the processes sharing ``namespace/name``.

    :param identity: unique per candidate (pod name, hostname + pid).
    :param lease_duration: seconds a standby waits after the record last changed
        before taking over (written as ``leaseDurationSeconds``, rounded up).
    :param renew_deadline: seconds the leader keeps leading without a successful
        renew; must be shorter than ``lease_duration``.
    :param retry_period: seconds between attempts to acquire or renew.
    :param on_started_leading: called on the elector thread when this candidate
        becomes leader; must return promptly (start workers, do not run them).
    :param on_stopped_leading: called on the elector thread (or by :meth:`stop`)
        when leadership ends; ``is_leader()`` is already False by then.
    """

    def __init__(
        self,
        client: KubeClient,
        *,
        namespace: str,
        name: str,
        identity: str,
        lease_duration: float,
        renew_deadline: float,
        retry_period: float,
        on_started_leading: Callable[[], None],
        on_stopped_leading: Callable[[], None],
    ) -> None:
        if not identity:
            raise ValueError("leader election needs a non-empty identity")
        if not 0 < retry_period * _ACQUIRE_JITTER <= renew_deadline < lease_duration:
            raise ValueError(
                "need 0 < retry_period*1.2 <= renew_deadline < lease_duration, got "
                f"retry_period={retry_period} renew_deadline={renew_deadline} lease_duration={lease_duration}"
            )
        self.client = client
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self._on_started_leading = on_started_leading
        self._on_stopped_leading = on_stopped_leading
        self._lease_seconds = max(1, math.ceil(lease_duration))
        self._lock = threading.Lock()
        self._leading = False
        self._deadline = 0.0
        self._observed_spec: dict[str, Any] | None = None
        self._observed_time = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"<LeaderElector {self.namespace}/{self.name} identity={self.identity} leader={self.is_leader()}>"

    # -- public ------------------------------------------------------------------

    def is_leader(self) -> bool:
        """True while this candidate holds the Lease and its last renew is younger than ``renew_deadline``."""
        with self._lock:
            return self._leading and time.monotonic() < self._deadline

    def start(self) -> None:
        """Start campaigning on a background thread (no-op if already running)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, name=f"leader-{self.namespace}/{self.name}", daemon=True
        )
        self._thread.start()

    def stop(self, *, release: bool = True) -> None:
        """Stop campaigning. With ``release`` the Lease is given up (empty holder) so a
        standby takes over at its next poll; without, it takes over after the lease expires."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(self.client.request_timeout + self.retry_period + 1)
        with self._lock:
            was_leading = self._leading
            self._leading = False
        if was_leading:
            self._stopped_leading("stopping")
        if release:
            try:
                self._release()
            except Exception as exc:
                logger.warning("leader election %s/%s: could not release the lease: %s",
                               self.namespace, self.name, exc)

    # -- loop ----------------------------------------------------------------------

    def _run(self) -> None:
        logger.info("leader election %s/%s: %s campaigning", self.namespace, self.name, self.identity)
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                attempt = self._try_acquire_or_renew()
            except Exception as exc:
                logger.info("leader election %s/%s: attempt failed: %s", self.namespace, self.name, exc)
                attempt = _Attempt.FAILED
            transition = ""
            with self._lock:
                now = time.monotonic()
                if self._leading:
                    if now >= self._deadline or attempt is _Attempt.OTHER:
                        # A renew that succeeds after the deadline does not count: is_leader()
                        # may already have answered False, and a new term must start over.
                        self._leading = False
                        transition = "stopped"
                    elif attempt is _Attempt.HELD:
                        self._deadline = started + self.renew_deadline
                elif attempt is _Attempt.HELD and not self._stop.is_set():
                    self._leading = True
                    self._deadline = started + self.renew_deadline
                    transition = "started"
            if transition == "started":
                logger.info("leader election %s/%s: %s is now the leader", self.namespace, self.name, self.identity)
                self._call(self._on_started_leading, "on_started_leading")
            elif transition == "stopped":
                self._stopped_leading("renew deadline passed" if attempt is not _Attempt.OTHER
                                      else "another candidate holds the lease")
            delay = self.retry_period
            if not self.is_leader():
                delay *= random.uniform(1.0, _ACQUIRE_JITTER)
            self._stop.wait(max(0.0, started + delay - time.monotonic()))

    def _stopped_leading(self, why: str) -> None:
        logger.warning("leader election %s/%s: %s stopped leading (%s)", self.namespace, self.name,
                       self.identity, why)
        self._call(self._on_stopped_leading, "on_stopped_leading")

    def _call(self, callback: Callable[[], None], what: str) -> None:
        try:
            callback()
        except Exception:
            logger.exception("leader election %s/%s: %s failed", self.namespace, self.name, what)

    def _observe(self, spec: dict[str, Any]) -> None:
        if spec != self._observed_spec:
            self._observed_spec = dict(spec)
            self._observed_time = time.monotonic()

    def _try_acquire_or_renew(self) -> _Attempt:
        now = micro_time()
        lease = self.client.get(LEASES, self.name, namespace=self.namespace)
        if lease is None:
            return self._create(now)
        spec: dict[str, Any] = dict(lease.get("spec") or {})
        self._observe(spec)
        holder = spec.get("holderIdentity") or ""
        duration = spec.get("leaseDurationSeconds") or self._lease_seconds
        if holder and holder != self.identity and time.monotonic() < self._observed_time + duration:
            return _Attempt.OTHER
        new_spec = {**spec, "holderIdentity": self.identity, "leaseDurationSeconds": self._lease_seconds,
                    "renewTime": now}
        if holder != self.identity:
            new_spec["acquireTime"] = now
            new_spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
            logger.info("leader election %s/%s: %s taking over from %r", self.namespace, self.name,
                        self.identity, holder)
        try:
            updated = self.client.replace(LEASES, {**lease, "spec": new_spec}, namespace=self.namespace)
        except Conflict:
            return _Attempt.FAILED
        self._observe(dict(updated.get("spec") or {}))
        return _Attempt.HELD

    def _create(self, now: str) -> _Attempt:
        body = {
            "apiVersion": LEASES.api_version,
            "kind": LEASES.kind,
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": {"holderIdentity": self.identity, "leaseDurationSeconds": self._lease_seconds,
                     "acquireTime": now, "renewTime": now, "leaseTransitions": 0},
        }
        try:
            try:
                created = self.client.create(LEASES, body, namespace=self.namespace)
            except NotFound:
                self._create_namespace()
                created = self.client.create(LEASES, body, namespace=self.namespace)
        except Conflict:
            return _Attempt.FAILED
        self._observe(dict(created.get("spec") or {}))
        return _Attempt.HELD

    def _create_namespace(self) -> None:
        try:
            self.client.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace",
                                            "metadata": {"name": self.namespace}})
            logger.info("leader election: created namespace %s", self.namespace)
        except Conflict:
            pass

    def _release(self) -> None:
        lease = self.client.get(LEASES, self.name, namespace=self.namespace)
        if lease is None:
            return
        spec = dict(lease.get("spec") or {})
        if spec.get("holderIdentity") != self.identity:
            return
        now = micro_time()
        spec.update(holderIdentity="", leaseDurationSeconds=1, acquireTime=now, renewTime=now)
        try:
            self.client.replace(LEASES, {**lease, "spec": spec}, namespace=self.namespace)
        except Conflict:
            return  # changed meanwhile: someone else holds it now
        logger.info("leader election %s/%s: %s released the lease", self.namespace, self.name, self.identity)
