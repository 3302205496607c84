"""Secondary attachments through the real CNI path: shim -> agent -> veth + br-int -> OVN, real pod netns.

Two simulated nodes (:class:`~ovnk_lab.ovsnode.NodeLab`: OVS, ovn-controller and
``ovnk node`` in a netns each, one control plane and OVN central, the
controller in-process with the plugin on). First the requests Multus makes
(the default network, then one ADD per attachment with the NAD's config and
``CNI_IFNAME=net1``), then the agent doing Multus' part (``attachments = agent``):
one ADD from the runtime wires every attachment and writes ``network-status``.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ovnk.core.bootstrap import bootstrap
from ovnk.core.config import ConfigInputs
from ovnk.core.controller import ControllerProcess
from ovnk.core.kube.resources import NAMESPACES
from ovnk.core.kube.resources import PODS
from ovnk.plugins.secondary_networks.controller import NADS
from ovnk_lab.ovsnode import NodeLab
from ovnk_lab.ovsnode import OvsNode
from ovnk_lab.ovsnode import PodSandbox

pytestmark = [pytest.mark.node, pytest.mark.kube, pytest.mark.ovn, pytest.mark.slow]

PLUGIN = "secondary_networks"
AGENT = ("cni.annotation-timeout=30", "cni.ovn-installed-timeout=30")


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {timeout:g}s"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def lab() -> Iterator[NodeLab]:
    workdir = Path(tempfile.mkdtemp(prefix="ovnks-", dir="/tmp"))
    lab = NodeLab(workdir / "w", nodes=2)
    try:
        lab.start(controller=False)
        assert lab.kube is not None and lab.central is not None
        lab.controller = ControllerProcess(bootstrap(ConfigInputs(
            env={}, flags={"kubeconfig": str(lab.kube.kubeconfig), "nb_address": lab.central.nb_unix,
                           "sb_address": lab.central.sb_unix},
            assignments=["controller.leader-election=false", "controller.metrics-bind-address=",
                         f"default.cluster-subnets={lab.cluster_subnets}", f"plugins.enabled={PLUGIN}"]))).start()
        for node in lab.nodes.values():
            lab.start_agent(node, *AGENT, plugins=(PLUGIN,), wait=False)
        for node in lab.nodes.values():
            lab.wait_agent_ready(node)
        yield lab
    finally:
        lab.destroy()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def ns(lab: NodeLab) -> str:
    assert lab.client is not None
    name = f"t-{uuid.uuid4().hex[:8]}"
    lab.client.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    config = {"cniVersion": "1.0.0", "type": "ovn-k8s-cni-overlay", "name": "green", "netAttachDefName": f"{name}/l2",
              "topology": "layer2", "subnets": "10.60.0.0/24"}
    lab.client.create(NADS, {"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
                             "metadata": {"name": "l2", "namespace": name}, "spec": {"config": json.dumps(config)}},
                      namespace=name)
    return name


def nad_config(lab: NodeLab, ns: str) -> str:
    assert lab.client is not None
    nad = lab.client.get(NADS, "l2", namespace=ns)
    assert nad is not None
    return str(nad["spec"]["config"])


def pod_with(lab: NodeLab, node: OvsNode, ns: str, name: str, networks: str, keys: list[str]) -> PodSandbox:
    pod = lab.create_pod(node, ns, name, annotations={"k8s.v1.cni.cncf.io/networks": networks})
    assert lab.client is not None
    client = lab.client

    def annotated() -> bool:
        obj = client.get(PODS, name, namespace=ns) or {"metadata": {}}
        doc = json.loads((obj["metadata"].get("annotations") or {}).get("k8s.ovn.org/pod-networks") or "{}")
        return all(k in doc for k in keys)

    wait_for(f"{ns}/{name} annotated with {keys}", annotated)
    return pod


def add(lab: NodeLab, pod: PodSandbox, *, config: str | None = None, ifname: str = "eth0") -> dict[str, Any]:
    done = lab.cni(pod, "ADD", config=config, env={"CNI_IFNAME": ifname})
    assert done.returncode == 0, f"ADD {ifname} of {pod.name}: {done.stdout} {done.stderr}"
    result: dict[str, Any] = done.json
    return result


def address_of(result: dict[str, Any], ifname: str) -> str:
    index = next(i for i, iface in enumerate(result["interfaces"]) if iface["name"] == ifname and iface.get("sandbox"))
    return str(next(ip["address"] for ip in result["ips"] if ip.get("interface") == index)).split("/")[0]


def ping(pod: PodSandbox, address: str) -> bool:
    return pod.exec(["ping", "-c", "2", "-i", "0.2", "-W", "2", address], check=False, timeout=30).returncode == 0


def secondary_ports(node: OvsNode, container_id: str) -> list[str]:
    out = node.vsctl("--format=json", "--columns=name,external_ids", "list", "Interface")
    return [name for name, ids in json.loads(out)["data"]
            if dict(ids[1]).get("sandbox") == container_id and "k8s.ovn.org/nad" in dict(ids[1])]


def test_multus_style_requests_wire_an_attachment_across_nodes(lab: NodeLab, ns: str) -> None:
    node1, node2 = lab.nodes["node-1"], lab.nodes["node-2"]
    a = pod_with(lab, node1, ns, "a", "l2", ["default", f"{ns}/l2"])
    b = pod_with(lab, node2, ns, "b", "l2", ["default", f"{ns}/l2"])
    for pod in (a, b):
        add(lab, pod)
    result_a = add(lab, a, config=nad_config(lab, ns), ifname="net1")
    result_b = add(lab, b, config=nad_config(lab, ns), ifname="net1")
    ip_b = address_of(result_b, "net1")
    assert address_of(result_a, "net1").startswith("10.60.0.") and ip_b.startswith("10.60.0.")
    assert not any(r.get("dst") == "0.0.0.0/0" for r in result_a.get("routes") or []), \
        "a secondary interface never takes the default route"
    assert ping(a, ip_b), "a -> b over the layer2 network, across nodes"
    assert len(secondary_ports(node1, a.container_id)) == 1
    done = lab.cni(a, "DEL", config=nad_config(lab, ns), env={"CNI_IFNAME": "net1"})
    assert done.returncode == 0, done.stdout
    assert secondary_ports(node1, a.container_id) == []
    assert not ping(a, ip_b), "net1 is gone"


def test_agent_performs_attachments_and_writes_network_status(lab: NodeLab, ns: str) -> None:
    node1, node2 = lab.nodes["node-1"], lab.nodes["node-2"]
    lab.stop_agent(node1)
    node1.cni_conf_file.unlink(missing_ok=True)
    lab.start_agent(node1, *AGENT, f"{PLUGIN}.attachments=agent", plugins=(PLUGIN,))
    c = pod_with(lab, node1, ns, "c", "l2,l2", ["default", f"{ns}/l2", f"{ns}/l2/1"])
    d = pod_with(lab, node2, ns, "d", "l2", ["default", f"{ns}/l2"])
    add(lab, d)
    ip_d = address_of(add(lab, d, config=nad_config(lab, ns), ifname="net1"), "net1")
    add(lab, c)  # the runtime's one request: the agent does the rest
    links = c.exec(["ip", "-o", "link"]).stdout
    assert " net1@" in links and " net2@" in links, links
    assert lab.client is not None
    obj = lab.client.get(PODS, "c", namespace=ns)
    assert obj is not None
    status = json.loads(obj["metadata"]["annotations"]["k8s.v1.cni.cncf.io/network-status"])
    assert [(s["name"], s["interface"]) for s in status] == [
        ("ovn-kubernetes", "eth0"), (f"{ns}/l2", "net1"), (f"{ns}/l2", "net2")]
    assert status[0]["default"] is True and len({s["ips"][0] for s in status[1:]}) == 2
    assert ping(c, ip_d)
    assert len(secondary_ports(node1, c.container_id)) == 2
    done = lab.cni(c, "DEL")
    assert done.returncode == 0, done.stdout
    assert secondary_ports(node1, c.container_id) == [], "DEL of the default network takes the attachments along"
