"""EgressService objects and the facts host selection reads, parsed into immutable models (pure: no I/O).

An EgressService (``k8s.ovn.org/v1``, namespaced) is named after the
LoadBalancer Service it configures. What it asks for:

* ``sourceIPBy: LoadBalancerIP``: one host node (``nodeSelector`` limits the
  choice) receives the endpoints' outbound traffic and SNATs it to the
  Service's first ingress IP; ``status.host`` names it.
* ``sourceIPBy: Network``: no SNAT and no reroute; with ``network`` set,
  every node steers its local endpoints' traffic into that routing table;
  ``status.host`` is ``ALL``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ovnk import LabelSelector
from ovnk import SelectorError
from ovnk import parse_selector
from ovnk.names import IPAddress
from ovnk.names import IPNetwork

LOAD_BALANCER_IP = "LoadBalancerIP"
NETWORK = "Network"
#: ``status.host`` of a ``sourceIPBy: Network`` service (every node serves its own endpoints).
ALL_NODES = "ALL"
#: The label on the host node (``<prefix><namespace>-<name>``; MetalLB announces from labelled nodes).
HOST_LABEL_PREFIX = "egress-service.k8s.ovn.org/"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"


class EgressServiceError(ValueError):
    """An EgressService that cannot be programmed now; the message says why (and ``reason`` is the
    stable Event reason)."""

    def __init__(self, message: str, *, reason: str = "InvalidEgressService") -> None:
        super().__init__(message)
        self.reason = reason


def host_label(namespace: str, name: str) -> str:
    """``egress-service.k8s.ovn.org/<namespace>-<name>``, as upstream names it."""
    return f"{HOST_LABEL_PREFIX}{namespace}-{name}"


@dataclass(frozen=True)
class EgressServiceModel:
    """One EgressService and the Service it configures.

    :ivar namespace: the namespace of both objects.
    :ivar name: the name of both objects.
    :ivar source_ip_by: ``LoadBalancerIP`` or ``Network``.
    :ivar node_selector: the nodes that may host it (``LoadBalancerIP`` only; empty: any).
    :ivar network: the routing table (number or name, resolved on each node) its endpoints' traffic
        uses, if any.
    :ivar ingress_ips: the Service's LoadBalancer ingress IPs (``LoadBalancerIP``: at least one).
    :ivar local_only: ``externalTrafficPolicy: Local`` (only nodes with a local endpoint may host it).
    :ivar host: ``status.host`` as it is now ("" while unallocated).
    """

    namespace: str
    name: str
    source_ip_by: str
    node_selector: LabelSelector
    network: str | None
    ingress_ips: tuple[IPAddress, ...]
    local_only: bool
    host: str = ""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def label(self) -> str:
        return host_label(self.namespace, self.name)

    @property
    def snat(self) -> bool:
        """Whether the endpoints leave with the ingress IP (through one host node)."""
        return self.source_ip_by == LOAD_BALANCER_IP

    def snat_ip(self, version: int) -> IPAddress | None:
        """The ingress IP of one family the endpoints of that family are SNATed to (the first one)."""
        return next((ip for ip in self.ingress_ips if ip.version == version), None)


def parse_network(raw: Any, tables: Mapping[str, int] | None = None) -> int | None:
    """``spec.network``: a routing table number, or a name in ``tables`` (``/etc/iproute2/rt_tables``).

    :raises EgressServiceError: neither a table number (1-4294967295, not 253-255) nor a known name.
    """
    if raw in (None, ""):
        return None
    text = str(raw).strip()
    if text.isdigit():
        table = int(text)
        if 0 < table < 2**32 and table not in (253, 254, 255):
            return table
        raise EgressServiceError(f"spec.network {text} is not a usable routing table (1-4294967295, "
                                 "not local/main/default)")
    if tables and text in tables:
        return tables[text]
    raise EgressServiceError(f"spec.network {text!r} is neither a routing table number nor a table name "
                             "the nodes know")


def parse_rt_tables(text: str) -> dict[str, int]:
    """Names of routing tables in ``rt_tables(5)`` format (``<number> <name>`` lines, ``#`` comments)."""
    tables: dict[str, int] = {}
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 2 and fields[0].isdigit():
            tables[fields[1]] = int(fields[0])
    return tables


def parse_egressservice(obj: Mapping[str, Any], service: Mapping[str, Any] | None) -> EgressServiceModel:
    """Parse an EgressService together with its Service.

    :param service: the Service of the same namespace and name, or ``None`` when there is none.
    :raises EgressServiceError: what keeps it from being programmed (a missing or unsuitable
        Service, an ingress IP not assigned yet, a bad selector or network).
    """
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    namespace, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
    source_ip_by = str(spec.get("sourceIPBy") or "")
    if source_ip_by not in (LOAD_BALANCER_IP, NETWORK):
        raise EgressServiceError(f"spec.sourceIPBy must be {LOAD_BALANCER_IP} or {NETWORK}, not {source_ip_by!r}")
    try:
        selector = parse_selector(spec.get("nodeSelector"), field="spec.nodeSelector")
    except SelectorError as exc:
        raise EgressServiceError(str(exc)) from None
    network = str(spec.get("network") or "").strip() or None
    if network is not None and network.isdigit():
        parse_network(network)  # a number must be a usable table; names are resolved on the nodes
    if service is None:
        raise EgressServiceError(f"there is no Service {namespace}/{name} (an EgressService configures the "
                                 "LoadBalancer Service of the same name)", reason="ServiceNotFound")
    service_spec = service.get("spec") or {}
    if service_spec.get("type") != "LoadBalancer":
        raise EgressServiceError(f"Service {namespace}/{name} is of type {service_spec.get('type') or 'ClusterIP'}, "
                                 "not LoadBalancer", reason="ServiceNotLoadBalancer")
    ingress_ips = tuple(parse_ingress_ips(service))
    if source_ip_by == LOAD_BALANCER_IP and not ingress_ips:
        raise EgressServiceError(f"Service {namespace}/{name} has no LoadBalancer ingress IP yet",
                                 reason="NoIngressIP")
    host = str((obj.get("status") or {}).get("host") or "")
    return EgressServiceModel(namespace=namespace, name=name, source_ip_by=source_ip_by, node_selector=selector,
                              network=network, ingress_ips=ingress_ips,
                              local_only=service_spec.get("externalTrafficPolicy") == "Local", host=host)


def parse_ingress_ips(service: Mapping[str, Any]) -> list[IPAddress]:
    """The IPs of ``status.loadBalancer.ingress`` (hostname-only entries are skipped)."""
    found: list[IPAddress] = []
    for entry in ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or ():
        try:
            ip = ipaddress.ip_address(str((entry or {}).get("ip") or ""))
        except ValueError:
            continue
        if ip not in found:
            found.append(ip)
    return found


# ---------------------------------------------------------------------------
# endpoints


@dataclass(frozen=True)
class Endpoint:
    """One endpoint address of the Service and the node it runs on."""

    ip: IPAddress
    node: str | None


def endpoints(slices: Iterable[Mapping[str, Any]], *, cluster_subnets: Iterable[IPNetwork]) -> list[Endpoint]:
    """The ready pod endpoints of a Service's EndpointSlices, sorted, unique.

    Only addresses inside the cluster subnets count (host-network endpoints do not
    leave through the pod network). An endpoint with unknown readiness is ready, as
    the API defines it.
    """
    subnets = list(cluster_subnets)
    found: dict[IPAddress, Endpoint] = {}
    for endpoint_slice in slices:
        if endpoint_slice.get("addressType") not in ("IPv4", "IPv6"):
            continue
        for entry in endpoint_slice.get("endpoints") or ():
            if (entry.get("conditions") or {}).get("ready") is False:
                continue
            node = entry.get("nodeName") or (entry.get("topology") or {}).get("kubernetes.io/hostname")
            for raw in entry.get("addresses") or ():
                try:
                    ip = ipaddress.ip_address(str(raw))
                except ValueError:
                    continue
                if any(ip.version == s.version and ip in s for s in subnets):
                    found.setdefault(ip, Endpoint(ip=ip, node=str(node) if node else None))
    return [found[ip] for ip in sorted(found, key=lambda ip: (ip.version, ip))]


# ---------------------------------------------------------------------------
# nodes


def node_is_ready(node: Mapping[str, Any]) -> bool:
    for condition in (node.get("status") or {}).get("conditions") or ():
        if condition.get("type") == "Ready":
            return bool(condition.get("status") == "True")
    return False


@dataclass(frozen=True)
class HostCandidate:
    """What host selection needs to know about one node.

    :ivar reachable: its last health check answered (``True`` when nobody checks it).
    """

    name: str
    labels: Mapping[str, str]
    ready: bool
    reachable: bool = True

    @classmethod
    def of(cls, node: Mapping[str, Any], *, reachable: bool = True) -> HostCandidate:
        meta = node.get("metadata") or {}
        return cls(name=str(meta.get("name", "")), labels=dict(meta.get("labels") or {}),
                   ready=node_is_ready(node), reachable=reachable)
