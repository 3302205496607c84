"""KubeClient against the real API server (Kubernetes 1.20) of the test bed."""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from ovnk.core.config import KubernetesSettings
from ovnk.core.kube.client import KubeClient
from ovnk.core.kube.client import TokenBucket
from ovnk.core.kube.errors import Conflict
from ovnk.core.kube.errors import Invalid
from ovnk.core.kube.errors import KubeError
from ovnk.core.kube.errors import NotFound
from ovnk.core.kube.errors import ResourceExpired
from ovnk.core.kube.errors import Unavailable
from ovnk.core.kube.resources import CONFIGMAPS
from ovnk.core.kube.resources import CRDS
from ovnk.core.kube.resources import ENDPOINTSLICES
from ovnk.core.kube.resources import LEASES
from ovnk.core.kube.resources import NAMESPACES
from ovnk.core.kube.resources import SERVICES
from ovnk.core.kube.resources import Resource
from ovnk_lab.procs import free_port
from tests.functional.kube.conftest import ApiServerControl
from tests.functional.kube.helpers import configmap

pytestmark = pytest.mark.kube


def test_client_crud_roundtrip(client: KubeClient, namespace: str) -> None:
    created = client.create(CONFIGMAPS, configmap("a", namespace, x="1"))
    assert created["metadata"]["namespace"] == namespace
    assert created["data"] == {"x": "1"}
    fetched = client.get(CONFIGMAPS, "a", namespace=namespace)
    assert fetched is not None and fetched["metadata"]["uid"] == created["metadata"]["uid"]
    assert isinstance(fetched, dict)

    fetched["data"]["x"] = "2"
    replaced = client.replace(CONFIGMAPS, fetched)
    assert replaced["data"] == {"x": "2"}
    assert replaced["metadata"]["resourceVersion"] != created["metadata"]["resourceVersion"]

    assert client.delete(CONFIGMAPS, "a", namespace=namespace) is True
    assert client.get(CONFIGMAPS, "a", namespace=namespace) is None
    assert client.delete(CONFIGMAPS, "a", namespace=namespace) is False


def test_client_get_missing_returns_none_and_cluster_scoped_get(client: KubeClient, namespace: str) -> None:
    assert client.get(CONFIGMAPS, "does-not-exist", namespace=namespace) is None
    assert client.get(CONFIGMAPS, "x", namespace=f"no-such-{uuid.uuid4().hex[:6]}") is None
    ns = client.get(NAMESPACES, namespace)
    assert ns is not None and ns["kind"] == "Namespace"
    with pytest.raises(ValueError, match="namespace is required"):
        client.get(CONFIGMAPS, "a")
    with pytest.raises(ValueError, match="cluster-scoped"):
        client.list(NAMESPACES, namespace=namespace)


def test_client_stale_replace_and_duplicate_create_conflict(client: KubeClient, namespace: str) -> None:
    original = client.create(CONFIGMAPS, configmap("c", namespace, v="0"))
    first = {**original, "data": {"v": "1"}}
    client.replace(CONFIGMAPS, first)
    stale = {**original, "data": {"v": "stale"}}  # carries the old resourceVersion
    with pytest.raises(Conflict) as excinfo:
        client.replace(CONFIGMAPS, stale)
    assert excinfo.value.status == 409
    assert "modified" in excinfo.value.message
    current = client.get(CONFIGMAPS, "c", namespace=namespace)
    assert current is not None and current["data"] == {"v": "1"}

    with pytest.raises(Conflict) as dup:
        client.create(CONFIGMAPS, configmap("c", namespace))
    assert dup.value.reason == "AlreadyExists"


def test_client_invalid_object_raises_invalid(client: KubeClient, namespace: str) -> None:
    with pytest.raises(Invalid) as excinfo:
        client.create(CONFIGMAPS, configmap("Not_A_Valid_Name", namespace))
    assert excinfo.value.status == 422
    assert "Not_A_Valid_Name" in str(excinfo.value)


