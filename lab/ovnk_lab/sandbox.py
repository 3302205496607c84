"""``ovnk sandbox``: a real multi-node cluster on this machine, networked by ovnk.

On top of :class:`~ovnk_lab.cluster.LabCluster` (control plane, underlay,
per-node network and mount namespaces, containerd, kubelets, per-node OVS and
ovn-controller), this adds what makes it an ovnk cluster:

* an OVN central (NB/SB standalone, or a 3-member RAFT cluster) in the work dir;
* the ovnk controller(s) in the host namespace (two with ``controllers=2``:
  leader election picks the writer);
* one ``ovnk node`` agent per node, inside the node's namespaces; it configures
  the node's OVS, builds ``breth0`` from ``eth0``, installs the CNI shim and
  writes the CNI config that makes the kubelet Ready.

Database addresses. Without ``ssl`` every component uses the databases' unix
sockets (they work across network namespaces: the node agents and
ovn-controllers see the same files). With ``ssl=True`` the sandbox makes a CA
and certificates (:class:`~ovnk_lab.kube.Pki`, in ``<workdir>/ovn-pki``):
one server certificate for the ovsdb-servers, one client certificate per
controller and one per node (its agent and its ovn-controller). NB and SB then
serve ``pssl:`` only on the underlay host address, which the host and every
node namespace reach. The controllers connect with their certificates
(``[ovnnorth]``/``[ovnsouth]`` ``address`` plus ``client-privkey``/
``client-cert``/``client-cacert``); the node agents get the same settings with
their node's certificate (they open no NB/SB connection themselves: they write
the ``ssl:`` SB address into ``ovn-remote``), and each ovn-controller takes
that certificate from the node's Open_vSwitch ``SSL`` table (``ovs-vsctl
set-ssl``, read at run time: no restart). The unix sockets stay for local
tools (``ovn-nbctl``, ovn-northd): they are files, not network ports.

Controller ``/metrics`` ports are picked free at ``up`` time (two sandboxes
may run side by side) unless ``controller_metrics_port`` fixes them; they are
in the generated configs (:meth:`Sandbox.controller_metrics_address`).

Every process is recorded in the sandbox state, so ``down`` removes all of it,
from any process. Configuration files are INI files in the work dir, so
``ovnk --config <file> config show`` explains what each component runs with.
"""

from __future__ import annotations

import configparser
import logging
import os
import shutil
import signal
import sys
import time
import urllib.request
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ovnk.core.errors import StartupError
from ovnk_lab import paths
from ovnk_lab.cluster import DEFAULT_SUBNET
from ovnk_lab.cluster import LabCluster
from ovnk_lab.cluster import default_workdir
from ovnk_lab.kube import CertPair
from ovnk_lab.kube import Pki
from ovnk_lab.kubenode import SandboxNode
from ovnk_lab.ovn import OvnCentral
from ovnk_lab.ovn import SslFiles
from ovnk_lab.procs import Daemon
from ovnk_lab.procs import free_port
from ovnk_lab.procs import wait_for
from ovnk_lab.sandbox_cni import ExternalCni

logger = logging.getLogger(__name__)

NODE_METRICS_PORT = 9410


def ovnk_argv() -> list[str]:
    """How to run ``ovnk`` with this very installation (the venv's interpreter)."""
    return [sys.executable, "-m", "ovnk"]


@dataclass(frozen=True)
class SandboxOptions:
    """What ``Sandbox.up`` builds.

    :param db_cluster: 1 (standalone NB/SB) or 3 (RAFT clusters).
    :param controllers: controller replicas; leader election picks the writer.
    :param ssl: NB/SB serve TLS only (module docstring).
    :param controller_metrics_port: 0 picks a free port per controller; N gives
        controller ``i`` the port ``N + 10*i``.
    :param lease_duration: the controllers' ``[controller] lease-duration`` (with
        ``renew_deadline`` and ``retry_period``); None keeps ovnk's defaults.
    :param cluster_dns: service names for pods (:mod:`ovnk_lab.cluster_dns`): a dnsmasq behind
        ``kube-system/kube-dns`` at 10.96.0.10, and the kubelets' ``clusterDNS``.
    :param deploy: ``processes`` (the sandbox runs OVN and ovnk itself) or ``helm``
        (charts/ovnk installs them as pods, :mod:`ovnk_lab.chartdeploy`; then only
        ``nodes`` and ``helm_sets`` apply).
    :param helm_sets: ``KEY=VALUE`` chart values (``helm --set``) with ``deploy="helm"``.
    """

    nodes: int = 2
    plugins: tuple[str, ...] = ()
    db_cluster: int = 1
    controllers: int = 1
    log_level: str = "info"
    ssl: bool = False
    controller_metrics_port: int = 0
    lease_duration: float | None = None
    renew_deadline: float | None = None
    retry_period: float | None = None
    cluster_dns: bool = False
    deploy: str = "processes"
    helm_sets: tuple[str, ...] = ()


