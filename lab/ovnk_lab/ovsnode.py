"""Simulated OVN nodes without a kubelet, for the node agent's functional tests and benchmarks.

::

    host netns: kube-apiserver on <underlay .1>, OVN central (unix sockets), the test process
       │ <prefix>-host
    <prefix>-ul (bridge br0) ── <prefix>-ext (.254, the nodes' default gateway)
       │
    <prefix>-<node> netns: eth0 <underlay .10+i>, ovs-vswitchd (netdev), ovn-controller, ``ovnk node``
       └── pod netns (created by the test, which plays the container runtime)

The underlay comes from :mod:`ovnk_lab.hostnet`. Per node, ovsdb-server
runs in the host netns (its unix socket works from every netns) while
ovs-vswitchd and ovn-controller run inside the node's netns (lab.md: a
vswitchd in the host netns leaves taps behind that clash with other
instances). Unlike :class:`~ovnk_lab.kubenode.SandboxNode` there is no
mount namespace, cgroup, containerd or kubelet: Node and Pod objects are
created through the API and the test calls the installed CNI shim itself.
Every path a node needs is its own (OVS run dir, CNI socket, conf and bin
dirs), so several nodes and agents share one machine.

:class:`NodeLab` puts it together: underlay, a control plane bound to the
underlay host address (the agents in the node netns reach it through the
node's gateway bridge), an OVN central, the ovnk controller in-process, and
one ``ovnk node`` subprocess per node started with :meth:`NodeLab.start_agent`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

from ovnk.core.bootstrap import bootstrap
from ovnk.core.config import ConfigInputs
from ovnk.core.controller import ControllerProcess
from ovnk.core.errors import StartupError
from ovnk.core.kube.client import KubeClient
from ovnk.core.kube.errors import KubeError
from ovnk.core.kube.resources import NODES
from ovnk.core.kube.resources import PODS
from ovnk_lab import hostnet
from ovnk_lab import paths
from ovnk_lab.kube import KubeControlPlane
from ovnk_lab.ovn import OvnCentral
from ovnk_lab.ovn import ovs_env
from ovnk_lab.procs import Daemon
from ovnk_lab.procs import run
from ovnk_lab.procs import unix_socket_ready
from ovnk_lab.procs import wait_for

logger = logging.getLogger(__name__)

CNI_NETWORK = "ovn-kubernetes"
CNI_PLUGIN = "ovn-k8s-cni-overlay"
UNIX_PATH_MAX = 107


@dataclass
class OvsNode:
    """One simulated node: a netns on the underlay with its own OVS, ovn-controller and paths."""

    name: str
    index: int
    ip: str
    netns: str
    dir: Path
    daemons: dict[str, Daemon] = field(default_factory=dict)
    agent: Daemon | None = None
    install: paths.OvnInstall = field(default_factory=paths.ovn_install)

    @property
    def netns_path(self) -> Path:
        return hostnet.netns_path(self.netns)

    @property
    def ovs_dir(self) -> Path:
        return self.dir / "ovs"

    @property
    def run_dir(self) -> Path:
        return self.ovs_dir / "run"

    @property
    def db_sock(self) -> Path:
        return self.run_dir / "db.sock"

    @property
    def ovs_address(self) -> str:
        return f"unix:{self.db_sock}"

    @property
    def cni_conf_dir(self) -> Path:
        return self.dir / "cni" / "net.d"

    @property
    def cni_bin_dir(self) -> Path:
        return self.dir / "cni" / "bin"

    @property
    def cni_socket(self) -> Path:
        return self.dir / "cni" / "run" / "cni.sock"

    @property
    def cni_conf_file(self) -> Path:
        return self.cni_conf_dir / "10-ovn-kubernetes.conf"

    @property
    def shim(self) -> Path:
        return self.cni_bin_dir / CNI_PLUGIN

    @property
    def agent_log(self) -> Path:
        return self.dir / "log" / "ovnk-node.log"

    def env(self) -> dict[str, str]:
        return ovs_env(self.ovs_dir, self.install)

    # -- commands --------------------------------------------------------------

    def nsenter(self) -> list[str]:
        return [paths.system_bin("nsenter"), f"--net={self.netns_path}", "--"]

    def exec(self, argv: Sequence[str], *, check: bool = True, timeout: float = 60,
             input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run a short command inside the node's netns."""
        return run([*self.nsenter(), *argv], check=check, timeout=timeout,
                   input=input.encode() if input is not None else None)

    def vsctl(self, *args: str) -> str:
        return run([self.install.bin("ovs-vsctl"), f"--db={self.ovs_address}", "--timeout=30", *args],
                   env=self.env()).stdout

    def ofctl(self, *args: str) -> str:
        """``ovs-ofctl <command> <bridge> ...``: the bridge argument is replaced by its management socket."""
        command, bridge, *rest = args
        target = f"unix:{self.run_dir / (bridge + '.mgmt')}"
        return run([self.install.bin("ovs-ofctl"), "-O", "OpenFlow14", command, target, *rest],
                   env=self.env()).stdout

    # -- OVS -------------------------------------------------------------------

    def start_ovs(self) -> None:
        """ovsdb-server (host netns), ovs-vswitchd and ovn-controller (node netns); only ``system-id``
        and ``hostname`` are preset, everything OVN needs is the agent's job."""
        if len(str(self.cni_socket)) > UNIX_PATH_MAX or len(str(self.db_sock)) > UNIX_PATH_MAX:
            raise StartupError(f"socket paths under {self.dir} are too long; use a shorter work dir")
        for sub in ("run", "db", "log", "etc"):
            (self.ovs_dir / sub).mkdir(parents=True, exist_ok=True)
        env = self.env()
        log_dir = self.ovs_dir / "log"
        db = self.ovs_dir / "db" / "conf.db"
        if not db.exists():
            run([self.install.bin("ovsdb-tool"), "create", str(db), self.install.schema("vswitch")], env=env)
        self.daemons["ovsdb-server"] = Daemon(f"{self.name}/ovsdb-server", [
            self.install.bin("ovsdb-server"), str(db), f"--remote=punix:{self.db_sock}",
            "--remote=db:Open_vSwitch,Open_vSwitch,manager_options",
            f"--pidfile={self.run_dir / 'ovsdb-server.pid'}", f"--unixctl={self.run_dir / 'ovsdb-server.ctl'}",
            f"--log-file={log_dir / 'ovsdb-server.log'}",
        ], log_path=log_dir / "ovsdb-server.out", env=env).start()
        wait_for(f"{self.name} ovsdb-server", lambda: unix_socket_ready(self.db_sock), timeout=30,
                 daemons=[self.daemons["ovsdb-server"]])
        self.vsctl("--no-wait", "init")
        self.daemons["ovs-vswitchd"] = Daemon(f"{self.name}/ovs-vswitchd", [
            *self.nsenter(), self.install.bin("ovs-vswitchd"), self.ovs_address,
            f"--pidfile={self.run_dir / 'ovs-vswitchd.pid'}", f"--unixctl={self.run_dir / 'ovs-vswitchd.ctl'}",
            f"--log-file={log_dir / 'ovs-vswitchd.log'}",
        ], log_path=log_dir / "ovs-vswitchd.out", env=env).start()
        # Returns once vswitchd applied it, i.e. vswitchd is up.
        self.vsctl("set", "Open_vSwitch", ".", f"external_ids:hostname={self.name}")
        self.daemons["ovn-controller"] = Daemon(f"{self.name}/ovn-controller", [
            *self.nsenter(), self.install.bin("ovn-controller"), self.ovs_address,
            f"--pidfile={self.run_dir / 'ovn-controller.pid'}", f"--log-file={log_dir / 'ovn-controller.log'}",
        ], log_path=log_dir / "ovn-controller.out", env=env).start()

    def stop(self) -> None:
        if self.agent is not None:
            self.agent.stop(timeout=10)
            self.agent = None
        for name in ("ovn-controller", "ovs-vswitchd", "ovsdb-server"):
            daemon = self.daemons.pop(name, None)
            if daemon is not None:
                daemon.stop()


