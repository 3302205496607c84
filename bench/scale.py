"""Scale: what the controller costs at 1/4, 1/2 and the full shape of a 100-node, 10,000-pod cluster.

Real etcd + kube-apiserver (only kube-controller-manager's service-account
controller; no kubelet, no scheduler), real NB/SB ovsdb-server with ovn-northd,
and the real ``ovnk controller`` as a separate process (``python -m ovnk``),
measured through ``/proc/<pid>`` and its ``/metrics``. Objects are made through
the API by a bounded pool of creators: Node objects with the annotations a node
agent writes, pods bound with ``spec.nodeName`` (100 per node, 100 per
namespace; their IPs come from the controller), selector-less Services (one in
fifty a NodePort) each with an EndpointSlice of three endpoints, and
NetworkPolicies (five per namespace, selecting pods by label and namespace).

Full shape: 100 nodes, 10,000 pods, 1,000 services, 500 policies, 100
namespaces; ``--quick`` is a tenth of it. The cluster grows to 1/4, 1/2 and the
full shape; at each, with everything committed:

1. **restart resync**: the controller is stopped (SIGTERM) and a new one
   started; seconds from its exec until it is idle, its NB write transactions
   (must be 0), and its RSS and CPU seconds after this initial sync;
2. **pod add**: pods created one at a time; create -> LSP committed, -> IP in the
   namespace's address set, and LSP -> SB Port_Binding (northd's part); NB and
   SB sizes after compaction and what ovn-northd spent on those changes (its
   CPU time per pod add from ``/proc``, its longest loop, full recomputes);
3. **cold start**: an empty NB/SB (a fresh OVN central) and two controllers
   with leader election (``--lease``); seconds from their exec
   until every pod's LSP, every service's load balancer and every policy's port
   group is committed, and until the leader is idle; its RSS and CPU then;
4. **leader failover**: the leader is SIGKILLed by pid and a pod created at
   once; time until the standby has committed that pod's LSP, and when it took
   the lease and counted its first reconcile (of any key). The survivor grows the cluster to the next shape.

After the full shape the survivor stays idle for ``--idle`` seconds and its RSS
and CPU are read again (no leak: RSS flat within 5%). ``--quick`` grows in one
step (1/4, then its full shape) and runs 1 and 3-4 at its full shape only.

Baseline and ratio: per-event cost must not grow with the cluster, so the
baseline is the pod-add p50 (create -> LSP) at 1/4 of the shape, measured in the
same run; the ratio is the full shape's p50 over it (goal: a 4x bigger cluster
makes a pod add at most 1.5x slower). Also reported against ovn-kubernetes'
published ~413 MB average ovnkube RSS (kind CI): the controller's RSS at full.

Run: ``.venv/bin/python bench/scale.py [--quick] [--idle SECONDS]``; the last
line is one JSON object. ``--sizes 1`` measures one size only (no pod-add ratio);
``--cold-first`` makes each size's objects with no controller running and measures
its cold start and failover first, then the restart resync and pod adds (the grow
under a running controller costs as much as the cold start: at the full shape on 2
cores, ``--sizes 1 --cold-first`` is the run that fits in ~25 minutes). ``--out DIR`` also writes the
JSON to ``DIR/scale.json`` and a plot of each figure against the pods in the cluster, with the goals
drawn in, to ``DIR/scale.svg`` (``bench/svgplot.py``: the venv has no plotting library).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

from scale_support import FRACTIONS
from scale_support import FULL
from scale_support import OVNKUBE_RSS_MB
from scale_support import QUICK_FRACTIONS
from scale_support import ControllerProc
from scale_support import NbWatcher
from scale_support import Shape
from scale_support import northd_stats
from scale_support import percentile
from scale_support import reset_northd_stats
from svgplot import Panel
from svgplot import write as write_svg

from ovnk.core.kube.client import KubeClient
from ovnk.core.kube.resources import ENDPOINTSLICES
from ovnk.core.kube.resources import LEASES
from ovnk.core.kube.resources import NAMESPACES
from ovnk.core.kube.resources import NETWORKPOLICIES
from ovnk.core.kube.resources import NODES
from ovnk.core.kube.resources import PODS
from ovnk.core.kube.resources import SERVICES
from ovnk.core.kube.resources import Resource
from ovnk_lab.kube import KubeControlPlane
from ovnk_lab.ovn import OvnCentral

SERVICEACCOUNTS = Resource("", "v1", "ServiceAccount", "serviceaccounts")
#: The pair's lease (duration, renew deadline, retry period): a standby takes over ~3.3 s after the
#: leader's last renewal. Leaders held it through 85 s and 220 s cold starts at 2,500 and 5,000 pods
#: on 2 cores (2026-12-03) now that renewals do not wait for a new leader's restore and repair.
FAILOVER_LEASE = (3.0, 2.0, 0.5)
CREATORS = 8
APPS, ROLES, TEAMS = 10, 5, 4


# -- object bodies --------------------------------------------------------------------


def node_body(index: int) -> dict[str, Any]:
    ip = f"172.30.{index // 200}.{11 + index % 200}"
    gateway = {"default": {"mode": "shared", "bridge-id": "breth0", "interface-id": f"breth0_n{index}",
                           "mac-address": f"0a:00:00:00:{index // 256:02x}:{index % 256:02x}",
                           "ip-addresses": [f"{ip}/16"], "next-hops": ["172.30.255.254"],
                           "node-port-enable": "true", "vlan-id": "0"}}
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": f"n{index}", "annotations": {
        "k8s.ovn.org/node-chassis-id": f"00000000-0000-4000-8000-{index:012d}",
        "k8s.ovn.org/l3-gateway-config": json.dumps(gateway),
        "k8s.ovn.org/node-mgmt-port-mac-addresses": json.dumps(
            {"default": f"0a:00:00:01:{index // 256:02x}:{index % 256:02x}"}),
        "k8s.ovn.org/node-primary-ifaddr": json.dumps({"ipv4": f"{ip}/16"}),
    }}}


def pod_body(namespace: str, name: str, node: str, index: int) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {"app": f"app-{index % APPS}", "role": f"role-{index % ROLES}"}},
            "spec": {"nodeName": node, "automountServiceAccountToken": False,
                     "containers": [{"name": "c", "image": "busybox", "ports": [{"name": "http", "containerPort": 8080}]}]}}


def service_body(namespace: str, index: int) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"s{index}", "namespace": namespace},
            "spec": {"type": "NodePort" if index % 50 == 0 else "ClusterIP",
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}}


def slice_body(api_version: str, namespace: str, index: int, nodes: int) -> dict[str, Any]:
    beta = api_version.endswith("v1beta1")
    endpoints = []
    for n in range(3):
        node = f"n{(index + n) % nodes}"
        entry: dict[str, Any] = {"addresses": [f"10.{100 + index // 250}.{index % 250}.{n + 1}"],
                                 "conditions": {"ready": True}}
        entry.update({"topology": {"kubernetes.io/hostname": node}} if beta else {"nodeName": node})
        endpoints.append(entry)
    return {"apiVersion": api_version, "kind": "EndpointSlice",
            "metadata": {"name": f"s{index}-1", "namespace": namespace,
                         "labels": {"kubernetes.io/service-name": f"s{index}"}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": endpoints}


def policy_body(namespace: str, index: int, namespace_index: int) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "podSelector": {"matchLabels": {"app": f"app-{index % APPS}"}},
        "ingress": [
            {"from": [{"podSelector": {"matchLabels": {"role": f"role-{index % ROLES}"}}}],
             "ports": [{"protocol": "TCP", "port": 80}]},
            {"from": [{"namespaceSelector": {"matchLabels": {"team": f"team-{(namespace_index + 1) % TEAMS}"}},
                       "podSelector": {"matchLabels": {"role": "role-0"}}}],
             "ports": [{"protocol": "TCP", "port": "http"}]},
        ],
    }
    if index % 2 == 0:
        spec["egress"] = [{"to": [{"namespaceSelector": {"matchLabels": {"team": "team-0"}}}],
                           "ports": [{"protocol": "UDP", "port": 53}]}]
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": f"np{index}", "namespace": namespace}, "spec": spec}


# -- the cluster ----------------------------------------------------------------------


@dataclass
class Cluster:
    """What exists in the API (grows shape by shape) and the names NB must then hold."""

    kube: KubeClient
    full: Shape
    slice_version: str
    nodes: int = 0
    namespaces: int = 0
    pods: int = 0
    services: int = 0
    policies: int = 0
    samples: int = 0
    sample_lsps: set[str] = field(default_factory=set)

    def namespace(self, kind: str, index: int) -> str:
        return f"scale-{index // self.full.per_namespace(kind)}"

    def expected(self) -> tuple[set[str], set[str], set[str]]:
        """LSP names, cluster load balancer names and policy port-group object names."""
        lsps = {f"{self.namespace('pods', i)}_p{i}" for i in range(self.pods)}
        lsps |= self.sample_lsps
        lbs = {f"Service_{self.namespace('services', i)}/s{i}_TCP_cluster" for i in range(self.services)}
        pgs = {f"{self.namespace('policies', i)}:np{i}" for i in range(self.policies)}
        return lsps, lbs, pgs

    def grow(self, shape: Shape) -> None:
        """Create what ``shape`` has and the API does not yet (bounded pool of creators)."""
        kube = self.kube
        with ThreadPoolExecutor(CREATORS) as pool:
            list(pool.map(lambda k: kube.create(NAMESPACES, {
                "apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": f"scale-{k}", "labels": {"team": f"team-{k % TEAMS}"}}}),
                range(self.namespaces, shape.namespaces)))
            list(pool.map(lambda i: kube.create(NODES, node_body(i)), range(self.nodes, shape.nodes)))
            for k in range(self.namespaces, shape.namespaces):
                wait_until(lambda k=k: kube.get(SERVICEACCOUNTS, "default", namespace=f"scale-{k}") is not None,
                           what=f"service account of scale-{k}", timeout=120)
            self.namespaces, self.nodes = shape.namespaces, shape.nodes
            per_node = self.full.pods // self.full.nodes

            def pod(i: int) -> None:
                namespace = self.namespace("pods", i)
                kube.create(PODS, pod_body(namespace, f"p{i}", f"n{i // per_node}", i), namespace=namespace)

            def service(i: int) -> None:
                namespace = self.namespace("services", i)
                kube.create(SERVICES, service_body(namespace, i), namespace=namespace)
                kube.create(ENDPOINTSLICES, slice_body(self.slice_version, namespace, i, shape.nodes),
                            namespace=namespace)

            def policy(i: int) -> None:
                namespace = self.namespace("policies", i)
                kube.create(NETWORKPOLICIES, policy_body(namespace, i, int(namespace.split("-")[1])),
                            namespace=namespace)

            list(pool.map(pod, range(self.pods, shape.pods)))
            list(pool.map(service, range(self.services, shape.services)))
            list(pool.map(policy, range(self.policies, shape.policies)))
        self.pods, self.services, self.policies = shape.pods, shape.services, shape.policies


def wait_until(predicate: Any, *, what: str, timeout: float, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f}s")
        time.sleep(interval)


# -- the run --------------------------------------------------------------------------


class Run:
    def __init__(self, *, workdir: Path, plane: KubeControlPlane, full: Shape, samples: int,
                 lease: tuple[float, float, float]) -> None:
        self.workdir = workdir
        self.plane = plane
        self.kube = KubeClient(kubeconfig=str(plane.kubeconfig), qps=2000)
        self.cluster = Cluster(self.kube, full, self.kube.resolve(ENDPOINTSLICES).api_version)
        self.samples = samples
        self.lease = lease
        self.generation = 0
        self.central = self._new_central()
        self.watcher = NbWatcher(self.central)
        self.controller: ControllerProc | None = None

    def _new_central(self) -> OvnCentral:
        self.generation += 1
        return OvnCentral(self.workdir / f"ovn-{self.generation}").start()

    def start_controller(self, name: str, *, leader_election: bool = False) -> ControllerProc:
        return ControllerProc(workdir=self.workdir, name=name, kubeconfig=self.plane.kubeconfig,
                              nb=self.central.nb_address, sb=self.central.sb_address,
                              leader_election=leader_election, lease=self.lease).start()

    def wait_committed(self, timeout: float, controllers: list[ControllerProc] | None = None) -> float:
        """Seconds (monotonic) when the last expected row appeared in NB."""
        lsps, lbs, pgs = self.cluster.expected()
        running = controllers if controllers is not None else [c for c in (self.controller,) if c is not None]

        def check() -> None:
            for controller in running:
                controller.daemon.check_alive()

        return self.watcher.wait_rows(lsps=lsps, lbs=lbs, pgs=pgs, timeout=timeout, check=check)

    def close(self) -> None:
        if self.controller is not None:
            self.controller.stop()
        self.watcher.stop()
        self.central.destroy()

    # -- phases ---------------------------------------------------------------------

    def grow(self, shape: Shape, timeout: float) -> dict[str, Any]:
        assert self.controller is not None
        started = time.monotonic()
        self.cluster.grow(shape)
        created = time.monotonic()
        self.wait_committed(timeout)
        self.controller.wait_idle(min_reconciles=0, timeout=timeout)
        return {"create_s": round(created - started, 1), "grow_s": round(time.monotonic() - started, 1)}

    def create_objects(self, shape: Shape, _timeout: float) -> dict[str, Any]:
        """``--cold-first``: the objects are made through the API with no controller running."""
        started = time.monotonic()
        self.cluster.grow(shape)
        return {"create_s": round(time.monotonic() - started, 1)}

    def resync(self, _shape: Shape, timeout: float) -> dict[str, Any]:
        assert self.controller is not None
        self.controller.stop()
        nb_before = self.central.nb.members[0].db_file.stat().st_size
        started = time.monotonic()
        self.controller = self.start_controller(f"resync-{self.cluster.pods}")
        quiet = self.controller.wait_idle(min_reconciles=self.cluster.pods, timeout=timeout)
        rss, cpu = self.controller.usage()
        return {"resync_s": round(quiet - started, 2), "resync_write_txns": int(self.controller.committed_txns()),
                "resync_nb_bytes": self.central.nb.members[0].db_file.stat().st_size - nb_before,
                "rss_mb": round(rss / 2**20, 1), "cpu_s": round(cpu, 1)}

    def pod_adds(self, _shape: Shape, _timeout: float) -> dict[str, Any]:
        northd_cpu = reset_northd_stats(self.central)
        lsp_lat, as_lat, sb_lat = [], [], []
        cluster = self.cluster
        for _ in range(self.samples):
            index = cluster.samples
            namespace, name = f"scale-{index % cluster.namespaces}", f"sample{index}"
            lsp = f"{namespace}_{name}"
            cluster.sample_lsps.add(lsp)
            started = time.monotonic()
            self.kube.create(PODS, pod_body(namespace, name, f"n{index % cluster.nodes}", index), namespace=namespace)
            cluster.samples += 1
            seen = self.watcher.wait_pod(lsp, timeout=60)
            lsp_lat.append(seen.lsp - started)
            as_lat.append(seen.address_set - started)
            sb_lat.append(seen.port_binding - seen.lsp)
        self.central.wait_northd()
        northd = northd_stats(self.central, cpu_before=northd_cpu, changes=self.samples)
        sizes = self.watcher.sizes()
        return {"pod_add_p50_ms": ms(percentile(lsp_lat, 0.5)), "pod_add_p99_ms": ms(percentile(lsp_lat, 0.99)),
                "pod_add_address_set_p50_ms": ms(percentile(as_lat, 0.5)),
                "nb_to_sb_p50_ms": ms(percentile(sb_lat, 0.5)), **northd, **sizes}

    def cold_start_failover(self, shape: Shape, timeout: float) -> dict[str, Any]:
        """Cold start against an empty NB/SB by two leader-elected controllers, then the leader's SIGKILL."""
        if self.controller is not None:
            self.controller.stop()
            self.controller = None
        self.watcher.stop()
        self.central.destroy()
        self.central = self._new_central()
        self.watcher = NbWatcher(self.central)
        last = shape.pods == self.cluster.full.pods
        # The previous pair's survivor stopped without handing over: its lease would make this start wait.
        self.kube.delete(LEASES, "ovnk-controller", namespace="ovn-kubernetes")
        cluster = self.cluster
        started = time.monotonic()
        pair = [self.start_controller(f"pair-{cluster.pods}-{i}", leader_election=True) for i in (0, 1)]
        try:
            rows = self.wait_committed(timeout, pair)
            leader = next((c for c in pair if c.is_leader()), None)
            assert leader is not None, "rows were committed but no controller says it leads"
            standby = next(c for c in pair if c is not leader)
            quiet = leader.wait_idle(min_reconciles=cluster.pods, timeout=timeout)
            rss, cpu = leader.usage()
            wait_until(standby.ready, what="standby caches synced", timeout=timeout, interval=0.2)
            index = cluster.samples
            namespace, name = f"scale-{index % cluster.namespaces}", f"sample{index}"
            cluster.sample_lsps.add(f"{namespace}_{name}")
            killed = time.monotonic()
            leader.kill()
            self.kube.create(PODS, pod_body(namespace, name, f"n{index % cluster.nodes}", index), namespace=namespace)
            cluster.samples += 1
            took_lease, first_reconcile = standby.wait_leader(timeout=timeout)
            seen = self.watcher.wait_pod(f"{namespace}_{name}", timeout=timeout, check=standby.daemon.check_alive)
            standby.wait_idle(min_reconciles=0, timeout=timeout)
        except BaseException:
            for controller in pair:
                controller.stop()
            raise
        if last:
            self.controller = standby  # idles for --idle seconds
        else:
            # A short lease is for the failover figure only: growing the cluster under load with it
            # would risk a missed renewal (which makes the controller exit).
            standby.stop()
            self.controller = self.start_controller(f"grow-{cluster.pods}")
        return {"cold_start_rows_s": round(rows - started, 2), "cold_start_idle_s": round(quiet - started, 2),
                "cold_rss_mb": round(rss / 2**20, 1), "cold_cpu_s": round(cpu, 1),
                "failover_s": round(seen.lsp - killed, 2), "failover_lease_s": round(took_lease - killed, 2),
                "failover_first_reconcile_s": round(first_reconcile - killed, 2),
                "failover_after_lease_s": round(seen.lsp - took_lease, 2)}

    def idle(self, seconds: float) -> dict[str, Any]:
        assert self.controller is not None
        rss0, cpu0 = self.controller.usage()
        time.sleep(seconds)  # the measurement itself: nothing happens in the cluster for this long
        rss1, cpu1 = self.controller.usage()
        return {"idle_s": seconds, "idle_rss_before_mb": round(rss0 / 2**20, 1),
                "idle_rss_after_mb": round(rss1 / 2**20, 1), "idle_rss_change_pct": round(100 * (rss1 - rss0) / rss0, 1),
                "idle_cpu_s": round(cpu1 - cpu0, 2)}


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the shape, under a minute")
    parser.add_argument("--fraction", type=float, default=None,
                        help="the measured shape as a fraction of 100 nodes / 10,000 pods (default 1; quick: 0.1)")
    parser.add_argument("--idle", type=float, default=None, help="idle seconds at full shape (600; quick: 3)")
    parser.add_argument("--samples", type=int, default=None, help="pod adds timed per shape (40; quick: 10)")
    parser.add_argument("--sizes", default=None,
                        help="comma-separated fractions of the measured shape to grow through (default 0.25,0.5,1; "
                             "quick: 0.25,1); the pod-add ratio needs at least two")
    parser.add_argument("--cold-first", action="store_true",
                        help="per size: make the objects with no controller running, then cold start and fail "
                             "over the pair, then restart resync and pod adds (skips the grow under a running "
                             "controller, which costs as much as a cold start: the full shape fits in ~25 minutes)")
    parser.add_argument("--lease", default=None,
                        help="lease-duration,renew-deadline,retry-period of the leader-elected pair (seconds; "
                             f"default {','.join(f'{v:g}' for v in FAILOVER_LEASE)}: the goal is a first reconcile "
                             "<= 5 s after the leader dies, and a standby may take over only a lease duration "
                             "after the last renewal it saw; ovnk's own default is 15,10,2)")
    parser.add_argument("--out", type=Path, default=None,
                        help="a directory to write scale.json (the last line) and scale.svg (the plot) into")
    args = parser.parse_args()
    fraction = args.fraction if args.fraction is not None else (0.1 if args.quick else 1.0)
    full = FULL.scaled(fraction) if fraction != 1.0 else FULL
    idle = args.idle if args.idle is not None else (3.0 if args.quick else 600.0)
    samples = args.samples or (10 if args.quick else 40)
    lease_values = [float(v) for v in args.lease.split(",")] if args.lease else list(FAILOVER_LEASE)
    lease = (lease_values[0], lease_values[1], lease_values[2])
    timeout = 120.0 if args.quick else 1800.0
    begun = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ovnk-bench-scale-") as tmp:
        workdir = Path(tmp)
        plane = KubeControlPlane(workdir / "kube", scheduler=False, controllers="serviceaccount").start()
        try:
            progress("control plane up")
            run = Run(workdir=workdir, plane=plane, full=full, samples=samples, lease=lease)
            try:
                sizes = tuple(float(v) for v in args.sizes.split(",")) if args.sizes else None
                results = measure(run, full=full, idle=idle, quick=args.quick, timeout=timeout, sizes=sizes,
                                  cold_first=args.cold_first)
            finally:
                run.close()
        finally:
            plane.stop()
    summary = report(results, full=full, quick=args.quick, lease=lease, elapsed=time.monotonic() - begun)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "scale.json").write_text(json.dumps(summary, indent=1) + "\n")
        plot(summary, args.out / "scale.svg")
        progress(f"wrote {args.out / 'scale.json'} and {args.out / 'scale.svg'}")
    # The JSON stays the very last line of the output, after the progress lines on stderr.
    print(json.dumps(summary), flush=True)
    return 0


