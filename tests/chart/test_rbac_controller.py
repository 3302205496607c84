"""The controller under the chart's RBAC only, against the real API server and NB: no 403.

The chart's controller ClusterRole and Role (rendered by helm with two plugins enabled, one of
them with a CRD) are bound to a user of their own; the controller runs in this process with
that user's certificate and the chart's controller settings (leader election on the chart's
Lease, ``install-crds = false``), translates a node and a pod, and must never be refused.
The same check runs on a chart-deployed sandbox in tests/e2e/test_chart_deploy.py (minutes,
``make chart-e2e``); this one takes seconds and runs in ``make test``.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

import pytest

from ovnk.core.bootstrap import bootstrap
from ovnk.core.config import ConfigInputs
from ovnk.core.controller import ControllerProcess
from ovnk.core.errors import StartupError
from ovnk.core.kube.client import KubeClient
from ovnk.core.kube.resources import LEASES
from tests.functional.topology.conftest import ClusterEnv

from .conftest import render

pytestmark = pytest.mark.kube

PLUGINS = ("multicast", "egressfirewall")
FORBIDDEN = re.compile(r"\b403\b|forbidden", re.IGNORECASE)


def _controller_rbac(namespace: str, user: str) -> tuple[list[dict[str, Any]], str, list[dict[str, Any]]]:
    """The rendered controller roles, bound to ``user`` (the ClusterRole renamed: it is cluster-wide and
    other tests render the same chart), the CRDs, and the chart's INI [controller] lease name."""
    rendered = render({"plugins": {p: {"enabled": True} for p in PLUGINS}}, namespace=namespace,
                      release=f"r{uuid.uuid4().hex[:6]}")
    cluster_role = rendered.one("ClusterRole", "-controller")
    role = rendered.one("Role", "-controller")
    cluster_role["metadata"]["name"] = f"{namespace}-controller"
    docs: list[dict[str, Any]] = [cluster_role, role]
    docs.append({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                 "metadata": {"name": f"{namespace}-controller"},
                 "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                             "name": cluster_role["metadata"]["name"]},
                 "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]})
    docs.append({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                 "metadata": {"name": "controller", "namespace": namespace},
                 "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                             "name": role["metadata"]["name"]},
                 "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]})
    ini = rendered.ini()["controller"]
    assert ini["install-crds"] == "false"
    return docs, ini["lease-name"], rendered.of_kind("CustomResourceDefinition")


def test_the_controller_runs_under_the_charts_roles_without_a_403(
    kube_cp: Any, ovn_central: Any, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    import yaml

    user = f"ovnk-rbac-{namespace}"
    docs, lease_name, crds = _controller_rbac(namespace, user)
    assert [c["metadata"]["name"] for c in crds] == ["egressfirewalls.k8s.ovn.org"]
    kube_cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(crds[0]))  # what helm installs before the pods start
    kube_cp.kubectl("wait", "--for=condition=Established", "crd/egressfirewalls.k8s.ovn.org", "--timeout=60s")
    kube_cp.kubectl("apply", "-f", "-", input="\n---\n".join(yaml.safe_dump(d) for d in docs))
    identity = kube_cp.identity_kubeconfig(user)
    env = ClusterEnv(kube_cp, ovn_central)
    node = f"rbac-{uuid.uuid4().hex[:6]}"
    inputs = ConfigInputs(
        env={},
        flags={"kubeconfig": str(identity), "nb_address": ovn_central.nb_address,
               "sb_address": ovn_central.sb_address},
        assignments=[f"plugins.enabled={','.join(PLUGINS)}", "controller.install-crds=false",
                     "controller.leader-election=true", f"controller.lease-namespace={namespace}",
                     f"controller.lease-name={lease_name}", "controller.metrics-bind-address=",
                     "controller.e2e-timestamp-interval=5"],
    )
    caplog.set_level(logging.INFO)
    process = ControllerProcess(bootstrap(inputs)).start()
    try:
        env.create_node(node, 0)
        env.create_pod(namespace, "p", node)
        deadline = time.monotonic() + 90
        while True:
            pod = {p["metadata"]["name"]: p for p in env.pods(namespace)}["p"]
            if "k8s.ovn.org/pod-networks" in (pod["metadata"].get("annotations") or {}):
                break
            assert time.monotonic() < deadline, "the pod was never annotated under the chart's roles"
            time.sleep(0.2)
        lease = KubeClient(kubeconfig=str(kube_cp.kubeconfig)).get(LEASES, lease_name, namespace=namespace)
        assert lease is not None and lease["spec"]["holderIdentity"]
        assert process.runner is not None and process.runner.wait_idle(60, settle=0.5)
    finally:
        process.stop()
        kube_cp.kubectl("delete", "node", node, "--wait=false", check=False)
        kube_cp.kubectl("delete", "clusterrolebinding,clusterrole", f"{namespace}-controller", check=False)
    refused = [r.getMessage() for r in caplog.records if FORBIDDEN.search(r.getMessage())]
    assert not refused, refused[:5]
    # The log is real: the controller said it waited for nothing and led.
    assert any("CRD" in r.getMessage() or "lead" in r.getMessage().lower() for r in caplog.records)


def test_without_the_crds_the_controller_says_which_are_missing(
    kube_cp: Any, ovn_central: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """install-crds = false and a CRD nobody installed: a start-up error naming it (shortened wait)."""
    from ovnk.core import controller as controller_module

    inputs = ConfigInputs(env={}, flags={"kubeconfig": str(kube_cp.kubeconfig), "nb_address": ovn_central.nb_address,
                                         "sb_address": ovn_central.sb_address},
                          assignments=["plugins.enabled=egressip", "controller.install-crds=false",
                                       "controller.leader-election=false", "controller.metrics-bind-address="])
    served = KubeClient(kubeconfig=str(kube_cp.kubeconfig)).serves("k8s.ovn.org", "v1", "egressips")
    if served:
        pytest.skip("another test installed the EgressIP CRD on this session's API server")
    monkeypatch.setattr(controller_module, "CRD_WAIT_TIMEOUT", 2.0)
    with pytest.raises(StartupError, match=r"egressips\.k8s\.ovn\.org \(v1\).*install the CRDs"):
        ControllerProcess(bootstrap(inputs)).start()