@dataclass
class PodSandbox:
    """A pod the test created through the API and the netns it plays the runtime for."""

    namespace: str
    name: str
    uid: str
    node: OvsNode
    netns: str
    container_id: str
    ifname: str = "eth0"

    @property
    def netns_path(self) -> str:
        return str(hostnet.netns_path(self.netns))

    def cni_env(self, command: str, **overrides: str | None) -> dict[str, str]:
        env = {
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": self.container_id,
            "CNI_NETNS": self.netns_path,
            "CNI_IFNAME": self.ifname,
            "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE={self.namespace};K8S_POD_NAME={self.name};"
                        f"K8S_POD_UID={self.uid}",
            "CNI_PATH": str(self.node.cni_bin_dir),
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        }
        for key, value in overrides.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        return env

    def exec(self, argv: Sequence[str], *, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return run([paths.system_bin("nsenter"), f"--net={self.netns_path}", "--", *argv], check=check,
                   timeout=timeout)


@dataclass
class CniRun:
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def json(self) -> Any:
        return json.loads(self.stdout)


def netconf(version: str = "1.1.0", **extra: Any) -> str:
    config: dict[str, Any] = {"cniVersion": version, "name": CNI_NETWORK, "type": CNI_PLUGIN}
    config.update(extra)
    return json.dumps(config)


class NodeLab:
    """Underlay, control plane, OVN central, in-process controller and simulated nodes.

    :param workdir: every file (keep it short: unix socket paths live below it).
    :param nodes: how many nodes (``node-1``...).
    :param prefix: netns/link name prefix (at most 10 characters); random by default.
    :param subnet: the underlay /24; by default a random 172.31.x.0/24 that the host has no address in.
    :param install: the OVS/OVN installation of the central and the nodes (default: the chosen one).
    """

    def __init__(self, workdir: Path, *, nodes: int = 2, prefix: str | None = None, subnet: str | None = None,
                 cluster_subnets: str = "10.244.0.0/16/24", install: paths.OvnInstall | None = None) -> None:
        self.workdir = workdir
        self.install = install or paths.ovn_install()
        self.prefix = prefix or f"ovl{secrets.token_hex(3)}"
        if subnet is None:
            thirds = list(range(20, 220))
            secrets.SystemRandom().shuffle(thirds)
            subnet = hostnet.free_underlay_subnet([f"172.31.{third}.0/24" for third in thirds])
        self.underlay = hostnet.Underlay.plan(self.prefix, subnet)
        self.node_names = [f"node-{i}" for i in range(1, nodes + 1)]
        self.cluster_subnets = cluster_subnets
        self.kube: KubeControlPlane | None = None
        self.central: OvnCentral | None = None
        self.controller: ControllerProcess | None = None
        self.client: KubeClient | None = None
        self.nodes: dict[str, OvsNode] = {}
        self._pod_netns: list[str] = []
        self._created_underlay = False

    # -- lifecycle -------------------------------------------------------------

    def start(self, *, controller: bool = True) -> NodeLab:
        try:
            self._start(controller=controller)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, *, controller: bool) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        hostnet.check_host_free(self.underlay)
        self._created_underlay = True
        hostnet.create_underlay(self.underlay)
        # Frames the host and the external netns send over veth carry partial checksums (TX
        # offload); a real NIC never delivers those, and a userspace datapath passes them on
        # unfixed, so the kernel behind the node's gateway bridge would drop them.
        run([paths.system_bin("ethtool"), "-K", self.underlay.host_link, "tx", "off"])
        run([paths.system_bin("nsenter"), f"--net={hostnet.netns_path(self.underlay.ext_netns)}",
             paths.system_bin("ethtool"), "-K", "eth0", "tx", "off"])
        self.kube = KubeControlPlane(self.workdir / "kube", bind_address=self.underlay.host_ip, scheduler=False)
        self.kube.start()
        self.client = KubeClient(kubeconfig=str(self.kube.kubeconfig), qps=1000)
        self.central = OvnCentral(self.workdir / "ovn", install=self.install).start()
        for index, name in enumerate(self.node_names, start=1):
            ip = self.underlay.node_ip(index)
            netns = hostnet.create_node_network(self.underlay, node=name, address=ip)
            node = OvsNode(name=name, index=index, ip=ip, netns=netns, dir=self.workdir / name, install=self.install)
            self.nodes[name] = node
            node.start_ovs()
            self.client.create(NODES, {"apiVersion": "v1", "kind": "Node",
                                       "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}}})
        if controller:
            self.start_controller()

    def start_controller(self) -> ControllerProcess:
        assert self.kube is not None and self.central is not None
        inputs = ConfigInputs(
            env={},
            flags={"kubeconfig": str(self.kube.kubeconfig), "nb_address": self.central.nb_unix,
                   "sb_address": self.central.sb_unix},
            assignments=["controller.leader-election=false", "controller.metrics-bind-address=",
                         f"default.cluster-subnets={self.cluster_subnets}"],
        )
        self.controller = ControllerProcess(bootstrap(inputs)).start()
        return self.controller

    def stop(self) -> None:
        for node in self.nodes.values():
            with contextlib.suppress(Exception):
                node.stop()
        if self.controller is not None:
            with contextlib.suppress(Exception):
                self.controller.stop()
            self.controller = None
        if self.central is not None:
            self.central.stop()
        if self.kube is not None:
            self.kube.stop()
        for name in self._pod_netns:
            hostnet.delete_netns(name)
        if self._created_underlay:
            for name in hostnet.netns_with_prefix(self.prefix):
                hostnet.delete_netns(name)
            hostnet.delete_host_link(self.underlay.host_link)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> NodeLab:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    # -- node agents -----------------------------------------------------------

    def agent_settings(self, node: OvsNode, *extra: str) -> list[str]:
        assert self.kube is not None and self.central is not None
        return [
            f"kubernetes.kubeconfig={self.kube.kubeconfig}",
            f"ovnsouth.address={self.central.sb_unix}",
            f"ovs.address={node.ovs_address}",
            f"ovs.run-dir={node.run_dir}",
            "ovs.datapath-type=netdev",
            f"node.name={node.name}",
            f"node.run-dir={node.dir / 'agent'}",
            f"node.ovn-run-dir={node.run_dir}",
            "node.metrics-bind-address=127.0.0.1:9410",
            f"cni.socket-path={node.cni_socket}",
            f"cni.conf-dir={node.cni_conf_dir}",
            f"cni.bin-dir={node.cni_bin_dir}",
            f"default.cluster-subnets={self.cluster_subnets}",
            *extra,
        ]

    def start_agent(self, node: OvsNode, *extra: str, plugins: Sequence[str] = (),
                    env: Mapping[str, str] | None = None, wait: bool = True) -> Daemon:
        """Start ``ovnk node`` inside the node's netns; with ``wait``, until its CNI config exists."""
        if node.agent is not None and node.agent.alive():
            raise StartupError(f"the agent of {node.name} is running already")
        argv = [*node.nsenter(), str(Path(sys.executable).with_name("ovnk")), "--log-level=info"]
        if plugins:
            argv.append(f"--plugins={','.join(plugins)}")
        for assignment in self.agent_settings(node, *extra):
            argv += ["--set", assignment]
        argv.append("node")
        # The agent runs ovs-ofctl by name: the node's OVS/OVN installation comes first on its PATH.
        node.agent = Daemon(f"{node.name}/ovnk-node", argv, log_path=node.agent_log,
                            env=node.install.env({**os.environ, **(env or {})})).start()
        if wait:
            self.wait_agent_ready(node)
        return node.agent

    def wait_agent_ready(self, node: OvsNode, timeout: float = 90) -> None:
        assert node.agent is not None
        started = time.monotonic()
        wait_for(f"{node.name} agent ready (CNI config written)", node.cni_conf_file.exists, timeout=timeout,
                 interval=0.1, daemons=[node.agent])
        logger.info("%s agent ready after %.1fs", node.name, time.monotonic() - started)

    def stop_agent(self, node: OvsNode, *, kill: bool = False) -> None:
        if node.agent is not None:
            if kill:
                node.agent.kill()
            else:
                node.agent.stop(timeout=15)
            node.agent = None

    # -- pods ------------------------------------------------------------------

    def create_pod(self, node: OvsNode, namespace: str, name: str, *,
                   annotations: Mapping[str, str] | None = None, host_network: bool = False) -> PodSandbox:
        """A Pod bound to ``node`` through the API, and a fresh netns for its sandbox."""
        assert self.client is not None
        body = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "annotations": dict(annotations or {})},
            "spec": {"nodeName": node.name, "automountServiceAccountToken": False, "hostNetwork": host_network,
                     "containers": [{"name": "c", "image": "pause"}]},
        }
        deadline = time.monotonic() + 30
        while True:
            try:
                pod = self.client.create(PODS, body)
                break
            except KubeError as exc:
                # A fresh namespace gets its "default" service account a moment later (kube-controller-manager).
                if "serviceaccount" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        netns = f"{self.prefix}-p{secrets.token_hex(4)}"
        self._pod_netns.append(netns)
        run([paths.system_bin("ip"), "netns", "add", netns])
        return PodSandbox(namespace=namespace, name=name, uid=pod["metadata"]["uid"], node=node, netns=netns,
                          container_id=uuid.uuid4().hex + uuid.uuid4().hex)

    def delete_pod_netns(self, pod: PodSandbox) -> None:
        hostnet.delete_netns(pod.netns)

    def wait_pod_annotated(self, pod: PodSandbox, timeout: float = 60) -> dict[str, Any]:
        assert self.client is not None
        client = self.client
        found: dict[str, Any] = {}

        def annotated() -> bool:
            obj = client.get(PODS, pod.name, namespace=pod.namespace) or {"metadata": {}}
            raw = (obj["metadata"].get("annotations") or {}).get("k8s.ovn.org/pod-networks")
            if raw:
                found.update(json.loads(raw))
            return bool(raw)

        wait_for(f"pod {pod.namespace}/{pod.name} annotation", annotated, timeout=timeout, interval=0.1)
        return found

    def cni(self, pod: PodSandbox, command: str, *, config: str | None = None, env: Mapping[str, str | None] | None = None,
            timeout: float = 130) -> CniRun:
        """Execute the node's installed shim as a runtime does."""
        environment = pod.cni_env(command, **dict(env or {}))
        started = time.perf_counter()
        proc = subprocess.run([str(pod.node.shim)], input=(config or netconf()).encode(), env=environment,
                              capture_output=True, timeout=timeout, check=False)
        return CniRun(proc.returncode, proc.stdout.decode(), proc.stderr.decode(), time.perf_counter() - started)

    def delete_namespace_pods(self, namespace: str) -> None:
        assert self.client is not None
        for pod in self.client.list(PODS, namespace=namespace)[0]:
            self.client.delete(PODS, pod["metadata"]["name"], namespace=namespace)