def test_client_list_follows_continue_pages(client: KubeClient, namespace: str) -> None:
    for i in range(23):
        client.create(CONFIGMAPS, {**configmap(f"p-{i:02d}", namespace), "metadata": {
            "name": f"p-{i:02d}", "namespace": namespace, "labels": {"page": "yes"}}})
    client.create(CONFIGMAPS, configmap("unlabelled", namespace))

    items, version = client.list(CONFIGMAPS, namespace=namespace, label_selector="page=yes", limit=5)
    assert sorted(i["metadata"]["name"] for i in items) == [f"p-{i:02d}" for i in range(23)]
    assert all(i["apiVersion"] == "v1" and i["kind"] == "ConfigMap" for i in items)
    assert int(version) >= max(int(i["metadata"]["resourceVersion"]) for i in items)

    unpaged, _ = client.list(CONFIGMAPS, namespace=namespace, label_selector="page=yes", limit=0)
    assert len(unpaged) == 23
    selected, _ = client.list(CONFIGMAPS, namespace=namespace, field_selector="metadata.name=unlabelled")
    assert [i["metadata"]["name"] for i in selected] == ["unlabelled"]


def test_client_merge_strategic_and_json_patches(client: KubeClient, namespace: str) -> None:
    client.create(CONFIGMAPS, configmap("m", namespace, keep="1", drop="2"))
    merged = client.patch(CONFIGMAPS, "m", {"data": {"drop": None, "new": "3"},
                                           "metadata": {"labels": {"l": "v"}}}, namespace=namespace)
    assert merged["data"] == {"keep": "1", "new": "3"}
    assert merged["metadata"]["labels"]["l"] == "v"

    patched = client.patch(CONFIGMAPS, "m", [
        {"op": "test", "path": "/data/keep", "value": "1"},
        {"op": "replace", "path": "/data/keep", "value": "one"},
        {"op": "remove", "path": "/data/new"},
    ], namespace=namespace, patch_type="json")
    assert patched["data"] == {"keep": "one"}
    with pytest.raises(KubeError):
        client.patch(CONFIGMAPS, "m", [{"op": "test", "path": "/data/keep", "value": "wrong"}],
                     namespace=namespace, patch_type="json")

    # Strategic merge merges the ports list by port number; a merge patch replaces the list.
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "svc", "namespace": namespace},
               "spec": {"selector": {"app": "x"}, "ports": [{"name": "a", "port": 80}]}}
    client.create(SERVICES, service)
    strategic = client.patch(SERVICES, "svc", {"spec": {"ports": [{"name": "b", "port": 81}]}},
                             namespace=namespace, patch_type="strategic")
    assert sorted(p["port"] for p in strategic["spec"]["ports"]) == [80, 81]
    merge = client.patch(SERVICES, "svc", {"spec": {"ports": [{"name": "c", "port": 82}]}}, namespace=namespace)
    assert [p["port"] for p in merge["spec"]["ports"]] == [82]

    with pytest.raises(ValueError, match="unknown patch type"):
        client.patch(CONFIGMAPS, "m", {}, namespace=namespace, patch_type="apply")  # type: ignore[arg-type]
    with pytest.raises(NotFound):
        client.patch(CONFIGMAPS, "absent", {"data": {}}, namespace=namespace)


def test_client_resolve_falls_back_to_served_version(client: KubeClient) -> None:
    resolved = client.resolve(ENDPOINTSLICES)
    assert resolved.version == "v1beta1"  # Kubernetes 1.20 serves no discovery.k8s.io/v1
    assert resolved.api_version == "discovery.k8s.io/v1beta1"
    assert client.resolve(ENDPOINTSLICES) is resolved  # cached
    assert client.resolve(LEASES).version == "v1"
    # Verbs on a resource with fallbacks use the served version.
    items, _ = client.list(ENDPOINTSLICES, namespace="default")
    assert all(item["apiVersion"] == "discovery.k8s.io/v1beta1" for item in items)


def test_client_resolve_unserved_resource_is_a_clear_error(client: KubeClient) -> None:
    ghost = Resource("ghosts.example.invalid", "v2", "Ghost", "ghosts", fallback_versions=("v1",))
    with pytest.raises(KubeError) as excinfo:
        client.resolve(ghost)
    assert excinfo.value.reason == "NotServed"
    message = str(excinfo.value)
    assert "ghosts.example.invalid" in message and "v2, v1" in message
    with pytest.raises(KubeError, match="serves none"):
        client.list(ghost)
    # A served group without that resource is not served either.
    with pytest.raises(KubeError, match="serves none"):
        client.resolve(Resource("discovery.k8s.io", "v1", "Ghost", "ghosts", fallback_versions=("v1beta1",)))


