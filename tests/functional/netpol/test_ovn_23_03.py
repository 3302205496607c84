"""NetworkPolicy on OVN 23.03, whose NB schema has no ACL ``tier`` column (Debian 12's packages).

The test bed runs a newer OVN by default (docs/testbed.md), where every NetworkPolicy
ACL goes to tier 2. This module keeps the product's fallback from rotting: a controller
against an OVN central of the legacy installation (:func:`ovnk_lab.paths.legacy_install`:
Debian 12's ovn-central 23.03, or ``$OVNK_OVN_LEGACY_PREFIX``) writes the same ACLs
without a tier, priorities alone order them, and ``ovn-trace`` of that same installation
gives the verdicts Kubernetes expects. Where no such OVN exists (a Debian 13 machine,
unless ``OVNK_OVN_LEGACY_PREFIX`` names one) the module is skipped, saying so.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ovnk_lab import paths
from ovnk_lab.kube import KubeControlPlane
from tests.functional.netpol.conftest import NetpolCluster
from tests.functional.netpol.conftest import netpol_cluster
from tests.functional.netpol.probes import Probe
from tests.functional.netpol.probes import TraceProber
from tests.functional.netpol.probes import assert_matrix
from tests.functional.netpol.probes import probes

LEGACY = paths.legacy_install()

pytestmark = [
    pytest.mark.kube, pytest.mark.ovn, pytest.mark.slow,
    pytest.mark.skipif(LEGACY is None, reason=(
        "no OVN without ACL tiers here (Debian 12's ovn-central 23.03, or a prefix in "
        f"${paths.LEGACY_PREFIX_ENV}): the fallback for old NB schemas is not exercised")),
]

OWNERS = ("NetworkPolicy", "NetpolNamespace", "NetpolDefault", "NetpolNode")
TCP80 = [("tcp", 80)]


@pytest.fixture(scope="module")
def cluster(module_kube: KubeControlPlane, lab_dir: Path) -> Iterator[NetpolCluster]:
    assert LEGACY is not None
    with netpol_cluster(module_kube, lab_dir, install=LEGACY) as made:
        yield made


def test_the_central_and_the_controller_see_a_schema_without_tiers(cluster: NetpolCluster) -> None:
    central = cluster.central
    assert central.install == LEGACY and not central.install.acl_tiers
    version = subprocess.run([central.install.bin("ovsdb-client"), "get-schema-version", central.nb_unix,
                              "OVN_Northbound"], capture_output=True, text=True, timeout=30, check=True).stdout
    # OVN 23.03's NB schema is 7.0.x; ACL tiers came with 7.1 (OVN 23.06).
    assert version.strip().startswith("7.0."), version
    process = cluster.env.process
    assert process is not None and process.ctx is not None
    assert process.ctx.nb.has_column("ACL", "priority") and not process.ctx.nb.has_column("ACL", "tier")


def test_policies_without_tiers_give_kubernetes_verdicts(cluster: NetpolCluster) -> None:
    blue = cluster.namespace("legacy-blue", labels={"team": "blue"})
    red = cluster.namespace("legacy-red", labels={"team": "red"})
    cluster.pod(blue, "a1", node="np-a", labels={"app": "web"})
    cluster.pod(blue, "a2", node="np-b", labels={"app": "db"})
    cluster.pod(red, "b1", node="np-a", labels={"app": "client"})
    cluster.pod(red, "b2", node="np-b", labels={"app": "other"})
    pods = {p.label: p for ns, count in ((blue, 2), (red, 2)) for p in cluster.pods(ns, count).values()}
    web, b1 = f"{blue}/a1", f"{red}/b1"
    # Ingress into blue's web pod only from red's clients; blue's pods may send only to blue and TCP 80.
    cluster.policy(blue, "web", {"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"from": [
        {"namespaceSelector": {"matchLabels": {"team": "red"}}, "podSelector": {"matchLabels": {"app": "client"}}}]}]})
    cluster.policy(blue, "egress", {"podSelector": {}, "policyTypes": ["Egress"], "egress": [
        {"to": [{"namespaceSelector": {"matchLabels": {"team": "blue"}}}], "ports": [{"port": 80}]}]})
    cluster.settle()

    acls = [acl for owner in OWNERS for acl in cluster.owned("ACL", owner)]
    kinds = {acl["external_ids"]["k8s.ovn.org/owner-type"] for acl in acls}
    assert kinds == set(OWNERS), kinds
    for acl in acls:
        assert "tier" not in acl, acl["external_ids"]["k8s.ovn.org/id"]
    # Without tiers, priorities order default deny (1000) below the allows (1001).
    assert {(acl["priority"], acl["action"]) for acl in cluster.owned("ACL", "NetpolNamespace")} == {
        (1000, "drop"), (1001, "allow")}

    def expected(probe: Probe) -> bool:
        src, dst = probe.src, probe.dst
        if src.startswith(f"{blue}/") and not dst.startswith(f"{blue}/"):
            return False  # blue's egress reaches blue only
        if dst == web:
            return src == b1  # only red's client gets in
        return True

    cluster.central.wait_northd()
    assert_matrix(TraceProber(cluster, pods), probes(pods, TCP80), expected)
