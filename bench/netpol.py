"""NetworkPolicy latency at scale: policy create -> its ACLs committed, pod add -> its address-set membership.

Starts its own control plane (etcd + kube-apiserver + the service-account
controller), an OVN central and an in-process ``ovnk`` controller; creates
nodes (with the annotations a node agent publishes), namespaces, pods (IPs
and ports from core; no kubelet) and policies (default: 2000 pods and 200
policies over 20 namespaces; ``--quick``: 200 pods and 40 policies). Then,
one at a time:

- **policy**: from the API create call of a new policy to the commit of its
  port group and ACLs (``NetworkPolicy <ns>/<name>`` transaction), timed by
  a wrapper of the ``ovnk_nb_commit`` hook;
- **pod**: from the API create call of a pod whose labels match existing peer
  selectors to the commit that puts its IP into the last of its address sets
  (the pod's own transaction, which carries the memberships, or the peer
  address-set controller's, whichever commits them first).

Baseline, measured in the same run against the same NB: the same rows written
with bare ovsdbapp in one transaction each (a new port group holding the same
ports with copies of the policy's ACLs; the pod's IP added to copies of its
address sets), timed from the start of the transaction to its commit. The
ratio is ours / baseline (how much the Kubernetes round trip, the caches, the
reconcile and the idempotent planning add on top of the raw NB write).

Run: ``.venv/bin/python bench/netpol.py [--quick]``. The last line of output
is one JSON object with the figures, the baseline and the ratios.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ovsdbapp.backend.ovs_idl import connection as ovsdbapp_connection
from ovsdbapp.schema.ovn_northbound import impl_idl as nb_impl

from ovnk.core.bootstrap import bootstrap
from ovnk.core.config import ConfigInputs
from ovnk.core.controller import ControllerProcess
from ovnk.core.hookspecs import hookimpl
from ovnk.core.kube.client import KubeClient
from ovnk.core.kube.resources import NAMESPACES
from ovnk.core.kube.resources import NETWORKPOLICIES
from ovnk.core.kube.resources import NODES
from ovnk.core.kube.resources import PODS
from ovnk.core.ovn.commands import Match
from ovnk.core.ovn.commands import SetMembership
from ovnk.core.ovn.commands import find_one
from ovnk.core.ovn.txn import NbTxn
from ovnk_lab.kube import KubeControlPlane
from ovnk_lab.ovn import OvnCentral

APPS = 10
ROLES = 5
TEAMS = 4
PODS_PER_NODE = 240  # a /24 host subnet holds 252


@dataclass(frozen=True)
class Scale:
    namespaces: int
    pods_per_namespace: int
    policies_per_namespace: int
    samples: int

    @property
    def pods(self) -> int:
        return self.namespaces * self.pods_per_namespace

    @property
    def policies(self) -> int:
        return self.namespaces * self.policies_per_namespace

    @property
    def nodes(self) -> int:
        return -(-(self.pods + 2 * self.samples) // PODS_PER_NODE)


FULL = Scale(namespaces=20, pods_per_namespace=100, policies_per_namespace=10, samples=40)
QUICK = Scale(namespaces=4, pods_per_namespace=50, policies_per_namespace=10, samples=20)


class CommitLog:
    """Wraps ``ovnk_nb_commit``: when each NetworkPolicy / PodSelector transaction committed, and what
    (and the peer-set memberships a Pod transaction carries: a new pod's IPs join its peer sets there)."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.policies: dict[str, float] = {}  # "ns/name" -> commit time
        self.sets: list[tuple[float, str, frozenset[str]]] = []  # (time, key, addresses)
        self.set_keys: dict[str, str] = {}  # peer address set row name -> its key
        self.recording = False

    @hookimpl(wrapper=True)
    def ovnk_nb_commit(self, txn: NbTxn) -> Any:
        outcome = yield
        now = time.monotonic()
        if not self.recording or outcome != "committed":
            return outcome
        with self.cond:
            if txn.owner == "NetworkPolicy" and txn.reason.startswith("NetworkPolicy "):
                self.policies.setdefault(txn.reason.split(" ", 1)[1], now)
            elif txn.owner == "PodSelector":
                # A peer address set's transaction adds only the addresses it lacked (SetMembership).
                for command in txn.commands:
                    if isinstance(command, SetMembership) and command.column == "addresses" and command.add_values:
                        key = txn.reason.removeprefix("address set ")
                        self.sets.append((now, key, frozenset(command.add_values)))
            elif txn.owner == "Pod":
                # The transaction committed, so every address it names is in its set now (whichever
                # transaction wrote it first: the earliest record counts).
                for command in txn.commands:
                    if isinstance(command, SetMembership) and command.match.name in self.set_keys and command.add_values:
                        self.sets.append((now, self.set_keys[command.match.name], frozenset(command.add_values)))
            self.cond.notify_all()
        return outcome

    def wait(self, predicate: Any, timeout: float = 60) -> Any:
        with self.cond:
            result = self.cond.wait_for(predicate, timeout)
        if not result:
            raise RuntimeError("timed out waiting for a commit")
        return result


# -- cluster set-up -------------------------------------------------------------


def node_body(name: str, index: int) -> dict[str, Any]:
    ip = f"172.30.{index // 200}.{11 + index % 200}"
    gateway = {"default": {"mode": "shared", "bridge-id": "breth0", "interface-id": f"breth0_{name}",
                           "mac-address": f"0a:00:00:00:{index // 256:02x}:{index % 256:02x}",
                           "ip-addresses": [f"{ip}/16"], "next-hops": ["172.30.255.254"],
                           "node-port-enable": "true", "vlan-id": "0"}}
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "annotations": {
        "k8s.ovn.org/node-chassis-id": str(uuid.uuid4()),
        "k8s.ovn.org/l3-gateway-config": json.dumps(gateway),
        "k8s.ovn.org/node-mgmt-port-mac-addresses": json.dumps({"default": f"0a:00:00:01:{index // 256:02x}:{index % 256:02x}"}),
        "k8s.ovn.org/node-primary-ifaddr": json.dumps({"ipv4": f"{ip}/16"}),
    }}}


