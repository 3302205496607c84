"""A list keeps only transformed objects, page by page (issue 22: controller RSS at start-up).

An informer strips every object before caching it (pods lose most of their bytes). When the
whole list was held untransformed until its last page, a controller's start-up peak at 10,000
pods was all of them in full, and glibc kept much of that peak as RSS afterwards.
"""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from ovnk.core.kube.client import KubeClient
from ovnk.core.kube.resources import CONFIGMAPS
from tests.functional.kube.helpers import configmap

pytestmark = pytest.mark.kube

OBJECTS = 120
PAYLOAD = 40_000  # bytes of data per object, dropped by the transform


def drop_data(obj: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "metadata": obj["metadata"]}


# The peak is measured in a process of its own: tracemalloc counts every thread's allocations, and
# in the full suite other fixtures' threads (informers, watches) allocate during the list.
MEASURE = """
import json, sys, tracemalloc
from ovnk.core.kube.client import KubeClient
from ovnk.core.kube.resources import CONFIGMAPS

def drop_data(obj):
    return {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "metadata": obj["metadata"]}

with KubeClient(kubeconfig=sys.argv[1], request_timeout=10.0) as client:
    tracemalloc.start()
    items, version = client.list(CONFIGMAPS, namespace=sys.argv[2], limit=10, transform=drop_data)
    _, peak = tracemalloc.get_traced_memory()
    print(json.dumps({"peak": peak, "items": len(items)}))
"""


def test_a_transformed_list_never_holds_every_object_in_full(client: KubeClient, writer: KubeClient,
                                                             namespace: str, kubeconfig: str) -> None:
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: writer.create(CONFIGMAPS, configmap(f"big-{i}", namespace, blob="x" * PAYLOAD),
                                              namespace=namespace), range(OBJECTS)))
    full_size = OBJECTS * PAYLOAD
    items, version = client.list(CONFIGMAPS, namespace=namespace, limit=10, transform=drop_data)
    assert version
    # The namespace may also hold kube-controller-manager's kube-root-ca.crt, whenever it publishes it.
    ours = [i for i in items if i["metadata"]["name"].startswith("big-")]
    assert sorted(i["metadata"]["name"] for i in ours) == sorted(f"big-{i}" for i in range(OBJECTS))
    assert all("data" not in i and i["kind"] == "ConfigMap" for i in items)
    measured = json.loads(subprocess.run([sys.executable, "-c", MEASURE, kubeconfig, namespace],
                                         capture_output=True, text=True, check=True, timeout=120).stdout)
    assert measured["items"] >= OBJECTS
    # A page of ten is ~400 kB of payload; its response bytes, their decoded text and the parsed page
    # peak at about 1.6 MB. Holding every object in full would be at least the 4.8 MB of payload.
    peak = measured["peak"]
    assert peak < full_size / 2, f"peak {peak} bytes while listing {full_size} bytes of payload"
    untransformed, _ = client.list(CONFIGMAPS, namespace=namespace, limit=10)
    assert all(len(i["data"]["blob"]) == PAYLOAD for i in untransformed if i["metadata"]["name"].startswith("big-"))