class Sandbox:
    """An ovnk-networked sandbox cluster in ``workdir`` (one per prefix)."""

    def __init__(self, workdir: Path | None = None, *, prefix: str = "ovnk", subnet: str = DEFAULT_SUBNET,
                 progress: Callable[[str], None] | None = None) -> None:
        self.prefix = prefix
        self.workdir = workdir or default_workdir(prefix)
        self.cluster = LabCluster(self.workdir, prefix=prefix, subnet=subnet, progress=progress)
        self._progress = progress
        self.central: OvnCentral | None = None
        self.controller_daemons: list[Daemon] = []
        #: Environment added to every ovnk process this object starts (set_plugins(env=...)).
        self.extra_env: dict[str, str] = {}

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

    @property
    def pki_dir(self) -> Path:
        return self.workdir / "ovn-pki"

    def controller_config(self, index: int) -> Path:
        return self.workdir / "config" / f"controller-{index}.conf"

    def _config_value(self, path: Path, section: str, key: str) -> str:
        parser = configparser.ConfigParser(interpolation=None)
        if not parser.read(path):
            raise StartupError(f"no configuration {path}; is the sandbox up?")
        return parser.get(section, key)

    def db_remote(self, kind: str) -> str:
        """The NB (``kind="nb"``) or SB remote the controllers use: unix sockets, or ``ssl:`` with ``ssl``."""
        return self._config_value(self.controller_config(0), "ovnnorth" if kind == "nb" else "ovnsouth", "address")

    def controller_metrics_address(self, index: int) -> str:
        """``HOST:PORT`` of controller ``index``'s /metrics, /healthz and /readyz."""
        return self._config_value(self.controller_config(index), "controller", "metrics-bind-address")

    def controller_count(self) -> int:
        return len(list((self.workdir / "config").glob("controller-*.conf")))

    def controller_is_leader(self, index: int, *, timeout: float = 2.0) -> bool | None:
        """Controller ``index``'s ``ovnk_controller_leader`` gauge; None when its /metrics does not answer."""
        url = f"http://{self.controller_metrics_address(index)}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                text = resp.read().decode()
        except OSError:
            return None
        for line in text.splitlines():
            if line.startswith("ovnk_controller_leader"):
                return float(line.split()[-1]) == 1.0
        return None

    def leader_controller(self) -> int | None:
        """Index of the controller whose /metrics says it leads (None when none does)."""
        for index in range(self.controller_count()):
            if self.controller_is_leader(index):
                return index
        return None

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
        if options.deploy not in ("processes", "helm"):
            raise StartupError(f"--deploy must be processes or helm, not {options.deploy!r}")
        started = time.monotonic()
        if options.deploy == "helm":
            if options.cluster_dns:
                raise StartupError("--cluster-dns is for the sandbox's own processes, not --deploy helm")
            from ovnk_lab import chartdeploy

            chartdeploy.up(self.cluster, nodes=options.nodes, sets=options.helm_sets, timeout=max(timeout, 600),
                           report=self._report)
            self._report(f"sandbox {self.prefix} Ready with {options.nodes} node(s), ovnk from charts/ovnk, "
                         f"in {time.monotonic() - started:.1f}s")
            return self
        from ovnk_lab.cluster_dns import CLUSTER_DNS_IP

        self.cluster.up(options.nodes, with_ovs=True, cni=ExternalCni(), timeout=timeout,
                        cluster_dns=CLUSTER_DNS_IP if options.cluster_dns else None)
        try:
            ssl = self._make_pki(options) if options.ssl else None
            self._start_ovn(options, ssl)
            self._write_configs(options)
            for index in range(options.controllers):
                self._start_controller(index)
            for node in self.cluster.nodes:
                if options.ssl:
                    self._configure_ovn_controller_ssl(node)
                self._start_agent(node)
            names = [n.name for n in self.cluster.nodes]
            self._report(f"waiting for {len(names)} node(s) to be Ready (the ovnk agents write the CNI config)")
            daemons = [*self.controller_daemons, *(self.cluster._daemons.values())]
            wait_for(f"{len(names)} node(s) Ready", lambda: all(self.cluster.status().nodes.get(n) for n in names),
                     timeout=timeout, interval=0.25, daemons=daemons)
            if options.cluster_dns:
                from ovnk_lab.cluster_dns import ClusterDns

                self._report("starting cluster DNS (dnsmasq outside, kube-system/kube-dns at 10.96.0.10)")
                ClusterDns(self).start()
        except BaseException:
            logger.exception("sandbox failed to come up; tearing down")
            self.down()
            raise
        self._report(f"sandbox {self.prefix} Ready with {options.nodes} node(s) in {time.monotonic() - started:.1f}s")
        return self

    def down(self) -> None:
        self.cluster.down()

    # -- pieces ----------------------------------------------------------------------

    def _make_pki(self, options: SandboxOptions) -> SslFiles:
        """A CA, the ovsdb-servers' certificate and the clients' ones (issued once, reused by restarts)."""
        self._report("issuing TLS certificates for the OVN databases")
        self.cluster.add_dir(self.pki_dir)
        pki = Pki(self.pki_dir)
        host_ip = self.cluster.underlay.host_ip
        server = pki.issue("ovsdb-server", cn="ovsdb-server", server=True, sans=["IP:127.0.0.1", f"IP:{host_ip}"])
        admin = self._client_cert(pki, "admin")
        for index in range(options.controllers):
            self._client_cert(pki, f"controller-{index}")
        for node in self.cluster.nodes:
            self._client_cert(pki, f"node-{node.name}")
        return SslFiles(ca_cert=pki.ca.cert, server_key=server.key, server_cert=server.cert,
                        client_key=admin.key, client_cert=admin.cert)

    @staticmethod
    def _client_cert(pki: Pki, name: str) -> CertPair:
        return pki.issue(name, cn=f"ovnk-{name}", client=True)

    def _client_settings(self, name: str) -> list[str]:
        """``client-*`` keys of ``[ovnnorth]``/``[ovnsouth]`` for the component holding certificate ``name``."""
        return [f"client-privkey = {self.pki_dir / f'{name}.key'}", f"client-cert = {self.pki_dir / f'{name}.crt'}",
                f"client-cacert = {self.pki_dir / 'ca.crt'}"]

    def _configure_ovn_controller_ssl(self, node: SandboxNode) -> None:
        """ovn-controller takes its SSL files from the node's Open_vSwitch ``SSL`` table (read at run time)."""
        name = f"node-{node.name}"
        node.ovs_vsctl("set-ssl", str(self.pki_dir / f"{name}.key"), str(self.pki_dir / f"{name}.crt"),
                       str(self.pki_dir / "ca.crt"))

    def _start_ovn(self, options: SandboxOptions, ssl: SslFiles | None = None) -> None:
        mode = "3-member RAFT" if options.db_cluster == 3 else "standalone"
        self._report(f"starting OVN central ({mode}{', TLS only' if ssl else ''}; {paths.ovn_install().label})")
        self.cluster.add_dir(self.ovn_dir)
        # With TLS the client ports listen on the underlay host address: the nodes reach it too.
        central = OvnCentral(self.ovn_dir, cluster=options.db_cluster, ssl=ssl,
                             listen_address=self.cluster.underlay.host_ip if ssl else "127.0.0.1")
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
        assert self.central is not None
        if options.ssl:
            nb, sb = self.central.nb.tcp_address, self.central.sb.tcp_address
        else:
            nb, sb = self.nb_address(), self.sb_address()

        def common(cert: str) -> list[str]:
            return [
                "[kubernetes]", f"kubeconfig = {self.kubeconfig}",
                "[ovnnorth]", f"address = {nb}", *(self._client_settings(cert) if options.ssl else []),
                "[ovnsouth]", f"address = {sb}", *(self._client_settings(cert) if options.ssl else []),
                "[logging]", f"level = {options.log_level}",
                "[plugins]", f"enabled = {plugins}",
            ]

        lease = [f"{key} = {value:g}" for key, value in (
            ("lease-duration", options.lease_duration), ("renew-deadline", options.renew_deadline),
            ("retry-period", options.retry_period)) if value is not None]
        for index in range(options.controllers):
            port = options.controller_metrics_port + 10 * index if options.controller_metrics_port else free_port()
            lines = [*common(f"controller-{index}"), "[controller]", f"identity = sandbox-controller-{index}",
                     f"metrics-bind-address = 127.0.0.1:{port}", *lease]
            self.controller_config(index).write_text("\n".join(lines) + "\n")
        for node in self.cluster.nodes:
            assert node.ovs_db_sock is not None
            lines = [*common(f"node-{node.name}"),
                     "[ovs]", f"address = unix:{node.ovs_db_sock}", "datapath-type = netdev",
                     f"run-dir = {node.ovs_db_sock.parent}",
                     "[node]", f"name = {node.name}", f"metrics-bind-address = {node.ip}:{NODE_METRICS_PORT}",
                     f"encap-ip = {node.ip}", f"run-dir = {node.dir / 'ovnk-run'}",
                     f"ovn-run-dir = {node.ovs_db_sock.parent}",
                     "[gateway]", "interface = eth0",
                     "[cni]", "conf-dir = /etc/cni/net.d", "bin-dir = /opt/cni/bin",
                     "socket-path = /var/run/ovn-kubernetes/cni/ovn-cni-server.sock"]
            self.node_config(node.name).write_text("\n".join(lines) + "\n")

    def _start_controller(self, index: int) -> None:
        self._report(f"starting ovnk controller {index}")
        env = paths.tool_env({**os.environ, "OVNK_CONFIG": "", **self.extra_env})
        log = self.workdir / "log" / f"ovnk-controller-{index}.log"
        daemon = Daemon(f"ovnk-controller-{index}", [*ovnk_argv(), "--config", str(self.controller_config(index)),
                                                     "controller"], log_path=log, env=env).start()
        self.cluster.record(daemon, tier=60)
        self.controller_daemons.append(daemon)

    def _start_agent(self, node: SandboxNode) -> None:
        self._report(f"starting ovnk node agent on {node.name}")
        env = {**os.environ, "OVNK_CONFIG": "", **self.extra_env}
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

    def start_controller(self, index: int) -> None:
        """Start controller ``index`` again (after :meth:`kill`), with its configuration from ``up``."""
        self._start_controller(index)

    def start_agent(self, node: str, *, timeout: float = 120) -> None:
        """Start ``node``'s agent again (after :meth:`kill`) with its configuration from ``up``;
        returns when it logged that it is ready."""
        target = self.cluster.node(node)
        log = target.log_dir / "ovnk-node.log"
        mark = _log_size(log)
        self._start_agent(target)
        wait_for(f"ovnk agent of {node} ready", lambda: _logged_since(log, mark, " ready in "), timeout=timeout,
                 interval=0.2)

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

    def set_plugins(self, plugins: Sequence[str], *, settings: Mapping[str, Mapping[str, str]] | None = None,
                    env: Mapping[str, str] | None = None, timeout: float = 120.0) -> None:
        """Switch the enabled plugins (and their settings sections) and restart every ovnk process.

        Controllers and agents stop with SIGTERM (an orderly stop, as on an upgrade) and start
        with the new configuration; returns when every agent logged that it is ready again and a
        controller leads. Pods keep running throughout. How a plugin is switched on or off in a
        running cluster, without a new sandbox. ``env`` replaces the extra environment of ovnk
        processes (``PYTHONPATH`` of a third-party plugin installed with ``pip --target``).
        """
        if env is not None:
            self.extra_env = dict(env)
        paths_ = [self.controller_config(i) for i in range(self.controller_count())]
        paths_ += [self.node_config(n.name) for n in self.cluster.nodes]
        for path in paths_:
            parser = configparser.ConfigParser(interpolation=None)
            parser.read(path)
            for section in list(parser.sections()):
                if section not in _CORE_CONFIG_SECTIONS:
                    parser.remove_section(section)
            parser["plugins"] = {"enabled": ", ".join(plugins)}
            for section, values in (settings or {}).items():
                parser[section] = dict(values)
            with path.open("w") as handle:
                parser.write(handle)
        marks = {n.name: _log_size(n.log_dir / "ovnk-node.log") for n in self.cluster.nodes}
        for index in range(self.controller_count()):
            self.restart_controller(index, sig=signal.SIGTERM)
        for node in self.cluster.nodes:
            self.restart_agent(node.name, sig=signal.SIGTERM)
        for node in self.cluster.nodes:
            log, mark = node.log_dir / "ovnk-node.log", marks[node.name]

            def ready(log: Path = log, mark: int = mark) -> bool:
                return _logged_since(log, mark, " ready in ")

            wait_for(f"ovnk agent of {node.name} ready with plugins {list(plugins)}", ready, timeout=timeout,
                     interval=0.2)
        wait_for("a leading controller", lambda: self.leader_controller() is not None, timeout=timeout, interval=0.2)

    def kill_nb_leader(self) -> int:
        """SIGKILL the NB RAFT leader (``db_cluster=3``); returns its member index."""
        assert self.central is not None and self.central.cluster == 3, "needs a 3-member NB"
        return self.central.kill_leader(self.central.nb)


