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
any (a plugin switched off) are gone after the next sync. A restarted
ovs-vswitchd has empty tables; :meth:`FlowManager.vswitchd_instance` tells
the node agent when that happened.

Only bridges the agent owns exclusively are managed (the gateway bridge,
bridges plugins create in ``ovnk_node_setup``): ``br-int`` belongs to
ovn-controller and is never synced.
"""

from __future__ import annotations

import logging
import os
import subprocess
import tempfile
import threading
import zlib
from collections.abc import Iterable
from collections.abc import Mapping

logger = logging.getLogger(__name__)

CORE_OWNER = "core"
# High 32 bits of every cookie we write: "ovnk" in ASCII, so our flows stand out in dumps.
COOKIE_PREFIX = 0x6F766E6B << 32
PROTOCOLS = "OpenFlow14"  # bundles need OpenFlow 1.4
# ovs-vswitchd's pidfile in its run directory (OVS's default name, and the chart's).
VSWITCHD_PIDFILE = "ovs-vswitchd.pid"


class FlowError(Exception):
    """``ovs-ofctl`` failed; the message has its stderr."""


class FlowManager:
    """Desired flows by (bridge, owner) and their sync (see the module docstring).

    :param run_dir: ovs-vswitchd's run directory (``<bridge>.mgmt`` sockets).
    :param ofctl: the ``ovs-ofctl`` binary.
    :param env: environment of ``ovs-ofctl`` (default: the agent's).
    """

    def __init__(self, *, run_dir: str, ofctl: str = "ovs-ofctl", env: Mapping[str, str] | None = None,
                 timeout: float = 30.0) -> None:
        self.run_dir = run_dir
        self.ofctl = ofctl
        self.env = dict(env) if env is not None else None
        self.timeout = timeout
        self._lock = threading.RLock()
        self._desired: dict[str, dict[str, tuple[str, ...]]] = {}
        self._applied: dict[str, tuple[str, ...]] = {}

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
        with self._lock:
            return sorted(self._desired)

    def set_flows(self, bridge: str, owner: str, flows: Iterable[str]) -> bool:
        """Replace ``owner``'s desired flows on ``bridge`` (written by the next :meth:`sync`).

        Flows are in ``ovs-ofctl add-flow`` syntax without a cookie. Returns
        ``True`` when the desired set changed.
        """
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
            else:
                self._desired[bridge].pop(owner, None)
            return new != old

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
            logger.debug("synced %d flows on %s", len(flows), bridge)
            return True

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
