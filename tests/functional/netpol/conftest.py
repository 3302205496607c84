"""NetworkPolicy against a real API server and a real OVN central, one controller per module.

Reuses :class:`ClusterEnv` of the topology tests: nodes are created with the
annotations a node agent publishes, pods with ``spec.nodeName`` get their IPs
and ports from core (no kubelet). Each test works in its own namespaces.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ovnk.core.kube.client import WatchEvent
from ovnk.core.kube.resources import EVENTS
from ovnk.core.kube.resources import NAMESPACES
from ovnk.core.kube.resources import NETWORKPOLICIES
from ovnk.core.kube.resources import NODES
from ovnk.core.kube.resources import PODS
from ovnk_lab import paths
from ovnk_lab.kube import KubeControlPlane
from ovnk_lab.ovn import OvnCentral
from tests.functional.topology.conftest import ClusterEnv
from tests.functional.topology.conftest import module_kube  # noqa: F401  (fixture)
from tests.functional.topology.conftest import nb_value

NODE_NAMES = ("np-a", "np-b")
NETPOL_OWNERS = ("NetworkPolicy", "NetpolNamespace", "PodSelector", "NetpolDefault", "NetpolNode")


def wait_for(what: str, condition: Callable[[], Any], timeout: float = 60, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(interval)


@dataclass(frozen=True)
class PodInfo:
    namespace: str
    name: str
    node: str
    ip: str
    mac: str

    @property
    def lsp(self) -> str:
        return f"{self.namespace}_{self.name}"

    @property
    def label(self) -> str:
        return f"{self.namespace}/{self.name}"


class NetpolCluster:
    """A running controller with two nodes, and helpers to create and inspect objects."""

    def __init__(self, env: ClusterEnv) -> None:
        self.env = env
        self.client = env.client
        self.central = env.central

    # -- objects ---------------------------------------------------------------

    def namespace(self, prefix: str, labels: dict[str, str] | None = None,
                  annotations: dict[str, str] | None = None) -> str:
        name = f"t-{prefix}-{uuid.uuid4().hex[:5]}"
        self.client.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {
            "name": name, "labels": labels or {}, "annotations": annotations or {}}})
        return name

    def pod(self, namespace: str, name: str, *, node: str = NODE_NAMES[0], labels: dict[str, str] | None = None,
            ports: list[dict[str, Any]] | None = None) -> None:
        container: dict[str, Any] = {"name": "c", "image": "busybox"}
        if ports:
            container["ports"] = ports
        body = {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
                "spec": {"nodeName": node, "automountServiceAccountToken": False, "containers": [container]}}
        for _ in range(200):
            try:
                self.client.create(PODS, body, namespace=namespace)
                return
            except Exception as exc:  # the namespace's service account may not exist yet
                if "serviceaccount" not in str(exc).lower():
                    raise
                time.sleep(0.05)
        raise AssertionError("namespace service account never appeared")

    def policy(self, namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        body = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": name, "namespace": namespace}, "spec": spec}
        return self.client.create(NETWORKPOLICIES, body, namespace=namespace)

    def replace_policy(self, namespace: str, name: str, spec: dict[str, Any]) -> None:
        current = self.client.get(NETWORKPOLICIES, name, namespace=namespace)
        assert current is not None
        self.client.replace(NETWORKPOLICIES, {**current, "spec": spec}, namespace=namespace)

    def delete_policy(self, namespace: str, name: str) -> None:
        self.client.delete(NETWORKPOLICIES, name, namespace=namespace)

    def label_pod(self, namespace: str, name: str, labels: dict[str, str | None]) -> None:
        self.client.patch(PODS, name, {"metadata": {"labels": labels}}, namespace=namespace)

    def label_namespace(self, name: str, labels: dict[str, str | None]) -> None:
        self.client.patch(NAMESPACES, name, {"metadata": {"labels": labels}})

    def annotate_namespace(self, name: str, annotations: dict[str, str | None]) -> None:
        self.client.patch(NAMESPACES, name, {"metadata": {"annotations": annotations}})

    def pods(self, namespace: str, count: int, timeout: float = 60) -> dict[str, PodInfo]:
        """Wait until ``count`` pods of ``namespace`` have their IPs; name -> info."""
        def ready() -> dict[str, PodInfo] | None:
            items, _ = self.client.list(PODS, namespace=namespace)
            found = {}
            for pod in items:
                raw = (pod["metadata"].get("annotations") or {}).get("k8s.ovn.org/pod-networks")
                if raw:
                    net = json.loads(raw)["default"]
                    found[pod["metadata"]["name"]] = PodInfo(
                        namespace=namespace, name=pod["metadata"]["name"], node=pod["spec"]["nodeName"],
                        ip=net["ip_addresses"][0].split("/")[0], mac=net["mac_address"])
            return found if len(found) == count else None
        result: dict[str, PodInfo] = wait_for(f"{count} pods of {namespace} annotated", ready, timeout)
        return result

    def settle(self, timeout: float = 60) -> None:
        self.env.wait_idle(timeout)

    def events(self, namespace: str, reason: str) -> list[dict[str, Any]]:
        items, _ = self.client.list(EVENTS, namespace=namespace)
        return [e for e in items if e.get("reason") == reason]

    # -- NB ------------------------------------------------------------------

    def owned(self, table: str, owner_type: str, name: str | None = None) -> list[dict[str, Any]]:
        result = []
        for row in self.env.nb_rows(table):
            ext = nb_value(row["external_ids"])
            if ext.get("k8s.ovn.org/owner-type") == owner_type and (name is None or ext.get("k8s.ovn.org/name") == name):
                result.append({k: nb_value(v) for k, v in row.items()})
        return result

    def port_group_members(self, pg_name: str) -> set[str]:
        lsps = {nb_value(r["_uuid"])[1]: nb_value(r["name"]) for r in self.env.nb_rows("Logical_Switch_Port")}
        for row in self.env.nb_rows("Port_Group"):
            if nb_value(row["name"]) == pg_name:
                return {lsps[u[1]] for u in as_list(nb_value(row["ports"]))}
        raise AssertionError(f"no port group {pg_name}")

    def snapshot(self) -> dict[str, dict[str, str]]:
        """uuid -> printable row, for every row of NetworkPolicy's owner types (to diff writes)."""
        result = {}
        for table in ("ACL", "Address_Set", "Port_Group", "Meter", "Meter_Band"):
            for row in self.env.nb_rows(table):
                if nb_value(row["external_ids"]).get("k8s.ovn.org/owner-type") in NETPOL_OWNERS:
                    values = {k: repr(nb_value(v)) for k, v in row.items()}
                    values["__label__"] = f"{table}:{nb_value(row.get('name')) or nb_value(row['_uuid'])[1]}"
                    result[f"{table}:{nb_value(row['_uuid'])[1]}"] = values
        return result

    # -- objects the API server cannot hold ----------------------------------------

    def inject_policy(self, obj: dict[str, Any]) -> None:
        """Deliver a NetworkPolicy to the controller as if its watch had (e.g. with ``endPort``,
        which Kubernetes 1.20 prunes, or fields its validation rejects): the cache, every
        controller's watch mapping and reconcile see it exactly like a watched object."""
        self._policy_informer()._handle(WatchEvent(type="ADDED", object=obj))

    def remove_injected_policy(self, namespace: str, name: str) -> None:
        informer = self._policy_informer()
        obj = informer.store.get(f"{namespace}/{name}")
        assert obj is not None
        informer._handle(WatchEvent(type="DELETED", object=obj))

    def _policy_informer(self) -> Any:
        process = self.env.process
        assert process is not None and process.ctx is not None
        return process.ctx.informers.informer(NETWORKPOLICIES)

    # -- controller internals ------------------------------------------------------

    @property
    def runtime(self) -> Any:
        process = self.env.process
        assert process is not None and process.ctx is not None
        return process.ctx.pm.runtime_of("core.netpol").controllers

    def rtos_mac(self, node: str) -> str:
        for row in self.env.nb_rows("Logical_Router_Port"):
            if nb_value(row["name"]) == f"rtos-{node}":
                return str(nb_value(row["mac"]))
        raise AssertionError(f"no rtos-{node}")

    def mgmt_ip(self, node: str) -> str:
        obj = self.client.get(NODES, node)
        assert obj is not None
        subnet = json.loads(obj["metadata"]["annotations"]["k8s.ovn.org/node-subnets"])["default"][0]
        base = subnet.split("/")[0].rsplit(".", 1)[0]
        return f"{base}.2"


