"""EgressFirewall at scale: 8,000 CIDR rules, an edit of one of them, and DNS answers that change.

Starts its own control plane (etcd + kube-apiserver + the service-account
controller), an OVN central, a dnsmasq on loopback and an in-process ``ovnk``
controller with the plugin on. Then:

- **create**: from the API create call of an EgressFirewall with 8,000 CIDR rules
  (``--quick``: 2,000) to the commit of its ``EgressFirewall <ns>`` transaction
  (timed by a wrapper of ``ovnk_nb_commit``). Baseline, same run, same NB: bare
  ovsdbapp creating the same 8,000 ACLs in a new port group in one transaction.
  Goal: ours >= 0.5x the baseline's speed.
- **edit**: one rule's CIDR changed; what the commit sent, counted on the wire
  (every ``transact`` request on the controller's NB connection: operations and
  rows). Goal: only what changed (one ACL's ``match``).
- **dns**: the answer of a name with TTL 2 s changes at a random moment; time until
  the name's address set holds the new address. Goal: p50 <= TTL + 1 s.
- **resync**: 1,000 more namespaces (``--quick``: 200) with an EgressFirewall each
  (a CIDR rule, the shared DNS name, a deny); the controller restarts; what the
  restart writes to NB (write operations on the wire, growth of the NB file).
  Goal (plugins.md): nothing.

Run: ``.venv/bin/python bench/egressfirewall.py [--quick]``. The last line of
output is one JSON object with the figures, the baseline and the ratios.
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
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ovs import jsonrpc
from ovsdbapp.backend.ovs_idl import connection as ovsdbapp_connection
from ovsdbapp.schema.ovn_northbound import impl_idl as nb_impl

from ovnk import names
from ovnk.core.bootstrap import bootstrap
from ovnk.core.config import ConfigInputs
from ovnk.core.controller import ControllerProcess
from ovnk.core.hookspecs import hookimpl
from ovnk.core.kube.client import KubeClient
from ovnk.core.kube.resources import NAMESPACES
from ovnk.core.ovn.commands import Match
from ovnk.core.ovn.commands import find_one
from ovnk.core.ovn.txn import NbTxn
from ovnk.plugins.egressfirewall import nb as ef_nb
from ovnk.plugins.egressfirewall.selection import EGRESSFIREWALLS
from ovnk_lab.kube import KubeControlPlane
from ovnk_lab.outside import Dnsmasq
from ovnk_lab.ovn import OvnCentral
from ovnk_lab.procs import free_port

NAMESPACE = "bench-ef"
DNS_NAME = "moving.ovnk.test"
TTL = 2


class CommitLog:
    """Wraps ``ovnk_nb_commit``: when each EgressFirewall transaction committed."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.commits: list[tuple[float, str]] = []

    @hookimpl(wrapper=True)
    def ovnk_nb_commit(self, txn: NbTxn) -> Any:
        outcome = yield
        if outcome == "committed":
            with self.cond:
                self.commits.append((time.monotonic(), txn.reason))
                self.cond.notify_all()
        return outcome

    def wait(self, reason: str, since: float, timeout: float = 300) -> float:
        def found() -> float | None:
            return next((t for t, r in self.commits if r == reason and t >= since), None)
        with self.cond:
            result = self.cond.wait_for(found, timeout)
        if result is None:
            raise RuntimeError(f"no commit of {reason!r} within {timeout}s")
        return float(result)


class WireCount:
    """Counts what ``transact`` requests carry (operations, rows) while ``recording``."""

    def __init__(self) -> None:
        self.recording = False
        self.requests: list[list[dict[str, Any]]] = []
        self._original = jsonrpc.Message.create_request

    def install(self) -> None:
        original = self._original

        def create_request(method: str, params: Any) -> Any:
            if self.recording and method == "transact":
                self.requests.append([op for op in params[1:] if isinstance(op, dict)])
            return original(method, params)

        jsonrpc.Message.create_request = staticmethod(create_request)  # type: ignore[method-assign]

    def uninstall(self) -> None:
        jsonrpc.Message.create_request = staticmethod(self._original)  # type: ignore[method-assign]


