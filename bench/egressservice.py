"""EgressService: host failover seen from outside, against a baseline in the same run.

A 2-node sandbox with the plugin on and real packets to the sandbox's outside
host. An endpoint pod sends a UDP datagram every 50 ms to an ovnk-echo server
outside, which answers with the source address it saw. The bench plays the
load-balancer controller: it writes the Service's ingress IP and, whenever
``status.host`` changes, routes the ingress IP (/32) via the new host in the
outside host's namespace (MetalLB's announcement; its reaction time counts).

  - failover: the host node loses the label ``nodeSelector`` asks for ->
    the outside host sees the ingress IP again (through the other node);
  - baseline, same run: a new EgressService is created -> the outside host
    sees the ingress IP (programming the path once, which a failover pays too).
  Goal: failover p50 <= 2 s.

``--quick``: 2 rounds; full: 5. The last line is one JSON object.
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
from pathlib import Path
from typing import Any

from ovnk.core.kube.client import KubeClient
from ovnk.core.kube.resources import SERVICES
from ovnk.plugins.egressservice.controller import EGRESSSERVICES

HOST_LABEL = "bench-egress-host"
NS = "bench-es"


def run_failover(work: Path, *, rounds: int) -> dict[str, Any]:
    from ovnk_lab.hostnet import netns_path
    from ovnk_lab.images import ECHO_IN_IMAGE
    from ovnk_lab.images import build_echo_binary
    from ovnk_lab.paths import system_bin
    from ovnk_lab.sandbox import Sandbox
    from ovnk_lab.sandbox import SandboxOptions
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: ``tests`` helpers
    from tests.e2e.support import free_underlay_subnet

    box = Sandbox(work / "sandbox", prefix="besv", subnet=free_underlay_subnet())
    box.up(SandboxOptions(nodes=2, plugins=("egressservice",)))
    kubectl = ["/var/cache/ovnk/tools/bin/kubectl", f"--kubeconfig={box.kubeconfig}"]
    client = KubeClient(kubeconfig=str(box.kubeconfig))
    ext = box.cluster.underlay.ext_netns
    subnet = ipaddress.ip_network(box.cluster.underlay.subnet)
    outside = str(subnet.network_address + 254)
    ingress = str(subnet.network_address + 210)
    node_ips = {n.name: n.ip for n in box.cluster.nodes}
    port = 9556
    server = subprocess.Popen([system_bin("nsenter"), f"--net={netns_path(ext)}", str(build_echo_binary()),
                               f"{port}/udp"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stop = threading.Event()
    try:
        n1, n2 = (n.name for n in box.cluster.nodes)

        def k(*args: str, input: str | None = None) -> str:
            return subprocess.run([*kubectl, *args], input=input, capture_output=True, text=True, check=True).stdout

        def host() -> str:
            obj = client.get(EGRESSSERVICES, "web", namespace=NS) or {}
            return str((obj.get("status") or {}).get("host") or "")

        # The load-balancer stand-in: follow status.host with the route to the ingress IP.
        announced_at: list[tuple[float, str]] = []

        def announce() -> None:
            announced = ""
            while not stop.is_set():
                try:
                    now = host()
                except Exception:  # a transient API error: ask again next time
                    now = ""
                if now and now != announced:
                    subprocess.run([system_bin("nsenter"), f"--net={netns_path(ext)}", "ip", "route", "replace",
                                    f"{ingress}/32", "via", node_ips[now]], check=True)
                    announced = now
                    announced_at.append((time.monotonic(), now))
                time.sleep(0.05)

        def announced_since(since: float, node: str, timeout: float = 60) -> float:
            deadline = since + timeout
            while time.monotonic() < deadline:
                for when, where in list(announced_at):
                    if when > since and where == node:
                        return when
                time.sleep(0.02)
            raise TimeoutError(f"the ingress IP was not announced from {node} within {timeout}s")

        k("create", "namespace", NS)
        k("label", "node", n1, n2, f"{HOST_LABEL}=yes", "--overwrite")
        k("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "src", "namespace": NS, "labels": {"app": "web"}},
             "spec": {"nodeName": n2, "terminationGracePeriodSeconds": 1, "containers": [{
                 "name": "c", "image": "ovnk-test/echo", "imagePullPolicy": "Never", "args": ["8080/tcp"]}]}},
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": NS},
             "spec": {"type": "LoadBalancer", "selector": {"app": "web"},
                      "ports": [{"name": "echo", "port": 8080, "targetPort": 8080, "protocol": "TCP"}]}}]}))
        k("-n", NS, "wait", "--for=condition=Ready", "pod/src", "--timeout=120s")
        client.patch(SERVICES, "web", {"status": {"loadBalancer": {"ingress": [{"ip": ingress}]}}}, namespace=NS,
                     subresource="status")
        threading.Thread(target=announce, daemon=True).start()
        probe = subprocess.Popen(
            [*kubectl, "-n", NS, "exec", "src", "--", "sh", "-c",
             f"while true; do echo \"$(date +%s.%N) $({ECHO_IN_IMAGE} send udp {outside} {port} clientip 0.3)\"; "
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

        def egress_service() -> None:
            k("apply", "-f", "-", input=json.dumps({
                "apiVersion": "k8s.ovn.org/v1", "kind": "EgressService", "metadata": {"name": "web", "namespace": NS},
                "spec": {"sourceIPBy": "LoadBalancerIP", "nodeSelector": {"matchLabels": {HOST_LABEL: "yes"}}}}))

        create_times, failover_times = [], []
        for round_ in range(rounds):
            k("label", "node", n1, n2, f"{HOST_LABEL}=yes", "--overwrite")
            since = time.monotonic()
            egress_service()
            create_times.append(first_seen(ingress, since))
            now = host()
            other = n2 if now == n1 else n1
            since = time.monotonic()
            k("label", "node", now, f"{HOST_LABEL}-")
            # Until the route moves, replies still reach the old host (which still SNATs): only a reply
            # after the route points at the new host proves the new path, so count from there.
            switched = announced_since(since, other)
            failover_times.append(switched - since + first_seen(ingress, switched))
            k("-n", NS, "delete", "egressservice", "web")
            time.sleep(1.0)
            print(f"round {round_ + 1}: create {create_times[-1]:.2f} s, failover {failover_times[-1]:.2f} s",
                  flush=True)
        probe.terminate()
        return {"rounds": rounds, "create_p50_s": round(statistics.median(create_times), 2),
                "failover_p50_s": round(statistics.median(failover_times), 2),
                "failover_max_s": round(max(failover_times), 2),
                "failover_ratio": round(statistics.median(failover_times) / statistics.median(create_times), 2),
                "goal_failover_p50_le_2s": statistics.median(failover_times) <= 2.0}
    finally:
        stop.set()
        server.terminate()
        box.down()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds instead of 5")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-es-", dir="/var/tmp") as tmp:
        result = run_failover(Path(tmp), rounds=2 if args.quick else 5)
    print(json.dumps({"benchmark": "egressservice", **result}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
