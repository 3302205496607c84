"""``ovnk sandbox up --deploy helm``: ovnk installed by its Helm chart onto the sandbox's nodes.

The sandbox starts the Kubernetes control plane, the underlay, and per node its
namespaces, containerd and kubelet — nothing of OVS, OVN or ovnk. It imports the
ovnk image (:mod:`ovnk_lab.ovnk_image`, built here and cached) into every node's
containerd and runs ``helm install`` of ``charts/ovnk``. The OVN databases,
ovn-northd, the controller, ovsdb-server, ovs-vswitchd, ovn-controller and the
node agents then run as the chart's pods on the host network of the nodes (each
node's network namespace), and their hostPath state lives in the node's mount
namespace: every hostPath directory of the chart is a private bind mount per
node (:data:`CHART_HOST_PATHS`), so the nodes do not share ``/etc/openvswitch``
or ``/var/run/ovn`` with each other or with the machine.

Values the sandbox gives the chart (:func:`sandbox_values`), on top of the
user's ``--set``: the API server as the nodes reach it (the underlay host
address), the image by name with ``pullPolicy: Never`` (also as ``ovs.image``, so that
an upgrade to another ovnk image does not restart OVS), the sandbox's service
CIDR, ``gateway.interface: eth0`` and, through ``extraConfig``, ``[ovs]
datapath-type = netdev`` (the nodes share one kernel: OVS' userspace datapath,
as in the process sandbox). The first node is labelled a control-plane node,
where the chart places the databases and the controller.

The release is ``ovnk`` in namespace ``ovn-kubernetes``, as hack/kind.sh
installs it. ``down`` needs nothing from Helm: the pods die with the nodes.
"""

from __future__ import annotations

import json
import logging
import shlex
import time
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from ovnk.core.errors import StartupError
from ovnk_lab import ovnk_image
from ovnk_lab import paths
from ovnk_lab.cluster import LabCluster
from ovnk_lab.kube import SERVICE_CIDR
from ovnk_lab.kubenode import NETNS_DIR
from ovnk_lab.procs import run
from ovnk_lab.procs import wait_for
from ovnk_lab.sandbox_cni import ExternalCni

logger = logging.getLogger(__name__)

CHART = ovnk_image.REPO_ROOT / "charts" / "ovnk"
RELEASE = "ovnk"
NAMESPACE = "ovn-kubernetes"
CONTROL_PLANE_LABEL = "node-role.kubernetes.io/control-plane"
#: Every hostPath directory of the chart's pods (path inside the node -> below the node dir), beside
#: the node mounts every sandbox has (/opt/cni/bin, /etc/cni/net.d, /run/ovn-kubernetes, ...).
#: /var/run is a symlink to /run, so the chart's /var/run/... paths land on these.
CHART_HOST_PATHS: dict[str, str] = {
    "/run/openvswitch": "chart/ovs-run",
    "/etc/openvswitch": "chart/ovs-etc",
    "/run/ovn": "chart/ovn-run",
    "/run/ovnk": "chart/ovnk-run",
    NETNS_DIR: "chart/netns",
    "/var/lib/ovnk/ovn-db": "chart/ovn-db",
}


def values_file(workdir: Path) -> Path:
    """Where the sandbox keeps the values it installed the chart with (its marker of helm mode)."""
    return workdir / "chart" / "values.yaml"


def is_chart_sandbox(workdir: Path) -> bool:
    return values_file(workdir).exists()


def sandbox_values(cluster: LabCluster, image: ovnk_image.OvnkImage) -> dict[str, Any]:
    """The chart values this sandbox needs (module docstring)."""
    assert cluster.control_plane is not None
    server = cluster.control_plane.server  # https://<host ip>:<port>
    host, _, port = server.removeprefix("https://").rpartition(":")
    return {
        "image": {"repository": image.repository, "tag": image.tag, "pullPolicy": "Never"},
        # OVS keeps this image when a later upgrade sets image.* (a plugin author's image): the sandbox's
        # userspace datapath forwards nothing while OVS restarts, the node's uplink included.
        "ovs": {"image": {"repository": image.repository, "tag": image.tag}},
        "apiServer": {"host": host, "port": int(port)},
        "serviceCIDR": SERVICE_CIDR,
        "gateway": {"interface": "eth0"},
        "extraConfig": {"ovs": {"datapath-type": "netdev"}},
    }


def helm(kubeconfig: Path, *args: str, timeout: float = 300) -> str:
    """helm v3 (from the test bed's tools) against the sandbox, as its admin."""
    return run([paths.tool_bin("helm"), f"--kubeconfig={kubeconfig}", *args], timeout=timeout).stdout


def set_args(sets: Sequence[str]) -> list[str]:
    """``--set k=v`` arguments for helm; a malformed one is a clear error before anything starts."""
    argv = []
    for item in sets:
        key, sep, _value = item.partition("=")
        if not sep or not key.strip():
            raise StartupError(f"bad --set {item!r}: expected KEY=VALUE (e.g. plugins.multicast.enabled=true)")
        argv += ["--set", item]
    return argv


def up(cluster: LabCluster, *, nodes: int, sets: Sequence[str] = (), timeout: float = 600,
       report: Callable[[str], None] = logger.info) -> None:
    """Bring ``cluster`` up without any ovnk of its own and install the chart onto it (module docstring)."""
    set_argv = set_args(sets)
    report("building or reusing the ovnk image (hack/Containerfile's content, no daemon)")
    image = ovnk_image.ensure_image()
    report(f"image {image.name} ({image.bundle.stat().st_size // (1 << 20)} MiB)")
    cluster.up(nodes, with_ovs=False, cni=ExternalCni(), timeout=timeout, extra_mounts=CHART_HOST_PATHS,
               extra_images=[image.bundle])
    try:
        install(cluster, image=image, set_argv=set_argv, timeout=timeout, report=report)
    except BaseException:
        logger.exception("chart deployment failed; tearing down")
        report("chart deployment failed; removing the sandbox")
        cluster.down()
        raise