def rules(count: int, *, changed: int | None = None) -> list[dict[str, Any]]:
    """``count`` distinct /24 deny rules outside the cluster subnet (rule ``changed`` moved elsewhere)."""
    found = []
    for i in range(count):
        cidr = f"100.{64 + i // 256}.{i % 256}.0/24" if i != changed else "198.18.200.0/24"
        found.append({"type": "Deny", "to": {"cidrSelector": cidr}, "ports": [{"protocol": "TCP", "port": 443}]})
    return found


class Baseline:
    """Bare ovsdbapp on its own connection: the same ACLs in a new port group, one transaction."""

    def __init__(self, remote: str) -> None:
        idl = ovsdbapp_connection.OvsdbIdl.from_server(remote, "OVN_Northbound")
        api_class = type("BenchNbApi", (nb_impl.OvnNbApiIdlImpl,), {"_ovsdb_connection": None})
        self.api = api_class(ovsdbapp_connection.Connection(idl, timeout=300))

    def create(self, name: str, acls: list[dict[str, Any]]) -> float:
        started = time.perf_counter()
        with self.api.transaction(check_error=True) as txn:
            created = [txn.add(self.api.db_create("ACL", **acl)) for acl in acls]
            txn.add(self.api.pg_add(name, acls=created, external_ids={"bench": "baseline"}))
        return time.perf_counter() - started


def committed_acls(process: ControllerProcess, pg_name: str) -> list[dict[str, Any]]:
    assert process.ctx is not None

    def read(idl: Any) -> list[dict[str, Any]]:
        row = find_one(idl, Match.of("Port_Group", name=pg_name))
        assert row is not None
        return [{"name": a.name, "direction": a.direction, "priority": a.priority, "match": a.match,
                 "action": a.action, "log": a.log, "options": dict(a.options),
                 # Same size of external_ids, but owned by no controller of ours: ovnk must not see
                 # the baseline's rows as its own (they would be stale rules of the namespace).
                 "external_ids": {**a.external_ids, "bench": "baseline",
                                  "k8s.ovn.org/owner-controller": "bench-baseline",
                                  "k8s.ovn.org/id": a.external_ids["k8s.ovn.org/id"] + ":baseline"}}
                for a in row.acls]

    result: list[dict[str, Any]] = process.ctx.nb.reader.read(read)
    return result


def dns_addresses(process: ControllerProcess) -> list[str]:
    assert process.ctx is not None
    row = process.ctx.nb.get("Address_Set", name=ef_nb.dns_address_set(process.ctx.controller_name, DNS_NAME, 4)[0],
                             columns=("addresses",))
    return sorted(row["addresses"]) if row is not None else []


@contextmanager
def cluster(workdir: Path) -> Iterator[tuple[KubeControlPlane, OvnCentral, Dnsmasq]]:
    plane = KubeControlPlane(workdir / "kube", scheduler=False, controllers="serviceaccount")
    central = OvnCentral(workdir / "ovn")
    dns = Dnsmasq(workdir / "dns", address="127.0.0.1", port=free_port(), ttl=TTL)
    plane.start()
    try:
        central.start()
        dns.start({DNS_NAME: ["198.18.1.0"]})
        try:
            yield plane, central, dns
        finally:
            dns.stop()
            central.destroy()
    finally:
        plane.stop()


def measure_dns(process: ControllerProcess, dns: Dnsmasq, samples: int, rng: random.Random) -> list[float]:
    latencies = []
    for k in range(1, samples + 1):
        time.sleep(rng.uniform(0, TTL))  # the change lands anywhere in the TTL window
        wanted = f"198.18.1.{k}"
        started = time.monotonic()
        dns.set_hosts({DNS_NAME: [wanted]})
        deadline = started + 10 * TTL
        while dns_addresses(process) != [wanted]:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the set never followed to {wanted}")
            time.sleep(0.01)
        latencies.append(time.monotonic() - started)
    return latencies


