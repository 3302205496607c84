"""Simulated nodes for the node agent: one lab per test package (see ``ovnk_lab.ovsnode``).

Real parts only: netns + veth underlay, per node ovsdb-server, ovs-vswitchd
(netdev, inside the node netns) and ovn-controller against a real OVN
central, a real API server bound to the underlay host address (the agents in
the node netns reach it through their gateway bridge), the ovnk controller
in-process and one ``ovnk node`` subprocess per node. Tests play the
container runtime: Pod objects through the API (``spec.nodeName``, no
kubelet), a netns per sandbox, and the installed shim (or cnitool) per call.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ovnk.core.kube.resources import NAMESPACES
from ovnk.core.kube.resources import NODES
from ovnk_lab.ovsnode import CniRun
from ovnk_lab.ovsnode import NodeLab
from ovnk_lab.ovsnode import OvsNode
from ovnk_lab.ovsnode import PodSandbox
from ovnk_lab.procs import wait_for

pytestmark = [pytest.mark.node, pytest.mark.kube, pytest.mark.ovn]

# Short waits, so that the timeout paths are testable in seconds.
ANNOTATION_TIMEOUT = 4
OVN_INSTALLED_TIMEOUT = 8
AGENT_SETTINGS = (f"cni.annotation-timeout={ANNOTATION_TIMEOUT}",
                  f"cni.ovn-installed-timeout={OVN_INSTALLED_TIMEOUT}")


_LABS: list[NodeLab] = []


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
    """A failed test's report carries the tail of every agent's log (the lab is gone afterwards)."""
    report = yield
    if report.when == "call" and report.failed:
        for lab in _LABS:
            for node in lab.nodes.values():
                try:
                    lines = node.agent_log.read_text(errors="replace").splitlines()[-60:]
                except OSError:
                    continue
                report.sections.append((f"{node.name} agent log (tail)", "\n".join(lines)))
    return report


@pytest.fixture(scope="package")
def lab() -> Iterator[NodeLab]:
    # Short work dir: unix socket paths live below it.
    workdir = Path(tempfile.mkdtemp(prefix="ovnkn-", dir="/tmp"))
    lab = NodeLab(workdir / "w", nodes=2)
    _LABS.append(lab)
    try:
        lab.start()
        for node in lab.nodes.values():
            lab.start_agent(node, *AGENT_SETTINGS, wait=False)
        for node in lab.nodes.values():
            lab.wait_agent_ready(node)
        yield lab
    finally:
        _LABS.remove(lab)
        lab.destroy()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def node1(lab: NodeLab) -> OvsNode:
    return lab.nodes["node-1"]


@pytest.fixture
def node2(lab: NodeLab) -> OvsNode:
    return lab.nodes["node-2"]


@pytest.fixture
def ns(lab: NodeLab) -> Iterator[str]:
    """A namespace for one test; its pods and sandboxes go with it."""
    assert lab.client is not None
    name = f"t-{uuid.uuid4().hex[:8]}"
    lab.client.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    yield name
    lab.client.delete(NAMESPACES, name)
    for node in lab.nodes.values():
        if node.agent is not None and node.agent.alive():
            gc(node, valid=[])


def gc(node: OvsNode, *, valid: list[dict[str, str]]) -> subprocess.CompletedProcess[str]:
    """CNI GC through the node's shim: every pod port not in ``valid`` goes."""
    env = {"CNI_COMMAND": "GC", "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    conf = json.dumps({"cniVersion": "1.1.0", "name": "ovn-kubernetes", "type": "ovn-k8s-cni-overlay",
                       "cni.dev/valid-attachments": valid})
    return subprocess.run([str(node.shim)], input=conf, env=env, capture_output=True, text=True, timeout=60,
                          check=False)


def add_ok(lab: NodeLab, pod: PodSandbox, **kwargs: Any) -> dict[str, Any]:
    """ADD through the installed shim; fail with the shim's output unless it succeeded."""
    done = lab.cni(pod, "ADD", **kwargs)
    assert done.returncode == 0, f"ADD of {pod.namespace}/{pod.name} failed: {done.stdout} {done.stderr}"
    result: dict[str, Any] = done.json
    return result


