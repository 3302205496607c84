"""Helpers for the e2e modules that bring up a sandbox of their own (RAFT, HA, TLS).

Each such module runs its own small sandbox (own prefix, underlay subnet and
work dir) next to the session one, so these helpers never assume they are the
only sandbox on the machine.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ovnk_lab import paths
from ovnk_lab.sandbox import Sandbox
from ovnk_lab.sandbox import SandboxOptions
from ovnk_lab.sandbox import copy_logs
from tests.e2e.conftest import Cluster

OWNER_TYPE = "k8s.ovn.org/owner-type"
OWNER_NAME = "k8s.ovn.org/name"
PRIMARY_ID = "k8s.ovn.org/id"
# Tables whose rows we own and where two rows with one primary id would be a duplicate.
OWNED_TABLES = ("Logical_Switch", "Logical_Switch_Port", "Logical_Router", "Logical_Router_Port", "Address_Set",
                "Port_Group", "ACL", "Logical_Router_Static_Route", "Logical_Router_Policy", "NAT", "Load_Balancer")


def free_underlay_subnet() -> str:
    """A 172.29.x.0/24 no host address is in (the session sandbox, other suites and benchmarks may be up)."""
    used = subprocess.run(["ip", "-j", "-4", "addr"], capture_output=True, text=True, check=True).stdout
    taken = {ipaddress.IPv4Address(a["local"]) for link in json.loads(used) for a in link.get("addr_info", [])}
    start = os.getpid() % 200
    for offset in range(250):
        subnet = ipaddress.IPv4Network(f"172.29.{(start + offset) % 250}.0/24")
        if not any(ip in subnet for ip in taken):
            return str(subnet)
    raise RuntimeError("no free 172.29.x.0/24 for a sandbox underlay")


@contextlib.contextmanager
def own_sandbox(tag: str, options: SandboxOptions) -> Iterator[Sandbox]:
    """A sandbox of this module's own (the session fixture's pattern, with a free subnet)."""
    pid = os.getpid()
    workdir = Path(os.environ.get("OVNK_E2E_DIR", "/var/lib/ovnk/sandbox")) / f"e2e-{tag}-{pid}"
    box = Sandbox(workdir, prefix=f"{tag}{pid % 10000}", subnet=free_underlay_subnet())
    started = time.monotonic()
    box.up(options)
    print(f"\nsandbox {box.prefix} ({options}) up in {time.monotonic() - started:.1f}s")
    try:
        yield box
    finally:
        logs = os.environ.get("OVNK_E2E_LOGS")
        try:
            if logs:
                copy_logs(box, Path(logs) / tag)
        finally:
            box.down()


# -- pods -----------------------------------------------------------------------------


def apply_pods(cluster: Cluster, namespace: str, pods: dict[str, str]) -> None:
    """Create busybox pods ``{name: node}`` in one request, without waiting for them."""
    docs = [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace},
             "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1, "automountServiceAccountToken": False,
                      "containers": [{"name": "c", "image": "busybox", "imagePullPolicy": "Never",
                                      "command": ["sleep", "100000"]}]}}
            for name, node in pods.items()]
    cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}))


def delete_pods(cluster: Cluster, namespace: str, names: list[str]) -> None:
    cluster.kubectl("-n", namespace, "delete", "pod", *names, "--wait=false")


def wait_ready(cluster: Cluster, namespace: str, names: list[str], *, timeout: float = 180) -> None:
    cluster.kubectl("-n", namespace, "wait", "--for=condition=Ready", *(f"pod/{n}" for n in names),
                    f"--timeout={int(timeout)}s", timeout=timeout + 30)


def wait_gone(cluster: Cluster, namespace: str, names: list[str], *, timeout: float = 120) -> None:
    cluster.kubectl("-n", namespace, "wait", "--for=delete", *(f"pod/{n}" for n in names),
                    f"--timeout={int(timeout)}s", timeout=timeout + 30, check=False)
    left = set(cluster.kubectl("-n", namespace, "get", "pods", "-o", "name").split()) & {f"pod/{n}" for n in names}
    assert not left, f"pods not deleted within {timeout:.0f}s: {sorted(left)}"


def wait_ports_written(sandbox: Sandbox, namespace: str, at_least: int, *, others: int = 1,
                       timeout: float = 30.0) -> int:
    """How many of ``namespace``'s new pod ports NB holds, once ``at_least`` or after ``timeout`` seconds.

    ``others``: ports of the namespace that were there before (not counted).
    """
    assert sandbox.central is not None
    deadline = time.monotonic() + timeout
    while True:
        written = len(sandbox.central.nbctl("--bare", "--columns=name", "find", "Logical_Switch_Port",
                                            f"external_ids:namespace={namespace}").split()) - others
        if written >= at_least or time.monotonic() >= deadline:
            return written
        time.sleep(0.01)


def live_pods(cluster: Cluster) -> dict[str, dict[str, Any]]:
    """Pods with a pod network that are not finished, by ``namespace/name``."""
    items = json.loads(cluster.kubectl("get", "pods", "-A", "-o", "json"))["items"]
    return {f"{p['metadata']['namespace']}/{p['metadata']['name']}": p for p in items
            if not p["spec"].get("hostNetwork") and p.get("status", {}).get("phase") not in ("Succeeded", "Failed")}


def unreachable(cluster: Cluster, namespace: str, client: str, ips: list[str], *, attempts: int = 5) -> list[str]:
    """The addresses ``client`` cannot ping, after a few rounds (a fresh port may miss its first packet)."""
    remaining = list(ips)
    for _ in range(attempts):
        script = "for ip in " + " ".join(remaining) + "; do ping -c1 -W2 $ip >/dev/null 2>&1 || echo $ip; done"
        out = cluster.exec(namespace, client, "sh", "-c", script, check=False, timeout=60 + 3 * len(remaining))
        remaining = out.split()
        if not remaining:
            return []
        time.sleep(1)
    return remaining


def metric(sandbox: Sandbox, controller: int, name: str) -> float | None:
    """One sample of controller ``controller``'s /metrics (None when absent or not answering)."""
    url = f"http://{sandbox.controller_metrics_address(controller)}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.split(" ")[0] == name:
            return float(line.split()[-1])
    return None