def describe(op: dict[str, Any]) -> str:
    """One write operation, short: ``update ACL ['match']``, ``mutate Port_Group acls insert 1``."""
    if op.get("op") == "mutate":
        parts = [f"{column} {mutator} {len(value[1]) if isinstance(value, list) and value[0] == 'set' else 1}"
                 for column, mutator, value in op.get("mutations", [])]
        return f"mutate {op.get('table')} {', '.join(parts)} where {str(op.get('where'))[:80]}"
    return f"{op.get('op')} {op.get('table')} {sorted(op.get('row', {}))}"


def many_firewalls(client: KubeClient, count: int) -> None:
    """``count`` namespaces ``bench-ef-<i>``, each with an EgressFirewall of three rules."""
    def one(i: int) -> None:
        ns = f"bench-ef-{i}"
        client.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        client.create(EGRESSFIREWALLS, {
            "apiVersion": "k8s.ovn.org/v1", "kind": "EgressFirewall", "metadata": {"name": "default", "namespace": ns},
            "spec": {"egress": [{"type": "Allow", "to": {"cidrSelector": f"100.{64 + i // 256}.{i % 256}.0/24"}},
                                {"type": "Allow", "to": {"dnsName": DNS_NAME}},
                                {"type": "Deny", "to": {"cidrSelector": "0.0.0.0/0"}}]}}, namespace=ns)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(count)))


