"""``ovnk sandbox``'s substrate: a multi-node Kubernetes cluster on one machine, without Docker.

:class:`LabCluster` brings up, in namespaces it creates (see
:mod:`ovnk_lab.hostnet` for the picture): an underlay bridge, one host
veth (172.30.0.1) the control plane binds to, an "external" namespace that is
the nodes' gateway, and N nodes (:class:`~ovnk_lab.kubenode.SandboxNode`),
each with its own network and mount namespace, cgroup tree, containerd and
kubelet, and optionally its own OVS + ovn-controller. The control plane
(:class:`~ovnk_lab.kube.KubeControlPlane`: etcd, kube-apiserver,
kube-controller-manager with the node lifecycle controller, kube-scheduler)
runs in the host namespace.

Everything created is written to ``<workdir>/state.json`` *before* it is
created (names) or right after it starts (pids), so :meth:`LabCluster.down`
removes all of it from any process, also after a crash: processes (by
recorded pid and start time), container processes (by the node cgroup trees),
mounts, cgroups, namespaces, the host veth, files, and the kubelet's sysctls
(restored by the last sandbox down, see :class:`~ovnk_lab.hostres.HostRegistry`).

CNI is pluggable (:class:`CniProvider`): :class:`BridgeCni` installs Debian's
reference ``bridge``/``host-local`` plugins with one pod subnet per node;
:class:`ExternalCni` installs nothing and lets an agent write the config
later (the ovnk integration: ``up(cni=ExternalCni(), with_ovs=True)``, then
``node.start_process("ovnk-node", [...])`` per node; see
:mod:`ovnk_lab.kubenode` for the contract). Nodes are Ready only once a
CNI config exists, so with ``ExternalCni`` ``up`` waits for registration only.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import shutil
import signal
import ssl
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import asdict
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

from ovnk.core.errors import StartupError
from ovnk_lab import egress_proxy
from ovnk_lab import hostnet
from ovnk_lab import hostres
from ovnk_lab import images
from ovnk_lab import paths
from ovnk_lab.hostres import HostRegistry
from ovnk_lab.hostres import ProcRecord
from ovnk_lab.kube import KubeControlPlane
from ovnk_lab.kubenode import TIER_CONTAINERD
from ovnk_lab.kubenode import SandboxNode
from ovnk_lab.kubenode import node_mounts
from ovnk_lab.procs import Daemon
from ovnk_lab.procs import run
from ovnk_lab.procs import wait_for
from ovnk_lab.sandbox_cni import BridgeCni
from ovnk_lab.sandbox_cni import CniProvider
from ovnk_lab.sandbox_cni import ExternalCni

__all__ = ["BridgeCni", "CniProvider", "ExternalCni", "LabCluster", "SandboxState", "SandboxStatus"]

logger = logging.getLogger(__name__)

DEFAULT_PREFIX = "ovnk"
DEFAULT_SUBNET = "172.30.0.0/24"
# The test bed's list, but with the node lifecycle controller (Ready/NotReady taints, evictions) on.
SANDBOX_CONTROLLERS = "*,-nodeipam,-cloud-node-lifecycle,-service,-route"
TIER_CONTROL_PLANE = 10
STATE_VERSION = 1
_NAME = re.compile(r"^[a-z][a-z0-9-]*$")

#: The API server audits the requests of the chart's components (their ServiceAccounts live in the
#: namespace of ``ovnk_lab.chartdeploy.NAMESPACE``): the chart e2e compares them with the RBAC rules.
#: Processes of the sandbox itself are not in it, so other sandboxes write nothing.
AUDITED_GROUPS = ("system:serviceaccounts:ovn-kubernetes",)


def default_workdir(prefix: str = DEFAULT_PREFIX) -> Path:
    return Path(os.environ.get("OVNK_SANDBOX_DIR", "/var/lib/ovnk/sandbox")) / prefix


# -- state ------------------------------------------------------------------------------


@dataclass
class SandboxState:
    """Everything one sandbox created; enough for ``down()`` from any process."""

    prefix: str
    workdir: str
    subnet: str
    version: int = STATE_VERSION
    started_at: float = field(default_factory=time.time)
    with_ovs: bool = False
    cni: str = ""
    api_server: str = ""
    kubeconfig: str = ""
    processes: list[ProcRecord] = field(default_factory=list)
    netns: list[str] = field(default_factory=list)
    host_links: list[str] = field(default_factory=list)
    host_mounts: list[str] = field(default_factory=list)
    mount_ns_files: list[str] = field(default_factory=list)
    cgroups: list[str] = field(default_factory=list)
    sysctls: dict[str, str] = field(default_factory=dict)
    created_mountpoints: list[str] = field(default_factory=list)
    dirs: list[str] = field(default_factory=list)
    nodes: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["processes"] = [p.to_json() for p in self.processes]
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> SandboxState:
        doc = dict(doc)
        doc["processes"] = [ProcRecord.from_json(p) for p in doc.get("processes", [])]
        return cls(**doc)


@dataclass(frozen=True)
class SandboxStatus:
    running: bool
    state_file: Path
    processes: list[tuple[str, int, bool]]  # (name, pid, alive)
    nodes: dict[str, bool]  # node -> Ready (empty when the API server is unreachable)
    api_server: str


# -- the cluster -----------------------------------------------------------------------------


class LabCluster:
    """A sandbox cluster in ``workdir`` (default ``/var/lib/ovnk/sandbox/<prefix>``).

    :param prefix: names of namespaces, the host veth and cgroups start with it (tests use their own).
    :param subnet: the underlay; the host gets .1, the external netns .254, node i gets .10+i.
    :param progress: called with a short message at each start-up step (default: logging).
    :param controllers: kube-controller-manager's ``--controllers``.
    """

    def __init__(self, workdir: Path | None = None, *, prefix: str = DEFAULT_PREFIX, subnet: str = DEFAULT_SUBNET,
                 progress: Callable[[str], None] | None = None, controllers: str = SANDBOX_CONTROLLERS,
                 registry: HostRegistry | None = None) -> None:
        if not _NAME.match(prefix):
            raise StartupError(f"bad sandbox prefix {prefix!r} (lower-case letters, digits, '-')")
        self.prefix = prefix
        self.workdir = workdir or default_workdir(prefix)
        self.underlay = hostnet.Underlay.plan(prefix, subnet)
        self.controllers = controllers
        self.registry = registry or HostRegistry()
        self._progress = progress
        self.control_plane: KubeControlPlane | None = None
        self._nodes: list[SandboxNode] | None = None
        self._state: SandboxState | None = None
        self._daemons: dict[str, Daemon] = {}  # started by this process, for fail-fast start-up checks
        self._lock = threading.RLock()  # the control plane thread records its pids too

    # -- public accessors --------------------------------------------------------------

    @property
    def state_file(self) -> Path:
        return self.workdir / "state.json"

    @property
    def kubeconfig(self) -> Path:
        """Admin kubeconfig (token, system:masters) of the running sandbox."""
        state = self._load_state()
        if state is None or not state.kubeconfig:
            raise StartupError(f"no sandbox is running in {self.workdir}")
        return Path(state.kubeconfig)

    @property
    def nodes(self) -> list[SandboxNode]:
        if self._nodes is None:
            state = self._load_state()
            self._nodes = [self._attach(SandboxNode.from_json(n)) for n in (state.nodes if state else [])]
        return self._nodes

    def node(self, name: str) -> SandboxNode:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(f"no node {name!r} in sandbox {self.prefix}")

    def kubectl(self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120) -> str:
        """kubectl 1.20 as admin."""
        return run([paths.tool_bin("kubectl"), f"--kubeconfig={self.kubeconfig}", *args],
                   input=input.encode() if input is not None else None, check=check, timeout=timeout).stdout

    def pod_netns(self, namespace: str, pod: str) -> Path:
        """Host-usable path of a pod's network namespace (``/proc/<pause pid>/ns/net``)."""
        obj = self.api_get(f"/api/v1/namespaces/{namespace}/pods/{pod}")
        node_name = obj.get("spec", {}).get("nodeName")
        if not node_name:
            raise StartupError(f"pod {namespace}/{pod} is not scheduled")
        return self.node(node_name).pod_netns(namespace, pod, uid=obj["metadata"]["uid"])

    def exec_in_pod_netns(self, namespace: str, pod: str, cmd: Sequence[str], *, check: bool = True,
                          timeout: float = 60) -> str:
        """Run a host command inside a pod's network namespace (``ovnk sandbox exec ns/pod -- cmd``)."""
        netns = self.pod_netns(namespace, pod)
        return run([paths.system_bin("nsenter"), f"--net={netns}", "--", *cmd], check=check, timeout=timeout).stdout

    # -- up ----------------------------------------------------------------------------------

    def up(self, nodes: int = 2, *, with_ovs: bool = False, cni: CniProvider | None = None,
           node_names: Sequence[str] | None = None, timeout: float = 120, cluster_dns: str | None = None,
           extra_mounts: Mapping[str, str] | None = None, extra_images: Sequence[Path] = ()) -> LabCluster:
        """Bring the sandbox up; on any failure everything created so far is removed again.

        ``cluster_dns``: the kubelets' ``clusterDNS`` address (:mod:`ovnk_lab.cluster_dns` serves it);
        ``extra_mounts``: more private bind mounts per node (:attr:`SandboxNode.extra_mounts`);
        ``extra_images``: more OCI bundles every node's containerd imports (the ovnk image).
        """
        cni = cni if cni is not None else BridgeCni()
        names = list(node_names) if node_names is not None else [f"node-{i}" for i in range(1, nodes + 1)]
        for name in names:
            if not _NAME.match(name) or len(name) > hostnet.MAX_IFNAME:
                raise StartupError(f"bad node name {name!r} (lower-case, at most {hostnet.MAX_IFNAME} characters)")
        if len(set(names)) != len(names) or not names or len(names) > 200:
            raise StartupError(f"node names must be 1-200 distinct names, got {names}")
        self._refuse_if_running()
        started = time.monotonic()
        try:
            self._up(names, with_ovs=with_ovs, cni=cni, timeout=timeout, cluster_dns=cluster_dns,
                     extra_mounts=dict(extra_mounts or {}), extra_images=list(extra_images))
        except BaseException:
            logger.exception("sandbox %s failed to come up; tearing down what was created", self.prefix)
            self._report("start-up failed; removing what was created")
            self.down()
            raise
        self._report(f"sandbox {self.prefix} up with {len(names)} node(s) in {time.monotonic() - started:.1f}s")
        return self

    def _refuse_if_running(self) -> None:
        state = self._load_state()
        if state is not None:
            alive = [f"{p.name}({p.pid})" for p in state.processes if hostres.proc_alive(p)]
            if alive:
                raise StartupError(f"sandbox {self.prefix!r} is already running (state {self.state_file}, "
                                   f"processes {', '.join(alive[:6])}); run down() / `ovnk sandbox down` first")
            self._report(f"found stale state of a dead sandbox in {self.state_file}; cleaning it up")
            self.down()
        leftovers = hostnet.netns_with_prefix(self.prefix)
        if leftovers:
            raise StartupError(f"network namespaces {leftovers} exist but no sandbox state does; another "
                               f"sandbox with prefix {self.prefix!r} may be running elsewhere (or remove them)")
        hostnet.check_host_free(self.underlay)
        self._prepare_workdir()

    def _prepare_workdir(self) -> None:
        """Start from an empty work dir; remove only what a previous (downed) sandbox left there."""
        if not self.workdir.exists() or not any(self.workdir.iterdir()):
            return
        if hostres.mounts_under(self.workdir):
            raise StartupError(f"{self.workdir} still has mounts: {hostres.mounts_under(self.workdir)}")
        ours = {"state.down.json", "nodes", "control-plane", "ns"}
        if not ours & {p.name for p in self.workdir.iterdir()}:
            raise StartupError(f"work dir {self.workdir} is not empty and holds no sandbox; choose another one")
        shutil.rmtree(self.workdir)

    def _up(self, names: list[str], *, with_ovs: bool, cni: CniProvider, timeout: float,
            extra_mounts: dict[str, str], extra_images: list[Path], cluster_dns: str | None = None) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        ul = self.underlay
        state = SandboxState(prefix=self.prefix, workdir=str(self.workdir), subnet=str(ul.subnet),
                             with_ovs=with_ovs, cni=cni.name, dirs=[str(self.workdir)])
        self._state, self._nodes, self._daemons = state, [], {}
        self._save()

        mountpoints = sorted({Path(p) for p in node_mounts(with_ovs=with_ovs, extra=extra_mounts)})
        created = self.registry.register(self.prefix, self.state_file, mountpoints=mountpoints)
        state.created_mountpoints = [str(p) for p in created]
        with self.registry.locked() as doc:
            state.sysctls = dict(doc["sysctls"])
        self._save()

        self._report("creating the underlay, host veth and external namespace")
        state.netns += [ul.ul_netns, ul.ext_netns]
        state.host_links.append(ul.host_link)
        self._save()
        hostnet.create_underlay(ul)

        # The control plane starts in a thread while the nodes are prepared (both take seconds).
        cp = KubeControlPlane(self.workdir / "control-plane", bind_address=ul.host_ip, controllers=self.controllers,
                              audit_groups=AUDITED_GROUPS)
        # The kubelets' serving certificates come from the same CA: let the API server verify them.
        cp.extra_apiserver_args += (f"--kubelet-certificate-authority={cp.ca_cert}",)
        # Its connections into the cluster (kubelets, pods, services) go through the first node.
        egress_socket = self.workdir / "egress.sock"
        selector = egress_proxy.egress_selector_config(self.workdir / "egress-selector.json", socket_path=egress_socket)
        cp.extra_apiserver_args += (f"--egress-selector-config-file={selector}",)
        self.control_plane = cp
        cp_error: list[BaseException] = []
        self._report(f"starting etcd, kube-apiserver on {ul.host_ip}, controller-manager, scheduler")
        cp_thread = threading.Thread(target=self._start_control_plane, args=(cp, cp_error), daemon=True)
        cp_thread.start()
        try:
            bundle = images.ensure_bundle()
            ns_dir = self.workdir / "ns"
            self._make_private_dir(ns_dir)
            for index, name in enumerate(names, start=1):
                self._create_node(name, index, with_ovs=with_ovs, cni=cni, ns_dir=ns_dir, cluster_dns=cluster_dns,
                                  extra_mounts=extra_mounts)
            self._start_egress_proxy(egress_socket, netns=ul.node_netns(names[0]))
            for node in self.nodes:
                wait_for(f"containerd of {node.name}", node.containerd_ready, timeout=60, interval=0.05,
                         daemons=[self._daemons[f"{node.name}/containerd"]])
                node.import_images(bundle)
                for extra in extra_images:
                    node.import_images(extra)
            self._report(f"containerd up and images imported on {len(names)} node(s)")
            if with_ovs:
                for node in self.nodes:
                    for daemon in node.start_ovs():
                        self._daemons[daemon.name] = daemon
                self._report(f"OVS and ovn-controller up on every node ({self.nodes[0].ovn.label})")
        finally:
            cp_thread.join()
        if cp_error:
            raise cp_error[0]
        state.api_server, state.kubeconfig = cp.server, str(cp.kubeconfig)
        self._save()

        for node in self.nodes:
            self._daemons[f"{node.name}/kubelet"] = node.start_kubelet(cp)
        self._save()  # kubelet kubeconfig paths
        self._report(f"kubelets started; waiting for {len(names)} node(s) to "
                     f"{'be Ready' if cni.ready_without_agent else 'register'}")
        want_ready = cni.ready_without_agent
        # Fails at once, with the log's tail, when a daemon exits while we wait.
        daemons = [*self._daemons.values(), *cp.daemons()]
        try:
            wait_for(f"{len(names)} node(s) {'Ready' if want_ready else 'registered'}",
                     lambda: self._nodes_up(names, ready=want_ready), timeout=timeout, interval=0.25,
                     daemons=daemons)
        except StartupError as exc:
            raise StartupError(f"{exc}{_fatal_log_lines(daemons)}") from exc

    def _start_egress_proxy(self, socket_path: Path, *, netns: str) -> None:
        """The API server's HTTP CONNECT proxy into the cluster network (:mod:`ovnk_lab.egress_proxy`)."""
        proxy = Daemon("egress-proxy", [sys.executable, "-m", "ovnk_lab.egress_proxy", "--socket", str(socket_path)],
                       log_path=self.workdir / "log" / "egress-proxy.log",
                       preexec=[paths.system_bin("nsenter"), f"--net={hostnet.netns_path(netns)}", "--"]).start()
        self.record(proxy)
        wait_for("the API server's egress proxy", socket_path.exists, timeout=30, interval=0.05, daemons=[proxy])

    def _start_control_plane(self, cp: KubeControlPlane, errors: list[BaseException]) -> None:
        try:
            cp.start()
            for daemon in cp.daemons():
                if daemon.pid is not None:
                    self._add_process(hostres.record_process(daemon.name, daemon.pid, tier=TIER_CONTROL_PLANE))
            with self._lock:
                assert self._state is not None
                if cp.etcd_data_dir is not None:
                    self._state.dirs.append(str(cp.etcd_data_dir))
                self._save()
        except BaseException as exc:  # re-raised by the main thread
            errors.append(exc)
            # Its daemons are not in the state yet: stop them here.
            cp.stop()

    def _make_private_dir(self, directory: Path) -> None:
        """A private bind mount: ``unshare --mount=<file>`` needs one for its namespace files."""
        directory.mkdir(parents=True, exist_ok=True)
        assert self._state is not None
        self._state.host_mounts.append(str(directory))
        self._save()
        run(["mount", "--bind", str(directory), str(directory)])
        run(["mount", "--make-private", str(directory)])

    def _create_node(self, name: str, index: int, *, with_ovs: bool, cni: CniProvider, ns_dir: Path,
                     extra_mounts: dict[str, str], cluster_dns: str | None = None) -> None:
        assert self._state is not None and self._nodes is not None
        ul = self.underlay
        cgroup = f"{self.prefix}-{name}"
        node = self._attach(SandboxNode(
            name=name, index=index, ip=ul.node_ip(index), netns=ul.node_netns(name),
            dir=self.workdir / "nodes" / name, mount_ns_file=ns_dir / name, cgroup=cgroup, with_ovs=with_ovs,
            cgroup_dirs=[h / cgroup for h in hostres.cgroup_hierarchies()], cluster_dns=cluster_dns,
            extra_mounts=dict(extra_mounts),
        ))
        node.dir.mkdir(parents=True, exist_ok=True)
        # Record first, create second: a crash in between leaves nothing unrecorded.
        self._nodes.append(node)
        self._state.netns.append(node.netns)
        self._state.mount_ns_files += [str(node.mount_ns_file), str(node.uts_ns_file)]
        self._state.cgroups += [str(d) for d in node.cgroup_dirs]
        self._save()
        hostnet.create_node_network(ul, node=name, address=node.ip)
        hostres.create_cgroup(f"{cgroup}/system")
        node.create_mount_namespace(ns_dir)
        node.create_uts_namespace()
        cni.install(node)
        self._daemons[f"{name}/containerd"] = node.start_containerd()
        self._report(f"{name}: netns {node.netns} ({node.ip}), mount namespace, cgroup /{cgroup}, containerd")

    def _nodes_up(self, names: Sequence[str], *, ready: bool) -> bool:
        # Pods are refused until the controller-manager has made the namespace's default service account.
        self.api_get("/api/v1/namespaces/default/serviceaccounts/default")
        status = self._node_readiness()
        if ready:
            return all(status.get(n) for n in names)
        return all(n in status for n in names)

    # -- API access (no kubernetes client import: it costs ~0.3 s) ---------------------------

    def api_get(self, path: str) -> dict[str, Any]:
        doc = json.loads(self.kubeconfig.read_text())
        cluster, user = doc["clusters"][0]["cluster"], doc["users"][0]["user"]
        ctx = ssl.create_default_context(cafile=cluster["certificate-authority"])
        req = urllib.request.Request(cluster["server"] + path, headers={"Authorization": f"Bearer {user['token']}"})
        with urllib.request.urlopen(req, context=ctx, timeout=5) as resp:
            result: dict[str, Any] = json.loads(resp.read())
            return result

    def _node_readiness(self) -> dict[str, bool]:
        nodes = self.api_get("/api/v1/nodes").get("items", [])
        readiness = {}
        for item in nodes:
            conditions = item.get("status", {}).get("conditions", [])
            readiness[item["metadata"]["name"]] = any(
                c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
        return readiness

    # -- status ------------------------------------------------------------------------------

    def status(self) -> SandboxStatus:
        state = self._load_state()
        if state is None:
            return SandboxStatus(False, self.state_file, [], {}, "")
        procs = [(p.name, p.pid, hostres.proc_alive(p)) for p in state.processes]
        try:
            nodes = self._node_readiness()
        except (OSError, ValueError, KeyError, StartupError):
            nodes = {}
        return SandboxStatus(any(alive for _, _, alive in procs), self.state_file, procs, nodes, state.api_server)

    # -- down --------------------------------------------------------------------------------

    def down(self, *, keep_files: bool = False) -> None:
        """Remove everything the state file records; safe to call twice and from another process."""
        state = self._load_state()
        if state is None:
            logger.info("no sandbox state in %s; nothing to tear down", self.workdir)
            return
        started = time.monotonic()
        errors: list[str] = []

        def attempt(what: str, action: Callable[[], object]) -> None:
            try:
                action()
            except Exception as exc:  # keep going: leave as little behind as possible
                logger.warning("sandbox down: %s failed: %s", what, exc)
                errors.append(f"{what}: {exc}")

        by_tier: dict[int, list[ProcRecord]] = {}
        for record in state.processes:
            by_tier.setdefault(record.tier, []).append(record)
        node_cgroups = [Path(c) for c in state.cgroups]
        containers_killed = False
        for tier in sorted(by_tier, reverse=True):
            if tier < TIER_CONTAINERD and not containers_killed:
                # Agents, kubelets and containerd are gone, so nothing restarts them: kill shims and
                # containers, i.e. whatever the kernel lists in the node cgroup trees.
                attempt("killing container processes", functools.partial(hostres.kill_cgroup_tree, node_cgroups))
                containers_killed = True
            attempt(f"stopping tier {tier}", functools.partial(_terminate_all, by_tier[tier]))
        attempt("killing container processes", functools.partial(hostres.kill_cgroup_tree, node_cgroups))
        for ns_file in state.mount_ns_files:
            attempt(f"unmounting {ns_file}", functools.partial(run, ["umount", ns_file], check=False))
        for mount in reversed(state.host_mounts):
            attempt(f"unmounting {mount}", functools.partial(run, ["umount", "-l", mount], check=False))
        attempt("unmounting leftovers", functools.partial(hostres.unmount_all_under, Path(state.workdir)))
        for netns in reversed(state.netns):
            attempt(f"deleting netns {netns}", functools.partial(hostnet.delete_netns, netns))
        for link in state.host_links:
            attempt(f"deleting link {link}", functools.partial(hostnet.delete_host_link, link))
        attempt("removing cgroups", functools.partial(hostres.remove_cgroup_tree, node_cgroups))
        attempt("releasing host settings", functools.partial(self.registry.unregister, state.prefix))
        for directory in reversed(state.dirs):
            path = Path(directory)
            if path == Path(state.workdir):
                continue
            attempt(f"removing {directory}", functools.partial(shutil.rmtree, path, ignore_errors=True))
        workdir = Path(state.workdir)
        left = hostres.mounts_under(workdir)
        if left:
            errors.append(f"mounts left under {workdir}: {left}")
        elif keep_files:
            self.state_file.rename(workdir / "state.down.json")
        else:
            attempt(f"removing {workdir}", functools.partial(shutil.rmtree, workdir))
        self._state, self._nodes, self.control_plane = None, None, None
        if errors:
            raise StartupError(f"sandbox {state.prefix} torn down with errors: " + "; ".join(errors))
        self._report(f"sandbox {state.prefix} down in {time.monotonic() - started:.1f}s")

    def record(self, daemon: Daemon, *, tier: int = TIER_CONTROL_PLANE) -> None:
        """Record a daemon the caller started in the host namespace, so ``down()`` stops it too."""
        assert daemon.pid is not None
        self._add_process(hostres.record_process(daemon.name, daemon.pid, tier=tier))
        self._daemons[daemon.name] = daemon

    def add_dir(self, directory: Path) -> None:
        """Record a directory the caller created for the sandbox (removed by ``down()``)."""
        with self._lock:
            state = self._state if self._state is not None else self._load_state()
            if state is None:
                raise StartupError(f"no sandbox is running in {self.workdir}")
            self._state = state
            if str(directory) not in state.dirs:
                state.dirs.append(str(directory))
            self._save()

    def add_netns(self, name: str) -> None:
        """Record a network namespace the caller is about to create for the sandbox (deleted by ``down()``)."""
        with self._lock:
            state = self._state if self._state is not None else self._load_state()
            if state is None:
                raise StartupError(f"no sandbox is running in {self.workdir}")
            self._state = state
            if name not in state.netns:
                state.netns.append(name)
            self._save()

    # -- helpers -------------------------------------------------------------------------------

    def _attach(self, node: SandboxNode) -> SandboxNode:
        node.on_process = self._add_process
        return node

    def _add_process(self, record: ProcRecord) -> None:
        with self._lock:
            state = self._state if self._state is not None else self._load_state()
            if state is None:
                raise StartupError(f"no sandbox is running in {self.workdir}")
            self._state = state
            state.processes.append(record)
            self._save()

    def _load_state(self) -> SandboxState | None:
        if self._state is not None:
            return self._state
        if not self.state_file.exists():
            return None
        try:
            return SandboxState.from_json(json.loads(self.state_file.read_text()))
        except (ValueError, TypeError, KeyError) as exc:
            raise StartupError(f"unreadable sandbox state {self.state_file}: {exc}") from exc

    def _save(self) -> None:
        """Write the state atomically (readers in other processes never see half a file)."""
        with self._lock:
            assert self._state is not None
            if self._nodes is not None:
                self._state.nodes = [n.to_json() for n in self._nodes]
            tmp = self.state_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(self._state.to_json(), indent=2))
            tmp.replace(self.state_file)

    def _report(self, message: str) -> None:
        logger.info("%s", message)
        if self._progress is not None:
            self._progress(message)


def _terminate_all(records: Sequence[ProcRecord], timeout: float = 10.0) -> None:
    """SIGTERM a group at once (they stop in parallel), then wait for / kill each."""
    for record in records:
        if hostres.proc_alive(record):
            try:
                os.kill(record.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    for record in records:
        hostres.terminate(record, timeout=timeout)


def _fatal_log_lines(daemons: Sequence[Daemon]) -> str:
    """klog's fatal lines of daemons that died: the tail of their log is often a goroutine dump."""
    found = []
    for daemon in daemons:
        if daemon.alive():
            continue
        try:
            lines = daemon.log_path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        found += [f"{daemon.name}: {line}" for line in lines if re.match(r"^F\d{4} ", line)][:3]
    return ("\nfatal log lines:\n" + "\n".join(found)) if found else ""
