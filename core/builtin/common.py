"""Small helpers shared by core's built-in plugins."""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Mapping
from typing import Any


def _get(obj: Mapping[str, Any], path: str) -> Any:
    value: Any = obj
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def changed(old: Mapping[str, Any], new: Mapping[str, Any], paths: Iterable[str]) -> bool:
    """Whether any of the dotted ``paths`` differs between two objects."""
    return any(_get(old, p) != _get(new, p) for p in paths)


def pod_key(pod: Mapping[str, Any]) -> str:
    meta = pod.get("metadata", {})
    return f"{meta.get('namespace')}/{meta.get('name')}"


def ip_holder(pod: Mapping[str, Any]) -> str:
    """Who holds a pod's IPs in the IPAM: the pod key plus its UID (a re-created pod is another holder)."""
    return f"{pod_key(pod)} {pod.get('metadata', {}).get('uid', '')}"


def pod_completed(pod: Mapping[str, Any]) -> bool:
    return pod.get("status", {}).get("phase") in ("Succeeded", "Failed")


def pod_wants_network(pod: Mapping[str, Any]) -> bool:
    """Scheduled, not host-network, not completed."""
    spec = pod.get("spec", {})
    return bool(spec.get("nodeName")) and not spec.get("hostNetwork") and not pod_completed(pod)
