"""Bad input and failures on the CNI path: the spec's error code, a message that says what is wrong,
and nothing left behind (no veth, no OVS port)."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from ovnk.core.kube.resources import PODS
from ovnk_lab.ovsnode import CniRun
from ovnk_lab.ovsnode import NodeLab
from ovnk_lab.ovsnode import OvsNode
from ovnk_lab.ovsnode import PodSandbox
from ovnk_lab.ovsnode import netconf

from .conftest import ANNOTATION_TIMEOUT
from .conftest import OVN_INSTALLED_TIMEOUT
from .conftest import add_ok
from .conftest import cni_error
from .conftest import host_links
from .conftest import restart_agent

pytestmark = [pytest.mark.node, pytest.mark.kube, pytest.mark.ovn, pytest.mark.slow]


@dataclass(frozen=True)
class Snapshot:
    ports: frozenset[str]
    links: frozenset[str]


def snapshot(node: OvsNode) -> Snapshot:
    # ovn-controller adds its patch ports (localnet) on its own schedule, which may fall inside a
    # test; they are not the CNI's to leave behind.
    ports = [p for p in node.vsctl("list-ports", "br-int").split() if not p.startswith("patch-")]
    return Snapshot(ports=frozenset(ports), links=frozenset(host_links(node)))


@pytest.fixture
def untouched(node1: OvsNode) -> Iterator[None]:
    """The test must leave node-1's br-int ports and links exactly as it found them."""
    before = snapshot(node1)
    yield
    assert snapshot(node1) == before


@pytest.fixture
def pod(lab: NodeLab, node1: OvsNode, ns: str) -> PodSandbox:
    sandbox = lab.create_pod(node1, ns, "bad-input")
    lab.wait_pod_annotated(sandbox)
    return sandbox


@pytest.mark.usefixtures("untouched")
def test_malformed_stdin(lab: NodeLab, pod: PodSandbox) -> None:
    error = cni_error(lab.cni(pod, "ADD", config='{"cniVersion": "1.1.0", "name": '))
    assert error["code"] == 6
    assert "JSON" in error["msg"]


@pytest.mark.usefixtures("untouched")
@pytest.mark.parametrize("missing", ["CNI_NETNS", "CNI_CONTAINERID", "CNI_IFNAME"])
def test_missing_environment(lab: NodeLab, pod: PodSandbox, missing: str) -> None:
    error = cni_error(lab.cni(pod, "ADD", env={missing: None}))
    assert error["code"] == 4
    assert missing in error["msg"]


@pytest.mark.usefixtures("untouched")
def test_missing_pod_arguments(lab: NodeLab, pod: PodSandbox) -> None:
    error = cni_error(lab.cni(pod, "ADD", env={"CNI_ARGS": "IgnoreUnknown=1"}))
    assert error["code"] == 4
    assert "K8S_POD_NAMESPACE" in error["msg"] and "K8S_POD_NAME" in error["msg"]


@pytest.mark.usefixtures("untouched")
def test_unknown_cni_version(lab: NodeLab, pod: PodSandbox) -> None:
    error = cni_error(lab.cni(pod, "ADD", config=netconf(version="9.9.9")))
    assert error["code"] == 1
    assert "9.9.9" in error["msg"] and "1.1.0" in error["msg"]


@pytest.mark.usefixtures("untouched")
def test_netns_that_does_not_exist(lab: NodeLab, pod: PodSandbox) -> None:
    error = cni_error(lab.cni(pod, "ADD", env={"CNI_NETNS": "/run/netns/ovnk-no-such-netns"}))
    assert error["code"] == 3
    assert "/run/netns/ovnk-no-such-netns" in error["msg"] and "does not exist" in error["msg"]


@pytest.mark.usefixtures("untouched")
def test_pod_without_annotation_times_out(lab: NodeLab, node1: OvsNode, ns: str) -> None:
    # The controller never annotates a host-network pod; a runtime would never ADD it either.
    sandbox = lab.create_pod(node1, ns, "never-annotated", host_network=True)
    done = lab.cni(sandbox, "ADD")
    error = cni_error(done)
    assert error["code"] == 101
    assert f"{ns}/never-annotated" in error["msg"] and "k8s.ovn.org/pod-networks" in error["msg"]
    assert ANNOTATION_TIMEOUT <= done.seconds < ANNOTATION_TIMEOUT + 5