def progress(message: str) -> None:
    print(f"[scale {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def measure(run: Run, *, full: Shape, idle: float, quick: bool, timeout: float,
            sizes: tuple[float, ...] | None = None, cold_first: bool = False) -> dict[str, Any]:
    if cold_first:
        return measure_cold_first(run, full=full, idle=idle, timeout=timeout, fractions=sizes or FRACTIONS)
    figures_by_size: dict[str, dict[str, Any]] = {}
    run.controller = run.start_controller("grow-0")
    fractions = sizes or (QUICK_FRACTIONS if quick else FRACTIONS)
    for fraction in fractions:
        shape = full.scaled(fraction)
        label = f"{fraction:g}"
        figures: dict[str, Any] = {"nodes": shape.nodes, "pods": shape.pods, "services": shape.services,
                                   "policies": shape.policies}
        last = fraction == fractions[-1]
        # --quick keeps under a minute: restart resync, cold start and failover at its full shape only.
        phases = [run.grow, run.resync, run.pod_adds, run.cold_start_failover] if not quick or last else \
            [run.grow, run.pod_adds]
        for phase in phases:
            started = time.monotonic()
            figures.update(phase(shape, timeout))
            progress(f"{label}: {phase.__name__} took {time.monotonic() - started:.1f} s: {json.dumps(figures)}")
        figures_by_size[label] = figures
        progress(f"{label}: {json.dumps(figures)}")
    return {"sizes": figures_by_size, "idle": run.idle(idle)}


