"""The cluster-wide controller process (``ovnk controller``).

Start-up, each step failing with a message that says why:

1. metrics and health endpoint (``[controller] metrics-bind-address``);
2. Kubernetes client; the CRDs claimed by enabled plugins are applied;
3. NB connection; an SB connection to ``SB_Global`` only, for the e2e-timestamp probe
   (``[controller] e2e-timestamp-interval``, :mod:`ovnk.core.ovn.probe`);
4. controllers from ``ovnk_controllers`` and tasks from
   ``ovnk_controller_tasks``; the watches start and the caches sync (the
   process is *ready* from here: a standby keeps warm caches);
5. leader election on a Lease (unless disabled); on gaining leadership, in
   phases: **restore** (``ovnk_restore``: allocators and other in-memory
   state from what exists; always runs, writes nothing), **repair**
   (``ovnk_repair`` + unclaimed owner types make one plan, which
   ``[controller] repair-mode`` applies, logs, or does not make at all; node
   labels recorded for plugins no longer enabled go too,
   :mod:`ovnk.core.kube.node_labels`), then the **workers** and tasks start;
6. on losing leadership the write fence closes at once and the process exits
   so that a restart re-syncs from scratch (client-go's behaviour).

A plugin whose restore or repair hook raises stops start-up: the message
names the plugin and the hook, leadership is released and the process exits
non-zero (a controller with half-restored allocators would hand out addresses
that are in use). After start-up a failing reconcile only retries its key.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

from prometheus_client import Gauge

from ovnk.core.bootstrap import Runtime
from ovnk.core.claims import CrdClaim
from ovnk.core.context import ControllerContext
from ovnk.core.context import NbFacade
from ovnk.core.errors import PluginError
from ovnk.core.errors import StartupError
from ovnk.core.health import HealthServer
from ovnk.core.health import HealthState
from ovnk.core.kube.client import KubeClient
from ovnk.core.kube.events import EventRecorder
from ovnk.core.kube.informer import InformerFactory
from ovnk.core.kube.leader import LeaderElector
from ovnk.core.kube.resources import CRDS
from ovnk.core.metrics import controller_metrics
from ovnk.core.metrics import new_registry
from ovnk.core.ovn import sync
from ovnk.core.ovn.connection import OvsdbClient
from ovnk.core.ovn.connection import SslFiles
from ovnk.core.ovn.probe import E2eTimestampProbe
from ovnk.core.ovn.reader import NbReader
from ovnk.core.ovn.txn import TxnManager
from ovnk.core.process import defer_garbage_collection
from ovnk.core.process import limit_malloc_arenas
from ovnk.core.process import release_free_memory
from ovnk.core.process import restore_garbage_collection
from ovnk.core.process import stop_on_signals
from ovnk.core.reconcile.runner import ControllerRunner
from ovnk.core.reconcile.spec import PeriodicTask
from ovnk.core.topology.state import TopologyState

logger = logging.getLogger(__name__)

CACHE_SYNC_TIMEOUT = 120.0
#: ``[controller] install-crds = false``: how long start-up waits for the CRDs someone else installs.
CRD_WAIT_TIMEOUT = 120.0
#: Seconds between returns of the heap's free pages to the kernel (also done once the first pass is over).
RELEASE_MEMORY_INTERVAL = 300.0


def _release_memory() -> None:
    release_free_memory()


def ssl_files(settings: Any) -> SslFiles | None:
    if settings.address.startswith("ssl:") or ",ssl:" in settings.address:
        if not (settings.client_privkey and settings.client_cert and settings.client_cacert):
            raise StartupError(f"{settings.address} is an ssl: remote but client-privkey/client-cert/client-cacert are not all set")
        return SslFiles(private_key=settings.client_privkey, certificate=settings.client_cert,
                        ca_cert=settings.client_cacert)
    return None


@dataclass
class ControllerProcess:
    """All the parts of one running controller; :meth:`start` and :meth:`stop` in tests and the CLI."""

    runtime: Runtime
    ctx: ControllerContext | None = None
    runner: ControllerRunner | None = None
    health: HealthServer | None = None
    elector: LeaderElector | None = None
    informers: InformerFactory | None = None
    nb: OvsdbClient | None = None
    sb: OvsdbClient | None = None
    state: HealthState | None = None
    lost_leadership: threading.Event | None = None
    repaired: int = 0
    #: Why start-up failed after leadership was gained (restore or repair raised).
    failure: BaseException | None = None
    _leading: bool = False
    _leader_gauge: Any = None
    _upstream: Any = None
    _started_at: float = 0.0
    #: The garbage collector's thresholds before start-up deferred it (None once restored).
    _gc_thresholds: tuple[int, int, int] | None = None

    def start(self) -> ControllerProcess:
        """Start every part (module docstring); on failure what was started is stopped again."""
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> ControllerProcess:
        rt = self.runtime
        cfg = rt.config
        self._started_at = time.monotonic()
        limit_malloc_arenas()  # before the threads start: see ovnk.core.process.MALLOC_ARENAS
        self._gc_thresholds = defer_garbage_collection()  # until the first pass is done (or start-up fails)
        registry = new_registry(component="controller")
        self._leader_gauge = Gauge("ovnk_controller_leader", "1 while this controller holds the leader lease.",
                                   registry=registry)
        self._upstream = controller_metrics(registry)
        rt.pm.hook.ovnk_register_metrics(registry=registry)
        self.state = HealthState()
        self.lost_leadership = threading.Event()
        if cfg.controller.metrics_bind_address:
            self.health = HealthServer(cfg.controller.metrics_bind_address, registry, self.state)
            self.health.start()
        kube = KubeClient.from_settings(cfg.kubernetes)
        if not cfg.controller.install_crds:
            self._wait_crds_served(kube, [crd for crd, _plugin in rt.claims.crds.values()])
        for crd, plugin in rt.claims.crds.values() if cfg.controller.install_crds else ():
            try:
                if crd.if_missing and self._crd_present(kube, crd):
                    continue
                logger.info("applying CRD %s (claimed by %s)", crd.name, plugin)
                kube.apply_crd(crd.document)
            except StartupError:
                raise
            except Exception as exc:
                raise StartupError(f"cannot apply CRD {crd.name} of plugin {plugin!r}: {exc}") from exc
        self.nb = OvsdbClient(remote=cfg.ovnnorth.address, schema="OVN_Northbound", name="nb",
                              ssl=ssl_files(cfg.ovnnorth), inactivity_probe_ms=cfg.default.inactivity_probe,
                              timeout=cfg.default.db_txn_timeout, registry=registry).start()
        self.state.liveness["nb"] = lambda: None if self.nb and self.nb.connected else "NB disconnected"
        identity = cfg.controller.identity or f"{socket.gethostname()}_{os.getpid()}"
        if cfg.controller.leader_election:
            self.elector = LeaderElector(
                kube, namespace=cfg.controller.lease_namespace, name=cfg.controller.lease_name, identity=identity,
                lease_duration=cfg.controller.lease_duration, renew_deadline=cfg.controller.renew_deadline,
                retry_period=cfg.controller.retry_period, on_started_leading=self._on_leading_in_background,
                on_stopped_leading=self._on_lost,
            )
        fence = self.elector.is_leader if self.elector is not None else (lambda: True)
        txns = TxnManager(self.nb, pm=rt.pm, controller=cfg.controller.name, timeout=cfg.default.db_txn_timeout,
                          fence=fence, registry=registry)
        self.informers = InformerFactory(kube, registry=registry)
        events = EventRecorder(kube, component="ovnk-controller", host=socket.gethostname())
        self.runner = ControllerRunner(informers=self.informers, workers=cfg.controller.workers,
                                       max_attempts=cfg.controller.max_attempts,
                                       max_backoff=cfg.controller.max_backoff, registry=registry, events=events)
        self.ctx = ControllerContext(
            config=cfg, pm=rt.pm, kube=kube, informers=self.informers,
            nb=NbFacade(client=self.nb, txns=txns, reader=NbReader(self.nb, controller=cfg.controller.name)),
            owners=rt.claims.owners, claims=rt.claims, registry=registry, events=events,
            topology=TopologyState(cfg), is_leader=fence, controllers=self.runner,
        )
        specs = [spec for specs in rt.pm.call_each("ovnk_controllers", ctx=self.ctx) for spec in specs]
        for spec in specs:
            self.runner.add(spec)
        for tasks in rt.pm.call_each("ovnk_controller_tasks", ctx=self.ctx):
            for task in tasks:
                self.runner.add_task(task)
        if cfg.controller.e2e_timestamp_interval > 0:
            self._start_e2e_probe(txns)
        self.runner.add_task(PeriodicTask(name="release-memory", interval=RELEASE_MEMORY_INTERVAL,
                                          run=_release_memory))
        self.runner.start_watches()
        started = time.monotonic()
        if not self.runner.wait_for_sync(CACHE_SYNC_TIMEOUT):
            raise StartupError(f"caches did not sync within {CACHE_SYNC_TIMEOUT:.0f}s: {', '.join(self.runner.unsynced())}")
        logger.info("caches synced in %.1fs (%d controllers)", time.monotonic() - started, len(specs))
        release_free_memory()  # the JSON of every first list is garbage now
        self.state.set_ready(True)
        if self.elector is not None:
            self.elector.start()
        else:
            self._on_leading()
            if self.failure is not None:
                raise StartupError(str(self.failure)) from self.failure
        return self

    @staticmethod
    def _wait_crds_served(kube: KubeClient, crds: list[CrdClaim]) -> None:
        """``[controller] install-crds = false``: whoever installs ovnk (the Helm chart) installs the CRDs; wait
        until the API server serves every version we use. Reads discovery only, which needs no RBAC rule."""
        timeout = CRD_WAIT_TIMEOUT
        deadline = time.monotonic() + timeout
        missing = [(crd, version) for crd in crds for version in crd.versions]
        reported = False
        while True:
            missing = [(crd, v) for crd, v in missing if not kube.serves(crd.group, v, crd.plural)]
            if not missing:
                return
            if time.monotonic() > deadline:
                names = ", ".join(sorted({f"{crd.name} ({v})" for crd, v in missing}))
                raise StartupError(f"install-crds is false and the API server does not serve {names} after "
                                   f"{timeout:.0f}s: install the CRDs of the enabled plugins (the Helm chart does "
                                   f"for plugins.<name>.enabled=true; `ovnk crds print` prints them)")
            if not reported:
                logger.info("waiting for the API server to serve %s", ", ".join(sorted({c.name for c, _ in missing})))
                reported = True
            time.sleep(1.0)

    @staticmethod
    def _crd_present(kube: KubeClient, crd: CrdClaim) -> bool:
        """Whether a CRD installed ``if-missing`` exists already; then it is left as it is (another project,
        such as Multus, may have installed and may manage it), provided it serves the versions we use."""
        existing = kube.get(CRDS, crd.name)
        if existing is None:
            return False
        served = {str(v.get("name")) for v in (existing.get("spec") or {}).get("versions") or () if v.get("served")}
        missing = sorted(set(crd.versions) - served)
        if missing:
            raise StartupError(f"CRD {crd.name} exists but does not serve version(s) {', '.join(missing)}, which "
                               f"ovnk needs; it was installed by someone else and is left alone: update it")
        labels = (existing.get("metadata") or {}).get("labels") or {}
        logger.info("CRD %s exists (installed by %s); left as it is", crd.name,
                    labels.get("app.kubernetes.io/managed-by") or "someone else")
        return True


    def _start_e2e_probe(self, txns: TxnManager) -> None:
        """The NB -> northd -> SB freshness probe: a small SB connection (SB_Global only) and a leader-only task."""
        assert self.runner is not None and self.nb is not None
        cfg = self.runtime.config
        self.sb = OvsdbClient(remote=cfg.ovnsouth.address, schema="OVN_Southbound", name="sb", leader_only=False,
                              tables=("SB_Global",), ssl=ssl_files(cfg.ovnsouth),
                              inactivity_probe_ms=cfg.default.inactivity_probe, timeout=cfg.default.db_txn_timeout)
        try:
            self.sb.start()
        except StartupError as exc:
            # The probe reports an unreachable SB through its metrics; it does not stop the controller.
            logger.warning("e2e timestamp probe: %s; ovnkube_controller_sb_e2e_timestamp stays 0", exc)
            self.sb = None
        servers = {"OVN_Northbound": (cfg.ovnnorth.address, ssl_files(cfg.ovnnorth)),
                   "OVN_Southbound": (cfg.ovnsouth.address, ssl_files(cfg.ovnsouth))}
        probe = E2eTimestampProbe(nb=self.nb, sb=self.sb, txns=txns, metrics=self._upstream, servers=servers)
        self.runner.add_task(PeriodicTask(name="e2e-timestamp", interval=cfg.controller.e2e_timestamp_interval,
                                          run=probe.run))

    def _on_leading_in_background(self) -> None:
        """Restore, repair and start the workers on a thread of their own: at 10,000 pods that takes
        seconds, and on the elector's thread it kept the first renewals from being sent (a short
        lease then expired under the new leader, which exited)."""
        threading.Thread(target=self._on_leading, name="leader-start-up", daemon=True).start()

    def _on_leading(self) -> None:
        assert self.ctx is not None and self.runner is not None
        logger.info("leading: restoring, repairing, then starting workers")
        self._leading = True
        self._set_leader(1)
        try:
            self.restore()
            started = time.monotonic()
            self.repaired = self.repair()
            self.release_node_labels()
            logger.info("repaired in %.2fs (%d rows)", time.monotonic() - started, self.repaired)
        except Exception as exc:
            logger.error("start-up failed, giving up leadership: %s", exc)
            self.failure = exc
            self._leading = False
            self._set_leader(0)
            if self.lost_leadership is not None:
                self.lost_leadership.set()
            return
        recent = 0.0
        if self.elector is not None:
            # What changed since the old leader's last renewal may not have been handled: first.
            recent = self.elector.lease_duration + 2 * self.elector.retry_period
        self.runner.start_workers(recent=recent)
        self._upstream.ready_duration.set(time.monotonic() - self._started_at)
        threading.Thread(target=self._release_memory_after_first_pass, name="release-memory", daemon=True).start()

    def _release_memory_after_first_pass(self) -> None:
        """Return the first pass's freed memory to the kernel once every queue has drained."""
        runner = self.runner
        quiet = 0
        while runner is not None and self._leading and quiet < 2:
            time.sleep(1.0)
            quiet = quiet + 1 if runner.idle() else 0
        if quiet >= 2:
            self._restore_garbage_collection(freeze=True)
            release_free_memory()
            logger.info("first pass done %.1fs after start-up", time.monotonic() - self._started_at)

    def _restore_garbage_collection(self, *, freeze: bool = False) -> None:
        if self._gc_thresholds is not None:
            restore_garbage_collection(self._gc_thresholds, freeze=freeze)
            self._gc_thresholds = None

    def _on_lost(self) -> None:
        if not self._leading:
            return
        logger.error("lost leadership; stopping writes and exiting so a restart re-syncs")
        self._leading = False
        self._set_leader(0)
        if self.lost_leadership is not None:
            self.lost_leadership.set()

    def _set_leader(self, value: int) -> None:
        self._leader_gauge.set(value)
        self._upstream.leader.set(value)

    def restore(self) -> None:
        """Run ``ovnk_restore`` (always, whatever the repair mode); any NB write in it is refused.

        :raises PluginError: a plugin's restore failed (or wrote); the message names it.
        """
        assert self.ctx is not None
        started = time.monotonic()
        with self.ctx.nb.txns.read_only("ovnk_restore"):
            self.ctx.pm.call_each("ovnk_restore", ctx=self.ctx)
        logger.info("restored in %.2fs", time.monotonic() - started)

    def repair(self) -> int:
        """Plan repair and apply it according to ``[controller] repair-mode``; returns the rows written.

        :raises PluginError: a plugin's repair hook failed; the message names it.
        """
        assert self.ctx is not None
        ctx = self.ctx
        mode = ctx.config.controller.repair_mode
        if mode == "off":
            return 0
        plan = sync.RepairPlan(controller=ctx.config.controller.name)
        sync.plan_unclaimed(plan, ctx.nb.reader, ctx.owners)
        with ctx.nb.txns.read_only("ovnk_repair (planning)"):
            for plugin, impl in ctx.pm.implementations("ovnk_repair"):
                plan.current_plugin = plugin
                try:
                    ctx.pm.call_impl(impl, ctx=ctx, plan=plan)
                except Exception as exc:
                    raise PluginError(f"plugin {plugin!r} failed in ovnk_repair: {type(exc).__name__}: {exc}") from exc
        if mode == "log":
            plan.log()
            return 0
        return plan.apply(ctx.nb.txns) if len(plan) else 0

    def release_node_labels(self) -> int:
        """Remove node labels recorded for owners that are not enabled any more (plugins switched off),
        as repair removes their NB rows; ``[controller] repair-mode`` applies. Returns the labels removed."""
        assert self.ctx is not None
        mode = self.ctx.config.controller.repair_mode
        if mode == "off":
            return 0
        from ovnk.core.kube.resources import NODES

        removed = self.ctx.node_labels.release(self.ctx.cache(NODES).list(), apply=mode != "log")
        return 0 if mode == "log" else len(removed)

    def stop(self) -> None:
        self._restore_garbage_collection()
        if self.elector is not None:
            self.elector.stop(release=True)
        if self.runner is not None:
            self.runner.stop()
        if self.informers is not None:
            self.informers.stop()
        if self.nb is not None:
            self.nb.stop()
        if self.sb is not None:
            self.sb.stop()
        if self.health is not None:
            self.health.stop()


def run(runtime: Runtime) -> int:
    """Run until SIGTERM/SIGINT or lost leadership; returns the exit status."""
    stop = stop_on_signals()
    process = ControllerProcess(runtime)
    process.start()
    try:
        while not stop.is_set():
            if process.lost_leadership is not None and process.lost_leadership.is_set():
                if process.failure is not None:
                    raise StartupError(str(process.failure)) from process.failure
                return 1
            stop.wait(0.2)
    finally:
        process.stop()
        runtime.shutdown()
    return 0
