"""Fixtures shared by the functional tests: a controller against its own control plane and OVN central."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ovnk.core.kube.resources import NAMESPACES
from ovnk.core.kube.resources import NODES
from ovnk_lab.kube import KubeControlPlane
from ovnk_lab.ovn import OvnCentral


@pytest.fixture(scope="module")
def module_kube(lab_dir: Path) -> Iterator[KubeControlPlane]:
    cp = KubeControlPlane(lab_dir / f"kube-{uuid.uuid4().hex[:8]}")
    cp.start()
    yield cp
    cp.stop()


@pytest.fixture
def env(module_kube: KubeControlPlane, lab_dir: Path) -> Iterator[object]:
    from tests.functional.topology.conftest import ClusterEnv

    central = OvnCentral(lab_dir / f"ovn-{uuid.uuid4().hex[:8]}")
    central.start()
    cluster = ClusterEnv(module_kube, central)
    yield cluster
    cluster.stop_controller()
    central.destroy()
    # Leave the shared control plane clean for the next test of the module.
    for node in cluster.client.list(NODES)[0]:
        cluster.client.delete(NODES, node["metadata"]["name"])
    for ns in cluster.client.list(NAMESPACES)[0]:
        if ns["metadata"]["name"].startswith("t-"):
            cluster.client.delete(NAMESPACES, ns["metadata"]["name"])