def measure_cold_first(run: Run, *, full: Shape, idle: float, timeout: float,
                       fractions: tuple[float, ...]) -> dict[str, Any]:
    """Per size: objects made with no controller, cold start + failover of the pair (its survivor is
    then the running controller), restart resync (0 writes into an NB the pair wrote), pod adds."""
    figures_by_size: dict[str, dict[str, Any]] = {}
    for fraction in fractions:
        shape = full.scaled(fraction)
        label = f"{fraction:g}"
        figures: dict[str, Any] = {"nodes": shape.nodes, "pods": shape.pods, "services": shape.services,
                                   "policies": shape.policies}
        for phase in (run.create_objects, run.cold_start_failover, run.resync, run.pod_adds):
            started = time.monotonic()
            figures.update(phase(shape, timeout))
            progress(f"{label}: {phase.__name__} took {time.monotonic() - started:.1f} s: {json.dumps(figures)}")
        figures_by_size[label] = figures
    return {"sizes": figures_by_size, "idle": run.idle(idle)}


def report(results: dict[str, Any], *, full: Shape, quick: bool, lease: tuple[float, float, float],
           elapsed: float) -> dict[str, Any]:
    """Print the table and return the run's JSON summary (printed last by the caller)."""
    sizes: dict[str, dict[str, Any]] = results["sizes"]
    labels = list(sizes)
    def cell(*keys: str, sep: str = " / ") -> Any:
        return lambda f: sep.join(str(f.get(key, "-")) for key in keys)

    rows = [
        ("pods / nodes / services / policies", cell("pods", "nodes", "services", "policies", sep="/")),
        ("restart resync s / its NB write txns", cell("resync_s", "resync_write_txns")),
        ("controller RSS MB after resync", cell("rss_mb")),
        ("controller CPU s for resync", cell("cpu_s")),
        ("cold start: all rows committed s", cell("cold_start_rows_s")),
        ("cold start: idle s", cell("cold_start_idle_s")),
        ("controller RSS MB after cold start", cell("cold_rss_mb")),
        ("failover: kill -> new pod's LSP s", cell("failover_s")),
        ("  kill -> lease taken / first reconcile s", cell("failover_lease_s", "failover_first_reconcile_s")),
        ("pod add -> LSP p50 / p99 ms", cell("pod_add_p50_ms", "pod_add_p99_ms")),
        ("pod add -> namespace address set p50 ms", cell("pod_add_address_set_p50_ms")),
        ("LSP -> SB Port_Binding p50 ms", cell("nb_to_sb_p50_ms")),
        ("northd CPU ms per pod add", cell("northd_cpu_ms_per_change")),
        ("northd longest loop ms", cell("northd_loop_max_ms")),
        ("northd lflow recomputes / incremental", cell("northd_recomputes", "northd_incremental")),
        ("NB / SB size MB (compacted)", cell("nb_mb", "sb_mb")),
        ("NB ACL / LB / address sets", cell("nb_acls", "nb_lbs", "nb_address_sets")),
        ("SB logical flows", cell("sb_lflows")),
    ]
    print(f"\nScale ({'quick: ' if quick else ''}full shape {full.nodes} nodes, {full.pods} pods, {full.services} "
          f"services, {full.policies} policies; failover lease {lease[0]:g}/{lease[1]:g}/{lease[2]:g} s; "
          f"run took {elapsed:.0f} s)")
    print(f"{'':<42}" + "".join(f"{'x' + label:>20}" for label in labels))
    for title, cell in rows:
        print(f"{title:<42}" + "".join(f"{cell(sizes[label])!s:>20}" for label in labels))
    idle = results["idle"]
    print(f"idle {idle['idle_s']:g} s at full shape: RSS {idle['idle_rss_before_mb']} -> {idle['idle_rss_after_mb']} MB "
          f"({idle['idle_rss_change_pct']:+}%), CPU {idle['idle_cpu_s']} s")
    base, top = sizes[labels[0]], sizes[labels[-1]]
    # One size has no baseline of its own: the ratio is then 1 by construction (reported as null).
    ratio = top["pod_add_p50_ms"] / base["pod_add_p50_ms"] if len(labels) > 1 else None
    per_kpod = top["rss_mb"] / (top["pods"] / 1000)
    ratio_text = f"{ratio:.2f}x" if ratio is not None else "n/a (one size)"
    print(f"pod-add p50 at full vs 1/4 shape: {ratio_text} (goal <= 1.5x); controller RSS at full {top['rss_mb']} MB "
          f"= {per_kpod:.1f} MB per 1,000 pods; ovn-kubernetes' ovnkube ~{OVNKUBE_RSS_MB} MB")
    return {
        "benchmark": "scale", "quick": quick,
        "shape": {"nodes": full.nodes, "pods": full.pods, "services": full.services, "policies": full.policies},
        "lease": list(lease), "sizes": sizes, "idle": idle,
        "ours": {"pod_add_p50_ms_full": top["pod_add_p50_ms"], "rss_mb_full": top["rss_mb"],
                 "rss_mb_per_1000_pods": round(per_kpod, 1)},
        "baseline": {"pod_add_p50_ms_quarter": base["pod_add_p50_ms"], "ovnkube_rss_mb": OVNKUBE_RSS_MB},
        "ratio": round(ratio, 2) if ratio is not None else None,
        "ratio_rss_vs_ovnkube": round(top["rss_mb"] / OVNKUBE_RSS_MB, 2),
    }