def pod_body(namespace: str, name: str, node: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {"nodeName": node, "automountServiceAccountToken": False,
                     "containers": [{"name": "c", "image": "busybox",
                                     "ports": [{"name": "http", "containerPort": 8080}]}]}}


def create_pod(client: KubeClient, body: dict[str, Any]) -> None:
    for _ in range(400):
        try:
            client.create(PODS, body, namespace=body["metadata"]["namespace"])
            return
        except Exception as exc:  # the namespace's service account may not exist yet
            if "serviceaccount" not in str(exc).lower():
                raise
            time.sleep(0.05)
    raise RuntimeError("service account never appeared")


def policy_spec(index: int, namespace_index: int) -> dict[str, Any]:
    """A typical policy: one app, from a role of the same namespace and clients of a team; DNS egress for half."""
    spec: dict[str, Any] = {
        "podSelector": {"matchLabels": {"app": f"app-{index % APPS}"}},
        "ingress": [
            {"from": [{"podSelector": {"matchLabels": {"role": f"role-{index % ROLES}"}}}],
             "ports": [{"protocol": "TCP", "port": 80}, {"protocol": "TCP", "port": 443}]},
            {"from": [{"namespaceSelector": {"matchLabels": {"team": f"team-{(namespace_index + 1) % TEAMS}"}},
                       "podSelector": {"matchLabels": {"role": "role-0"}}}],
             "ports": [{"protocol": "TCP", "port": "http"}]},
        ],
    }
    if index % 2 == 0:
        spec["egress"] = [{"to": [{"namespaceSelector": {"matchLabels": {"team": "team-0"}},
                                   "podSelector": {"matchLabels": {"app": "app-0"}}}],
                           "ports": [{"protocol": "UDP", "port": 53}]}]
    return spec


@contextmanager
def cluster(workdir: Path) -> Iterator[tuple[KubeControlPlane, OvnCentral]]:
    plane = KubeControlPlane(workdir / "kube", scheduler=False, controllers="serviceaccount")
    central = OvnCentral(workdir / "ovn")
    plane.start()
    try:
        central.start()
        try:
            yield plane, central
        finally:
            central.destroy()
    finally:
        plane.stop()


