"""Services against a real API server and a real OVN NB (reusing the topology tests' ``ClusterEnv``).

No kubelet runs, so no pod ever becomes ready and kube-controller-manager
writes no EndpointSlices: tests create selector-less Services and write their
EndpointSlices themselves (``discovery.k8s.io/v1beta1`` on the 1.20 test
server, whose ``serving``/``terminating`` conditions need the
``EndpointSliceTerminatingCondition`` gate this module's control plane turns on).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from typing import TypeVar

import pytest

from ovnk.core.kube.resources import ENDPOINTSLICES
from ovnk.core.kube.resources import EVENTS
from ovnk.core.kube.resources import SERVICES
from ovnk_lab.kube import KubeControlPlane
from tests.functional.topology.conftest import ClusterEnv
from tests.functional.topology.conftest import env  # noqa: F401  (fixture)
from tests.functional.topology.conftest import nb_value

T = TypeVar("T")

CONTROLLER = "default-network-controller"


@pytest.fixture(scope="module")
def module_kube(lab_dir: Path) -> Iterator[KubeControlPlane]:
    """This module's control plane; it keeps the EndpointSlice ``serving``/``terminating`` conditions."""
    cp = KubeControlPlane(lab_dir / f"kube-svc-{uuid.uuid4().hex[:8]}", scheduler=False,
                          extra_apiserver_args=["--feature-gates=EndpointSliceTerminatingCondition=true"])
    cp.start()
    yield cp
    cp.stop()


def eventually(check: Callable[[], T | None], *, timeout: float = 60, what: str = "condition") -> T:
    """Poll ``check`` until it returns something truthy (never sleep-and-hope)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            result = check()
            if result:
                return result
        except AssertionError as exc:
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {last}")
        time.sleep(0.1)


def create_service(cluster: ClusterEnv, namespace: str, name: str, *, ports: list[dict[str, Any]],
                   type: str = "ClusterIP", **spec: Any) -> dict[str, Any]:
    body = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": namespace},
            "spec": {"type": type, "ports": ports, **spec}}
    return cluster.client.create(SERVICES, body, namespace=namespace)


def endpoint(ip: str, node: str | None = None, *, ready: bool | None = True, serving: bool | None = None,
             terminating: bool | None = None) -> dict[str, Any]:
    """An endpoint in v1 shape (``nodeName``); :func:`create_slice` converts it for v1beta1."""
    conditions = {k: v for k, v in (("ready", ready), ("serving", serving), ("terminating", terminating))
                  if v is not None}
    entry: dict[str, Any] = {"addresses": [ip], "conditions": conditions}
    if node:
        entry["nodeName"] = node
    return entry


def slice_body(cluster: ClusterEnv, namespace: str, name: str, service: str, *, ports: list[dict[str, Any]],
               endpoints: list[dict[str, Any]], address_type: str = "IPv4") -> dict[str, Any]:
    served = cluster.client.resolve(ENDPOINTSLICES)
    entries = []
    for entry in endpoints:
        entry = dict(entry)
        if served.version == "v1beta1" and "nodeName" in entry:
            entry["topology"] = {"kubernetes.io/hostname": entry.pop("nodeName")}
        entries.append(entry)
    return {"apiVersion": served.api_version, "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": namespace, "labels": {"kubernetes.io/service-name": service}},
            "addressType": address_type, "ports": ports, "endpoints": entries}


def create_slice(cluster: ClusterEnv, namespace: str, name: str, service: str, **kwargs: Any) -> dict[str, Any]:
    return cluster.client.create(ENDPOINTSLICES, slice_body(cluster, namespace, name, service, **kwargs),
                             namespace=namespace)


def replace_slice(cluster: ClusterEnv, namespace: str, name: str, service: str, **kwargs: Any) -> dict[str, Any]:
    current = cluster.client.get(ENDPOINTSLICES, name, namespace=namespace)
    assert current is not None
    body = slice_body(cluster, namespace, name, service, **kwargs)
    body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
    return cluster.client.replace(ENDPOINTSLICES, body, namespace=namespace)


def load_balancers(cluster: ClusterEnv) -> dict[str, dict[str, Any]]:
    """Load_Balancer rows by name, values decoded."""
    return load_balancers_by_name(cluster.nb_rows("Load_Balancer"))


def load_balancers_by_name(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {nb_value(r["name"]): {k: nb_value(v) for k, v in r.items()} for r in rows}


def set_of(value: Any) -> set[Any]:
    """An ovsdb set column as decoded by ``nb_value`` (a bare value when it has one element)."""
    if isinstance(value, list):
        return {v[1] if isinstance(v, tuple) else v for v in value}
    return {value[1] if isinstance(value, tuple) else value}


def uuid_of(row: dict[str, Any]) -> str:
    return str(row["_uuid"][1])


def attached(cluster: ClusterEnv, table: str, name: str, namespace: str) -> set[str]:
    """Names of the load balancers of ``namespace``'s services a router, switch or LB group refers to.

    (Services of earlier tests may still exist while their namespaces are being emptied.)
    """
    tables = cluster.nb_tables(table, "Load_Balancer")  # one snapshot: every reference resolves
    rows = [r for r in tables[table] if nb_value(r["name"]) == name]
    assert rows, f"{table} {name} does not exist"
    by_uuid = {uuid_of(row): lb for lb, row in load_balancers_by_name(tables["Load_Balancer"]).items()}
    names = {by_uuid[u] for u in set_of(nb_value(rows[0]["load_balancer"]))}
    return {lb for lb in names if lb.startswith(f"Service_{namespace}/")}


def service_events(cluster: ClusterEnv, namespace: str, name: str) -> list[dict[str, Any]]:
    items, _ = cluster.client.list(EVENTS, namespace=namespace)
    return [e for e in items if e.get("involvedObject", {}).get("name") == name
            and e.get("involvedObject", {}).get("kind") == "Service"]