def wait_metric(process: ControllerProcess, name: str, value: float, timeout: float) -> None:
    assert process.ctx is not None
    deadline = time.monotonic() + timeout
    while process.ctx.registry.get_sample_value(name) != value:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} is {process.ctx.registry.get_sample_value(name)}, not {value}")
        time.sleep(0.1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2,000 rules, 5 DNS samples")
    args = parser.parse_args(argv)
    count, samples, resync_count = (2000, 5, 200) if args.quick else (8000, 15, 1000)
    rng = random.Random(42)
    wire = WireCount()
    wire.install()
    with tempfile.TemporaryDirectory(prefix="ovnk-bench-ef-") as tmp, cluster(Path(tmp)) as (plane, central, dns):
        inputs = ConfigInputs(env={}, flags={"kubeconfig": str(plane.kubeconfig), "nb_address": central.nb_address,
                                             "sb_address": central.sb_address},
                              assignments=["controller.leader-election=false", "controller.metrics-bind-address=",
                                           "plugins.enabled=egressfirewall", f"egressfirewall.dns-servers={dns.server}"])
        plane.kubectl("apply", "-f", str(Path(__file__).resolve().parents[1] / "plugins" / "egressfirewall" / "crds"
                                         / "egressfirewalls.yaml"))
        plane.kubectl("wait", "--for=condition=Established", "crd/egressfirewalls.k8s.ovn.org", "--timeout=60s")
        runtime = bootstrap(inputs)
        log = CommitLog()
        runtime.pm.register(log, name="bench.commit-log")
        process = ControllerProcess(runtime).start()
        assert process.ctx is not None and process.runner is not None
        try:
            with KubeClient(kubeconfig=str(plane.kubeconfig), qps=2000) as client:
                client.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
                process.runner.wait_idle(60, settle=0.5)
                body = {"apiVersion": "k8s.ovn.org/v1", "kind": "EgressFirewall",
                        "metadata": {"name": "default", "namespace": NAMESPACE}, "spec": {"egress": rules(count)}}
                started = time.monotonic()
                client.create(EGRESSFIREWALLS, body, namespace=NAMESPACE)
                create_ours = log.wait(f"EgressFirewall {NAMESPACE}", started) - started
                process.runner.wait_idle(300, settle=0.5)
                pg_name, _ = names.namespace_port_group(process.ctx.controller_name, NAMESPACE)
                acls = committed_acls(process, pg_name)
                assert len(acls) == count, f"{len(acls)} ACLs committed, {count} expected"
                create_base = Baseline(central.nb_address).create("bench-baseline", acls)

                wire.recording = True
                started = time.monotonic()
                client.patch(EGRESSFIREWALLS, "default", {"spec": {"egress": rules(count, changed=count // 2)}},
                             namespace=NAMESPACE)
                edit_ours = log.wait(f"EgressFirewall {NAMESPACE}", started) - started
                process.runner.wait_idle(300, settle=0.5)
                wire.recording = False
                ops = [op for request in wire.requests for op in request]
                writes = [op for op in ops if op.get("op") in ("insert", "update", "mutate", "delete")]
                edit_transactions = len(wire.requests)

                body = {"apiVersion": "k8s.ovn.org/v1", "kind": "EgressFirewall",
                        "metadata": {"name": "default", "namespace": "bench-dns"},
                        "spec": {"egress": [{"type": "Allow", "to": {"dnsName": DNS_NAME}}]}}
                client.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench-dns"}})
                client.create(EGRESSFIREWALLS, body, namespace="bench-dns")
                deadline = time.monotonic() + 60
                while dns_addresses(process) != ["198.18.1.0"]:
                    if time.monotonic() > deadline:
                        raise RuntimeError("the DNS set was never filled")
                    time.sleep(0.05)
                dns_latency = measure_dns(process, dns, samples, rng)

                many_firewalls(client, resync_count)
                wait_metric(process, "ovnk_egressfirewall_firewalls", resync_count + 2, 600)
                process.runner.wait_idle(600, settle=1.0)
                process.stop()
                runtime.shutdown()
                central.wait_northd()
                size = central.nb.members[0].db_file.stat().st_size
                wire.requests.clear()
                wire.recording = True
                started = time.monotonic()
                runtime = bootstrap(inputs)
                process = ControllerProcess(runtime).start()
                assert process.runner is not None
                wait_metric(process, "ovnk_egressfirewall_firewalls", resync_count + 2, 600)
                process.runner.wait_idle(600, settle=0.5)
                resync_seconds = time.monotonic() - started - 0.5
                time.sleep(2 * TTL)  # the DNS name is asked again at least once: its unchanged answer writes nothing
                wire.recording = False
                resync_writes = [op for request in wire.requests for op in request
                                 if op.get("op") in ("insert", "update", "mutate", "delete")]
                resync_bytes = central.nb.members[0].db_file.stat().st_size - size
        finally:
            wire.uninstall()
            process.stop()
            runtime.shutdown()

    ratio = create_base / create_ours
    p50 = statistics.median(dns_latency)
    print(f"\nEgressFirewall with {count} CIDR rules, and a DNS name with TTL {TTL} s ({samples} changes)")
    print(f"create -> all ACLs committed: {create_ours:.2f} s; bare ovsdbapp, same ACLs: {create_base:.2f} s "
          f"-> {ratio:.2f}x the baseline's speed (goal >= 0.5x)")
    print(f"edit of one rule -> committed in {edit_ours * 1000:.0f} ms; sent {edit_transactions} transaction(s), "
          f"{len(writes)} write operation(s): {[describe(op) for op in writes]}")
    print(f"DNS answer change -> address set updated: p50 {p50:.2f} s, max {max(dns_latency):.2f} s "
          f"(goal p50 <= TTL + 1 = {TTL + 1} s)")
    print(f"restart with {resync_count + 2} unchanged EgressFirewalls ({3 * resync_count + count + 1} ACLs): "
          f"resync {resync_seconds:.1f} s, {len(resync_writes)} write operation(s), NB file +{resync_bytes} bytes "
          f"(goal: nothing written)")
    result = {
        "benchmark": "egressfirewall", "quick": args.quick, "rules": count, "unit": "s",
        "ours": {"create": round(create_ours, 3), "edit_one_rule": round(edit_ours, 3),
                 "edit_transactions": edit_transactions, "edit_write_operations": len(writes),
                 "dns_follow_p50": round(p50, 3), "dns_follow_max": round(max(dns_latency), 3),
                 "resync_objects": resync_count + 2, "resync_seconds": round(resync_seconds, 2),
                 "resync_write_operations": len(resync_writes), "resync_nb_bytes": resync_bytes},
        "baseline": {"create_ovsdbapp": round(create_base, 3), "dns_ttl": TTL},
        "ratio": {"create_speed_vs_baseline": round(ratio, 2)},
        "goals_met": {"create": ratio >= 0.5, "edit_only_what_changed": len(writes) == 1,
                      "dns_p50": p50 <= TTL + 1, "resync_writes_nothing": not resync_writes and resync_bytes == 0},
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