def _crd(group: str, *, extra_column: bool = False) -> dict[str, Any]:
    version: dict[str, Any] = {
        "name": "v1", "served": True, "storage": True,
        "schema": {"openAPIV3Schema": {"type": "object", "properties": {
            "spec": {"type": "object", "properties": {"size": {"type": "integer"}}},
            "status": {"type": "object", "properties": {"phase": {"type": "string"}}},
        }}},
        "subresources": {"status": {}},
    }
    if extra_column:
        version["additionalPrinterColumns"] = [{"name": "Size", "type": "integer", "jsonPath": ".spec.size"}]
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {"group": group, "scope": "Namespaced",
                 "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                 "versions": [version]},
    }


def test_client_apply_crd_waits_for_established_and_updates(client: KubeClient, namespace: str) -> None:
    group = f"t{uuid.uuid4().hex[:8]}.ovnk.test"
    widgets = Resource(group, "v1", "Widget", "widgets")
    try:
        client.apply_crd(_crd(group))
        crd = client.get(CRDS, f"widgets.{group}")
        assert crd is not None
        assert {"type": "Established", "status": "True"}.items() <= next(
            c for c in crd["status"]["conditions"] if c["type"] == "Established").items()
        created = client.create(widgets, {"apiVersion": f"{group}/v1", "kind": "Widget",
                                          "metadata": {"name": "w", "namespace": namespace},
                                          "spec": {"size": 3}})
        assert created["spec"] == {"size": 3}
        # The status subresource ignores spec changes and takes status.
        status = client.patch(widgets, "w", {"status": {"phase": "Ready"}, "spec": {"size": 9}},
                              namespace=namespace, subresource="status")
        assert status["status"] == {"phase": "Ready"} and status["spec"] == {"size": 3}

        client.apply_crd(_crd(group, extra_column=True))  # update in place
        updated = client.get(CRDS, f"widgets.{group}")
        assert updated is not None
        assert updated["spec"]["versions"][0]["additionalPrinterColumns"][0]["name"] == "Size"
        client.apply_crd(_crd(group, extra_column=True))  # idempotent
    finally:
        client.delete(CRDS, f"widgets.{group}")


def test_client_watch_streams_events_and_closes_from_another_thread(
    client: KubeClient, writer: KubeClient, namespace: str
) -> None:
    _, version = client.list(CONFIGMAPS, namespace=namespace)
    # Only "w": kube-controller-manager publishes kube-root-ca.crt into new namespaces whenever it gets to it.
    stream = client.watch(CONFIGMAPS, resource_version=version, namespace=namespace, timeout_seconds=60,
                          field_selector="metadata.name=w")
    writer.create(CONFIGMAPS, configmap("w", namespace, a="1"))
    writer.patch(CONFIGMAPS, "w", {"data": {"a": "2"}}, namespace=namespace)
    writer.delete(CONFIGMAPS, "w", namespace=namespace)
    events = [next(stream) for _ in range(3)]
    assert [(e.type, e.object["metadata"]["name"]) for e in events] == [
        ("ADDED", "w"), ("MODIFIED", "w"), ("DELETED", "w")]
    assert events[1].object["data"] == {"a": "2"}

    # Nothing more comes; close() from another thread ends the blocked iteration at once.
    ended = threading.Event()
    leftovers: list[Any] = []

    def consume() -> None:
        leftovers.extend(stream)
        ended.set()

    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    time.sleep(0.3)
    assert not ended.is_set()
    started = time.monotonic()
    stream.close()
    assert ended.wait(5), "close() did not end the blocked watch"
    assert time.monotonic() - started < 2
    assert leftovers == []
    stream.close()  # idempotent


