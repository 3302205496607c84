"""A controller against its own real control plane and a real OVN central.

Nodes are created through the API with the annotations a node agent would
publish; pods are created with ``spec.nodeName`` (no kubelet runs them).
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from ovnk.core.bootstrap import bootstrap
from ovnk.core.config import ConfigInputs
from ovnk.core.controller import ControllerProcess
from ovnk.core.kube.client import KubeClient
from ovnk.core.kube.resources import NAMESPACES
from ovnk.core.kube.resources import NODES
from ovnk.core.kube.resources import PODS
from ovnk_lab.kube import KubeControlPlane
from ovnk_lab.ovn import OvnCentral


def node_ip(index: int) -> str:
    return f"172.30.0.{11 + index}"


class ClusterEnv:
    """One control plane, one OVN central and at most one running controller."""

    def __init__(self, kube: KubeControlPlane, central: OvnCentral) -> None:
        self.kube = kube
        self.central = central
        self.client = KubeClient(kubeconfig=str(kube.kubeconfig), qps=1000)
        self.process: ControllerProcess | None = None
        self.chassis: dict[str, str] = {}

    # -- controller ----------------------------------------------------------

    def start_controller(self, *extra: str) -> ControllerProcess:
        assert self.process is None
        inputs = ConfigInputs(
            env={},
            flags={"kubeconfig": str(self.kube.kubeconfig), "nb_address": self.central.nb_address,
                   "sb_address": self.central.sb_address},
            # The e2e-timestamp probe writes NB_Global every round: off, so tests can assert "nothing
            # was written"; tests of the probe turn it on with an extra assignment.
            assignments=["controller.leader-election=false", "controller.metrics-bind-address=",
                         "controller.workers=8", "controller.e2e-timestamp-interval=0", *extra],
        )
        self.process = ControllerProcess(bootstrap(inputs)).start()
        return self.process

    def stop_controller(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None

    def wait_idle(self, timeout: float = 120) -> None:
        assert self.process is not None and self.process.runner is not None
        assert self.process.runner.wait_idle(timeout, settle=0.5), "controller did not settle"

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        assert self.process is not None and self.process.ctx is not None
        return self.process.ctx.registry.get_sample_value(name, labels or {}) or 0.0

    # -- objects -------------------------------------------------------------

    def create_node(self, name: str, index: int) -> None:
        chassis = self.chassis.setdefault(name, str(uuid.uuid4()))
        gateway = {"default": {"mode": "shared", "bridge-id": "breth0", "interface-id": f"breth0_{name}",
                               "mac-address": f"0a:00:00:00:00:{index + 1:02x}",
                               "ip-addresses": [f"{node_ip(index)}/24"], "next-hops": ["172.30.0.254"],
                               "node-port-enable": "true", "vlan-id": "0"}}
        self.client.create(NODES, {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "annotations": {
            "k8s.ovn.org/node-chassis-id": chassis,
            "k8s.ovn.org/l3-gateway-config": json.dumps(gateway),
            "k8s.ovn.org/node-mgmt-port-mac-addresses": json.dumps({"default": f"0a:00:00:00:01:{index + 1:02x}"}),
            "k8s.ovn.org/node-primary-ifaddr": json.dumps({"ipv4": f"{node_ip(index)}/24"}),
        }}})

    def create_namespace(self, name: str) -> None:
        self.client.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})

    def create_pod(self, namespace: str, name: str, node: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
        body = {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": namespace, "annotations": annotations or {}},
                "spec": {"nodeName": node, "automountServiceAccountToken": False,
                         "containers": [{"name": "c", "image": "busybox"}]}}
        for _ in range(100):
            try:
                return self.client.create(PODS, body, namespace=namespace)
            except Exception as exc:  # the namespace's service account may not exist yet
                if "serviceaccount" not in str(exc).lower():
                    raise
                time.sleep(0.1)
        raise AssertionError("namespace service account never appeared")

    def delete_pod(self, namespace: str, name: str) -> None:
        # No kubelet confirms a graceful deletion here: delete at once.
        self.client.delete(PODS, name, namespace=namespace, grace_period_seconds=0)

    def pods(self, namespace: str) -> list[dict[str, Any]]:
        items, _ = self.client.list(PODS, namespace=namespace)
        return items

    def nb_rows(self, table: str) -> list[dict[str, Any]]:
        return self.nb_tables(table)[table]

    def nb_tables(self, *tables: str) -> dict[str, list[dict[str, Any]]]:
        """Rows of several tables from one ``ovn-nbctl`` call: one snapshot, so references between
        them resolve (two calls may straddle a commit)."""
        args = ["--format=json"]
        for table in tables:
            args += ["--", "list", table]
        docs = [json.loads(line) for line in self.central.nbctl(*args).splitlines() if line.strip()]
        return {table: [dict(zip(doc["headings"], row, strict=True)) for row in doc["data"]]
                for table, doc in zip(tables, docs, strict=True)}


# The fixtures live in tests/functional/conftest.py; re-exported for modules that import them from here.
from tests.functional.conftest import env  # noqa: E402, F401
from tests.functional.conftest import module_kube  # noqa: E402, F401


def nb_value(value: Any) -> Any:
    """Decode ovsdb JSON values (``["map", ...]``, ``["set", ...]``, ``["uuid", ...]``)."""
    if isinstance(value, list) and len(value) == 2 and value[0] in ("map", "set", "uuid"):
        kind, data = value
        if kind == "map":
            return {k: nb_value(v) for k, v in data}
        if kind == "set":
            return [nb_value(v) for v in data]
        return ("uuid", data)
    return value
