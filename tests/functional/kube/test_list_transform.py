"""A list keeps only transformed objects, page by page (issue 22: controller RSS at start-up).

An informer strips every object before caching it (pods lose most of their bytes). When the
whole list was held untransformed until its last page, a controller's start-up peak at 10,000
pods was all of them in full, and glibc kept much of that peak as RSS afterwards.
"""

from __future__ import annotations

import tracemalloc
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


def test_a_transformed_list_never_holds_every_object_in_full(client: KubeClient, writer: KubeClient,
                                                             namespace: str) -> None:
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: writer.create(CONFIGMAPS, configmap(f"big-{i}", namespace, blob="x" * PAYLOAD),
                                              namespace=namespace), range(OBJECTS)))
    full_size = OBJECTS * PAYLOAD
    tracemalloc.start()
    try:
        items, version = client.list(CONFIGMAPS, namespace=namespace, limit=10, transform=drop_data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert version
    assert sorted(i["metadata"]["name"] for i in items) == sorted(f"big-{i}" for i in range(OBJECTS))
    assert all("data" not in i and i["kind"] == "ConfigMap" for i in items)
    # A page of ten is ~400 kB of payload (its response bytes and their decoded copy); all of them is 4.8 MB.
    assert peak < full_size / 3, f"peak {peak} bytes while listing {full_size} bytes of payload"
    untransformed, _ = client.list(CONFIGMAPS, namespace=namespace, limit=10)
    assert all(len(i["data"]["blob"]) == PAYLOAD for i in untransformed)
