"""Kubernetes' own ``[Conformance]`` network specs (1.20's ``e2e.test``) against ovnk (issue 25).

A 2-node sandbox of this module's own, with cluster DNS (most of these specs reach a service by
name), runs ``ovnk sandbox conformance --quick``'s selection 3 specs at a time: Services
(ClusterIP, NodePort, ExternalName changes, session affinity and its timeout, endpoints),
pod-to-pod and node-to-pod networking over HTTP and UDP, the Ingress/IngressClass APIs and the
endpoints latency spec. Every selected spec must pass except the documented skips
(docs/conformance.md). ``make conformance`` runs the whole ``[sig-network]`` set.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from ovnk_lab import conformance
from ovnk_lab.sandbox import Sandbox
from ovnk_lab.sandbox import SandboxOptions
from tests.e2e.support import own_sandbox

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]

#: The [Conformance] network specs of 1.20 that are not on the skip list (the DNS and the
#: API-server-proxy ones are): fewer passing means a spec was skipped or lost on the way.
EXPECTED_PASSES = 23


@pytest.fixture(scope="module")
def dns_sandbox() -> Iterator[Sandbox]:
    if not conformance.have_suite():
        pytest.fail("Kubernetes' e2e suite is not built: run `make e2e-tools` (hack/build-kube-e2e.sh)")
    with own_sandbox("conf", SandboxOptions(nodes=2, cluster_dns=True)) as box:
        yield box


def test_conformance_network_specs_pass(dns_sandbox: Sandbox, tmp_path: Path) -> None:
    report = Path(os.environ["OVNK_E2E_LOGS"]) / "conformance" if os.environ.get("OVNK_E2E_LOGS") else tmp_path
    options = conformance.RunOptions(focus=conformance.QUICK_FOCUS, parallel=3, report_dir=report, quiet=True,
                                     timeout=900)
    summary = conformance.run(dns_sandbox, options)
    print(f"\n{summary.line()} (report in {report})")
    failures = [f"{r.name}: {conformance.failure_reason(r.message)}" for r in summary.failed]
    assert failures == [], "\n".join(failures)
    assert len(summary.passed) >= EXPECTED_PASSES, (report / "summary.txt").read_text()
    for result in summary.skipped:
        assert conformance.skip_reason(result.name, conformance.SKIPS) is not None, (
            f"{result.name} was skipped but is not on the skip list")