def populate(client: KubeClient, scale: Scale, namespaces: list[str], process: ControllerProcess) -> None:
    nodes = [f"bench-{i}" for i in range(scale.nodes)]
    for index, node in enumerate(nodes):
        client.create(NODES, node_body(node, index))
    for index, namespace in enumerate(namespaces):
        client.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {
            "name": namespace, "labels": {"team": f"team-{index % TEAMS}"}}})
    bodies = []
    for ns_index, namespace in enumerate(namespaces):
        for i in range(scale.pods_per_namespace):
            node = nodes[(ns_index * scale.pods_per_namespace + i) % len(nodes)]
            bodies.append(pod_body(namespace, f"p{i}", node, {"app": f"app-{i % APPS}", "role": f"role-{i % ROLES}"}))
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda b: create_pod(client, b), bodies))
    for ns_index, namespace in enumerate(namespaces):
        for j in range(scale.policies_per_namespace):
            client.create(NETWORKPOLICIES, {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                                            "metadata": {"name": f"np{j}", "namespace": namespace},
                                            "spec": policy_spec(j, ns_index)}, namespace=namespace)
    assert process.runner is not None
    deadline = time.monotonic() + 600
    while not all_annotated(client, namespaces, scale.pods):
        if time.monotonic() > deadline:
            raise RuntimeError("pods were not annotated in time")
        time.sleep(0.5)
    if not process.runner.wait_idle(600, settle=1.0):
        raise RuntimeError("controller did not settle")


def all_annotated(client: KubeClient, namespaces: list[str], count: int) -> bool:
    done = 0
    for namespace in namespaces:
        items, _ = client.list(PODS, namespace=namespace)
        done += sum(1 for p in items if "k8s.ovn.org/pod-networks" in (p["metadata"].get("annotations") or {}))
    return done >= count


# -- the baseline: bare ovsdbapp ---------------------------------------------------


class Baseline:
    """Bare ovsdbapp on its own connection: the same rows, one transaction each."""

    def __init__(self, remote: str) -> None:
        idl = ovsdbapp_connection.OvsdbIdl.from_server(remote, "OVN_Northbound")
        api_class = type("BenchNbApi", (nb_impl.OvnNbApiIdlImpl,), {"_ovsdb_connection": None})
        self.api = api_class(ovsdbapp_connection.Connection(idl, timeout=60))

    def policy(self, name: str, ports: list[Any], acls: list[dict[str, Any]]) -> float:
        started = time.perf_counter()
        with self.api.transaction(check_error=True) as txn:
            created = [txn.add(self.api.db_create("ACL", **acl)) for acl in acls]
            txn.add(self.api.pg_add(name, ports=ports, acls=created, external_ids={"bench": "baseline"}))
        return time.perf_counter() - started

    def copy_sets(self, sets: dict[str, list[str]]) -> None:
        with self.api.transaction(check_error=True) as txn:
            for name, addresses in sets.items():
                txn.add(self.api.address_set_add(f"base{name}", addresses=addresses, may_exist=True))

    def add_address(self, names: list[str], ip: str) -> float:
        started = time.perf_counter()
        with self.api.transaction(check_error=True) as txn:
            for name in names:
                txn.add(self.api.address_set_add_addresses(f"base{name}", [ip]))
        return time.perf_counter() - started


def policy_rows(process: ControllerProcess, pg_name: str) -> tuple[list[Any], list[dict[str, Any]]]:
    """The committed port group's ports (uuids) and ACL columns, read from the controller's IDL."""
    assert process.ctx is not None

    def read(idl: Any) -> tuple[list[Any], list[dict[str, Any]]]:
        row = find_one(idl, Match.of("Port_Group", name=pg_name))
        assert row is not None
        acls = [{"name": a.name, "direction": a.direction, "priority": a.priority, "match": a.match,
                 "action": a.action, "log": a.log, "options": dict(a.options),
                 "external_ids": {**a.external_ids, "bench": "baseline"}} for a in row.acls]
        return [p.uuid for p in row.ports], acls

    result: tuple[list[Any], list[dict[str, Any]]] = process.ctx.nb.reader.read(read)
    return result


