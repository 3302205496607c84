"""Kubernetes resource types as plain values, and the resources core watches.

A :class:`Resource` names one REST collection (group, version, plural). The
client turns it into URLs; ``fallback_versions`` lets code written against a
newer API keep working on older servers (EndpointSlice is only served as
``discovery.k8s.io/v1beta1`` on Kubernetes 1.20): ``KubeClient.resolve``
picks the first version the server actually serves.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Resource:
    """One REST collection of the Kubernetes API.

    :param group: API group; ``""`` for the core group (``/api/v1``).
    :param version: preferred version.
    :param kind: object kind (``Pod``).
    :param plural: URL path segment (``pods``).
    :param namespaced: objects live in namespaces.
    :param fallback_versions: versions tried in order when ``version`` is not served.
    """

    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool = True
    fallback_versions: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        """``v1`` for the core group, ``group/version`` otherwise."""
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def label(self) -> str:
        """Short stable name for logs and metric labels: ``pods``, ``leases.coordination.k8s.io``."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def with_version(self, version: str) -> Resource:
        """The same resource at ``version`` (no fallbacks: the version is known to be served)."""
        return dataclasses.replace(self, version=version, fallback_versions=())

    def __str__(self) -> str:
        return f"{self.label}/{self.version}"


def object_key(obj: Mapping[str, Any]) -> str:
    """The cache key of an object: ``namespace/name``, or ``name`` for cluster-scoped objects."""
    metadata = obj.get("metadata") or {}
    namespace = metadata.get("namespace")
    name = metadata.get("name", "")
    return f"{namespace}/{name}" if namespace else str(name)


def split_key(key: str) -> tuple[str | None, str]:
    """Inverse of :func:`object_key`: ``(namespace or None, name)``."""
    namespace, sep, name = key.partition("/")
    return (namespace, name) if sep else (None, namespace)


PODS = Resource("", "v1", "Pod", "pods")
NODES = Resource("", "v1", "Node", "nodes", namespaced=False)
NAMESPACES = Resource("", "v1", "Namespace", "namespaces", namespaced=False)
SERVICES = Resource("", "v1", "Service", "services")
CONFIGMAPS = Resource("", "v1", "ConfigMap", "configmaps")
EVENTS = Resource("", "v1", "Event", "events")
ENDPOINTSLICES = Resource(
    "discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", fallback_versions=("v1beta1",)
)
NETWORKPOLICIES = Resource("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies")
LEASES = Resource("coordination.k8s.io", "v1", "Lease", "leases")
CRDS = Resource(
    "apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions",
    namespaced=False,
)
NETWORK_ATTACHMENT_DEFINITIONS = Resource(
    "k8s.cni.cncf.io", "v1", "NetworkAttachmentDefinition", "network-attachment-definitions"
)