def cni_error(done: CniRun) -> dict[str, Any]:
    """The CNI error object the shim printed (exit status 1)."""
    assert done.returncode == 1, f"expected a CNI error, got exit {done.returncode}: {done.stdout} {done.stderr}"
    error: dict[str, Any] = json.loads(done.stdout)
    return error


def wired_pod(lab: NodeLab, node: OvsNode, ns: str, name: str) -> tuple[PodSandbox, dict[str, Any]]:
    pod = lab.create_pod(node, ns, name)
    lab.wait_pod_annotated(pod)
    return pod, add_ok(lab, pod)


def pod_ip(result: dict[str, Any]) -> str:
    return str(result["ips"][0]["address"]).split("/")[0]


def ping(pod: PodSandbox, address: str, *, count: int = 2) -> subprocess.CompletedProcess[str]:
    return pod.exec(["ping", "-c", str(count), "-i", "0.2", "-W", "2", address], check=False, timeout=30)


def node_annotations(lab: NodeLab, name: str) -> dict[str, str]:
    assert lab.client is not None
    node = lab.client.get(NODES, name)
    assert node is not None
    return dict(node["metadata"].get("annotations") or {})


def iface_rows(node: OvsNode, *names: str) -> dict[str, tuple[str, str]]:
    """Interface name -> (row uuid, ofport), read with ovs-vsctl (independent of the agent)."""
    rows: dict[str, tuple[str, str]] = {}
    for name in names:
        out = node.vsctl("--columns=_uuid,ofport", "--format=json", "list", "Interface", name)
        data = json.loads(out)["data"][0]
        rows[name] = (str(data[0][1]), str(data[1]))
    return rows


def dump_flows(node: OvsNode, bridge: str, *args: str) -> list[str]:
    """``ovs-ofctl dump-flows`` lines without the reply header."""
    out = node.ofctl("dump-flows", bridge, *args)
    return [line.strip() for line in out.splitlines() if line.strip() and not line.startswith("OFPST_")]


def iface_map(node: OvsNode, name: str, column: str) -> dict[str, str]:
    """A map column of an Interface row, read with ovs-vsctl."""
    out = node.vsctl("--format=json", f"--columns={column}", "list", "Interface", name)
    kind, pairs = json.loads(out)["data"][0][0]
    assert kind == "map"
    return {str(k): str(v) for k, v in pairs}


def host_links(node: OvsNode) -> dict[str, int]:
    """Link name -> ifindex in the node netns."""
    out = node.exec(["ip", "-j", "link", "show"]).stdout
    return {link["ifname"]: int(link["ifindex"]) for link in json.loads(out)}


def restart_agent(lab: NodeLab, node: OvsNode, *extra: str, plugins: tuple[str, ...] = (),
                  env: dict[str, str] | None = None) -> float:
    """Stop the node's agent (SIGTERM, waiting for its exit) and start it again; returns seconds until ready."""
    lab.stop_agent(node)
    # The config stays (remove-conf-on-exit is off): readiness is seen through STATUS below.
    started = time.monotonic()
    node.cni_conf_file.unlink(missing_ok=True)
    lab.start_agent(node, *AGENT_SETTINGS, *extra, plugins=plugins, env=env)
    return time.monotonic() - started


def shim_status(node: OvsNode) -> subprocess.CompletedProcess[str]:
    env = {"CNI_COMMAND": "STATUS", "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    conf = json.dumps({"cniVersion": "1.1.0", "name": "ovn-kubernetes", "type": "ovn-k8s-cni-overlay"})
    return subprocess.run([str(node.shim)], input=conf, env=env, capture_output=True, text=True, timeout=60,
                          check=False)


def wait_gone(what: str, predicate: Any, timeout: float = 30) -> None:
    wait_for(what, predicate, timeout=timeout, interval=0.1)


def install_plugin(site: Path, *, name: str, source: str) -> None:
    """A real plugin distribution in ``site`` (for an agent's ``PYTHONPATH``): METADATA and an ``ovnk.plugins``
    entry point ``name`` in a dist-info, and the module ``ovnk_<name>`` with ``source``."""
    module = f"ovnk_{name}"
    info = site / f"{module}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: ovnk-{name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[ovnk.plugins]\n{name} = {module}\n")
    (site / f"{module}.py").write_text(textwrap.dedent(source))
