"""OpenFlow on the bridges the node agent owns, by owner, through ``ovs-ofctl``.

There is no Python OpenFlow client, so :class:`FlowManager` drives
``ovs-ofctl`` against the bridge's management socket
(``<[ovs] run-dir>/<bridge>.mgmt``). Each owner (``core`` or a plugin name)
sets its desired flows per bridge; every flow it sets carries the owner's
cookie (:meth:`FlowManager.cookie`, stable across restarts), so
``ovs-ofctl dump-flows <bridge> cookie=<c>/-1`` shows one owner's flows.

:meth:`FlowManager.sync` writes a managed bridge's whole table with
``ovs-ofctl --bundle replace-flows``: one atomic OpenFlow bundle that adds
what is missing, changes what differs and deletes what nobody asked for,
while flows that already match are left alone (their counters and the
packets using them are undisturbed). A sync of an unchanged table changes
nothing, so it can run on a timer. Flows of an owner that no longer sets
any (a plugin switched off) are gone after the next sync.

The flow manager owns the restore of its bridges: two node controllers
(:meth:`FlowManager.controllers`) rewrite every managed bridge whole every
:data:`RESYNC_INTERVAL` seconds (repairing flows someone changed) and, within
a second, when ovs-vswitchd restarted (a new ovs-vswitchd starts every bridge
with an empty table; :meth:`FlowManager.vswitchd_instance`): the gateway
bridge and bridges plugins create and :meth:`~FlowManager.manage` alike.

Only bridges the agent owns exclusively are managed (the gateway bridge,
bridges plugins create in ``ovnk_node_setup``): ``br-int`` belongs to
ovn-controller and is never synced. The ownership ledger
(:mod:`~ovnk.core.node.owners`) records on which bridges each plugin set
flows, so that the agent removes them (``ovs-ofctl del-flows`` by cookie)
when the plugin is switched off, also from a bridge nobody manages any more.
"""

from __future__ import annotations

import logging
import os
import subprocess
import tempfile
import threading
import zlib
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping

from ovnk.core.errors import OvnkError
from ovnk.core.errors import TemporaryError
from ovnk.core.node.owners import CORE_OWNER
from ovnk.core.node.owners import FLOWS
from ovnk.core.node.owners import Ledger
from ovnk.core.node.owners import MemoryLedger
from ovnk.core.node.owners import is_core
from ovnk.core.reconcile.spec import ControllerSpec
from ovnk.core.reconcile.spec import ReconcileRequest

logger = logging.getLogger(__name__)

__all__ = ["CORE_OWNER", "FlowError", "FlowManager"]

# High 32 bits of every cookie we write: "ovnk" in ASCII, so our flows stand out in dumps.
COOKIE_PREFIX = 0x6F766E6B << 32
PROTOCOLS = "OpenFlow14"  # bundles need OpenFlow 1.4
# ovs-vswitchd's pidfile in its run directory (OVS's default name, and the chart's).
VSWITCHD_PIDFILE = "ovs-vswitchd.pid"
# How often every managed bridge is rewritten even when nothing changed (repairs tampering;
# ovn-kubernetes' node syncs its gateway flows every 15 s too).
RESYNC_INTERVAL = 15.0
# How often ovs-vswitchd's pidfile is read for a restart (a stat and a small read, no process).
RESTART_CHECK_INTERVAL = 1.0
# Node controllers of the flow manager.
FLOWS_CONTROLLER = "flows"
VSWITCHD_CONTROLLER = "ovs-vswitchd"
# Seconds between attempts while ovs-vswitchd is down or still starting.
VSWITCHD_RETRY = 0.2


class FlowError(OvnkError):
    """``ovs-ofctl`` failed; the message has its stderr."""