def as_list(value: Any) -> list[Any]:
    """An ovsdb set column decoded by nb_value: a single element comes back bare."""
    if isinstance(value, list):
        return value
    if value in (None, "", []):
        return []
    return [value]


@contextlib.contextmanager
def netpol_cluster(kube: KubeControlPlane, lab_dir: Path, *,
                   install: paths.OvnInstall | None = None) -> Iterator[NetpolCluster]:
    """A controller with two nodes against a fresh OVN central of ``install`` (default: the chosen one)."""
    central = OvnCentral(lab_dir / f"ovn-np-{uuid.uuid4().hex[:8]}", install=install)
    central.start()
    env = ClusterEnv(kube, central)
    env.start_controller()
    for index, node in enumerate(NODE_NAMES):
        env.create_node(node, index)
    cluster = NetpolCluster(env)
    wait_for("node gateways", lambda: {f"GR_{n}" for n in NODE_NAMES} <= {
        nb_value(r["name"]) for r in env.nb_rows("Logical_Router")})
    yield cluster
    env.stop_controller()
    central.destroy()
    for node in NODE_NAMES:
        env.client.delete(NODES, node)
    for ns in env.client.list(NAMESPACES)[0]:
        if ns["metadata"]["name"].startswith("t-"):
            env.client.delete(NAMESPACES, ns["metadata"]["name"])


@pytest.fixture(scope="module")
def cluster(module_kube: KubeControlPlane, lab_dir: Path) -> Iterator[NetpolCluster]:  # noqa: F811
    with netpol_cluster(module_kube, lab_dir) as made:
        yield made
