"""One sandbox node: its network, mount and UTS namespaces, cgroup, containerd, kubelet and (optionally) OVS.

A node owns a network namespace ``<prefix>-<node>``, a persistent mount
namespace (bound to ``<workdir>/ns/<node>``) in which private bind mounts put
node-specific directories over the paths the kubelet, containerd and CNI
plugins hard-code (see :data:`NODE_MOUNTS`), and a UTS namespace
(``<workdir>/ns/<node>.uts``) whose hostname is the node's name, which
host-network pods see. Every node daemon is started
with ``nsenter --mount=<file> --net=/run/netns/<netns> --uts=<file>`` (not ``ip netns
exec``, which remounts ``/sys`` and hides the cgroup mounts) and joins the
node's cgroup ``/<prefix>-<node>/system`` first, so containerd shims inherit it
and container processes land under the kubelet's ``cgroupRoot``
``/<prefix>-<node>``: teardown kills exactly what is in that tree.

Integration points for the ovnk node agent (documented here because the
cluster module only forwards them):

1. ``node.start_process(name, argv, env=...)`` starts any daemon (``ovnk node
   ...``) inside the node's net+mount namespaces and cgroup; the pid is recorded
   in the sandbox state so ``down()`` stops it, also from another process.
2. Inside the node the CNI paths are the standard ones: the agent writes its
   config into ``/etc/cni/net.d`` and its shim into ``/opt/cni/bin`` (host
   paths ``node.cni_conf_dir`` / ``node.cni_bin_dir``); containerd watches the
   conf dir and picks the config up (``loopback``, which containerd itself
   needs, is always installed). Until a config exists the node is NotReady.
3. With ``with_ovs=True`` the node runs its own ovsdb-server (``conf.db``),
   ovs-vswitchd (netdev datapath, inside the node netns) and ovn-controller,
   all from the chosen OVS/OVN installation (:mod:`ovnk_lab.paths`), whose
   bin dirs come first on the ``PATH`` of every process the node starts.
   ``node.ovs_db_sock`` is the host path of the OVS DB socket; inside the node
   the usual ``/run/openvswitch/db.sock`` and ``/run/ovn`` work too. Only
   ``system-id``, ``hostname`` and ``ovn-bridge-datapath-type=netdev`` are set;
   ``ovn-remote``, ``ovn-encap-type`` and ``ovn-encap-ip`` are the agent's job.
   ``/run/ovn-kubernetes`` is per node as well.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

from ovnk.core.errors import StartupError
from ovnk_lab import paths
from ovnk_lab.hostnet import netns_path
from ovnk_lab.hostres import ProcRecord
from ovnk_lab.hostres import record_process
from ovnk_lab.images import PAUSE_IMAGE
from ovnk_lab.images import import_command
from ovnk_lab.kube import KubeControlPlane
from ovnk_lab.ovn import ovs_env
from ovnk_lab.procs import Daemon
from ovnk_lab.procs import run
from ovnk_lab.procs import unix_socket_ready
from ovnk_lab.procs import wait_for

# Path inside the node -> directory below the node's work dir that backs it.
NODE_MOUNTS: dict[str, str] = {
    "/var/lib/kubelet": "kubelet",
    "/var/log/pods": "log/pods",
    "/var/log/containers": "log/containers",
    "/run/containerd": "containerd/run",
    "/var/lib/cni": "cni/lib",
    "/etc/cni/net.d": "cni/net.d",
    "/opt/cni/bin": "cni/bin",
    "/run/ovn-kubernetes": "ovn-kubernetes",
}
OVS_MOUNTS: dict[str, str] = {
    "/run/openvswitch": "ovs/run",
    "/run/ovn": "ovs/run",
    "/etc/openvswitch": "ovs/etc",
    "/var/log/openvswitch": "ovs/log",
    "/var/log/ovn": "ovs/log",
}
CONTAINERD_SOCK = "/run/containerd/containerd.sock"
UNIX_PATH_MAX = 107

# Shutdown order: the highest tier stops first.
TIER_AGENT = 50
TIER_KUBELET = 40
TIER_CONTAINERD = 30
TIER_OVS = 20


def node_mounts(*, with_ovs: bool, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Private bind mounts of a node: path inside the node -> directory below the node's work dir."""
    return {**NODE_MOUNTS, **(OVS_MOUNTS if with_ovs else {}), **(extra or {})}


#: A node mount that gets shared propagation: the network namespaces containerd creates
#: there must reach a container that mounts the directory with HostToContainer propagation
#: (the chart's node agent opens the pods' CNI_NETNS paths; lab/ovnk_lab/chartdeploy.py).
NETNS_DIR = "/run/netns"


