"""ovn-controller's health as the node agent sees it: its Southbound connection.

ovn-controller answers ``connection-status`` on its control socket
(``<ovn-run-dir>/ovn-controller.<pid>.ctl``, found through its pidfile) with
``connected`` or ``not connected``; the agent asks at scrape time
(``ovn_controller_southbound_database_connected``, ovn-kubernetes' name). A
missing pidfile or a daemon that does not answer counts as not connected.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

APPCTL_TIMEOUT = 5.0


def ovn_controller_ctl(run_dir: str) -> Path | None:
    """The control socket of the running ovn-controller, from its pidfile; ``None`` if there is none."""
    try:
        pid = int((Path(run_dir) / "ovn-controller.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    ctl = Path(run_dir) / f"ovn-controller.{pid}.ctl"
    return ctl if ctl.exists() else None


def southbound_connected(run_dir: str) -> float:
    """1.0 when ovn-controller reports its SB connection up, else 0.0."""
    ctl = ovn_controller_ctl(run_dir)
    binary = shutil.which("ovn-appctl")
    if ctl is None or binary is None:
        return 0.0
    try:
        res = subprocess.run([binary, "-t", str(ctl), "connection-status"], capture_output=True, text=True,
                             timeout=APPCTL_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        return 0.0
    return 1.0 if res.returncode == 0 and res.stdout.strip() == "connected" else 0.0
