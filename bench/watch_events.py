"""Watch-event throughput: ovnk's Informer against the official ``kubernetes`` client.

Starts its own control plane (etcd + kube-apiserver) in a temporary directory,
records a stream of changes once (N Pod creates, then one annotation update of
each: 2N events; no scheduler, so the pods stay Pending), and has every consumer
replay that same stream by watching from the resourceVersion taken before the
first change:

- baseline: ``kubernetes.watch.Watch().stream(CoreV1Api.list_namespaced_pod, ...)``,
  which deserializes every event into ``V1Pod`` models;
- ``ovnk KubeClient.watch``: our raw-JSON watch stream, events counted;
- ``ovnk Informer``: the full informer path (``strip_pod``, store with the
  namespace and node indexes, dispatch to a no-op handler). Its list is answered
  from the snapshot taken at that same resourceVersion (the empty namespace), so
  it watches from there.

Pods, not ConfigMaps: they are the objects a network controller watches most,
and their size and nesting is where model deserialization costs most.

Each consumer runs several rounds, alternating; the median is reported.
Run: ``.venv/bin/python bench/watch_events.py [--quick]``. The last line of
output is one JSON object with the figures, the baseline and the ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ovnk.core.kube.client import KubeClient
from ovnk.core.kube.errors import Conflict
from ovnk.core.kube.informer import Informer
from ovnk.core.kube.resources import NAMESPACES
from ovnk.core.kube.resources import PODS
from ovnk.core.kube.resources import Resource
from ovnk_lab.kube import KubeControlPlane

NAMESPACE = "bench"
LABEL = "ovnk-bench"
SELECTOR = f"{LABEL}=yes"
SERVICEACCOUNTS = Resource("", "v1", "ServiceAccount", "serviceaccounts")


class ReplayClient(KubeClient):
    """A KubeClient whose list answers with a snapshot taken earlier (items, resourceVersion),
    so an Informer started now watches every change made since that snapshot."""

    def __init__(self, *, snapshot: tuple[list[dict[str, Any]], str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._snapshot = snapshot

    def list(self, resource: Resource, **kwargs: Any) -> tuple[list[dict[str, Any]], str]:  # type: ignore[override]
        items, version = self._snapshot
        return [dict(item) for item in items], version


class CountingHandler:
    """A no-op handler that signals when it has seen ``expected`` events."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.count = 0
        self.done = threading.Event()

    def _seen(self) -> None:
        self.count += 1
        if self.count >= self.expected:
            self.done.set()

    def on_add(self, obj: dict[str, Any]) -> None:
        self._seen()

    def on_update(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        self._seen()

    def on_delete(self, obj: dict[str, Any]) -> None:
        self._seen()


def pod(i: int) -> dict[str, Any]:
    """A pod shaped like a typical workload: two containers, probes, env, mounts, resources."""
    app = f"app-{i % 50}"
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": f"pod-{i:05d}", "namespace": NAMESPACE,
            "labels": {LABEL: "yes", "app": app, "tier": "backend", "pod-template-hash": "5d9c7b8f6"},
            "annotations": {"k8s.ovn.org/bench": str(i), "prometheus.io/scrape": "true"},
        },
        "spec": {
            "nodeName": f"node-{i % 20}",
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 30,
            "containers": [
                {"name": "app", "image": f"registry.example/{app}:1.2.3", "imagePullPolicy": "Never",
                 "args": ["--port=8080", "--log-level=info"],
                 "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"},
                           {"name": "metrics", "containerPort": 9090, "protocol": "TCP"}],
                 "env": [{"name": f"VAR_{n}", "value": f"value-{n}"} for n in range(6)],
                 "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                               "limits": {"cpu": "500m", "memory": "256Mi"}},
                 "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 5},
                 "livenessProbe": {"httpGet": {"path": "/live", "port": 8080}, "periodSeconds": 10},
                 "volumeMounts": [{"name": "config", "mountPath": "/etc/app"},
                                  {"name": "data", "mountPath": "/var/lib/app"}]},
                {"name": "sidecar", "image": "registry.example/proxy:2.0", "imagePullPolicy": "Never",
                 "ports": [{"name": "proxy", "containerPort": 15001, "protocol": "TCP"}],
                 "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}}},
            ],
            "volumes": [{"name": "config", "configMap": {"name": f"{app}-config"}},
                        {"name": "data", "emptyDir": {}}],
        },
    }


def record_changes(client: KubeClient, objects: int) -> str:
    """Create ``objects`` pods then update each once; returns the resourceVersion before."""
    client.create(NAMESPACES, {"metadata": {"name": NAMESPACE}})
    try:  # pod admission needs the namespace's default service account
        client.create(SERVICEACCOUNTS, {"metadata": {"name": "default", "namespace": NAMESPACE}})
    except Conflict:
        pass
    _, before = client.list(PODS, namespace=NAMESPACE, label_selector=SELECTOR)

    def create(i: int) -> None:
        client.create(PODS, pod(i))

    def update(i: int) -> None:
        client.patch(PODS, f"pod-{i:05d}", {"metadata": {"annotations": {"k8s.ovn.org/bench": f"{i}-updated"}}},
                     namespace=NAMESPACE)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(create, range(objects)))
        list(pool.map(update, range(objects)))
    return before


Timing = tuple[float, float]  # (wall seconds, CPU seconds of this process)