def install(cluster: LabCluster, *, image: ovnk_image.OvnkImage, set_argv: Sequence[str], timeout: float,
            report: Callable[[str], None]) -> None:
    names = [n.name for n in cluster.nodes]
    cluster.kubectl("label", "node", names[0], f"{CONTROL_PLANE_LABEL}=", "--overwrite")
    values = values_file(cluster.workdir)
    values.parent.mkdir(parents=True, exist_ok=True)
    values.write_text(yaml.safe_dump(sandbox_values(cluster, image), sort_keys=False))
    (values.parent / "set.json").write_text(json.dumps(list(set_argv)))
    report(f"helm install {RELEASE} charts/ovnk -n {NAMESPACE} -f {values} {shlex.join(set_argv)}")
    helm(cluster.kubeconfig, "install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--create-namespace",
         "-f", str(values), *set_argv)
    started = time.monotonic()
    report(f"waiting for {len(names)} node(s) to be Ready (the chart's agents write the CNI config)")
    wait_for(f"{len(names)} node(s) Ready with the chart's ovnk", lambda: all(cluster.status().nodes.get(n) for n in names),
             timeout=timeout, interval=1.0)
    wait_release_ready(cluster, timeout=max(60.0, timeout - (time.monotonic() - started)))


def wait_release_ready(cluster: LabCluster, *, timeout: float) -> None:
    """Every pod of the release Running and Ready (probes passing)."""
    def ready() -> bool:
        pods = json.loads(cluster.kubectl("-n", NAMESPACE, "get", "pods", "-o", "json")).get("items", [])
        if not pods:
            return False
        for pod in pods:
            conditions = {c["type"]: c["status"] for c in pod.get("status", {}).get("conditions", [])}
            if conditions.get("Ready") != "True":
                return False
        return True

    try:
        wait_for("every pod of the ovnk release Ready", ready, timeout=timeout, interval=1.0)
    except StartupError as exc:
        raise StartupError(f"{exc}\n{cluster.kubectl('-n', NAMESPACE, 'get', 'pods', '-o', 'wide', check=False)}") \
            from exc


def upgrade(cluster: LabCluster, sets: Sequence[str], *, set_files: Sequence[str] = (), timeout: float = 600) -> None:
    """``helm upgrade`` with the sandbox's values and these ``--set``s and ``--set-file``s (``KEY=PATH``),
    replacing the earlier ones."""
    values = values_file(cluster.workdir)
    set_argv = set_args(sets)
    for item in set_files:
        key, sep, path = item.partition("=")
        if not sep or not key.strip() or not Path(path).is_file():
            raise StartupError(f"bad --set-file {item!r}: expected KEY=PATH of an existing file")
        set_argv += ["--set-file", item]
    helm(cluster.kubeconfig, "upgrade", RELEASE, str(CHART), "--namespace", NAMESPACE, "-f", str(values),
         *set_argv, timeout=timeout)
    (values.parent / "set.json").write_text(json.dumps(list(set_argv)))


def load_image(cluster: LabCluster, image: ovnk_image.OvnkImage) -> None:
    """Import another image (a plugin author's, :func:`ovnk_image.ensure_plugin_image`) into every node's
    containerd; ``helm upgrade --set image.repository=... --set image.tag=...`` then uses it."""
    for node in cluster.nodes:
        node.import_images(image.bundle)


def image_sets(image: ovnk_image.OvnkImage) -> list[str]:
    """The ``--set``s that make the chart's pods run ``image`` (pull policy stays Never)."""
    return [f"image.repository={image.repository}", f"image.tag={image.tag}"]


def describe_usage(cluster: LabCluster, prefix: str) -> str:
    kubectl = paths.tool_bin("kubectl")
    helm_bin = paths.tool_bin("helm")
    ovnk = "ovnk sandbox" + (f" --prefix {prefix}" if prefix != "ovnk" else "")
    return "\n".join([
        f"kubeconfig: {cluster.kubeconfig}",
        f"  export KUBECONFIG={cluster.kubeconfig}",
        f"  {kubectl} -n {NAMESPACE} get pods -o wide   # ovnk's pods (chart release {RELEASE})",
        f"  {helm_bin} -n {NAMESPACE} upgrade {RELEASE} {CHART} -f {values_file(cluster.workdir)} --set ...",
        f"  {kubectl} -n {NAMESPACE} exec statefulset/{RELEASE}-ovn-db -c nb-ovsdb -- "
        "ovn-nbctl --db unix:/var/run/ovn/ovnnb_db.sock show",
        f"  {ovnk} status | down",
    ])


def release_pods(cluster: LabCluster) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads(cluster.kubectl("-n", NAMESPACE, "get", "pods", "-o", "json"))["items"]
    return items


def container_logs(cluster: LabCluster, *, previous: bool = False) -> Mapping[str, str]:
    """Logs of every container of the release's pods: ``<pod>/<container>`` -> text."""
    logs = {}
    for pod in release_pods(cluster):
        name = pod["metadata"]["name"]
        for container in [*pod["spec"].get("initContainers", []), *pod["spec"]["containers"]]:
            args = ["-n", NAMESPACE, "logs", name, "-c", container["name"], *(["--previous"] if previous else [])]
            logs[f"{name}/{container['name']}"] = cluster.kubectl(*args, check=False)
    return logs