@dataclass
class SandboxNode:
    """A node of the sandbox (see the module docstring). Built by :class:`~ovnk_lab.cluster.LabCluster`."""

    name: str
    index: int
    ip: str
    netns: str
    dir: Path
    mount_ns_file: Path
    cgroup: str  # cgroup path relative to each hierarchy root, e.g. "ovnk-node-1"
    with_ovs: bool = False
    cgroup_dirs: list[Path] = field(default_factory=list)
    kubeconfig: Path | None = None
    on_process: Callable[[ProcRecord], None] | None = field(default=None, repr=False, compare=False)
    #: The OVS/OVN installation (None: the chosen one, resolved when first needed).
    install: paths.OvnInstall | None = field(default=None, repr=False, compare=False)
    #: The kubelet's ``clusterDNS`` address (``ovnk sandbox up --cluster-dns``); None: pods use the host's resolver.
    cluster_dns: str | None = None
    #: More private bind mounts (path inside the node -> directory below ``dir``), e.g. the
    #: hostPath volumes of a chart's pods; with ``/run/netns`` among them, containerd puts the
    #: pods' network namespaces there (not under its state dir) and that mount is shared.
    extra_mounts: dict[str, str] = field(default_factory=dict)

    @property
    def ovn(self) -> paths.OvnInstall:
        if self.install is None:
            self.install = paths.ovn_install()
        return self.install

    # -- paths -----------------------------------------------------------------

    @property
    def netns_path(self) -> Path:
        return netns_path(self.netns)

    @property
    def cni_conf_dir(self) -> Path:
        """Host path of the node's ``/etc/cni/net.d``."""
        return self.dir / NODE_MOUNTS["/etc/cni/net.d"]

    @property
    def cni_bin_dir(self) -> Path:
        """Host path of the node's ``/opt/cni/bin``."""
        return self.dir / NODE_MOUNTS["/opt/cni/bin"]

    @property
    def containerd_sock(self) -> Path:
        """Host path of containerd's socket (``/run/containerd/containerd.sock`` inside the node)."""
        return self.dir / NODE_MOUNTS["/run/containerd"] / "containerd.sock"

    @property
    def ovs_dir(self) -> Path:
        return self.dir / "ovs"

    @property
    def ovs_db_sock(self) -> Path | None:
        """Host path of the node's OVS DB socket (None without OVS)."""
        return self.ovs_dir / "run" / "db.sock" if self.with_ovs else None

    @property
    def log_dir(self) -> Path:
        return self.dir / "log"

    @property
    def system_cgroup_dirs(self) -> list[Path]:
        return [d / "system" for d in self.cgroup_dirs]

    # -- state ------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "index": self.index, "ip": self.ip, "netns": self.netns, "dir": str(self.dir),
            "mount_ns_file": str(self.mount_ns_file), "cgroup": self.cgroup, "with_ovs": self.with_ovs,
            "cgroup_dirs": [str(d) for d in self.cgroup_dirs],
            "kubeconfig": str(self.kubeconfig) if self.kubeconfig else None, "cluster_dns": self.cluster_dns,
            "extra_mounts": dict(self.extra_mounts),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SandboxNode:
        return cls(
            name=data["name"], index=data["index"], ip=data["ip"], netns=data["netns"], dir=Path(data["dir"]),
            mount_ns_file=Path(data["mount_ns_file"]), cgroup=data["cgroup"], with_ovs=data["with_ovs"],
            cgroup_dirs=[Path(d) for d in data["cgroup_dirs"]],
            kubeconfig=Path(data["kubeconfig"]) if data.get("kubeconfig") else None,
            cluster_dns=data.get("cluster_dns"),
            extra_mounts=dict(data.get("extra_mounts") or {}),
        )

    # -- running things inside the node ------------------------------------------

    @property
    def uts_ns_file(self) -> Path:
        """The node's own UTS namespace (its hostname), next to its mount namespace file."""
        return self.mount_ns_file.with_name(f"{self.mount_ns_file.name}.uts")

    def nsenter_argv(self) -> list[str]:
        # A sandbox made before nodes had their own hostname has no UTS namespace file.
        uts = [f"--uts={self.uts_ns_file}"] if self.uts_ns_file.exists() else []
        return [paths.system_bin("nsenter"), f"--mount={self.mount_ns_file}", f"--net={self.netns_path}", *uts,
                "--"]

    def exec(self, cmd: Sequence[str], *, check: bool = True, timeout: float = 60,
             input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run a short command in the node's net+mount namespaces; raise with stderr when ``check``."""
        return run([*self.nsenter_argv(), *cmd], check=check, timeout=timeout,
                   input=input.encode() if input is not None else None)

    def start_process(self, name: str, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
                      tier: int = TIER_AGENT) -> Daemon:
        """Start a daemon inside the node (namespaces + cgroup); its pid goes into the sandbox state."""
        joins = " ".join(shlex.quote(str(d / "cgroup.procs")) for d in self.system_cgroup_dirs)
        script = f'for f in {joins}; do echo $$ > "$f" || exit 125; done; exec "$@"'
        full_env = dict(os.environ if env is None else env)
        full_env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        if self.with_ovs:
            full_env = self.ovn.env(full_env)
        daemon = Daemon(f"{self.name}/{name}", ["/bin/sh", "-c", script, f"ovnk-{name}", *self.nsenter_argv(), *argv],
                        log_path=self.log_dir / f"{name}.log", env=full_env).start()
        assert daemon.pid is not None
        if self.on_process is not None:
            self.on_process(record_process(f"{self.name}/{name}", daemon.pid, tier=tier, node=self.name))
        return daemon

    # -- mount namespace -----------------------------------------------------------

    def create_mount_namespace(self, ns_dir: Path) -> None:
        """Persistent mount namespace with the node's private bind mounts (``ns_dir`` must be private)."""
        mounts = node_mounts(with_ovs=self.with_ovs, extra=self.extra_mounts)
        for sub in mounts.values():
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        self.mount_ns_file.touch()
        run([paths.system_bin("unshare"), f"--mount={self.mount_ns_file}", "--propagation", "slave", "true"])
        # Drop the copies of other nodes' namespace files (and of the ns dir) from this namespace, so that
        # one node's mount namespace never keeps another one alive.
        script = [f"umount -l {shlex.quote(str(ns_dir))}"]
        script += [f"mount --bind {shlex.quote(str(self.dir / sub))} {shlex.quote(target)}"
                   for target, sub in mounts.items()]
        if NETNS_DIR in mounts:
            # containerd refuses a HostToContainer volume whose mount is neither shared nor slave, and
            # looks the chart's /var/run/netns up without resolving /var/run -> /run, i.e. as "/".
            # Shared here means within this namespace: it was copied from the host's private "/".
            script += [f"mount --make-shared {shlex.quote(NETNS_DIR)}", "mount --make-shared /"]
        run([paths.system_bin("nsenter"), f"--mount={self.mount_ns_file}", "/bin/sh", "-ec", "; ".join(script)])

    def create_uts_namespace(self) -> None:
        """Persistent UTS namespace whose hostname is the node's name (``ns_dir`` must be private).

        Host-network pods share it through containerd: they see their node's name as hostname, as on
        a real node (Kubernetes' hostNetwork specs expect it), not the machine's.
        """
        self.uts_ns_file.touch()
        run([paths.system_bin("unshare"), f"--uts={self.uts_ns_file}", "/bin/sh", "-c",
             'echo "$1" > /proc/sys/kernel/hostname', "set-hostname", self.name])

    # -- containerd ------------------------------------------------------------------

    def write_containerd_config(self) -> Path:
        root = self.dir / "containerd" / "root"
        root.mkdir(parents=True, exist_ok=True)
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        text = f"""version = 2
root = "{root}"
state = "/run/containerd"
oom_score = 0
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "{CONTAINERD_SOCK}"

[ttrpc]
  address = "{CONTAINERD_SOCK}.ttrpc"

[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = {"false" if NETNS_DIR in self.extra_mounts else "true"}
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  disable_apparmor = true

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
  BinaryName = "{paths.system_bin('runc')}"

[{cri}.cni]
  bin_dir = "/opt/cni/bin"
  conf_dir = "/etc/cni/net.d"
  max_conf_num = 1
"""
        config = self.dir / "etc" / "containerd.toml"
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(text)
        return config

    def start_containerd(self) -> Daemon:
        config = self.write_containerd_config()
        # containerd's CRI plugin runs ``loopback`` from bin_dir for every pod, whatever the CNI.
        loopback = self.cni_bin_dir / "loopback"
        if not loopback.exists():
            loopback.symlink_to(paths.system_bin("loopback"))
        return self.start_process("containerd", [paths.system_bin("containerd"), "--config", str(config)],
                                  tier=TIER_CONTAINERD)

    def containerd_ready(self) -> bool:
        if len(str(self.containerd_sock)) <= UNIX_PATH_MAX:
            return unix_socket_ready(self.containerd_sock)
        return self.exec([paths.system_bin("ctr"), "-a", CONTAINERD_SOCK, "version"], check=False).returncode == 0

    def import_images(self, bundle: Path) -> None:
        # Minutes for a rootfs-sized image (the ovnk one) on a busy machine.
        self.exec(import_command(bundle, address=CONTAINERD_SOCK), timeout=600)

    def ctr(self, *args: str) -> str:
        """``ctr -n k8s.io <args>`` against the node's containerd."""
        return self.exec([paths.system_bin("ctr"), "-a", CONTAINERD_SOCK, "-n", "k8s.io", *args]).stdout

    # -- kubelet ------------------------------------------------------------------------

    def write_kubelet_config(self, cp: KubeControlPlane) -> Path:
        serving = cp.pki.issue(f"kubelet-{self.cgroup}", cn=f"system:node:{self.name}", orgs=["system:nodes"],
                               sans=[f"IP:{self.ip}", f"DNS:{self.name}"], server=True)
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                               "x509": {"clientCAFile": str(cp.ca_cert)}},
            "authorization": {"mode": "Webhook"},
            "tlsCertFile": str(serving.cert),
            "tlsPrivateKeyFile": str(serving.key),
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": f"/{self.cgroup}",
            "failSwapOn": False,
            "makeIPTablesUtilChains": False,
            "nodeStatusUpdateFrequency": "2s",
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "serializeImagePulls": False,
            # Images cannot be pulled again (no registry): never garbage-collect them, never evict for disk.
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "evictionHard": {"memory.available": "50Mi", "nodefs.available": "1%", "nodefs.inodesFree": "1%",
                             "imagefs.available": "1%"},
            "resolvConf": "/etc/resolv.conf",
            "clusterDomain": "cluster.local",
        }
        if self.cluster_dns:
            config["clusterDNS"] = [self.cluster_dns]
        path = self.dir / "etc" / "kubelet.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(config, indent=2))
        return path

    def start_kubelet(self, cp: KubeControlPlane, *, verbosity: int = 1) -> Daemon:
        config = self.write_kubelet_config(cp)
        self.kubeconfig = cp.identity_kubeconfig(f"system:node:{self.name}", ["system:nodes"])
        plugins = self.dir / "kubelet-plugins"
        plugins.mkdir(exist_ok=True)
        argv = [
            paths.kube_bin("kubelet"), f"--config={config}", f"--kubeconfig={self.kubeconfig}",
            "--container-runtime=remote", f"--container-runtime-endpoint=unix://{CONTAINERD_SOCK}",
            "--root-dir=/var/lib/kubelet", f"--hostname-override={self.name}", f"--node-ip={self.ip}",
            f"--pod-infra-container-image={PAUSE_IMAGE}", f"--volume-plugin-dir={plugins}", f"--v={verbosity}",
        ]
        env = {**os.environ, "AWS_EC2_METADATA_DISABLED": "true"}
        return self.start_process("kubelet", argv, env=env, tier=TIER_KUBELET)

    # -- OVS / OVN ------------------------------------------------------------------------

    def start_ovs(self) -> list[Daemon]:
        """ovsdb-server, ovs-vswitchd (netdev) and ovn-controller inside the node; files under ``ovs/``."""
        sock = self.ovs_dir / "run" / "db.sock"
        if len(str(sock)) > UNIX_PATH_MAX:
            raise StartupError(f"OVS socket path {sock} is longer than {UNIX_PATH_MAX} characters; use a shorter workdir")
        for sub in ("run", "db", "log", "etc"):
            (self.ovs_dir / sub).mkdir(parents=True, exist_ok=True)
        ovn = self.ovn
        env = ovs_env(self.ovs_dir, ovn)
        run_dir, log_dir = self.ovs_dir / "run", self.ovs_dir / "log"
        db = self.ovs_dir / "db" / "conf.db"
        if not db.exists():
            run([ovn.bin("ovsdb-tool"), "create", str(db), ovn.schema("vswitch")], env=env)
        ovsdb = self.start_process("ovsdb-server", [
            ovn.bin("ovsdb-server"), str(db), f"--remote=punix:{sock}",
            "--remote=db:Open_vSwitch,Open_vSwitch,manager_options",
            f"--pidfile={run_dir / 'ovsdb-server.pid'}", f"--unixctl={run_dir / 'ovsdb-server.ctl'}",
            f"--log-file={log_dir / 'ovsdb-server.log'}",
        ], env=env, tier=TIER_OVS)
        wait_for(f"{self.name} ovsdb-server", lambda: unix_socket_ready(sock), timeout=30, daemons=[ovsdb])
        vsctl = [ovn.bin("ovs-vsctl"), f"--db=unix:{sock}", "--timeout=30"]
        run([*vsctl, "--no-wait", "init"], env=env)
        # Debian 12's OVS 3.1.0 userspace conntrack can abort under connection churn (paths.OVS_FIXED_VERSION);
        # without a restart one abort takes the node's whole pod network down for good, so that OVS runs
        # under --monitor (as ovs-ctl does in production): a monitor process restarts vswitchd after a
        # crash (the monitor is the recorded pid; `down` kills the node's cgroup tree, which holds both).
        # A newer OVS runs without it: a crash there is a finding, and the tests must see it fail.
        vswitchd = self.start_vswitchd()
        # Returns once vswitchd has applied the change, i.e. it is up and connected.
        run([*vsctl, "set", "Open_vSwitch", ".", f"external_ids:system-id={self.name}",
             f"external_ids:hostname={self.name}", "external_ids:ovn-bridge-datapath-type=netdev"], env=env)
        controller = self.start_process("ovn-controller", [
            ovn.bin("ovn-controller"), f"unix:{sock}", f"--pidfile={run_dir / 'ovn-controller.pid'}",
            f"--log-file={log_dir / 'ovn-controller.log'}",
        ], env=env, tier=TIER_OVS)
        return [ovsdb, vswitchd, controller]

    def start_vswitchd(self) -> Daemon:
        """Start the node's ovs-vswitchd (``start_ovs`` does; a test that killed it starts it again).

        Under ``--monitor`` only with an OVS older than ``paths.OVS_FIXED_VERSION`` (see ``start_ovs``)."""
        ovn = self.ovn
        run_dir, log_dir = self.ovs_dir / "run", self.ovs_dir / "log"
        monitor = ["--monitor"] if ovn.old_ovs else []
        return self.start_process("ovs-vswitchd", [
            ovn.bin("ovs-vswitchd"), f"unix:{run_dir / 'db.sock'}", *monitor, f"--pidfile={run_dir / 'ovs-vswitchd.pid'}",
            f"--unixctl={run_dir / 'ovs-vswitchd.ctl'}", f"--log-file={log_dir / 'ovs-vswitchd.log'}",
        ], env=ovs_env(self.ovs_dir, ovn), tier=TIER_OVS)

    def ovs_vsctl(self, *args: str) -> str:
        if self.ovs_db_sock is None:
            raise StartupError(f"node {self.name} runs without OVS")
        return run([self.ovn.bin("ovs-vsctl"), f"--db=unix:{self.ovs_db_sock}", "--timeout=30", *args],
                   env=ovs_env(self.ovs_dir, self.ovn)).stdout

    # -- pods -----------------------------------------------------------------------------

    def ovs_ofctl(self, *args: str) -> str:
        """``ovs-ofctl`` against one of the node's bridges (``dump-flows breth0``), through its management socket."""
        if self.ovs_db_sock is None:
            raise StartupError(f"node {self.name} runs no Open vSwitch")
        command, bridge, *rest = args
        target = f"unix:{self.ovs_db_sock.parent / (bridge + '.mgmt')}"
        return run([paths.ovs_bin("ovs-ofctl"), "-O", "OpenFlow14", command, target, *rest]).stdout

    def pod_sandbox_pid(self, namespace: str, pod: str, *, uid: str | None = None) -> int:
        """PID of the running pause process of pod ``namespace/pod`` on this node."""
        filters = [f'labels."io.kubernetes.pod.namespace"=={namespace}',
                   f'labels."io.kubernetes.pod.name"=={pod}', 'labels."io.cri-containerd.kind"==sandbox']
        if uid:
            filters.append(f'labels."io.kubernetes.pod.uid"=={uid}')
        sandboxes = set(self.ctr("containers", "ls", "-q", ",".join(filters)).split())
        for line in self.ctr("tasks", "ls").splitlines()[1:]:
            parts = line.split()
            if len(parts) >= 3 and parts[0] in sandboxes and parts[2] == "RUNNING":
                return int(parts[1])
        raise StartupError(f"no running sandbox for pod {namespace}/{pod} on node {self.name}")

    def pod_netns(self, namespace: str, pod: str, *, uid: str | None = None) -> Path:
        """A path to the pod's network namespace that works from the host (``/proc/<pause pid>/ns/net``).

        containerd's own netns files live in the node's mount namespace, invisible from the host.
        """
        return Path(f"/proc/{self.pod_sandbox_pid(namespace, pod, uid=uid)}/ns/net")
