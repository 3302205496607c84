"""A third-party plugin on the sandbox: ovnk-hello installed with pip as its author ships it.

It exercises every kind of contribution the SDK offers (its CRD, a controller
writing owned NB rows and the object's status, a contribution to core's pod
transaction, a bridge and flows of its own on every node, a node annotation,
a metric and a command), then is switched off again and must leave nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ovnk_lab.sandbox import Sandbox
from tests.e2e.conftest import Cluster
from tests.e2e.conftest import poll_until

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]

HELLO = Path(__file__).resolve().parents[1] / "thirdparty" / "ovnk-hello"


@pytest.fixture(scope="module")
def hello_site(tmp_path_factory: pytest.TempPathFactory, sandbox: Sandbox) -> Iterator[Path]:
    site = tmp_path_factory.mktemp("hello-site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(HELLO)], check=True, capture_output=True,
                   cwd=tmp_path_factory.mktemp("hello-build"))
    sandbox.set_plugins(["hello"], settings={"hello": {"greeting": "bonjour"}}, env={"PYTHONPATH": str(site)})
    try:
        yield site
    finally:
        if sandbox.extra_env:
            sandbox.set_plugins([], env={})


def nb_json(sandbox: Sandbox, table: str) -> list[dict]:
    assert sandbox.central is not None
    doc = json.loads(sandbox.central.nbctl("--format=json", "list", table))
    return [dict(zip(doc["headings"], row, strict=True)) for row in doc["data"]]


def ovs_map(value: list) -> dict[str, str]:
    return dict(value[1]) if value and value[0] == "map" else {}


def ovs_set(value: object) -> list:
    if isinstance(value, list) and value and value[0] == "set":
        return list(value[1])
    return [value]


def hello_sets(sandbox: Sandbox) -> dict[str, list[str]]:
    return {ovs_map(r["external_ids"])["k8s.ovn.org/name"]: sorted(ovs_set(r["addresses"]))
            for r in nb_json(sandbox, "Address_Set") if ovs_map(r["external_ids"]).get("k8s.ovn.org/owner-type") == "Hello"}


def greeting_of(sandbox: Sandbox, port: str) -> str | None:
    for row in nb_json(sandbox, "Logical_Switch_Port"):
        if row["name"] == port:
            return ovs_map(row["external_ids"]).get("example.com/greeting")
    raise AssertionError(f"no port {port}")


def test_hello_end_to_end_and_switched_off(cluster: Cluster, sandbox: Sandbox, hello_site: Path) -> None:
    n1, n2 = cluster.nodes
    ns = cluster.namespace()
    pods = cluster.run_pods(ns, [{"name": "web", "node": n1, "labels": {"app": "web"}},
                                 {"name": "other", "node": n2, "labels": {"app": "db"}}])
    web_ip = pods["web"]["status"]["podIP"]
    cluster.apply({"apiVersion": "example.com/v1", "kind": "Hello", "metadata": {"name": "greeter", "namespace": ns},
                   "spec": {"greeting": "hi", "podSelector": {"matchLabels": {"app": "web"}}, "port": 7777}})

    def selected() -> object:
        obj = json.loads(cluster.kubectl("-n", ns, "get", "hello", "greeter", "-o", "json"))
        return (obj.get("status") or {}).get("selectedPods")

    poll_until("status.selectedPods", lambda: selected() == 1)
    poll_until("the address set of the Hello", lambda: hello_sets(sandbox).get(f"{ns}/greeter") == [web_ip])
    poll_until("the greeting on the pod's port", lambda: greeting_of(sandbox, f"{ns}_web") == "hi")
    assert greeting_of(sandbox, f"{ns}_other") is None
    for node in (n1, n2):
        poll_until(f"br-hello's drop flow on {node}",
                   lambda node=node: "tp_dst=7777 actions=drop" in sandbox.cluster.node(node).ovs_ofctl(
                       "dump-flows", "br-hello"))
        annotations = json.loads(cluster.kubectl("get", "node", node, "-o", "json"))["metadata"]["annotations"]
        assert json.loads(annotations["example.com/hello"]) == {"greeting": "bonjour"}
    listed = subprocess.run([*cluster.sandbox_ovnk(), "hello", "list"], capture_output=True, text=True, check=True,
                            env={**os.environ, "PYTHONPATH": str(hello_site)})
    assert f"{ns}/greeter: 'hi' greets 1 pod(s)" in listed.stdout

    # A changed greeting re-runs the pods (the plugin queues them into core's pods controller).
    cluster.apply({"apiVersion": "example.com/v1", "kind": "Hello", "metadata": {"name": "greeter", "namespace": ns},
                   "spec": {"greeting": "salut", "podSelector": {"matchLabels": {"app": "web"}}}})
    poll_until("the new greeting on the port", lambda: greeting_of(sandbox, f"{ns}_web") == "salut")
    poll_until("the drop flow gone with the port field",
               lambda: "tp_dst=7777" not in sandbox.cluster.node(n1).ovs_ofctl("dump-flows", "br-hello"))

    # Switched off: its rows, its contribution to the pod's port, its bridge and its annotation go.
    sandbox.set_plugins([], env={})
    assert hello_sets(sandbox) == {}
    poll_until("the greeting gone from the port", lambda: greeting_of(sandbox, f"{ns}_web") is None)
    for node in (n1, n2):
        assert "br-hello" not in sandbox.cluster.node(node).ovs_vsctl("list-br").split()
        annotations = json.loads(cluster.kubectl("get", "node", node, "-o", "json"))["metadata"]["annotations"]
        assert "example.com/hello" not in annotations
    assert cluster.ping(ns, "other", web_ip), "pod traffic is unaffected throughout"
    cluster.kubectl("delete", "namespace", ns, "--wait=false")