def test_client_watch_server_timeout_ends_iteration(client: KubeClient, namespace: str) -> None:
    _, version = client.list(CONFIGMAPS, namespace=namespace)
    started = time.monotonic()
    with client.watch(CONFIGMAPS, resource_version=version, namespace=namespace, timeout_seconds=1,
                      field_selector="metadata.name=nothing-here") as stream:
        assert [e for e in stream if e.type != "BOOKMARK"] == []
    assert time.monotonic() - started < 5


def test_client_watch_breaks_on_apiserver_kill_and_old_version_expires(
    client: KubeClient, writer: KubeClient, namespace: str, apiserver: ApiServerControl
) -> None:
    _, version = client.list(CONFIGMAPS, namespace=namespace)
    stream = client.watch(CONFIGMAPS, resource_version=version, namespace=namespace, timeout_seconds=60)
    writer.create(CONFIGMAPS, configmap("before", namespace))
    assert next(stream).type == "ADDED"

    apiserver.kill()
    outcome: list[BaseException | None] = []

    def read_rest() -> None:
        try:
            list(stream)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    reader = threading.Thread(target=read_rest, daemon=True)
    reader.start()
    reader.join(10)
    assert outcome, "a watch on a killed API server did not end"
    assert outcome[0] is None or isinstance(outcome[0], Unavailable), outcome
    with pytest.raises(Unavailable):
        client.get(CONFIGMAPS, "before", namespace=namespace)

    apiserver.start()
    # The restarted server's watch cache begins after "before": the old version is gone.
    with pytest.raises(ResourceExpired) as excinfo:
        for _ in client.watch(CONFIGMAPS, resource_version=version, namespace=namespace, timeout_seconds=10):
            pass
    assert excinfo.value.status == 410
    assert client.get(CONFIGMAPS, "before", namespace=namespace) is not None


def test_client_unreachable_server_raises_unavailable(tmp_path: Path, kubeconfig: str) -> None:
    config = json.loads(Path(kubeconfig).read_text())
    config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{free_port()}"
    broken = tmp_path / "broken.kubeconfig"
    broken.write_text(json.dumps(config))
    with KubeClient(kubeconfig=str(broken), request_timeout=2) as kube:
        with pytest.raises(Unavailable) as excinfo:
            kube.get(NAMESPACES, "default")
        assert excinfo.value.status == 0
        with pytest.raises(Unavailable):
            kube.watch(CONFIGMAPS, resource_version="0")


def test_client_bad_kubeconfig_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(KubeError, match="cannot load Kubernetes client configuration"):
        KubeClient(kubeconfig=str(tmp_path / "missing.kubeconfig"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(KubeError, match="in-cluster service account"):
        KubeClient(kubeconfig=None)


def test_client_from_settings(kubeconfig: str, namespace: str) -> None:
    settings = KubernetesSettings(kubeconfig=kubeconfig, request_timeout=7.0, qps=50.0)
    with KubeClient.from_settings(settings) as client:
        assert client.request_timeout == 7.0
        assert client.get(NAMESPACES, namespace) is not None


def test_client_shared_by_threads(client: KubeClient, namespace: str) -> None:
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for i in range(15):
                client.create(CONFIGMAPS, configmap(f"t{worker}-{i}", namespace))
                assert client.get(CONFIGMAPS, f"t{worker}-{i}", namespace=namespace) is not None
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    items, _ = client.list(CONFIGMAPS, namespace=namespace, limit=50)
    assert {i["metadata"]["name"] for i in items} >= {f"t{w}-{i}" for w in range(8) for i in range(15)}


def test_client_rate_limit_spaces_requests(kubeconfig: str) -> None:
    with KubeClient(kubeconfig=kubeconfig, qps=20) as slow:
        started = time.monotonic()
        for _ in range(30):  # a burst of 20, then 10 more at 20/s
            slow.get(NAMESPACES, "default")
        assert time.monotonic() - started >= 0.45


def test_token_bucket_rate() -> None:
    bucket = TokenBucket(rate=100, burst=5)
    started = time.monotonic()
    waited = [bucket.acquire() for _ in range(25)]
    elapsed = time.monotonic() - started
    assert waited[:5] == [0.0] * 5
    assert 0.18 <= elapsed < 1.0
    with pytest.raises(ValueError):
        TokenBucket(rate=0, burst=1)
