"""Host resources the sandbox creates, and how to remove them again from any process.

Everything here works from records (pid + start time, cgroup paths, sysctl
values, mount points) so that ``ovnk sandbox down`` can clean up after a crash
from a different process than the one that brought the sandbox up:

- :class:`ProcRecord` / :func:`terminate`: a process is only signalled when the
  pid still belongs to the process we started (same start time), so a reused
  pid is never hit.
- cgroups: one tree ``/<name>`` in every mounted hierarchy (cgroup v1, the v2
  ``unified`` mount of hybrid mode, or pure v2). Container processes and
  containerd shims live below a node's tree; :func:`kill_cgroup_tree` kills
  exactly the processes the kernel lists in those cgroups.
- :class:`HostRegistry` (``/run/ovnk-sandbox``): what several sandboxes on
  one machine share — the kubelet's global sysctls (saved by the first sandbox
  up, restored by the last one down) and the empty mount-point directories we
  had to create at standard paths (``/var/lib/kubelet`` ...). Removing a
  mount point that another sandbox's mount namespace still uses would detach
  its mounts, so only the last sandbox down removes them.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import signal
import time
from collections.abc import Iterator
from collections.abc import Sequence
from dataclasses import asdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ovnk_lab.procs import run

logger = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
# What the kubelet writes at start unless protectKernelDefaults is set (pkg/kubelet/cm).
KUBELET_SYSCTLS = (
    "vm.overcommit_memory", "vm.panic_on_oom", "kernel.panic", "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys", "kernel.keys.root_maxbytes",
)


# -- processes ----------------------------------------------------------------


@dataclass
class ProcRecord:
    """A process we started: ``tier`` orders shutdown (highest first)."""

    name: str
    pid: int
    starttime: int
    tier: int
    node: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ProcRecord:
        return cls(**data)


def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks) of ``pid``, or None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()
    return fields[0], int(fields[19])


def record_process(name: str, pid: int, *, tier: int, node: str | None = None) -> ProcRecord:
    stat = proc_stat(pid)
    return ProcRecord(name=name, pid=pid, starttime=stat[1] if stat else -1, tier=tier, node=node)


def proc_alive(record: ProcRecord) -> bool:
    """True when ``record.pid`` is still our process and not a zombie."""
    stat = proc_stat(record.pid)
    if stat is None or stat[1] != record.starttime:
        return False
    if stat[0] in ("Z", "X"):
        _reap(record.pid)
        return False
    return True


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def terminate(record: ProcRecord, *, timeout: float = 10.0) -> None:
    """SIGTERM the recorded process, SIGKILL after ``timeout``; a no-op when it is gone."""
    if not proc_alive(record):
        return
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
        try:
            os.kill(record.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            _reap(record.pid)
            if not proc_alive(record):
                return
            time.sleep(0.02)
        if sig == signal.SIGTERM:
            logger.warning("%s (pid %s) ignored SIGTERM for %.0fs; killing it", record.name, record.pid, timeout)
    raise OSError(f"{record.name} (pid {record.pid}) survived SIGKILL")


# -- cgroups ------------------------------------------------------------------


def cgroup_hierarchies() -> list[Path]:
    """Mount points of every cgroup hierarchy (v1 controllers, named ones, and v2)."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fstype = right.split()[0] if right else ""
        if fstype in ("cgroup", "cgroup2"):
            found.append(Path(_unescape(left.split()[4])))
    return sorted(set(found))


def cgroup_v2_unified() -> bool:
    """True when /sys/fs/cgroup itself is cgroup v2 (no v1 hierarchies)."""
    return (CGROUP_ROOT / "cgroup.controllers").exists()


def create_cgroup(relative: str) -> list[Path]:
    """Create ``/<relative>`` (may be nested) in every hierarchy; return the leaf dirs.

    cgroup v1 cpuset needs cpus/mems before a task can join, so they are copied
    from the parent. On pure v2 the controllers are enabled down the path so
    the kubelet can create child cgroups with limits.
    """
    leaves = []
    for hierarchy in cgroup_hierarchies():
        current = hierarchy
        for part in Path(relative.strip("/")).parts:
            parent, current = current, current / part
            if cgroup_v2_unified() and hierarchy == CGROUP_ROOT:
                _enable_v2_controllers(parent)
            current.mkdir(exist_ok=True)
            for knob in ("cpuset.cpus", "cpuset.mems"):
                knob_file = current / knob
                if knob_file.exists() and not knob_file.read_text().strip():
                    knob_file.write_text((parent / knob).read_text())
        leaves.append(current)
    return leaves


def _enable_v2_controllers(directory: Path) -> None:
    available = (directory / "cgroup.controllers").read_text().split()
    for controller in available:
        with contextlib.suppress(OSError):
            (directory / "cgroup.subtree_control").write_text(f"+{controller}")


def cgroup_pids(directories: Sequence[Path]) -> set[int]:
    """Every pid in the given cgroups and their descendants."""
    pids: set[int] = set()
    for top in directories:
        if not top.is_dir():
            continue
        for current, _dirs, files in os.walk(top):
            if "cgroup.procs" in files:
                with contextlib.suppress(OSError):
                    pids.update(int(p) for p in Path(current, "cgroup.procs").read_text().split())
    return pids