class FlowManager:
    """Desired flows by (bridge, owner) and their sync (see the module docstring).

    :param run_dir: ovs-vswitchd's run directory (``<bridge>.mgmt`` sockets).
    :param ofctl: the ``ovs-ofctl`` binary.
    :param env: environment of ``ovs-ofctl`` (default: the agent's).
    :param ledger: records the bridges each plugin set flows on (default: in memory).
    """

    def __init__(self, *, run_dir: str, ofctl: str = "ovs-ofctl", env: Mapping[str, str] | None = None,
                 timeout: float = 30.0, ledger: Ledger | None = None) -> None:
        self.run_dir = run_dir
        self.ofctl = ofctl
        self.env = dict(env) if env is not None else None
        self.timeout = timeout
        self.ledger: Ledger = ledger if ledger is not None else MemoryLedger()
        self._lock = threading.RLock()
        self._desired: dict[str, dict[str, tuple[str, ...]]] = {}
        self._applied: dict[str, tuple[str, ...]] = {}
        self._recorded: dict[str, set[str]] | None = None
        # The ovs-vswitchd whose tables the last full sync wrote (see check_restart).
        self._vswitchd: tuple[int, int, str] | None = None

    # -- owners ------------------------------------------------------------------

    @staticmethod
    def cookie(owner: str) -> int:
        """The cookie of ``owner``'s flows: a fixed prefix and a CRC of the name."""
        return COOKIE_PREFIX | zlib.crc32(owner.encode())

    def manage(self, bridge: str) -> None:
        """Declare ``bridge`` ours alone: every sync makes its table exactly the owners' flows."""
        with self._lock:
            self._desired.setdefault(bridge, {})

    def managed(self) -> list[str]:
        """The managed bridges."""
        with self._lock:
            return sorted(self._desired)

    def set_flows(self, bridge: str, owner: str, flows: Iterable[str]) -> bool:
        """Replace ``owner``'s desired flows on ``bridge`` (written by the next :meth:`sync`).

        Flows are in ``ovs-ofctl add-flow`` syntax without a cookie. Returns
        ``True`` when the desired set changed.

        :raises OwnershipError: ``owner`` is not core or an enabled plugin.
        :raises ValueError: ``bridge`` is not managed, or a flow sets a cookie.
        """
        self.ledger.owners.check(owner)
        rendered = []
        for flow in flows:
            text = " ".join(flow.split())
            if not text:
                continue
            if "cookie=" in text:
                raise ValueError(f"flow {text!r} sets its own cookie; the owner's cookie is added by the manager")
            rendered.append(f"cookie={self.cookie(owner):#x},{text}")
        with self._lock:
            if bridge not in self._desired:
                raise ValueError(f"bridge {bridge} is not managed by the node agent (call manage() first)")
            new = tuple(sorted(set(rendered)))
            old = self._desired[bridge].get(owner, ())
            if new:
                self._desired[bridge][owner] = new
                self._remember(owner, bridge)
            else:
                self._desired[bridge].pop(owner, None)
            return new != old

    def _ledger_view(self) -> dict[str, set[str]]:
        """Owner -> bridges the ledger says it has flows on (read once, then kept in step)."""
        if self._recorded is None:
            self._recorded = {o: {str(b) for b in bridges} for o, bridges in self.ledger.owned(FLOWS).items()}
        return self._recorded

    def _remember(self, owner: str, bridge: str) -> None:
        """Record in the ledger that ``owner`` has flows on ``bridge`` (plugins only: core's never go)."""
        if is_core(owner):
            return
        bridges = self._ledger_view().setdefault(owner, set())
        if bridge not in bridges:
            bridges.add(bridge)
            self.ledger.record(FLOWS, owner, sorted(bridges))

    def _forget_written(self, bridge: str) -> None:
        """After ``bridge`` was written whole: owners the ledger lists there that want no flows on it any
        more have none left there, so their entry drops the bridge (an owner per remote node, say, does
        not leave an entry behind for every node that ever existed)."""
        wanting = set(self._desired.get(bridge, {}))
        recorded = self._ledger_view()
        for owner in sorted(recorded):
            bridges = recorded[owner]
            if bridge in bridges and owner not in wanting:
                bridges.discard(bridge)
                self.ledger.record(FLOWS, owner, sorted(bridges))
                if not bridges:
                    del recorded[owner]

    def flows_of(self, bridge: str, owner: str) -> list[str]:
        with self._lock:
            return list(self._desired.get(bridge, {}).get(owner, ()))

    # -- ovs-ofctl -------------------------------------------------------------------

    def target(self, bridge: str) -> str:
        return f"unix:{os.path.join(self.run_dir, bridge + '.mgmt')}"

    def _ofctl(self, *args: str, stdin_file: str | None = None) -> str:
        argv = [self.ofctl, "-O", PROTOCOLS, *args]
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=self.timeout, check=False,
                                  env=self.env)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise FlowError(f"{' '.join(argv)}: {exc}") from exc
        if proc.returncode != 0:
            raise FlowError(f"{' '.join(argv)} failed: {proc.stderr.strip() or proc.stdout.strip()}")
        return proc.stdout

    def sync(self, bridge: str, *, force: bool = False) -> bool:
        """Make ``bridge``'s flow table exactly the desired flows; ``False`` when skipped as unchanged.

        Without ``force`` a table whose desired set has not changed since the last
        successful sync is not touched (the periodic resync passes ``force`` to
        repair flows someone else changed).
        """
        with self._lock:
            if bridge not in self._desired:
                raise ValueError(f"bridge {bridge} is not managed by the node agent")
            flows = tuple(f for owner in sorted(self._desired[bridge]) for f in self._desired[bridge][owner])
            if not force and self._applied.get(bridge) == flows:
                return False
            fd, path = tempfile.mkstemp(prefix=f"ovnk-flows-{bridge}-", suffix=".txt")
            try:
                with os.fdopen(fd, "w") as handle:
                    handle.write("\n".join(flows) + "\n")
                self._ofctl("--bundle", "replace-flows", self.target(bridge), path)
            finally:
                os.unlink(path)
            self._applied[bridge] = flows
            self._forget_written(bridge)
            logger.debug("synced %d flows on %s", len(flows), bridge)
            return True

    def sync_all(self, *, force: bool = True) -> list[str]:
        """Sync every managed bridge (forced by default); returns those written.

        Also notes which ovs-vswitchd got the tables (:meth:`check_restart`).
        """
        instance = self.vswitchd_instance()
        written = [bridge for bridge in self.managed() if self.sync(bridge, force=force)]
        if instance is not None:
            self._vswitchd = instance
        return written

    def check_restart(self) -> bool:
        """Whether ovs-vswitchd restarted since the tables were last written whole (then it also notes the new
        one: the caller rewrites every managed bridge). ``False`` while it is down."""
        instance = self.vswitchd_instance()
        if instance is None or instance == self._vswitchd:
            return False
        first = self._vswitchd is None
        self._vswitchd = instance
        if not first:
            logger.warning("ovs-vswitchd restarted (pid %s): rewriting the flows of %s", instance[2],
                           ", ".join(self.managed()) or "no bridge")
        return True

    def release(self, owner: str, *, bridges: Iterable[str]) -> list[str]:
        """Delete ``owner``'s flows (by cookie) from the recorded bridges that are among ``bridges`` (those
        that exist), and its ledger entry; start-up clean-up of owners that are no longer enabled.

        :returns: the bridges flows were deleted from.
        """
        existing = set(bridges)
        recorded = [str(b) for b in self.ledger.owned(FLOWS).get(owner, [])]
        cleared = []
        with self._lock:
            for bridge in recorded:
                if bridge in existing:
                    self._ofctl("del-flows", self.target(bridge), f"cookie={self.cookie(owner):#x}/-1")
                    cleared.append(bridge)
                if bridge in self._desired:
                    self._desired[bridge].pop(owner, None)
            self.ledger.record(FLOWS, owner, [])
            if self._recorded is not None:
                self._recorded.pop(owner, None)
        if cleared:
            logger.info("deleted the flows of %s from %s", owner, ", ".join(cleared))
        return cleared

    # -- node controllers -----------------------------------------------------------

    def controllers(self, *, enqueue: Callable[[str, str], None]) -> list[ControllerSpec]:
        """The node controllers that keep the managed bridges' tables (module docstring).

        ``flows`` (keys: bridge names) rewrites a bridge whole, every
        :data:`RESYNC_INTERVAL` seconds; ``ovs-vswitchd`` checks the pidfile every
        :data:`RESTART_CHECK_INTERVAL` seconds and queues every managed bridge for
        ``flows`` when ovs-vswitchd restarted.

        :param enqueue: ``ctx.enqueue`` of the node agent.
        """

        def sync_bridge(request: ReconcileRequest) -> None:
            if request.key not in self.managed():
                return
            if self.vswitchd_instance() is None:
                raise TemporaryError("ovs-vswitchd is not running", delay=VSWITCHD_RETRY)
            try:
                self.sync(request.key, force=True)
            except FlowError as exc:
                # A vswitchd that is still starting refuses the bundle for a moment.
                raise TemporaryError(str(exc), delay=VSWITCHD_RETRY) from exc

        def check_vswitchd(_request: ReconcileRequest) -> None:
            if self.check_restart():
                for bridge in self.managed():
                    enqueue(FLOWS_CONTROLLER, bridge)

        # Retries come every VSWITCHD_RETRY seconds while vswitchd is away; the periodic resync
        # starts over after the last attempt.
        attempts = int(RESYNC_INTERVAL / VSWITCHD_RETRY)
        return [
            ControllerSpec(name=FLOWS_CONTROLLER, watches=(), reconcile=sync_bridge, initial_keys=self.managed,
                           resync_period=RESYNC_INTERVAL, workers=1, max_attempts=attempts),
            ControllerSpec(name=VSWITCHD_CONTROLLER, watches=(), reconcile=check_vswitchd,
                           initial_keys=lambda: [VSWITCHD_CONTROLLER], resync_period=RESTART_CHECK_INTERVAL,
                           workers=1),
        ]

    def vswitchd_instance(self) -> tuple[int, int, str] | None:
        """Which ovs-vswitchd runs: its pidfile's (inode, mtime, content) in the run directory.

        A restarted ovs-vswitchd starts every bridge with an empty flow table; it writes its
        pidfile anew, so a different value means the managed bridges must be synced again. The
        file itself, not only the pid in it: in a container the new process may get the same
        pid. ``None`` while there is no pidfile (ovs-vswitchd down or starting).
        """
        path = os.path.join(self.run_dir, VSWITCHD_PIDFILE)
        try:
            info = os.stat(path)
            with open(path) as handle:
                content = handle.read().strip()
        except OSError:
            return None
        return info.st_ino, info.st_mtime_ns, content

    def dump(self, bridge: str, owner: str | None = None) -> list[str]:
        """The bridge's current flows (only ``owner``'s when given), as ``ovs-ofctl`` prints them."""
        args = ["--no-stats", "dump-flows", self.target(bridge)]
        if owner is not None:
            args.append(f"cookie={self.cookie(owner):#x}/-1")
        out = self._ofctl(*args)
        return [line.strip() for line in out.splitlines() if line.strip() and not line.startswith("OFPST_")]