def run_baseline(kubeconfig: str, *, version: str, events: int) -> Timing:
    from kubernetes import client as k8s_client
    from kubernetes import config as k8s_config
    from kubernetes import watch as k8s_watch

    api = k8s_client.CoreV1Api(k8s_config.new_client_from_config(config_file=kubeconfig))
    watcher = k8s_watch.Watch()
    seen = 0
    started, cpu = time.perf_counter(), time.process_time()
    for _event in watcher.stream(api.list_namespaced_pod, namespace=NAMESPACE, label_selector=SELECTOR,
                                 resource_version=version, timeout_seconds=300):
        seen += 1
        if seen >= events:
            break
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    watcher.stop()
    api.api_client.close()
    if seen < events:
        raise RuntimeError(f"baseline saw {seen} of {events} events")
    return elapsed, cpu


def run_raw_watch(kubeconfig: str, *, version: str, events: int) -> Timing:
    with KubeClient(kubeconfig=kubeconfig, qps=1000) as client:
        seen = 0
        started, cpu = time.perf_counter(), time.process_time()
        with client.watch(PODS, resource_version=version, namespace=NAMESPACE, label_selector=SELECTOR,
                          timeout_seconds=300) as stream:
            for event in stream:
                if event.type != "BOOKMARK":
                    seen += 1
                    if seen >= events:
                        break
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    if seen < events:
        raise RuntimeError(f"raw watch saw {seen} of {events} events")
    return elapsed, cpu


def run_informer(kubeconfig: str, *, version: str, events: int) -> Timing:
    with ReplayClient(kubeconfig=kubeconfig, qps=1000, snapshot=([], version)) as client:
        informer = Informer(client, PODS, namespace=NAMESPACE, label_selector=SELECTOR)
        handler = CountingHandler(events)
        informer.add_handler(handler)
        started, cpu = time.perf_counter(), time.process_time()
        informer.start()
        finished = handler.done.wait(300)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        informer.stop()
    if not finished:
        raise RuntimeError(f"informer saw {handler.count} of {events} events")
    if len(informer.store) != events // 2:
        raise RuntimeError(f"informer store holds {len(informer.store)} objects, expected {events // 2}")
    return elapsed, cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer objects and rounds (under a minute)")
    parser.add_argument("--objects", type=int, help="pods to create (events = 2 x objects)")
    parser.add_argument("--rounds", type=int, help="rounds per consumer (median reported)")
    args = parser.parse_args(argv)
    objects = args.objects or (1500 if args.quick else 5000)
    rounds = args.rounds or (3 if args.quick else 5)
    events = 2 * objects

    with tempfile.TemporaryDirectory(prefix="ovnk-bench-") as tmp:
        # No scheduler and only the service-account controller: nothing else touches the pods.
        plane = KubeControlPlane(Path(tmp) / "kube", scheduler=False, controllers="serviceaccount")
        plane.start()
        try:
            kubeconfig = str(plane.kubeconfig)
            with KubeClient(kubeconfig=kubeconfig, qps=5000) as writer:
                started = time.perf_counter()
                version = record_changes(writer, objects)
                recorded = time.perf_counter() - started
            time.sleep(2)  # let the API server and etcd finish writing before timing reads
            print(f"recorded {events} events ({objects} creates + {objects} updates) in {recorded:.1f}s, "
                  f"replaying from resourceVersion {version}, {rounds} rounds each", file=sys.stderr)
            consumers: dict[str, Callable[..., Timing]] = {
                "baseline": run_baseline, "raw_watch": run_raw_watch, "informer": run_informer,
            }
            timings: dict[str, list[Timing]] = {name: [] for name in consumers}
            for _ in range(rounds):
                for name, consumer in consumers.items():
                    timings[name].append(consumer(kubeconfig, version=version, events=events))
        finally:
            plane.stop()

    wall = {name: statistics.median(t[0] for t in values) for name, values in timings.items()}
    cpu = {name: statistics.median(t[1] for t in values) for name, values in timings.items()}
    rates = {name: events / seconds for name, seconds in wall.items()}
    cpu_us = {name: seconds / events * 1e6 for name, seconds in cpu.items()}
    labels = {
        "baseline": "kubernetes watch.Watch().stream (V1Pod models)",
        "raw_watch": "ovnk KubeClient.watch (raw JSON dicts)",
        "informer": "ovnk Informer (strip_pod + store + no-op handler)",
    }
    print(f"\nWatch-event throughput, {events} Pod events replayed, median of {rounds} rounds")
    print(f"{'consumer':<52}{'seconds':>9}{'events/s':>10}{'x base':>8}{'CPU us/event':>14}")
    for name, rate in rates.items():
        print(f"{labels[name]:<52}{wall[name]:>9.3f}{rate:>10.0f}{rate / rates['baseline']:>7.2f}x"
              f"{cpu_us[name]:>14.1f}")
    print("(events/s is wall-clock and includes the API server's share of the shared CPUs; "
          "CPU us/event is this process only)")
    result = {
        "benchmark": "watch_events",
        "quick": args.quick,
        "object": "Pod",
        "events": events,
        "rounds": rounds,
        "unit": "events/s",
        "ours": {"informer_events_per_s": round(rates["informer"]),
                 "raw_watch_events_per_s": round(rates["raw_watch"]),
                 "informer_cpu_us_per_event": round(cpu_us["informer"], 1)},
        "baseline": {"kubernetes_watch_events_per_s": round(rates["baseline"]),
                     "kubernetes_watch_cpu_us_per_event": round(cpu_us["baseline"], 1)},
        "ratio": round(rates["informer"] / rates["baseline"], 2),
        "ratio_raw_watch": round(rates["raw_watch"] / rates["baseline"], 2),
        "cpu_ratio": round(cpu_us["baseline"] / cpu_us["informer"], 2),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
