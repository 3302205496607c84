"""EventRecorder writes real core/v1 Events, folds repeats, and never raises."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from ovnk.core.kube.client import KubeClient
from ovnk.core.kube.events import EventRecorder
from ovnk.core.kube.resources import CONFIGMAPS
from ovnk.core.kube.resources import EVENTS
from ovnk.core.kube.resources import NAMESPACES
from ovnk_lab.procs import free_port
from tests.functional.kube.helpers import configmap
from tests.functional.kube.helpers import wait_until

pytestmark = pytest.mark.kube


def events_about(client: KubeClient, obj: dict[str, Any], namespace: str) -> list[dict[str, Any]]:
    items, _ = client.list(EVENTS, namespace=namespace,
                           field_selector=f"involvedObject.uid={obj['metadata']['uid']}")
    return sorted(items, key=lambda e: (e["reason"], e["message"]))


def test_event_recorder_writes_and_aggregates(client: KubeClient, writer: KubeClient, namespace: str) -> None:
    target = writer.create(CONFIGMAPS, configmap("target", namespace))
    target = {**target, "apiVersion": "v1", "kind": "ConfigMap"}
    recorder = EventRecorder(client, component="ovnk-controller", host="node-1")

    recorder.event(target, type="Warning", reason="ReconcileFailed", message="no subnet for node-1")
    [event] = events_about(writer, target, namespace)
    assert event["type"] == "Warning" and event["reason"] == "ReconcileFailed"
    assert event["message"] == "no subnet for node-1"
    assert event["count"] == 1
    assert event["source"] == {"component": "ovnk-controller", "host": "node-1"}
    assert event["involvedObject"] == {
        "kind": "ConfigMap", "apiVersion": "v1", "name": "target", "namespace": namespace,
        "uid": target["metadata"]["uid"], "resourceVersion": target["metadata"]["resourceVersion"],
    }
    assert event["metadata"]["namespace"] == namespace

    recorder.event(target, type="Warning", reason="ReconcileFailed", message="no subnet for node-1")
    [event] = events_about(writer, target, namespace)
    assert event["count"] == 2
    assert event["lastTimestamp"] >= event["firstTimestamp"]

    recorder.event(target, type="Normal", reason="Reconciled", message="ok")
    recorder.event(target, type="Warning", reason="ReconcileFailed", message="another message")
    found = events_about(writer, target, namespace)
    assert [(e["reason"], e["message"], e["count"]) for e in found] == [
        ("ReconcileFailed", "another message", 1), ("ReconcileFailed", "no subnet for node-1", 2),
        ("Reconciled", "ok", 1)]


def test_event_recorder_recreates_an_expired_event(client: KubeClient, writer: KubeClient, namespace: str) -> None:
    target = {**writer.create(CONFIGMAPS, configmap("t2", namespace)), "apiVersion": "v1", "kind": "ConfigMap"}
    recorder = EventRecorder(client, component="ovnk-controller")
    recorder.event(target, type="Normal", reason="Synced", message="m")
    [event] = events_about(writer, target, namespace)
    writer.delete(EVENTS, event["metadata"]["name"], namespace=namespace)  # as the TTL would
    recorder.event(target, type="Normal", reason="Synced", message="m")
    [again] = events_about(writer, target, namespace)
    assert again["count"] == 1 and again["metadata"]["name"] != event["metadata"]["name"]
    assert "host" not in again["source"]


def test_event_recorder_cluster_scoped_object_goes_to_default(
    client: KubeClient, writer: KubeClient, namespace: str
) -> None:
    ns_object = writer.get(NAMESPACES, namespace)
    assert ns_object is not None
    # The API server creates "default" shortly after it starts.
    wait_until(lambda: writer.get(NAMESPACES, "default") is not None, timeout=30, what="namespace default")
    recorder = EventRecorder(client, component="ovnk-test")
    recorder.event(ns_object, type="Normal", reason="Seen", message=f"namespace {namespace}")
    found = events_about(writer, ns_object, "default")
    try:
        assert [(e["reason"], e["involvedObject"]["kind"]) for e in found] == [("Seen", "Namespace")]
        assert "namespace" not in found[0]["involvedObject"]
    finally:
        for event in found:
            writer.delete(EVENTS, event["metadata"]["name"], namespace="default")


def test_event_recorder_never_raises(tmp_path: Path, kubeconfig: str, caplog: pytest.LogCaptureFixture) -> None:
    config = json.loads(Path(kubeconfig).read_text())
    config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{free_port()}"
    broken = tmp_path / "broken.kubeconfig"
    broken.write_text(json.dumps(config))
    with KubeClient(kubeconfig=str(broken), request_timeout=2) as unreachable, \
            caplog.at_level(logging.WARNING, logger="ovnk.core.kube.events"):
        recorder = EventRecorder(unreachable, component="ovnk-test")
        recorder.event({"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "p", "namespace": "x", "uid": "u"}},
                       type="Warning", reason="Failed", message="m")
        recorder.event({"kind": "Pod"}, type="Warning", reason="NoMetadata", message="m")
    messages = [r.getMessage() for r in caplog.records]
    assert any("could not record Warning event Failed on p" in m for m in messages), messages
    assert any("NoMetadata" in m for m in messages), messages
