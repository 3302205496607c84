"""``ovnk sandbox``: a real multi-node cluster on this machine, networked by ovnk.

On top of :class:`~ovnk.core.lab.cluster.LabCluster` (control plane, underlay,
per-node network and mount namespaces, containerd, kubelets, per-node OVS and
ovn-controller), this adds what makes it an ovnk cluster:

* an OVN central (NB/SB standalone, or a 3-member RAFT cluster) in the work dir;
* the ovnk controller(s) in the host namespace (two with ``controllers=2``:
  leader election picks the writer);
* one ``ovnk node`` agent per node, inside the node's namespaces; it configures
  the node's OVS, builds ``breth0`` from ``eth0``, installs the CNI shim and
  writes the CNI config that makes the kubelet Ready.

Every process is recorded in the sandbox state, so ``down`` removes all of it,
from any process. Configuration files are INI files in the work dir, so
``ovnk --config <file> config show`` explains what each component runs with.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ovnk.core.errors import StartupError
from ovnk.core.lab import paths
from ovnk.core.lab.cluster import LabCluster
from ovnk.core.lab.cluster import default_workdir
from ovnk.core.lab.kubenode import SandboxNode
from ovnk.core.lab.ovn import OvnCentral
from ovnk.core.lab.procs import Daemon
from ovnk.core.lab.procs import wait_for
from ovnk.core.lab.sandbox_cni import ExternalCni

logger = logging.getLogger(__name__)

CONTROLLER_BASE_PORT = 9409
NODE_METRICS_PORT = 9410


def ovnk_argv() -> list[str]:
    """How to run ``ovnk`` with this very installation (the venv's interpreter)."""
    return [sys.executable, "-m", "ovnk"]


@dataclass(frozen=True)
class SandboxOptions:
    nodes: int = 2
    plugins: tuple[str, ...] = ()
    db_cluster: int = 1
    controllers: int = 1
    log_level: str = "info"


class Sandbox:
    """An ovnk-networked sandbox cluster in ``workdir`` (one per prefix)."""

    def __init__(self, workdir: Path | None = None, *, prefix: str = "ovnk",
                 progress: Callable[[str], None] | None = None) -> None:
        self.prefix = prefix
        self.workdir = workdir or default_workdir(prefix)
        self.cluster = LabCluster(self.workdir, prefix=prefix, progress=progress)
        self._progress = progress
        self.central: OvnCentral | None = None
        self.controller_daemons: list[Daemon] = []

    # -- facts ---------------------------------------------------------------------

    @property
    def ovn_dir(self) -> Path:
        return self.workdir / "ovn"

    @property
    def kubeconfig(self) -> Path:
        return self.cluster.kubeconfig

    def nb_address(self) -> str:
        return self._db_address("nb")

    def sb_address(self) -> str:
        return self._db_address("sb")

    def _db_address(self, kind: str) -> str:
        socks = sorted((self.ovn_dir / "run").glob(f"ovn{kind}_db*.sock"))
        if not socks:
            raise StartupError(f"no OVN {kind.upper()} database in {self.ovn_dir}; is the sandbox up?")
        return ",".join(f"unix:{s}" for s in socks)

    def controller_config(self, index: int) -> Path:
        return self.workdir / "config" / f"controller-{index}.conf"

    def node_config(self, node: str) -> Path:
        return self.workdir / "config" / f"node-{node}.conf"

    def _report(self, message: str) -> None:
        logger.info("%s", message)
        if self._progress is not None:
            self._progress(message)

    # -- up / down -------------------------------------------------------------------

    def up(self, options: SandboxOptions, *, timeout: float = 180) -> Sandbox:
        if options.db_cluster not in (1, 3):
            raise StartupError("--db-cluster must be 1 or 3")
        if not 1 <= options.controllers <= 3:
            raise StartupError("--controllers must be 1 to 3")
        started = time.monotonic()
        self.cluster.up(options.nodes, with_ovs=True, cni=ExternalCni(), timeout=timeout)
        try:
            self._start_ovn(options)
            self._write_configs(options)
            for index in range(options.controllers):
                self._start_controller(index)
            for node in self.cluster.nodes:
                self._start_agent(node)
            names = [n.name for n in self.cluster.nodes]
            self._report(f"waiting for {len(names)} node(s) to be Ready (the ovnk agents write the CNI config)")
            daemons = [*self.controller_daemons, *(self.cluster._daemons.values())]
            wait_for(f"{len(names)} node(s) Ready", lambda: all(self.cluster.status().nodes.get(n) for n in names),
                     timeout=timeout, interval=0.25, daemons=daemons)
        except BaseException:
            logger.exception("sandbox failed to come up; tearing down")
            self.down()
            raise
        self._report(f"sandbox {self.prefix} Ready with {options.nodes} node(s) in {time.monotonic() - started:.1f}s")
        return self

    def down(self) -> None:
        self.cluster.down()

    # -- pieces ----------------------------------------------------------------------

    def _start_ovn(self, options: SandboxOptions) -> None:
        self._report(f"starting OVN central ({'3-member RAFT' if options.db_cluster == 3 else 'standalone'})")
        self.cluster.add_dir(self.ovn_dir)
        central = OvnCentral(self.ovn_dir, cluster=options.db_cluster)
        central.start()
        self.central = central
        for db in (central.nb, central.sb):
            for member in db.members:
                member.daemon.name = f"ovn/{member.daemon.name}"
                self.cluster.record(member.daemon)
        if central.northd is not None:
            central.northd.name = "ovn/ovn-northd"
            self.cluster.record(central.northd)

    def _write_configs(self, options: SandboxOptions) -> None:
        config_dir = self.workdir / "config"
        config_dir.mkdir(parents=True, exist_ok=True)
        plugins = ", ".join(options.plugins)
        common = [
            "[kubernetes]", f"kubeconfig = {self.kubeconfig}",
            "[ovnnorth]", f"address = {self.nb_address()}",
            "[ovnsouth]", f"address = {self.sb_address()}",
            "[logging]", f"level = {options.log_level}",
            "[plugins]", f"enabled = {plugins}",
        ]
        for index in range(options.controllers):
            lines = [*common, "[controller]", f"identity = sandbox-controller-{index}",
                     f"metrics-bind-address = 127.0.0.1:{CONTROLLER_BASE_PORT + 10 * index}"]
            self.controller_config(index).write_text("\n".join(lines) + "\n")
        for node in self.cluster.nodes:
            assert node.ovs_db_sock is not None
            lines = [*common,
                     "[ovs]", f"address = unix:{node.ovs_db_sock}", "datapath-type = netdev",
                     f"run-dir = {node.ovs_db_sock.parent}",
                     "[node]", f"name = {node.name}", f"metrics-bind-address = {node.ip}:{NODE_METRICS_PORT}",
                     f"encap-ip = {node.ip}", f"run-dir = {node.dir / 'ovnk-run'}",
                     "[gateway]", "interface = eth0",
                     "[cni]", "conf-dir = /etc/cni/net.d", "bin-dir = /opt/cni/bin",
                     "socket-path = /var/run/ovn-kubernetes/cni/ovn-cni-server.sock"]
            self.node_config(node.name).write_text("\n".join(lines) + "\n")

    def _start_controller(self, index: int) -> None:
        self._report(f"starting ovnk controller {index}")
        env = {**os.environ, "OVNK_CONFIG": ""}
        log = self.workdir / "log" / f"ovnk-controller-{index}.log"
        daemon = Daemon(f"ovnk-controller-{index}", [*ovnk_argv(), "--config", str(self.controller_config(index)),
                                                     "controller"], log_path=log, env=env).start()
        self.cluster.record(daemon, tier=60)
        self.controller_daemons.append(daemon)

    def _start_agent(self, node: SandboxNode) -> None:
        self._report(f"starting ovnk node agent on {node.name}")
        env = {**os.environ, "OVNK_CONFIG": ""}
        node.start_process("ovnk-node", [*ovnk_argv(), "--config", str(self.node_config(node.name)), "node"], env=env)

    # -- failure injection (tests) ------------------------------------------------------

    def kill(self, process: str, *, sig: int = signal.SIGKILL, wait: float = 10.0) -> int:
        """Signal a recorded, running process by name (``node-1/kubelet``, ``ovnk-controller-0``); returns its pid."""
        for name, pid, alive in self.cluster.status().processes:
            if name == process and alive:
                os.kill(pid, sig)
                deadline = time.monotonic() + wait
                while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
                    try:
                        os.waitpid(pid, os.WNOHANG)  # reap it when it is our child
                    except ChildProcessError:
                        pass
                    state = Path(f"/proc/{pid}/stat").read_text().split()[2] if Path(f"/proc/{pid}/stat").exists() else "X"
                    if state in ("Z", "X"):
                        break
                    time.sleep(0.05)
                return pid
        raise StartupError(f"no running process {process!r} in sandbox {self.prefix}")

    def restart_controller(self, index: int = 0, *, sig: int = signal.SIGKILL) -> None:
        self.kill(f"ovnk-controller-{index}", sig=sig)
        self._start_controller(index)

    def restart_agent(self, node: str, *, sig: int = signal.SIGKILL) -> None:
        self.kill(f"{node}/ovnk-node", sig=sig)
        self._start_agent(self.cluster.node(node))

    def restart_kubelet(self, node: str) -> None:
        assert self.cluster.control_plane is not None, "restart the kubelet from the process that started the sandbox"
        self.kill(f"{node}/kubelet", sig=signal.SIGTERM)
        self.cluster.node(node).start_kubelet(self.cluster.control_plane)

    def restart_containerd(self, node: str) -> None:
        self.kill(f"{node}/containerd", sig=signal.SIGTERM)
        target = self.cluster.node(node)
        target.start_containerd()
        wait_for(f"containerd of {node}", target.containerd_ready, timeout=60, interval=0.05)

    def kill_nb_leader(self) -> int:
        """SIGKILL the NB RAFT leader (``db_cluster=3``); returns its member index."""
        assert self.central is not None and self.central.cluster == 3, "needs a 3-member NB"
        return self.central.kill_leader(self.central.nb)


def describe_usage(sandbox: Sandbox) -> str:
    kubectl = paths.tool_bin("kubectl")
    return "\n".join([
        f"kubeconfig: {sandbox.kubeconfig}",
        f"  export KUBECONFIG={sandbox.kubeconfig}",
        f"  {kubectl} get nodes -o wide        # kubectl 1.20, matching the API server",
        "  ovnk sandbox exec <ns>/<pod> -- ping -c1 <ip>   # a host command inside a pod's network namespace",
        "  ovnk sandbox status                # nodes, pods, daemons with pids",
        "  ovnk sandbox down                  # remove everything",
        f"OVN: ovn-nbctl --db={sandbox.nb_address()} show",
    ])


def copy_logs(sandbox: Sandbox, dest: Path) -> None:
    """Copy every log of the sandbox to ``dest`` (for CI artefacts)."""
    for log in sandbox.workdir.rglob("*.log"):
        target = dest / log.relative_to(sandbox.workdir)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(log, target)


def node_names(sandbox: Sandbox) -> Sequence[str]:
    return [n.name for n in sandbox.cluster.nodes]
