"""Which pods each EgressIP serves, and which keys an event touches (cache reads only).

A pod selected by several EgressIPs is served by the oldest of them (then by
name), as upstream serves it by one object only. Watch ``keys`` functions run
on informer threads for every event: they read the caches and the parsed
models (cached per resourceVersion) and never raise.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from collections.abc import Mapping
from typing import Any

import ovnk.annotations as ann
from ovnk import NAMESPACES
from ovnk import PODS
from ovnk import ControllerContext
from ovnk import Resource
from ovnk.plugins.egressip.models import EgressIPError
from ovnk.plugins.egressip.models import EgressIPModel
from ovnk.plugins.egressip.models import parse_egressip
from ovnk.plugins.egressip.nb import ServedPod

logger = logging.getLogger(__name__)

EGRESSIPS = Resource("k8s.ovn.org", "v1", "EgressIP", "egressips", namespaced=False)


def _rv(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


def pod_wants_network(pod: Mapping[str, Any]) -> bool:
    spec = pod.get("spec") or {}
    phase = (pod.get("status") or {}).get("phase")
    return bool(spec.get("nodeName")) and not spec.get("hostNetwork") and phase not in ("Succeeded", "Failed")


class Selection:
    """Parsed EgressIPs and the pods they serve, over the shared caches."""

    def __init__(self, ctx: ControllerContext) -> None:
        self.ctx = ctx
        self.egressips = ctx.cache(EGRESSIPS)
        self.namespaces = ctx.cache(NAMESPACES)
        self.pods = ctx.cache(PODS)
        self._lock = threading.Lock()
        self._models: dict[str, tuple[str, EgressIPModel | EgressIPError]] = {}

    # -- models ----------------------------------------------------------------

    def parsed(self, obj: Mapping[str, Any]) -> EgressIPModel | EgressIPError:
        """The model of an object, or why it cannot have one (cached per resourceVersion)."""
        name = str((obj.get("metadata") or {}).get("name", ""))
        rv = _rv(obj)
        with self._lock:
            cached = self._models.get(name)
            if cached is not None and cached[0] == rv and rv:
                return cached[1]
        try:
            result: EgressIPModel | EgressIPError = parse_egressip(obj)
        except EgressIPError as exc:
            result = exc
        with self._lock:
            self._models[name] = (rv, result)
        return result

    def model(self, name: str) -> EgressIPModel | EgressIPError | None:
        obj = self.egressips.get(name)
        return None if obj is None else self.parsed(obj)

    def models(self) -> list[EgressIPModel]:
        """Every valid EgressIP, oldest first."""
        found = [m for m in (self.parsed(o) for o in self.egressips.list()) if isinstance(m, EgressIPModel)]
        return sorted(found, key=lambda m: m.order)

    # -- selection ---------------------------------------------------------------

    def _selects(self, model: EgressIPModel, pod: Mapping[str, Any]) -> bool:
        namespace = self.namespaces.get(pod["metadata"].get("namespace", ""))
        return model.selects(namespace, pod)

    def server_of(self, pod: Mapping[str, Any], models: Iterable[EgressIPModel] | None = None) -> str | None:
        """The EgressIP serving ``pod`` (the oldest that selects it), if any."""
        for model in models if models is not None else self.models():
            if self._selects(model, pod):
                return model.name
        return None

    def served_pods(self, model: EgressIPModel, models: list[EgressIPModel] | None = None) -> list[ServedPod]:
        """The pods ``model`` serves: selected, wanting a network, with IPs, not served by an older object."""
        everyone = models if models is not None else self.models()
        older = [m for m in everyone if m.order < model.order]
        served: list[ServedPod] = []
        for namespace in self.ctx.select(NAMESPACES, model.namespace_selector):
            ns_name = namespace["metadata"]["name"]
            for pod in self.ctx.select(PODS, model.pod_selector, namespace=ns_name):
                if not pod_wants_network(pod):
                    continue
                ips = ann.pod_ips(pod)
                if not ips or any(m.selects(namespace, pod) for m in older):
                    continue
                served.append(ServedPod(namespace=ns_name, name=pod["metadata"]["name"], ips=ips))
        return served

    # -- watch keys ------------------------------------------------------------------

    def all_keys(self, obj: Mapping[str, Any]) -> list[str]:
        """The object itself (also when it was just deleted) and every other EgressIP: a change to
        one can hand pods to or take pods from another."""
        own = str((obj.get("metadata") or {}).get("name", ""))
        return sorted({own, *self.egressips.keys()} - {""})

    def keys_for_pod(self, pod: Mapping[str, Any]) -> list[str]:
        try:
            return [m.name for m in self.models() if self._selects(m, pod)]
        except Exception:
            logger.exception("egressip keys for a pod")
            return []

    def keys_for_namespace(self, namespace: Mapping[str, Any]) -> list[str]:
        try:
            return [m.name for m in self.models() if m.selects_namespace(namespace)]
        except Exception:
            logger.exception("egressip keys for a namespace")
            return []

    def keys_for_node(self, node: Mapping[str, Any]) -> list[str]:
        name = (node.get("metadata") or {}).get("name")
        try:
            return [m.name for m in self.models() if name in m.nodes()]
        except Exception:
            logger.exception("egressip keys for a node")
            return []