_CORE_CONFIG_SECTIONS = ("kubernetes", "ovnnorth", "ovnsouth", "logging", "controller", "ovs", "node", "gateway",
                         "cni", "default")


def _log_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _logged_since(path: Path, offset: int, text: str) -> bool:
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            return text.encode() in handle.read()
    except FileNotFoundError:
        return False


def describe_usage(sandbox: Sandbox) -> str:
    from ovnk_lab import chartdeploy

    if chartdeploy.is_chart_sandbox(sandbox.workdir):
        return chartdeploy.describe_usage(sandbox.cluster, sandbox.prefix)
    kubectl = paths.tool_bin("kubectl")
    ovnk = "ovnk sandbox" + (f" --prefix {sandbox.prefix}" if sandbox.prefix != "ovnk" else "")
    return "\n".join([
        f"kubeconfig: {sandbox.kubeconfig}",
        f"  export KUBECONFIG={sandbox.kubeconfig}",
        f"  {kubectl} get nodes -o wide        # kubectl 1.20, matching the API server",
        f"  {ovnk} exec <ns>/<pod> -- ping -c1 <ip>   # a host command inside a pod's network namespace",
        f"  {ovnk} status                # nodes, pods, daemons with pids",
        f"  {ovnk} trace <ns>/<pod> <ns>/<pod>|<ip>|<ns>/<service> [--tcp|--udp PORT]   # why (not) reachable",
        f"  {ovnk} down                  # remove everything",
        f"OVN: ovn-nbctl --db={sandbox.nb_address()} show",
        f"     ovn-sbctl --db={sandbox.sb_address()} show   # ovnk --sb-address <same> ... for SB views",
        f"controllers serve /metrics on {', '.join(sandbox.controller_metrics_address(i) for i in range(sandbox.controller_count()))}",
        f"components reach NB at {sandbox.db_remote('nb')}",
    ])