def plot(summary: dict[str, Any], path: Path) -> None:
    """Each figure of the summary against the pods in the cluster, the issue's goals drawn in."""
    sizes = list(summary["sizes"].values())
    xs = [float(size["pods"]) for size in sizes]

    def series(key: str) -> list[float | None]:
        return [float(size[key]) if isinstance(size.get(key), int | float) else None for size in sizes]

    base_p50 = sizes[0].get("pod_add_p50_ms")
    idle = summary["idle"]
    panels = [
        Panel("restart resync", "s", {"exec -> idle": series("resync_s")}, goal=30.0,
              notes=[f"NB writes: {', '.join(str(s.get('resync_write_txns', '-')) for s in sizes)}"]),
        Panel("controller RSS", "MB", {"after resync": series("rss_mb"), "after cold start": series("cold_rss_mb")},
              goal=300.0, notes=[f"idle {idle['idle_s']:g} s: {idle['idle_rss_change_pct']:+}%"]),
        Panel("cold start: all rows committed", "s", {"leader": series("cold_start_rows_s")}),
        Panel("failover after SIGKILL", "s", {"first reconcile": series("failover_first_reconcile_s"),
                                              "lease taken": series("failover_lease_s")}, goal=5.0),
        Panel("pod add -> LSP", "ms", {"p50": series("pod_add_p50_ms"), "p99": series("pod_add_p99_ms")},
              goal=1.5 * base_p50 if isinstance(base_p50, int | float) else None, goal_label="1.5x first p50"),
        Panel("controller CPU for resync", "s", {"cpu": series("cpu_s")}),
        Panel("ovn-northd CPU per pod add", "ms", {"northd": series("northd_cpu_ms_per_change")}),
        Panel("LSP -> SB Port_Binding p50", "ms", {"northd": series("nb_to_sb_p50_ms")}),
        Panel("database size (compacted)", "MB", {"NB": series("nb_mb"), "SB": series("sb_mb")}),
    ]
    shape = summary["shape"]
    title = (f"ovnk scale ({'quick, ' if summary['quick'] else ''}full shape {shape['nodes']} nodes, "
             f"{shape['pods']:,} pods, {shape['services']:,} services, {shape['policies']} policies)")
    write_svg(path, title, "pods in the cluster", xs, panels)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