@pytest.mark.usefixtures("untouched")
def test_pod_deleted_while_add_waits(lab: NodeLab, node1: OvsNode, ns: str) -> None:
    """A deletion ends the wait at once with 103, not with the timeout."""
    assert lab.client is not None
    sandbox = lab.create_pod(node1, ns, "deleted-meanwhile", host_network=True)
    outcome: list[CniRun] = []
    add = threading.Thread(target=lambda: outcome.append(lab.cni(sandbox, "ADD")))
    add.start()
    time.sleep(1.0)
    lab.client.delete(PODS, "deleted-meanwhile", namespace=ns)
    deleted_at = time.monotonic()
    add.join(60)
    error = cni_error(outcome[0])
    assert error["code"] == 103
    assert f"{ns}/deleted-meanwhile" in error["msg"] and "deleted" in error["msg"]
    assert time.monotonic() - deleted_at < ANNOTATION_TIMEOUT - 1


@pytest.mark.usefixtures("untouched")
def test_sandbox_for_another_pod_uid(lab: NodeLab, pod: PodSandbox) -> None:
    error = cni_error(lab.cni(pod, "ADD", env={
        "CNI_ARGS": f"K8S_POD_NAMESPACE={pod.namespace};K8S_POD_NAME={pod.name};K8S_POD_UID=0000-stale-uid"}))
    assert error["code"] == 103
    assert "0000-stale-uid" in error["msg"] and pod.uid in error["msg"]


@pytest.mark.usefixtures("untouched")
def test_ovn_installed_timeout_removes_the_wiring(lab: NodeLab, node1: OvsNode, pod: PodSandbox) -> None:
    controller = node1.daemons["ovn-controller"]
    controller.send_signal(signal.SIGSTOP)  # ovn-controller never marks the port
    try:
        done = lab.cni(pod, "ADD")
    finally:
        controller.send_signal(signal.SIGCONT)
    error = cni_error(done)
    assert error["code"] == 102
    assert "ovn-installed" in error["msg"] and f"{pod.namespace}_{pod.name}" in error["msg"]
    assert OVN_INSTALLED_TIMEOUT <= done.seconds < OVN_INSTALLED_TIMEOUT + 10
    # ovn-controller is back: the same sandbox wires fine now.
    add_ok(lab, pod)
    assert lab.cni(pod, "DEL").returncode == 0


def test_agent_down(lab: NodeLab, node2: OvsNode, ns: str) -> None:
    sandbox = lab.create_pod(node2, ns, "agent-down")
    lab.wait_pod_annotated(sandbox)
    before = snapshot(node2)
    lab.stop_agent(node2)
    try:
        error = cni_error(lab.cni(sandbox, "ADD"))
        assert error["code"] == 11
        assert str(node2.cni_socket) in error["msg"]
        assert snapshot(node2) == before
    finally:
        restart_agent(lab, node2)
    add_ok(lab, sandbox)  # the runtime retries: now it works


def test_errors_are_logged_with_the_pod(lab: NodeLab, node1: OvsNode, pod: PodSandbox) -> None:
    cni_error(lab.cni(pod, "ADD", env={"CNI_NETNS": "/run/netns/ovnk-no-such-netns"}))
    log = node1.agent_log.read_text()
    assert f"CNI ADD {pod.namespace}/{pod.name}" in log and "result=error 3" in log


def test_shim_exit_status_without_json_for_bad_command(pod: PodSandbox) -> None:
    env = pod.cni_env("BOGUS")
    done = subprocess.run([str(pod.node.shim)], input=netconf().encode(), env=env, capture_output=True,
                          timeout=30, check=False)
    assert done.returncode == 1
    assert b'"code": 4' in done.stdout and b"BOGUS" in done.stdout
