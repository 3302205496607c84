"""Hardware offload on the sandbox with real packets, through stand-in VFs (ovnk_lab.vfs).

Each node gets a stand-in switchdev NIC: a constructed sysfs tree (shared by the nodes: the
same names in every node) and VF/representor veth pairs in the node's network namespace.
The sandbox has no Multus or SR-IOV device plugin, so a pod asks for a VF with the
annotation ``k8s.ovn.org/hwoffload-device-id`` (``[hwoffload] device-id-annotation``); the
runtime (containerd) calls the CNI plugin as it does for every pod. The module switches the
plugin on at its start and its last test switches it off and checks what it made is gone.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from ovnk_lab.sandbox import Sandbox
from ovnk_lab.vfs import StandinNic
from tests.e2e.conftest import ECHO_TCP
from tests.e2e.conftest import Cluster
from tests.e2e.conftest import poll_until

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]

DEVICE_ANNOTATION = "k8s.ovn.org/hwoffload-device-id"
NODE_ANNOTATION = "k8s.ovn.org/hw-offload"


@pytest.fixture(scope="module")
def nic(sandbox: Sandbox) -> Iterator[StandinNic]:
    nic = StandinNic(sandbox.workdir / "hwoffload-sysfs", vfs=2)
    nic.write_sysfs()
    for node in sandbox.cluster.nodes:
        nic.create_links(node.netns)
    sandbox.set_plugins(["hwoffload"], settings={"hwoffload": {"sysfs-root": str(nic.root),
                                                               "device-id-annotation": "true"}})
    try:
        yield nic
    finally:
        if "hwoffload" in sandbox.node_config(sandbox.cluster.nodes[0].name).read_text():
            sandbox.set_plugins([])
        for node in sandbox.cluster.nodes:
            nic.remove_links(node.netns)
        shutil.rmtree(nic.root, ignore_errors=True)


def vf_pod(name: str, namespace: str, node: str, device: str, *, echo: bool = True) -> dict[str, Any]:
    container = ({"name": "echo", "image": "ovnk-test/echo", "imagePullPolicy": "Never",
                  "args": [f"{ECHO_TCP}/tcp"]} if echo else
                 {"name": "client", "image": "busybox", "imagePullPolicy": "Never", "command": ["sleep", "100000"]})
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": {"app": name},
                         "annotations": {DEVICE_ANNOTATION: device}},
            "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1, "containers": [container]}}


def host_link(sandbox: Sandbox, node: str, name: str) -> dict[str, Any] | None:
    out = sandbox.cluster.node(node).exec(["ip", "-j", "link", "show", "dev", name], check=False).stdout
    found = json.loads(out) if out.strip() else []
    return found[0] if found else None


def port_external_ids(sandbox: Sandbox, node: str, port: str) -> dict[str, str] | None:
    out = sandbox.cluster.node(node).ovs_vsctl("--if-exists", "get", "Interface", port, "external_ids")
    if not out.strip():
        return None
    return dict(item.split("=", 1) for item in out.strip().strip("{}").replace('"', "").split(", ") if "=" in item)


def test_node_reports_offload_and_ovs_has_the_keys(sandbox: Sandbox, cluster: Cluster, nic: StandinNic) -> None:
    for node in sandbox.cluster.nodes:
        config = node.ovs_vsctl("get", "Open_vSwitch", ".", "other_config")
        assert 'hw-offload="true"' in config and 'tc-policy=none' in config, config
    reports: dict[str, Any] = {}

    def reported() -> bool:
        for name in cluster.nodes:
            raw = json.loads(cluster.kubectl("get", "node", name, "-o", "json"))["metadata"].get(
                "annotations", {}).get(NODE_ANNOTATION)
            if not raw:
                return False
            reports[name] = json.loads(raw)
        return True

    poll_until("hw-offload node annotations", reported, timeout=60)
    for report in reports.values():
        assert report["enabled"] is True and report["pfs"] == ["pf0"] and report["vfs"]["free"] >= 1
        assert report["active"] is False and report["datapath"] == "netdev"
    out = subprocess.run([*cluster.sandbox_ovnk(), "--plugins", "hwoffload", "hwoffload", "status"],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    for name in cluster.nodes:
        assert f"{name}  not active  PFs pf0  VFs free" in out, out


def test_vf_pod_reaches_pods_and_services_and_survives_an_agent_restart(sandbox: Sandbox, cluster: Cluster,
                                                                      nic: StandinNic, ns: str) -> None:
    n1, n2 = cluster.nodes
    cluster.apply(vf_pod("vf", ns, n1, nic.vf_pci(0)))
    pods = cluster.run_pods(ns, [{"name": "remote", "node": n2, "kind": "echo", "labels": {"app": "remote"}},
                                 {"name": "local", "node": n1, "kind": "echo"}])
    cluster.kubectl("-n", ns, "wait", "--for=condition=Ready", "pod/vf", "--timeout=120s", timeout=150)
    cluster.apply({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "remote", "namespace": ns},
                   "spec": {"selector": {"app": "remote"}, "ports": [{"port": 80, "targetPort": ECHO_TCP}]}})
    vf_ip = cluster.pod_ip(ns, "vf")
    ids = port_external_ids(sandbox, n1, nic.representor(0))
    assert ids is not None and ids["iface-id"] == f"{ns}_vf" and ids["vf-netdev-name"] == nic.vf_netdev(0)
    assert host_link(sandbox, n1, nic.vf_netdev(0)) is None, "the VF left the node's namespace"
    remote_ip = pods["remote"]["status"]["podIP"]
    service_ip = json.loads(cluster.kubectl("-n", ns, "get", "service", "remote", "-o", "json"))["spec"]["clusterIP"]

    def reaches_all() -> bool:
        return (cluster.probe(ns, "vf", "tcp", remote_ip, ECHO_TCP) == "remote"
                and cluster.probe(ns, "vf", "tcp", service_ip, 80) == "remote"
                and cluster.probe(ns, "local", "tcp", vf_ip, ECHO_TCP) == "vf"
                and cluster.probe(ns, "remote", "tcp", vf_ip, ECHO_TCP) == "vf")

    poll_until("VF pod <-> pods on both nodes and a service", reaches_all, timeout=60, interval=0.5)
    sandbox.restart_agent(n1)
    assert cluster.probe(ns, "remote", "tcp", vf_ip, ECHO_TCP) == "vf", "right after the agent was killed"
    poll_until("VF pod still wired after the agent restarted", reaches_all, timeout=60, interval=0.5)
    after = port_external_ids(sandbox, n1, nic.representor(0))
    assert after is not None and after["sandbox"] == ids["sandbox"], "the restart re-wired the pod"

    # DEL (the pod goes) returns the VF to the node, down, and frees the representor.
    cluster.kubectl("-n", ns, "delete", "pod", "vf", "--wait=true", timeout=120)
    poll_until("VF back on node-1", lambda: host_link(sandbox, n1, nic.vf_netdev(0)) is not None, timeout=60)
    link = host_link(sandbox, n1, nic.vf_netdev(0))
    assert link is not None and "UP" not in link["flags"]
    assert port_external_ids(sandbox, n1, nic.representor(0)) is None


def test_bad_device_ids_fail_the_sandbox_and_leave_nothing(sandbox: Sandbox, cluster: Cluster, nic: StandinNic,
                                                           ns: str) -> None:
    n1, _ = cluster.nodes
    before = {name: host_link(sandbox, n1, name) is not None for name in (nic.vf_netdev(1), nic.representor(1))}
    cluster.apply(vf_pod("bad", ns, n1, "0000:42:00.7", echo=False))
    messages: list[str] = []

    def failed() -> bool:
        events = json.loads(cluster.kubectl("-n", ns, "get", "events", "-o", "json"))["items"]
        messages[:] = [e["message"] for e in events if e["reason"] == "FailedCreatePodSandBox"]
        return any("deviceID 0000:42:00.7: no such PCI device" in m for m in messages)

    poll_until("FailedCreatePodSandBox naming the bad deviceID", failed, timeout=90, interval=0.5)
    cluster.kubectl("-n", ns, "delete", "pod", "bad", "--wait=true", timeout=120)
    assert {name: host_link(sandbox, n1, name) is not None for name in before} == before
    assert port_external_ids(sandbox, n1, nic.representor(1)) is None


def test_switching_the_plugin_off_clears_hw_offload(sandbox: Sandbox, cluster: Cluster, nic: StandinNic) -> None:
    sandbox.set_plugins([])
    for node in sandbox.cluster.nodes:
        config = node.ovs_vsctl("get", "Open_vSwitch", ".", "other_config")
        assert "hw-offload" not in config and "tc-policy" not in config, config

    def annotations_gone() -> bool:
        return all(NODE_ANNOTATION not in (json.loads(cluster.kubectl("get", "node", name, "-o", "json"))[
            "metadata"].get("annotations") or {}) for name in cluster.nodes)

    poll_until("hw-offload annotations removed", annotations_gone, timeout=60)