def http_status(sandbox: Sandbox, controller: int, path: str) -> int | None:
    """HTTP status of ``path`` (``/readyz``) on controller ``controller``'s metrics port; None when it does not answer."""
    url = f"http://{sandbox.controller_metrics_address(controller)}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return None


# -- NB -------------------------------------------------------------------------------


def _value(cell: Any) -> Any:
    """An ovn-nbctl ``--format=json`` cell as Python: maps -> dict, sets -> list, uuids -> str."""
    if isinstance(cell, list) and len(cell) == 2 and cell[0] in ("map", "set", "uuid", "named-uuid"):
        kind, data = cell
        if kind == "map":
            return {k: _value(v) for k, v in data}
        if kind == "set":
            return [_value(v) for v in data]
        return data
    return cell


def as_list(value: Any) -> list[Any]:
    """A set column's value as a list (the JSON format writes a one-element set as the bare element)."""
    return value if isinstance(value, list) else [value]


def nb_rows(sandbox: Sandbox, table: str) -> list[dict[str, Any]]:
    """Every row of ``table``, read with ``ovn-nbctl --format=json list`` (from the RAFT leader)."""
    res = subprocess.run([paths.ovs_bin("ovn-nbctl"), f"--db={sandbox.nb_address()}", "--timeout=30",
                          "--format=json", "list", table], capture_output=True, text=True, timeout=60, check=True)
    doc = json.loads(res.stdout)
    return [{heading: _value(cell) for heading, cell in zip(doc["headings"], row, strict=True)} for row in doc["data"]]


def assert_nb_matches_pods(cluster: Cluster) -> None:
    """Nothing stale, nothing missing, nothing twice: pod ports are exactly the live pods, once each."""
    box = cluster.sandbox
    pods = live_pods(cluster)
    ports = [r for r in nb_rows(box, "Logical_Switch_Port") if r["external_ids"].get(OWNER_TYPE) == "Pod"]
    names = Counter(r["name"] for r in ports)
    assert not [n for n, c in names.items() if c > 1], f"duplicate pod ports: {[n for n, c in names.items() if c > 1]}"
    by_owner = {r["external_ids"].get(OWNER_NAME): r for r in ports}
    assert set(by_owner) == set(pods), (f"stale ports {sorted(set(by_owner) - set(pods))}, "
                                        f"missing ports {sorted(set(pods) - set(by_owner))}")
    for key, pod in pods.items():
        port = by_owner[key]
        assert port["name"] == key.replace("/", "_")
        addresses = as_list(port["addresses"])
        assert len(addresses) == 1 and addresses[0].split()[1:] == [pod["status"]["podIP"]], f"{key}: {addresses}"
    # Each pod port hangs off exactly one switch (a retried insert could attach a second copy).
    attached = Counter(uuid for switch in nb_rows(box, "Logical_Switch") for uuid in as_list(switch["ports"]))
    for port in ports:
        assert attached[port["_uuid"]] == 1, f"{port['name']} is in {attached[port['_uuid']]} switches"
    # The namespaces' address sets hold exactly their live pods' IPs.
    ips_by_namespace: dict[str, set[str]] = {}
    for key, pod in pods.items():
        ips_by_namespace.setdefault(key.split("/")[0], set()).add(pod["status"]["podIP"])
    for address_set in nb_rows(box, "Address_Set"):
        ids = address_set["external_ids"]
        if ids.get(OWNER_TYPE) == "Namespace" and ids.get("ip-family") == "v4" and ids.get(OWNER_NAME) in ips_by_namespace:
            assert set(as_list(address_set["addresses"])) == ips_by_namespace[ids[OWNER_NAME]], f"address set of {ids[OWNER_NAME]}"
    for table in OWNED_TABLES:
        ids = Counter(r["external_ids"][PRIMARY_ID] for r in nb_rows(box, table) if PRIMARY_ID in r["external_ids"])
        twice = [i for i, c in ids.items() if c > 1]
        assert not twice, f"{table}: rows with the same {PRIMARY_ID}: {twice}"