def copy_logs(sandbox: Sandbox, dest: Path) -> None:
    """Copy every log of the sandbox to ``dest`` (for CI artefacts).

    Symlinks are skipped: the kubelet's ``/var/log/containers/*.log`` links point at paths inside
    the node's mount namespace (dangling from here), and their targets are copied from ``log/pods``.
    """
    for log in sandbox.workdir.rglob("*.log"):
        if log.is_symlink() or not log.is_file():
            continue
        target = dest / log.relative_to(sandbox.workdir)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(log, target)


def datapath_crashes(workdir: Path) -> list[str]:
    """Log lines of every ovs-vswitchd crash below ``workdir`` (assertions; restarts by a monitor).

    OVS 3.1.0's userspace conntrack asserts under connection churn (lab.md); with that OVS the
    node's monitor brings the daemon back in seconds, but meanwhile the node's pod and host
    networks are gone, which is what a test that fails around then needs to know. A newer OVS
    runs without a monitor: a crash there stays down and is reported the same way.
    """
    found = []
    for log in sorted(workdir.rglob("ovs-vswitchd.log")):
        for line in log.read_text(errors="replace").splitlines():
            if "crashes: pid" in line or "assertion" in line:
                found.append(f"{log.relative_to(workdir)}: {line.strip()}")
    return found


def node_names(sandbox: Sandbox) -> Sequence[str]:
    return [n.name for n in sandbox.cluster.nodes]
