"""Parsed EgressFirewalls over the shared caches, node addresses, and the keys an event touches.

Watch ``keys`` functions run on informer threads for every event: they read
the caches and the parsed models (cached per resourceVersion) and never raise.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import threading
from collections.abc import Mapping
from typing import Any

import ovnk.annotations as ann
from ovnk import NAMESPACES
from ovnk import ControllerContext
from ovnk import LabelSelector
from ovnk import Resource
from ovnk import object_key
from ovnk.names import IPAddress
from ovnk.plugins.egressfirewall.models import OBJECT_NAME
from ovnk.plugins.egressfirewall.models import EgressFirewallError
from ovnk.plugins.egressfirewall.models import EgressFirewallModel
from ovnk.plugins.egressfirewall.models import parse_egress_firewall

logger = logging.getLogger(__name__)

EGRESSFIREWALLS = Resource("k8s.ovn.org", "v1", "EgressFirewall", "egressfirewalls", namespaced=True)


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def spec_changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Only the spec programs rows (our own status writes must not re-run the object)."""
    return bool(old.get("spec") != new.get("spec"))


def node_changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """What a ``nodeSelector`` rule follows: the node's labels and its host addresses."""
    return bool(_meta(old).get("labels") != _meta(new).get("labels")
                or ann.annotations_of(old).get(ann.HOST_CIDRS) != ann.annotations_of(new).get(ann.HOST_CIDRS))


def logging_changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    return ann.annotations_of(old).get(ann.ACL_LOGGING) != ann.annotations_of(new).get(ann.ACL_LOGGING)


def node_addresses(node: Mapping[str, Any]) -> tuple[IPAddress, ...]:
    """The node's host addresses: ``k8s.ovn.org/host-cidrs`` without masks (as upstream), or its
    ``InternalIP`` addresses while the agent has not published that annotation yet."""
    found: set[IPAddress] = set()
    raw = ann.annotations_of(node).get(ann.HOST_CIDRS)
    if raw:
        try:
            found.update(ipaddress.ip_interface(str(cidr)).ip for cidr in json.loads(raw))
        except (TypeError, ValueError):
            logger.warning("node %s: unreadable %s %r", _meta(node).get("name"), ann.HOST_CIDRS, raw)
    if not found:
        for address in (node.get("status") or {}).get("addresses") or ():
            if address.get("type") == "InternalIP":
                try:
                    found.add(ipaddress.ip_address(address.get("address", "")))
                except ValueError:
                    continue
    return tuple(sorted(found, key=lambda ip: (ip.version, ip)))


class Selection:
    """EgressFirewall models (cached per resourceVersion) and the questions the controllers ask."""

    def __init__(self, ctx: ControllerContext) -> None:
        self.ctx = ctx
        self.firewalls = ctx.cache(EGRESSFIREWALLS)
        self.namespaces = ctx.cache(NAMESPACES)
        self._lock = threading.Lock()
        self._models: dict[str, tuple[str, EgressFirewallModel | EgressFirewallError]] = {}

    def parsed(self, obj: Mapping[str, Any]) -> EgressFirewallModel | EgressFirewallError:
        key = object_key(obj)
        rv = str(_meta(obj).get("resourceVersion") or "")
        with self._lock:
            cached = self._models.get(key)
            if cached is not None and rv and cached[0] == rv:
                return cached[1]
        try:
            result: EgressFirewallModel | EgressFirewallError = parse_egress_firewall(obj)
        except EgressFirewallError as exc:
            result = exc
        with self._lock:
            self._models[key] = (rv, result)
        return result

    def forget(self, key: str) -> None:
        with self._lock:
            self._models.pop(key, None)

    def models(self) -> list[EgressFirewallModel]:
        """Every valid EgressFirewall (named ``default``)."""
        return [m for m in (self.parsed(o) for o in self.firewalls.list()) if isinstance(m, EgressFirewallModel)]

    def users_of(self, dns_name: str) -> list[str]:
        """Keys of the valid objects whose rules name ``dns_name``."""
        return sorted(f"{m.namespace}/{OBJECT_NAME}" for m in self.models() if dns_name in m.dns_names)

    def selected_nodes(self, selector: LabelSelector) -> list[Mapping[str, Any]]:
        from ovnk import NODES

        return self.ctx.select(NODES, selector)

    # -- watch keys -------------------------------------------------------------------

    def dns_names_of(self, obj: Mapping[str, Any]) -> list[str]:
        try:
            model = self.parsed(obj)
        except Exception:
            logger.exception("egressfirewall: DNS names of an object")
            return []
        return sorted(model.dns_names) if isinstance(model, EgressFirewallModel) else []

    def keys_for_node(self, node: Mapping[str, Any]) -> list[str]:
        """Every object with a ``nodeSelector`` rule (the old and the new labels both count)."""
        try:
            return [f"{m.namespace}/{OBJECT_NAME}" for m in self.models() if m.selects_nodes]
        except Exception:
            logger.exception("egressfirewall keys for a node")
            return []

    def keys_for_namespace(self, namespace: Mapping[str, Any]) -> list[str]:
        key = f"{_meta(namespace).get('name', '')}/{OBJECT_NAME}"
        return [key] if self.firewalls.get(key) is not None else []
