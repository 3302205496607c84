"""The node agent under the Helm chart's node role only: it starts, publishes and wires a pod, never
refused; and the role keeps it away from every Node's spec while its annotations go through
``nodes/status`` (what a compromised agent can and cannot do, charts/ovnk/README.md).

The chart's node ClusterRole (``helm template``) is bound to a user of its own; node-1's agent is
restarted with that user's certificate, then back with the lab's admin kubeconfig.
"""

from __future__ import annotations

import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ovnk.core.errors import StartupError
from ovnk.core.kube.client import KubeClient
from ovnk.core.kube.errors import KubeError
from ovnk.core.kube.resources import NODES
from ovnk_lab import paths
from ovnk_lab.ovsnode import NodeLab
from ovnk_lab.ovsnode import OvsNode

from .conftest import AGENT_SETTINGS
from .conftest import node_annotations
from .conftest import restart_agent
from .conftest import wired_pod

CHART = Path(__file__).resolve().parents[3] / "charts" / "ovnk"
REPUBLISHED = "k8s.ovn.org/node-primary-ifaddr"
FORBIDDEN = re.compile(r"forbidden|(?<![,.:])\b403\b", re.IGNORECASE)


def _node_role(user: str) -> list[dict[str, Any]]:
    rendered = subprocess.run([paths.tool_bin("helm"), "template", "ovnk", str(CHART), "--namespace", "ovnk-rbac"],
                              capture_output=True, text=True, check=True, timeout=120).stdout
    [role] = [d for d in yaml.safe_load_all(rendered)
              if d and d["kind"] == "ClusterRole" and d["metadata"]["name"].endswith("-node")]
    role["metadata"] = {"name": user}
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": user},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": user},
               "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]}
    return [role, binding]


@pytest.fixture
def agent_under_chart_role(lab: NodeLab, node1: OvsNode) -> Iterator[tuple[Path, int]]:
    """node-1's agent restarted with the chart's node role only; yields (its kubeconfig, log offset)."""
    assert lab.kube is not None
    user = f"ovnk-node-rbac-{uuid.uuid4().hex[:6]}"
    lab.kube.kubectl("apply", "-f", "-", input="\n---\n".join(yaml.safe_dump(d) for d in _node_role(user)))
    identity = lab.kube.identity_kubeconfig(user)
    offset = node1.agent_log.stat().st_size if node1.agent_log.exists() else 0
    # One of the agent's annotations removed while it is stopped: the agent started under the chart's
    # role must write it again (through nodes/status).
    assert lab.client is not None and REPUBLISHED in node_annotations(lab, node1.name)
    lab.stop_agent(node1)
    node1.cni_conf_file.unlink(missing_ok=True)
    lab.client.patch(NODES, node1.name, {"metadata": {"annotations": {REPUBLISHED: None}}})
    lab.start_agent(node1, *AGENT_SETTINGS, f"kubernetes.kubeconfig={identity}")
    try:
        yield identity, offset
    finally:
        try:
            lab.stop_agent(node1)
        except StartupError:  # it died under the role (the test failed): start the lab's agent anyway
            node1.agent = None
        restart_agent(lab, node1)
        lab.kube.kubectl("delete", "clusterrolebinding,clusterrole", user, check=False)


def test_the_agent_works_under_the_charts_node_role_and_cannot_touch_a_spec(
    lab: NodeLab, node1: OvsNode, node2: OvsNode, ns: str, agent_under_chart_role: tuple[Path, int]
) -> None:
    identity, offset = agent_under_chart_role
    # The agent started (its CNI config is written once its Node is published) and wires a pod.
    _pod, result = wired_pod(lab, node1, ns, "p")
    assert result["ips"]
    assert node_annotations(lab, node1.name).get(REPUBLISHED)
    log = node1.agent_log.read_text(errors="replace")[offset:]
    assert "ready" in log.lower()
    refused = [line for line in log.splitlines() if FORBIDDEN.search(line)]
    assert not refused, refused[:5]

    # What the same credentials can and cannot do to another Node (a compromised agent).
    client = KubeClient(kubeconfig=str(identity))
    key = f"example.com/rbac-{uuid.uuid4().hex[:6]}"
    client.patch(NODES, node2.name, {"metadata": {"annotations": {key: "x"}}}, subresource="status")
    assert node_annotations(lab, node2.name)[key] == "x"  # metadata through status: allowed
    client.patch(NODES, node2.name, {"metadata": {"annotations": {key: None}}}, subresource="status")
    for patch in ({"spec": {"unschedulable": True}}, {"metadata": {"annotations": {key: "x"}}}):
        with pytest.raises(KubeError) as refused_error:
            client.patch(NODES, node2.name, patch)  # the Node itself: no patch at all
        assert refused_error.value.status == 403
    # A spec change sent to the status subresource is dropped by the API server.
    client.patch(NODES, node2.name, {"spec": {"unschedulable": True}}, subresource="status")
    assert lab.client is not None
    node = lab.client.get(NODES, node2.name)
    assert node is not None and not node["spec"].get("unschedulable")
