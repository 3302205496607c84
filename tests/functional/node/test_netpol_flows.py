"""What a NetworkPolicy costs ovn-controller: OpenFlow rules on br-int and its memory (issue 24, D2).

``ipBlock: {cidr: 0.0.0.0/0, except: [N distinct /32s]}`` once became ``ip4.src == 0.0.0.0/0 &&
ip4.src != {...}``, whose expansion into OpenFlow is exponential in N: 144k flows at N=4, and at
N=8 ovn-controller passed 2 GB and was killed, taking the node's pod network with it. Any
namespace user can write that policy, so the flow count must stay linear in N: here it is counted
on a real node (ovs-vswitchd + ovn-controller) for N = 0, 8 and 64 against a bound.
"""

from __future__ import annotations

import ipaddress
import random
import re
import subprocess
import time
from pathlib import Path

import pytest

from ovnk.core.kube.resources import NETWORKPOLICIES
from ovnk_lab import paths
from ovnk_lab.ovn import ovs_env
from ovnk_lab.ovsnode import NodeLab
from ovnk_lab.ovsnode import OvsNode

from .conftest import wired_pod

pytestmark = [pytest.mark.node, pytest.mark.kube, pytest.mark.ovn, pytest.mark.slow]

EXCEPT_COUNTS = (0, 8, 64)
#: Flows per prefix the except list is cut into, and the prefixes per excepted /32 (at most 32).
#: Measured: two flows per prefix; the bound allows three.
FLOWS_PER_PREFIX = 3
PREFIXES_PER_EXCEPT = 32
#: ovn-controller's resident memory, which stays around 20-40 MB here; past this the test stops it.
RSS_LIMIT_MB = 400
SETTLE_TIMEOUT = 120.0


def br_int_flows(node: OvsNode) -> int:
    out = node.ofctl("dump-aggregate", "br-int")
    found = re.search(r"flow_count=(\d+)", out)
    assert found, out
    return int(found.group(1))


def ovn_controller_rss_mb(node: OvsNode) -> float:
    pid = int((node.run_dir / "ovn-controller.pid").read_text().strip())
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for ovn-controller {pid}")


def wait_hypervisors(lab: NodeLab, node: OvsNode) -> float:
    """Wait until every chassis processed the NB as it is now (``--wait=hv``), watching ovn-controller's
    memory meanwhile: an exponential match takes it to gigabytes within seconds, and on a shared
    machine the test must stop it before the kernel's OOM killer picks something else."""
    assert lab.central is not None
    sync = subprocess.Popen([paths.ovs_bin("ovn-nbctl"), f"--db={lab.central.nb_unix}",
                             f"--timeout={int(SETTLE_TIMEOUT)}", "--wait=hv", "sync"],
                            env=ovs_env(lab.central.workdir), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    peak = 0.0
    try:
        while sync.poll() is None:
            peak = max(peak, ovn_controller_rss_mb(node))
            if peak > RSS_LIMIT_MB:
                node.daemons["ovn-controller"].kill()
                raise AssertionError(f"ovn-controller grew past {RSS_LIMIT_MB} MB ({peak:.0f} MB): stopped it")
            time.sleep(0.1)
    finally:
        if sync.poll() is None:
            sync.kill()
        sync.wait()
    assert sync.returncode == 0, f"ovn-nbctl --wait=hv sync: {sync.stderr.read() if sync.stderr else ''}"
    return max(peak, ovn_controller_rss_mb(node))


def excepted_hosts(count: int) -> list[str]:
    rng = random.Random(count)
    hosts: set[str] = set()
    while len(hosts) < count:
        hosts.add(f"{ipaddress.IPv4Address(rng.randint(1, 2**32 - 2))}/32")
    return sorted(hosts)


def test_ip_block_excepts_cost_flows_linear_in_their_number(lab: NodeLab, node1: OvsNode, ns: str) -> None:
    assert lab.client is not None
    wired_pod(lab, node1, ns, "srv")
    measured: dict[int, tuple[int, float]] = {}
    for count in EXCEPT_COUNTS:
        spec = {"podSelector": {}, "ingress": [{"from": [
            {"ipBlock": {"cidr": "0.0.0.0/0", "except": excepted_hosts(count)}}]}]}
        body = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": "excepts", "namespace": ns}, "spec": spec}
        before = acl_matches(lab, ns)
        current = lab.client.get(NETWORKPOLICIES, "excepts", namespace=ns)
        if current is None:
            lab.client.create(NETWORKPOLICIES, body, namespace=ns)
        else:
            lab.client.replace(NETWORKPOLICIES, {**current, "spec": spec}, namespace=ns)
        # The controller rewrote the ACL for this except list before the hypervisors are waited for.
        deadline = time.monotonic() + 60
        while not acl_matches(lab, ns).strip() or acl_matches(lab, ns) == before:
            assert time.monotonic() < deadline, f"the ACL for {count} excepts was never written"
            time.sleep(0.1)
        rss = wait_hypervisors(lab, node1)
        measured[count] = (br_int_flows(node1), rss)
    base_flows = measured[0][0]
    report = ", ".join(f"N={n}: {f} flows, ovn-controller {r:.0f} MB" for n, (f, r) in measured.items())
    for count, (flows, rss) in measured.items():
        bound = base_flows + FLOWS_PER_PREFIX * PREFIXES_PER_EXCEPT * count
        assert flows <= bound, f"{count} excepts: {flows} flows > {bound} ({report})"
        assert rss < RSS_LIMIT_MB, report
    print(report)


def acl_matches(lab: NodeLab, namespace: str) -> str:
    assert lab.central is not None
    return lab.central.nbctl("--bare", "--columns=match", "find", "ACL",
                             f'external_ids:"k8s.ovn.org/name"="{namespace}:excepts"')
