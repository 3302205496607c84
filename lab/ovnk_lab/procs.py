"""Foreground daemons we start and stop by pid."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path

from ovnk.core.errors import StartupError
from ovnk_lab import paths

logger = logging.getLogger(__name__)


class Daemon:
    """One process started with ``Popen`` in its own session; output to ``log_path``.

    Without ``env`` it gets this process's environment with the chosen OVS/OVN
    installation first on ``PATH`` (:func:`ovnk_lab.paths.default_env`).
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        preexec: Sequence[str] = (),
    ) -> None:
        self.name = name
        self.argv = [*preexec, *argv]
        self.log_path = log_path
        self.env = paths.default_env() if env is None else dict(env)
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> Daemon:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )
        except OSError as exc:
            raise StartupError(f"cannot start {self.name} ({self.argv[0]}): {exc}") from exc
        finally:
            log.close()
        logger.debug("started %s pid %s: %s", self.name, self.proc.pid, " ".join(self.argv))
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        """Raise with the tail of the log when the process has exited."""
        if self.proc is not None and self.proc.poll() is not None:
            raise StartupError(
                f"{self.name} exited with status {self.proc.returncode}; last log lines:\n{self.log_tail()}"
            )

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def send_signal(self, sig: int) -> None:
        if self.alive():
            assert self.proc is not None
            os.kill(self.proc.pid, sig)

    def stop(self, timeout: float = 5.0, sig: int = signal.SIGTERM) -> None:
        """Stop the process we started (by pid), escalating to SIGKILL after ``timeout``."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, sig)
                self.proc.wait(timeout=timeout)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL, for failure-injection tests."""
        self.stop(timeout=5.0, sig=signal.SIGKILL)


def wait_for(
    what: str, predicate: Callable[[], bool], *, timeout: float, interval: float = 0.02,
    daemons: Sequence[Daemon] = (),
) -> None:
    """Poll ``predicate`` until true; fail with ``what`` (and a daemon's log if one died)."""
    deadline = time.monotonic() + timeout
    while True:
        for daemon in daemons:
            daemon.check_alive()
        try:
            if predicate():
                return
        except Exception:
            pass
        if time.monotonic() > deadline:
            detail = ""
            for daemon in daemons:
                detail += f"\n--- {daemon.name} log:\n{daemon.log_tail()}"
            raise StartupError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
        time.sleep(interval)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def unix_socket_ready(path: Path) -> bool:
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True


def tcp_ready(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def run(argv: Sequence[str], *, env: Mapping[str, str] | None = None, check: bool = True,
        timeout: float = 60, input: bytes | None = None) -> subprocess.CompletedProcess[str]:
    """Run a short command (``env`` as for :class:`Daemon`); on failure raise with its stderr."""
    try:
        res = subprocess.run(
            list(argv), env=paths.default_env() if env is None else dict(env), capture_output=True, check=False,
            timeout=timeout, input=input.decode() if input is not None else None, text=True,
        )
    except FileNotFoundError as exc:
        raise StartupError(f"{argv[0]} not found: {exc}") from exc
    if check and res.returncode != 0:
        raise StartupError(f"{' '.join(argv)} failed ({res.returncode}): {res.stderr.strip() or res.stdout.strip()}")
    return res