def address_set_names(process: ControllerProcess) -> dict[str, tuple[str, list[str]]]:
    """PodSelector address sets: k8s.ovn.org/name -> (row name, addresses)."""
    assert process.ctx is not None

    def read(idl: Any) -> dict[str, tuple[str, list[str]]]:
        return {r.external_ids["k8s.ovn.org/name"]: (r.name, list(r.addresses))
                for r in idl.tables["Address_Set"].rows.values()
                if r.external_ids.get("k8s.ovn.org/owner-type") == "PodSelector"}

    result: dict[str, tuple[str, list[str]]] = process.ctx.nb.reader.read(read)
    return result


# -- measurements ---------------------------------------------------------------------


def measure_policies(client: KubeClient, process: ControllerProcess, log: CommitLog, base: Baseline,
                     namespaces: list[str], samples: int, rng: random.Random) -> tuple[list[float], list[float]]:
    from ovnk.core.builtin.netpol import nb as netpol_nb

    ours, baseline = [], []
    for k in range(samples):
        ns_index = rng.randrange(len(namespaces))
        namespace, name = namespaces[ns_index], f"bench-{k}"
        body = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": name, "namespace": namespace}, "spec": policy_spec(k, ns_index)}
        started = time.monotonic()
        client.create(NETWORKPOLICIES, body, namespace=namespace)
        committed = log.wait(lambda key=f"{namespace}/{name}": log.policies.get(key))
        ours.append(committed - started)
        pg_name, _ = netpol_nb.policy_port_group(process.ctx.controller_name, namespace, name)  # type: ignore[union-attr]
        ports, acls = policy_rows(process, pg_name)
        baseline.append(base.policy(f"base-{namespace}-{name}", ports, acls))
        time.sleep(0.05)
    return ours, baseline


def measure_pods(client: KubeClient, process: ControllerProcess, log: CommitLog, base: Baseline,
                 namespaces: list[str], samples: int, rng: random.Random,
                 ) -> tuple[list[float], list[float], list[float]]:
    """(create -> membership, IP annotation seen -> membership, baseline) per sample."""
    assert process.ctx is not None
    sets = address_set_names(process)
    log.set_keys = {row_name: key for key, (row_name, _) in sets.items()}
    base.copy_sets({row_name: addresses for row_name, addresses in sets.values()})
    pods = process.ctx.cache(PODS)
    nodes = sorted(process.ctx.cache(NODES).keys())
    ours, after_ip, baseline = [], [], []
    for k in range(samples):
        ns_index = rng.randrange(len(namespaces))
        namespace = namespaces[ns_index]
        # Role 0 and app 0: peers of the same-namespace role set, of team namespace sets and of the DNS-like egress.
        labels = {"app": "app-0", "role": "role-0"}
        expected = [key for key in sets if key.startswith(f"{namespace}_") and "role: role-0," in key]
        expected += [key for key in sets if key.startswith("LS{") and f"team: team-{ns_index % TEAMS}," in key]
        started = time.monotonic()
        create_pod(client, pod_body(namespace, f"bench-pod-{k}", nodes[k % len(nodes)], labels))
        ip = wait_ip(pods, f"{namespace}/bench-pod-{k}")
        ip_seen = time.monotonic()

        def done(ip: str = ip, keys: list[str] = expected, since: float = started) -> float | None:
            times = []
            for key in keys:
                first = next((t for t, k2, addrs in log.sets if k2 == key and t >= since and ip in addrs), None)
                if first is None:
                    return None
                times.append(first)
            return max(times) if times else since
        finished = log.wait(done)
        ours.append(finished - started)
        after_ip.append(max(0.0, finished - ip_seen))
        # The rest of the pod's event (its groups, the address-set controller's now empty pass) must
        # not share the NB server with the baseline's transaction.
        assert process.runner is not None
        process.runner.wait_idle(30, settle=0.05)
        baseline.append(base.add_address([sets[key][0] for key in expected], ip))
        time.sleep(0.05)
    return ours, after_ip, baseline


