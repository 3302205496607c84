"""The informer's object cache: a thread-safe store with secondary indexes, and the
transforms that strip objects down to what reconcilers read.

Objects in a :class:`Store` are shared by every reader and must be treated as
read-only: copy before changing one (``copy.deepcopy``) and write changes to
the API server, never into the cache.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from typing import Any

from ovnk.core.kube.resources import Resource
from ovnk.core.kube.selectors import LabelSelector
from ovnk.core.kube.selectors import index_by_labels

logger = logging.getLogger(__name__)

LAST_APPLIED_ANNOTATION = "kubectl.kubernetes.io/last-applied-configuration"

JsonObject = dict[str, Any]
# Module-level alias: inside Store, ``list`` names the method.
JsonObjects = list[dict[str, Any]]
Keys = list[str]
Indexer = Callable[[JsonObject], Iterable[str]]

#: Index behind :meth:`Store.select`, added on first use.
LABEL_INDEX = "labels"
Transform = Callable[[JsonObject], JsonObject]


def _strip_annotations(metadata: Mapping[str, Any]) -> dict[str, Any] | None:
    annotations = metadata.get("annotations")
    if not annotations:
        return None
    if LAST_APPLIED_ANNOTATION not in annotations:
        return dict(annotations)
    return {k: v for k, v in annotations.items() if k != LAST_APPLIED_ANNOTATION}


def strip_object(obj: JsonObject) -> JsonObject:
    """``obj`` without ``metadata.managedFields`` and kubectl's last-applied annotation.

    Both can be larger than the rest of the object and nothing reconciles on
    them. The input is not modified; unchanged parts are shared with it.
    """
    metadata = obj.get("metadata")
    if not metadata:
        return obj
    annotations = metadata.get("annotations")
    has_last_applied = bool(annotations) and LAST_APPLIED_ANNOTATION in annotations
    if "managedFields" not in metadata and not has_last_applied:
        return obj
    new_metadata = {k: v for k, v in metadata.items() if k != "managedFields"}
    if has_last_applied:
        new_metadata["annotations"] = _strip_annotations(metadata)
    return {**obj, "metadata": new_metadata}


_POD_METADATA = ("name", "namespace", "uid", "resourceVersion", "labels", "creationTimestamp",
                 "deletionTimestamp", "ownerReferences")
_POD_STATUS = ("phase", "podIPs", "podIP", "conditions")


def strip_pod(obj: JsonObject) -> JsonObject:
    """A pod reduced to what the network reconcilers read.

    Kept: ``metadata`` name, namespace, uid, resourceVersion, labels,
    annotations, creationTimestamp, deletionTimestamp, ownerReferences;
    ``spec`` nodeName, hostNetwork and each container's name and ports;
    ``status`` phase, podIPs, podIP, conditions. Volumes, env, images, probes
    and the rest (most of a pod's bytes) are dropped.
    """
    metadata = obj.get("metadata") or {}
    new_metadata = {k: metadata[k] for k in _POD_METADATA if k in metadata}
    annotations = _strip_annotations(metadata)
    if annotations is not None:
        new_metadata["annotations"] = annotations
    spec = obj.get("spec") or {}
    new_spec: dict[str, Any] = {k: spec[k] for k in ("nodeName", "hostNetwork") if k in spec}
    containers = []
    for container in spec.get("containers") or ():
        entry = {"name": container.get("name", "")}
        if container.get("ports"):
            entry["ports"] = container["ports"]
        containers.append(entry)
    new_spec["containers"] = containers
    status = obj.get("status") or {}
    return {
        "apiVersion": obj.get("apiVersion", "v1"),
        "kind": obj.get("kind", "Pod"),
        "metadata": new_metadata,
        "spec": new_spec,
        "status": {k: status[k] for k in _POD_STATUS if k in status},
    }


def index_by_namespace(obj: JsonObject) -> Iterable[str]:
    namespace = (obj.get("metadata") or {}).get("namespace")
    return (namespace,) if namespace else ()


def index_by_node(obj: JsonObject) -> Iterable[str]:
    node = (obj.get("spec") or {}).get("nodeName")
    return (node,) if node else ()


def is_pods(resource: Resource) -> bool:
    return resource.group == "" and resource.plural == "pods"


def default_indexers(resource: Resource) -> dict[str, Indexer]:
    """``namespace`` for namespaced resources, plus ``node`` (spec.nodeName) for pods."""
    indexers: dict[str, Indexer] = {}
    if resource.namespaced:
        indexers["namespace"] = index_by_namespace
    if is_pods(resource):
        indexers["node"] = index_by_node
    return indexers


def default_transform(resource: Resource) -> Transform:
    """:func:`strip_pod` for pods, :func:`strip_object` for everything else."""
    return strip_pod if is_pods(resource) else strip_object


def resource_version(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


class Store:
    """Thread-safe cache of objects by key (``ns/name`` or ``name``) with secondary indexes.

    An indexer maps an object to the index values it is found under
    (``by_index("node", "n1")``); it must be a pure function of the object,
    since the values of a replaced object are recomputed to remove it.
    """

    def __init__(self, indexers: Mapping[str, Indexer] | None = None) -> None:
        self._lock = threading.RLock()
        self._items: dict[str, JsonObject] = {}
        self._indexers: dict[str, Indexer] = {}
        self._indexes: dict[str, dict[str, set[str]]] = {}
        # Write stamps for changed_at(): every write takes the next stamp, and an index value holding
        # objects remembers the stamp of the last write under it. A value without objects keeps no
        # stamp (label values come and go) and answers the last emptying or replace(), which is newer
        # than any stamp handed out while it still held objects.
        self._stamp = 0
        self._absent_stamp = 0
        self._changed: dict[str, dict[str, int]] = {}
        for name, indexer in (indexers or {}).items():
            self.add_indexer(name, indexer)

    # -- reads -------------------------------------------------------------------

    def get(self, key: str) -> JsonObject | None:
        with self._lock:
            return self._items.get(key)

    def list(self) -> JsonObjects:
        with self._lock:
            return list(self._items.values())

    def keys(self) -> Keys:
        with self._lock:
            return list(self._items)

    def by_index(self, index: str, value: str) -> JsonObjects:
        """Objects whose ``index`` indexer yields ``value`` (``KeyError`` for an unknown index)."""
        with self._lock:
            keys = self._index(index).get(value, ())
            return [self._items[key] for key in keys]

    def index_keys(self, index: str, value: str) -> Keys:
        with self._lock:
            return sorted(self._index(index).get(value, ()))

    def select(self, selector: LabelSelector, *, namespace: str | None = None) -> JsonObjects:
        """Objects ``selector`` matches, in ``namespace`` when given, sorted by key.

        Candidates come from the ``labels`` index (every ``key=value`` and
        ``key`` an object carries; built on first use) intersected over the
        selector's ``matchLabels``, ``Exists`` and single-value ``In`` terms, and
        from the ``namespace`` index; only those are tested against the whole
        selector. An empty selector in a namespace costs that namespace's objects.
        """
        with self._lock:
            if LABEL_INDEX not in self._indexers:
                self.add_indexer(LABEL_INDEX, index_by_labels)
            candidates: set[str] | None = None
            for term in selector.index_terms():
                labelled = self._indexes[LABEL_INDEX].get(term, set())
                candidates = set(labelled) if candidates is None else candidates & labelled
                if not candidates:
                    return []
            if namespace is not None:
                if "namespace" in self._indexes:
                    in_namespace = self._indexes["namespace"].get(namespace, set())
                else:
                    in_namespace = {k for k in self._items if k.startswith(f"{namespace}/")}
                candidates = set(in_namespace) if candidates is None else candidates & in_namespace
            found: Iterable[str] = self._items.keys() if candidates is None else candidates
            return [self._items[k] for k in sorted(found) if selector.matches_object(self._items[k])]

    def index_values(self, index: str) -> Keys:
        """Every value ``index`` currently holds objects under."""
        with self._lock:
            return sorted(self._index(index))

    def changed_at(self, index: str, value: str) -> int:
        """A stamp that grows whenever an object under ``value`` of ``index`` is added, replaced or
        removed (and at every :meth:`replace`). Read it *before* reading those objects: a result
        computed from them and kept with the stamp is current as long as the stamp is unchanged."""
        with self._lock:
            self._index(index)
            return self._changed[index].get(value, self._absent_stamp)

    def resource_versions(self) -> dict[str, str]:
        """key -> resourceVersion of every cached object (a cheap snapshot for comparisons)."""
        with self._lock:
            return {key: resource_version(obj) for key, obj in self._items.items()}

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._items

    def _index(self, index: str) -> dict[str, set[str]]:
        try:
            return self._indexes[index]
        except KeyError:
            raise KeyError(f"no index {index!r}; known: {sorted(self._indexes)}") from None

    # -- writes (the informer's; tests may fill a store directly) -----------------

    def add_indexer(self, name: str, indexer: Indexer) -> None:
        """Add an index (built over the current content). Re-adding the same function is a no-op."""
        with self._lock:
            existing = self._indexers.get(name)
            if existing is indexer:
                return
            if existing is not None:
                raise ValueError(f"index {name!r} already exists with another function ({existing!r}); "
                                 "define indexers once at module level and reuse them")
            self._indexers[name] = indexer
            self._indexes[name] = {}
            self._changed[name] = {}
            for key, obj in self._items.items():
                self._index_add(name, key, obj)

    def put(self, key: str, obj: JsonObject) -> JsonObject | None:
        """Insert or replace; returns the previous object."""
        with self._lock:
            self._stamp += 1
            old = self._items.get(key)
            if old is not None:
                self._unindex(key, old)
            self._items[key] = obj
            for name in self._indexers:
                self._index_add(name, key, obj)
            return old

    def remove(self, key: str) -> JsonObject | None:
        """Remove; returns the removed object or ``None``."""
        with self._lock:
            self._stamp += 1
            old = self._items.pop(key, None)
            if old is not None:
                self._unindex(key, old)
            return old

    def replace(self, items: Mapping[str, JsonObject]) -> dict[str, JsonObject]:
        """Swap the whole content for ``items``; returns the previous content."""
        with self._lock:
            self._stamp += 1
            self._absent_stamp = self._stamp
            self._changed = {name: {} for name in self._indexers}
            old = self._items
            self._items = dict(items)
            self._indexes = {name: {} for name in self._indexers}
            for key, obj in self._items.items():
                for name in self._indexers:
                    self._index_add(name, key, obj)
            return old

    def _values(self, name: str, key: str, obj: JsonObject) -> Iterable[str]:
        try:
            return tuple(self._indexers[name](obj))
        except Exception:
            logger.exception("indexer %s failed on %s; not indexed", name, key)
            return ()

    def _index_add(self, name: str, key: str, obj: JsonObject) -> None:
        index, changed = self._indexes[name], self._changed[name]
        for value in self._values(name, key, obj):
            index.setdefault(value, set()).add(key)
            changed[value] = self._stamp

    def _unindex(self, key: str, obj: JsonObject) -> None:
        for name, index in self._indexes.items():
            changed = self._changed[name]
            for value in self._values(name, key, obj):
                keys = index.get(value)
                if keys is None:
                    continue
                keys.discard(key)
                if keys:
                    changed[value] = self._stamp
                else:
                    del index[value]
                    changed.pop(value, None)
                    self._absent_stamp = self._stamp
