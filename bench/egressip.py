"""EgressIP: programming 100 objects over 2,000 pods, and failover seen from outside, each against a baseline.

Scale (real API server and NB with ovn-northd, no kubelets): nodes are API
objects (Ready, labelled egress-assignable, their agent's annotations), pods
are bound with ``spec.nodeName`` and annotated by the controller. With every
pod programmed, N EgressIPs (each selecting its own namespace of M pods) are
created at once; we time from the first create until every reroute policy and
SNAT is committed (seen by a separate NB client).
  Baseline: bare ovsdbapp writing the same rows (one reroute policy per pod
  with its nexthop, one SNAT per pod on the egress node's gateway router, the
  served-pods set) from a precomputed list, one transaction per object, the
  controller stopped. Goal: ovnk >= 0.5x the baseline's rate.

Failover (a 2-node sandbox, real packets to the sandbox's outside host):
  - label: the egress node loses its label -> the outside host sees the
    egress IP again (from the other node);
  - agent: the egress node's agent is killed -> the same (health checks);
  - baseline, same run: a new EgressIP is created -> the outside host sees its
    IP (the cost of programming the path once, which every failover pays too).
  Goals: label p50 <= 2 s, agent p50 <= 6 s.

``--quick``: 20 objects x 20 pods, 2 failovers of each kind; full: 100 x 20, 5.
``--part scale|failover`` runs one part. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ovnk.core.bootstrap import bootstrap
from ovnk.core.config import ConfigInputs
from ovnk.core.controller import ControllerProcess
from ovnk.core.kube.client import KubeClient
from ovnk.core.kube.resources import NAMESPACES
from ovnk.core.kube.resources import NODES
from ovnk.core.kube.resources import PODS
from ovnk.core.ovn.connection import OvsdbClient
from ovnk.plugins.egressip import nb
from ovnk.plugins.egressip.selection import EGRESSIPS
from ovnk_lab.kube import KubeControlPlane
from ovnk_lab.ovn import OvnCentral

LABEL = "k8s.ovn.org/egress-assignable"
CONTROLLER = "default-network-controller"


# ---------------------------------------------------------------------------
# scale


def node_body(name: str, index: int) -> dict[str, Any]:
    ip = f"172.30.0.{11 + index}"
    gateway = {"default": {"mode": "shared", "bridge-id": "breth0", "interface-id": f"breth0_{name}",
                           "mac-address": f"0a:00:00:00:00:{index + 1:02x}", "ip-addresses": [f"{ip}/24"],
                           "next-hops": ["172.30.0.254"], "node-port-enable": "true", "vlan-id": "0"}}
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {LABEL: ""}, "annotations": {
        "k8s.ovn.org/node-chassis-id": f"chassis-{index}",
        "k8s.ovn.org/l3-gateway-config": json.dumps(gateway),
        "k8s.ovn.org/node-primary-ifaddr": json.dumps({"ipv4": f"{ip}/24"}),
        "k8s.ovn.org/node-mgmt-port-mac-addresses": json.dumps({"default": f"0a:00:00:00:01:{index + 1:02x}"}),
    }}}


def make_ready(kube: KubeClient, name: str) -> None:
    kube.patch(NODES, name, {"status": {"conditions": [
        {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "bench",
         "lastHeartbeatTime": "2026-01-01T00:00:00Z", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}},
        subresource="status")


class RowCounter:
    """Counts priority-100 router policies and NAT rows as they appear in NB (its own IDL)."""

    def __init__(self, client: OvsdbClient) -> None:
        self.client = client
        self.count = 0
        self.last = 0.0
        self._lock = threading.Lock()
        client.add_row_listener(self._on_row)

    def _on_row(self, event: str, row: Any, _updates: Any) -> None:
        if event != "create":
            return
        table = row._table.name
        if table == "NAT" or (table == "Logical_Router_Policy" and row.priority == 100):
            with self._lock:
                self.count += 1
                self.last = time.monotonic()

    def wait_for(self, count: int, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if self.count >= count:
                    return self.last
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.count}/{count} rows after {timeout}s")
            time.sleep(0.01)

    def reset(self) -> None:
        with self._lock:
            self.count = 0


def run_scale(work: Path, *, objects: int, pods_per_object: int) -> dict[str, Any]:
    plane = KubeControlPlane(work / "kube").start()
    central = OvnCentral(work / "ovn").start()
    try:
        kube = KubeClient(kubeconfig=str(plane.kubeconfig), qps=2000)
        nodes = [f"eip-{i}" for i in range(max(3, -(-objects * pods_per_object // 240)))]
        for i, node in enumerate(nodes):
            kube.create(NODES, node_body(node, i))
            make_ready(kube, node)
        inputs = ConfigInputs(env={}, flags={"kubeconfig": str(plane.kubeconfig), "nb_address": central.nb_address,
                                             "sb_address": central.sb_address},
                              assignments=["controller.leader-election=false", "controller.metrics-bind-address=",
                                           "controller.workers=8", "logging.level=warning",
                                           "plugins.enabled=egressip", "egressip.reachability-total-timeout=0"])
        process = ControllerProcess(bootstrap(inputs)).start()
        assert process.runner is not None
        namespaces = [f"team-{i}" for i in range(objects)]
        for ns in namespaces:
            kube.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace",
                                     "metadata": {"name": ns, "labels": {"team": ns}}})

        def create_pod(args: tuple[str, int, int]) -> None:
            ns, i, spread = args  # spread: the pod's index over all namespaces, so every node gets its share
            for _ in range(100):
                try:
                    kube.create(PODS, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"p{i}", "namespace": ns},
                                       "spec": {"nodeName": nodes[spread % len(nodes)], "automountServiceAccountToken": False,
                                                "containers": [{"name": "c", "image": "busybox"}]}}, namespace=ns)
                    return
                except Exception as exc:
                    if "serviceaccount" not in str(exc).lower():
                        raise
                    time.sleep(0.05)

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(create_pod, [(ns, i, n * pods_per_object + i) for n, ns in enumerate(namespaces)
                                       for i in range(pods_per_object)]))
        process.runner.wait_idle(600, settle=1.0)
        counter_client = OvsdbClient(remote=central.nb_address, schema="OVN_Northbound", name="count",
                                     timeout=60).start()
        counter = RowCounter(counter_client)
        rows = objects * pods_per_object * 2  # one reroute policy and one SNAT per pod

        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda i: kube.create(EGRESSIPS, {
                "apiVersion": "k8s.ovn.org/v1", "kind": "EgressIP", "metadata": {"name": f"eip-{i}"},
                "spec": {"egressIPs": [f"172.30.0.{100 + i}"],
                         "namespaceSelector": {"matchLabels": {"team": namespaces[i]}}}}), range(objects)))
        ours = counter.wait_for(rows, 900) - started
        process.runner.wait_idle(600, settle=1.0)
        # What the controller wrote, as the baseline's precomputed list (routers, IPs, nexthops).
        assert process.ctx is not None
        plan: list[tuple[str, list[tuple[str, str, str, str]]]] = []
        for obj in kube.list(EGRESSIPS)[0]:
            name = obj["metadata"]["name"]
            items = []
            for row in process.ctx.nb.owned(nb.SNAT, columns=("external_ip", "logical_ip")):
                if row.external_ids["k8s.ovn.org/name"].startswith(name + "_"):
                    node = row.external_ids.get("k8s.ovn.org/egress-node", "")
                    facts = process.ctx.topology.node(node)
                    assert facts is not None
                    join = str(facts.join_ip(process.ctx.config.gateway.v4_join_subnet))
                    items.append((row.external_ids["k8s.ovn.org/name"], str(row["logical_ip"]),
                                  str(row["external_ip"]), join + "|" + node))
            plan.append((name, items))
        process.stop()

        # -- baseline: bare ovsdbapp, the same rows, one transaction per object --------------
        # (the controller's rows are deleted first, so NB holds the same amount again)
        raw_cleanup = OvsdbClient(remote=central.nb_address, schema="OVN_Northbound", name="cleanup",
                                  timeout=120).start()
        with raw_cleanup.api.transaction(check_error=True) as txn:
            for node in nodes:
                txn.add(raw_cleanup.api.db_clear("Logical_Router", f"GR_{node}", "nat"))
            txn.add(raw_cleanup.api.db_clear("Logical_Router", "ovn_cluster_router", "policies"))
        raw_cleanup.stop()
        counter.reset()
        raw = OvsdbClient(remote=central.nb_address, schema="OVN_Northbound", name="raw", timeout=120).start()
        api = raw.api
        started = time.monotonic()
        for name, items in plan:
            with api.transaction(check_error=True) as txn:
                txn.add(api.address_set_add(f"bench_{name}", addresses=[ip for _, ip, _, _ in items], may_exist=True))
                for key, pod_ip, egress_ip, hop in items:
                    join, node = hop.split("|")
                    txn.add(api.lr_policy_add("ovn_cluster_router", 100, f"ip4.src == {pod_ip}", "reroute",
                                              nexthops=[join], external_ids={"k8s.ovn.org/name": key}))
                    txn.add(api.lr_nat_add(f"GR_{node}", "snat", egress_ip, pod_ip, may_exist=True))
        base = time.monotonic() - started
        raw.stop()
        counter_client.stop()
        return {"objects": objects, "pods": objects * pods_per_object, "rows": rows,
                "ours_seconds": round(ours, 2), "baseline_seconds": round(base, 2),
                "ours_rows_per_s": round(rows / ours, 1), "baseline_rows_per_s": round(rows / base, 1),
                "ratio": round(base / ours, 2)}
    finally:
        central.destroy()
        plane.stop()


# ---------------------------------------------------------------------------
# failover


def run_failover(work: Path, *, rounds: int) -> dict[str, Any]:
    from ovnk_lab.hostnet import netns_path
    from ovnk_lab.images import build_echo_binary
    from ovnk_lab.paths import system_bin
    from ovnk_lab.sandbox import Sandbox
    from ovnk_lab.sandbox import SandboxOptions

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: ``tests`` helpers
    from tests.e2e.support import free_underlay_subnet

    box = Sandbox(work / "sandbox", prefix="beip", subnet=free_underlay_subnet())
    box.up(SandboxOptions(nodes=2, plugins=("egressip",)))
    kubectl = ["/var/cache/ovnk/tools/bin/kubectl", f"--kubeconfig={box.kubeconfig}"]
    ext = box.cluster.underlay.ext_netns
    subnet = ipaddress.ip_network(box.cluster.underlay.subnet)
    outside = str(subnet.network_address + 254)
    port = 9555
    server = subprocess.Popen([system_bin("nsenter"), f"--net={netns_path(ext)}", str(build_echo_binary()),
                               f"{port}/udp"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        n1, n2 = (n.name for n in box.cluster.nodes)

        def k(*args: str, input: str | None = None) -> str:
            return subprocess.run([*kubectl, *args], input=input, capture_output=True, text=True, check=True).stdout

        k("create", "namespace", "bench-eip")
        k("label", "namespace", "bench-eip", "bench=eip")
        k("apply", "-f", "-", input=json.dumps({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "src", "namespace": "bench-eip"},
            "spec": {"nodeName": n2, "terminationGracePeriodSeconds": 1, "containers": [{
                "name": "c", "image": "ovnk-test/echo", "imagePullPolicy": "Never", "args": ["8080/tcp"]}]}}))
        k("-n", "bench-eip", "wait", "--for=condition=Ready", "pod/src", "--timeout=120s")
        # One long-lived prober in the pod: a datagram every 50 ms, printing what the outside host saw.
        probe = subprocess.Popen(
            [*kubectl, "-n", "bench-eip", "exec", "src", "--", "sh", "-c",
             f"while true; do echo \"$(date +%s.%N) $(/bin/ovnk-echo send udp {outside} {port} clientip 0.3)\"; "
             "usleep 50000; done"], stdout=subprocess.PIPE, text=True)
        seen: list[tuple[float, str]] = []

        def read() -> None:
            assert probe.stdout is not None
            for line in probe.stdout:
                parts = line.split()
                if len(parts) == 2:
                    seen.append((time.monotonic(), parts[1]))

        threading.Thread(target=read, daemon=True).start()

        def first_seen(address: str, since: float, timeout: float = 60) -> float:
            deadline = since + timeout
            while time.monotonic() < deadline:
                for when, source in list(seen):
                    if when > since and source == address:
                        return when - since
                time.sleep(0.02)
            raise TimeoutError(f"{address} not seen from outside within {timeout}s")

        def eip(name: str, ip: str) -> None:
            k("apply", "-f", "-", input=json.dumps({
                "apiVersion": "k8s.ovn.org/v1", "kind": "EgressIP", "metadata": {"name": name},
                "spec": {"egressIPs": [ip], "namespaceSelector": {"matchLabels": {"bench": "eip"}}}}))

        def holder(name: str) -> str:
            items = json.loads(k("get", "egressip", name, "-o", "json")).get("status", {}).get("items") or []
            return items[0]["node"] if items else ""

        ip = str(subnet.network_address + 120)
        create_times, label_times, agent_times = [], [], []
        # The label failover split in two: trigger -> status names the new node (assignment and NB
        # commit, seen through kubectl polls), and status -> first datagram answered through it.
        label_status_times, label_path_times = [], []
        for round_ in range(rounds):
            # baseline: a fresh object
            k("label", "node", n1, n2, f"{LABEL}=", "--overwrite")
            since = time.monotonic()
            eip("bench", ip)
            create_times.append(first_seen(ip, since))
            # failover by label
            now = holder("bench")
            since = time.monotonic()
            k("label", "node", now, f"{LABEL}-")
            time.sleep(0.1)
            while holder("bench") in ("", now):
                time.sleep(0.02)
            # The old node SNATs until its rows go: count from the trigger to the first datagram sent after
            # the IP moved (status follows the NB transaction), i.e. through the new node.
            moved = time.monotonic()
            label_status_times.append(moved - since)
            label_path_times.append(first_seen(ip, moved))
            label_times.append(label_status_times[-1] + label_path_times[-1])
            # failover by a killed agent
            k("label", "node", now, f"{LABEL}=", "--overwrite")
            now = holder("bench")
            since = time.monotonic()
            box.kill(f"{now}/ovnk-node")
            while holder("bench") in ("", now):
                time.sleep(0.05)
            moved = time.monotonic()
            agent_times.append(moved - since + first_seen(ip, moved))
            box.start_agent(now)
            k("delete", "egressip", "bench")
            time.sleep(1.0)
            print(f"round {round_ + 1}: create {create_times[-1]:.2f} s, label {label_times[-1]:.2f} s "
                  f"(status {label_status_times[-1]:.2f} + path {label_path_times[-1]:.2f}), "
                  f"agent {agent_times[-1]:.2f} s", flush=True)
        probe.terminate()
        return {"rounds": rounds, "create_p50_s": round(statistics.median(create_times), 2),
                "label_p50_s": round(statistics.median(label_times), 2),
                "label_max_s": round(max(label_times), 2),
                "label_status_p50_s": round(statistics.median(label_status_times), 2),
                "label_path_p50_s": round(statistics.median(label_path_times), 2),
                "agent_p50_s": round(statistics.median(agent_times), 2),
                "agent_max_s": round(max(agent_times), 2),
                "label_ratio": round(statistics.median(label_times) / statistics.median(create_times), 2),
                "agent_ratio": round(statistics.median(agent_times) / statistics.median(create_times), 2)}
    finally:
        server.terminate()
        box.down()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--part", choices=("scale", "failover", "all"), default="all")
    args = parser.parse_args()
    objects = 20 if args.quick else 100
    rounds = 2 if args.quick else 5
    result: dict[str, Any] = {"benchmark": "egressip", "quick": args.quick}
    with tempfile.TemporaryDirectory(prefix="ovnk-bench-eip-") as tmp:
        if args.part in ("scale", "all"):
            scale = run_scale(Path(tmp) / "scale", objects=objects, pods_per_object=20)
            result["scale"] = scale
            print(f"\nEgressIP programming: {scale['objects']} objects over {scale['pods']} pods "
                  f"({scale['rows']} reroute policies and SNATs)")
            print(f"{'':<52}{'seconds':>9}{'rows/s':>9}{'x base':>8}")
            print(f"{'baseline: bare ovsdbapp, precomputed rows':<52}{scale['baseline_seconds']:>9.2f}"
                  f"{scale['baseline_rows_per_s']:>9.1f}{1:>7.2f}x")
            print(f"{'ovnk: EgressIPs created -> every row committed':<52}{scale['ours_seconds']:>9.2f}"
                  f"{scale['ours_rows_per_s']:>9.1f}{scale['ratio']:>7.2f}x")
        if args.part in ("failover", "all"):
            fail = run_failover(Path(tmp) / "failover", rounds=rounds)
            result["failover"] = fail
            print(f"\nEgressIP seen again from outside ({fail['rounds']} rounds, p50)")
            print(f"  baseline: a new EgressIP takes effect   {fail['create_p50_s']:.2f} s")
            print(f"  failover by label removal               {fail['label_p50_s']:.2f} s "
                  f"({fail['label_ratio']:.2f}x; goal <= 2 s; status {fail['label_status_p50_s']:.2f} s "
                  f"+ path {fail['label_path_p50_s']:.2f} s)")
            print(f"  failover by a killed agent              {fail['agent_p50_s']:.2f} s "
                  f"({fail['agent_ratio']:.2f}x; goal <= 6 s)")
    result["ratio"] = result.get("scale", {}).get("ratio")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