def wait_ip(pods: Any, key: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pod = pods.get(key)
        raw = ((pod or {}).get("metadata", {}).get("annotations") or {}).get("k8s.ovn.org/pod-networks")
        if raw:
            return str(json.loads(raw)["default"]["ip_addresses"][0].split("/")[0])
        time.sleep(0.002)
    raise RuntimeError(f"pod {key} got no IP")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def stats_ms(values: list[float]) -> dict[str, float]:
    return {"p50": round(statistics.median(values) * 1000, 2), "p99": round(percentile(values, 0.99) * 1000, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="200 pods, 40 policies, 20 samples (under a minute)")
    args = parser.parse_args(argv)
    scale = QUICK if args.quick else FULL
    rng = random.Random(42)
    namespaces = [f"bench-ns-{i}" for i in range(scale.namespaces)]
    with tempfile.TemporaryDirectory(prefix="ovnk-bench-netpol-") as tmp, cluster(Path(tmp)) as (plane, central):
        inputs = ConfigInputs(env={}, flags={"kubeconfig": str(plane.kubeconfig), "nb_address": central.nb_address,
                                             "sb_address": central.sb_address},
                              assignments=["controller.leader-election=false", "controller.metrics-bind-address=",
                                           "controller.workers=4"])
        runtime = bootstrap(inputs)
        log = CommitLog()
        runtime.pm.register(log, name="bench.commit-log")
        process = ControllerProcess(runtime).start()
        try:
            with KubeClient(kubeconfig=str(plane.kubeconfig), qps=2000) as client:
                started = time.monotonic()
                populate(client, scale, namespaces, process)
                print(f"set up {scale.nodes} nodes, {scale.pods} pods, {scale.policies} policies in "
                      f"{time.monotonic() - started:.1f}s", file=sys.stderr)
                base = Baseline(central.nb_address)
                log.recording = True
                policy_ours, policy_base = measure_policies(client, process, log, base, namespaces, scale.samples, rng)
                pod_ours, pod_after_ip, pod_base = measure_pods(client, process, log, base, namespaces, scale.samples, rng)
        finally:
            process.stop()
            runtime.shutdown()

    rows = [("policy create -> ACLs committed", policy_ours, policy_base),
            ("pod add -> address-set membership", pod_ours, pod_base),
            ("  of which: IP annotated -> membership", pod_after_ip, pod_base)]
    print(f"\nNetworkPolicy latency with {scale.pods} pods and {scale.policies} policies in place "
          f"({scale.samples} samples each, one at a time)")
    print(f"{'measure':<36}{'p50 ms':>9}{'p99 ms':>9}{'base p50':>10}{'base p99':>10}{'x base p50':>12}")
    for label, ours, base_values in rows:
        o, b = stats_ms(ours), stats_ms(base_values)
        print(f"{label:<36}{o['p50']:>9.1f}{o['p99']:>9.1f}{b['p50']:>10.1f}{b['p99']:>10.1f}"
              f"{o['p50'] / b['p50']:>11.1f}x")
    print("(ours: Kubernetes API create -> commit of the reconcile's NB transaction; a pod add includes\n"
          " core's IP allocation and annotation patch, the last row starts when the cache has the pod's IP;\n"
          " baseline: bare ovsdbapp writing the same rows in one transaction)")
    policy_stats, pod_stats = stats_ms(policy_ours), stats_ms(pod_ours)
    policy_base_stats, pod_base_stats = stats_ms(policy_base), stats_ms(pod_base)
    result = {
        "benchmark": "netpol",
        "quick": args.quick,
        "pods": scale.pods,
        "policies": scale.policies,
        "samples": scale.samples,
        "unit": "ms",
        "ours": {"policy_to_acls": policy_stats, "pod_to_address_set": pod_stats,
                 "pod_ip_to_address_set": stats_ms(pod_after_ip)},
        "baseline": {"policy_rows_ovsdbapp": policy_base_stats, "pod_address_ovsdbapp": pod_base_stats},
        "ratio": {"policy_p50": round(policy_stats["p50"] / policy_base_stats["p50"], 2),
                  "policy_p99": round(policy_stats["p99"] / policy_base_stats["p99"], 2),
                  "pod_p50": round(pod_stats["p50"] / pod_base_stats["p50"], 2),
                  "pod_p99": round(pod_stats["p99"] / pod_base_stats["p99"], 2)},
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