def kill_cgroup_tree(directories: Sequence[Path], *, timeout: float = 15.0) -> int:
    """SIGKILL every process in the given cgroup trees until none is left; return how many."""
    killed: set[int] = set()
    deadline = time.monotonic() + timeout
    while True:
        pids = cgroup_pids(directories) - {os.getpid()}
        if not pids:
            return len(killed)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            _reap(pid)
            killed.add(pid)
        if time.monotonic() > deadline:
            raise OSError(f"processes {sorted(pids)} in {directories[0]} survive SIGKILL")
        time.sleep(0.05)


def remove_cgroup_tree(directories: Sequence[Path], *, timeout: float = 15.0) -> None:
    """rmdir the trees bottom-up (retrying while the kernel lets go of exited tasks)."""
    deadline = time.monotonic() + timeout
    for top in directories:
        while top.exists():
            busy = []
            for current, _dirs, _files in os.walk(top, topdown=False):
                try:
                    os.rmdir(current)
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    if exc.errno != errno.EBUSY:
                        raise
                    busy.append(current)
            if not busy:
                break
            if time.monotonic() > deadline:
                raise OSError(f"cgroups still busy: {busy}")
            time.sleep(0.05)


# -- sysctls and mounts ---------------------------------------------------------


def read_sysctl(name: str) -> str | None:
    try:
        return Path("/proc/sys", *name.split(".")).read_text().strip()
    except OSError:
        return None


def write_sysctl(name: str, value: str) -> None:
    Path("/proc/sys", *name.split(".")).write_text(value)


def _unescape(path: str) -> str:
    """Undo mountinfo's octal escapes (``\\040`` for a space)."""
    out, i = [], 0
    while i < len(path):
        if path[i] == "\\" and i + 3 < len(path) and path[i + 1:i + 4].isdigit():
            out.append(chr(int(path[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(path[i])
            i += 1
    return "".join(out)


def mounts_under(directory: Path) -> list[Path]:
    """Mount points of this mount namespace at or below ``directory``."""
    base = str(directory.resolve()) if directory.exists() else str(directory)
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        target = _unescape(line.split()[4])
        if target == base or target.startswith(base.rstrip("/") + "/"):
            found.append(Path(target))
    return found


def unmount_all_under(directory: Path) -> None:
    """Unmount (lazily, deepest first) everything mounted at or below ``directory``."""
    for target in sorted(mounts_under(directory), key=lambda p: len(str(p)), reverse=True):
        run(["umount", "-l", str(target)], check=False)


# -- the machine-wide registry --------------------------------------------------


class HostRegistry:
    """Shared bookkeeping of all sandboxes on this machine (see the module docstring)."""

    def __init__(self, directory: Path | None = None) -> None:
        self.dir = directory or Path(os.environ.get("OVNK_SANDBOX_REGISTRY", "/run/ovnk-sandbox"))
        self.file = self.dir / "host.json"

    @contextlib.contextmanager
    def locked(self) -> Iterator[dict[str, Any]]:
        """Hold the registry lock; yields the registry document, saved on exit."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / "lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            doc: dict[str, Any] = {"sandboxes": {}, "sysctls": {}, "mountpoints": []}
            if self.file.exists():
                doc.update(json.loads(self.file.read_text()))
            yield doc
            tmp = self.file.with_suffix(".tmp")
            tmp.write_text(json.dumps(doc, indent=2))
            tmp.replace(self.file)

    def register(self, prefix: str, state_file: Path, *, mountpoints: Sequence[Path]) -> list[Path]:
        """Register a sandbox, save the kubelet sysctls if nobody did, create missing mount points.

        Returns the mount points that were created now.
        """
        created: list[Path] = []
        with self.locked() as doc:
            self._prune(doc)
            doc["sandboxes"][prefix] = str(state_file)
            if not doc["sysctls"]:
                doc["sysctls"] = {name: value for name in KUBELET_SYSCTLS
                                  if (value := read_sysctl(name)) is not None}
            for mountpoint in mountpoints:
                for directory in reversed([mountpoint, *mountpoint.parents]):
                    if not directory.exists():
                        directory.mkdir()
                        created.append(directory)
                        doc["mountpoints"].append(str(directory))
        return created

    def unregister(self, prefix: str) -> bool:
        """Forget a sandbox; when it was the last one, restore sysctls and remove mount points.

        Returns True when this was the last sandbox.
        """
        with self.locked() as doc:
            doc["sandboxes"].pop(prefix, None)
            self._prune(doc)
            if doc["sandboxes"]:
                return False
            for name, value in doc["sysctls"].items():
                if read_sysctl(name) != value:
                    logger.info("restoring sysctl %s = %s", name, value)
                    with contextlib.suppress(OSError):
                        write_sysctl(name, value)
            for directory in reversed(doc["mountpoints"]):
                with contextlib.suppress(OSError):
                    os.rmdir(directory)  # only when empty: never removes anything of anyone else
            doc["sysctls"] = {}
            doc["mountpoints"] = []
            return True

    def others(self, prefix: str) -> dict[str, str]:
        with self.locked() as doc:
            self._prune(doc)
            return {p: f for p, f in doc["sandboxes"].items() if p != prefix}

    @staticmethod
    def _prune(doc: dict[str, Any]) -> None:
        """Drop entries whose state file is gone (their sandbox was removed by hand)."""
        doc["sandboxes"] = {p: f for p, f in doc["sandboxes"].items() if Path(f).exists()}
