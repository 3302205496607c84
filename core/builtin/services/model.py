"""Services and EndpointSlices -> the OVN load balancers they need (pure logic, no I/O).

ovn-kubernetes.md §4. For one Service, :func:`build` returns one
:class:`LoadBalancer` intent per protocol and scope:

=====================================  ===============================================  =======================
name                                   VIPs                                             attached to
=====================================  ===============================================  =======================
``Service_<ns>/<n>_<P>_cluster``       ClusterIPs (unless ITP=Local or host-network     LB group ``clusterLBGroup``
                                       endpoints: then per-node), ExternalIPs and
                                       LoadBalancer ingress IPs (unless ETP=Local)
``..._node_router+switch_<node>``      per-node rules when the router and switch rules  ``GR_<node>`` + ``<node>``
                                       are identical (plain NodePorts, ITP=Local)
``..._node_router_<node>``             the router rules otherwise                       ``GR_<node>``
``..._node_switch_<node>``             the switch rules otherwise                       ``<node>``
``..._node_local_router_<node>``       ETP=Local external VIPs (NodePorts, ExternalIPs,  ``GR_<node>``
                                       ingress IPs) -> that node's endpoints only,
                                       ``skip_snat=true``
``..._node_switch_template_IPv4``      a plain NodePort's ``^NODEIP_IPv4_<i>:<nodePort>``  ``clusterSwitchLBGroup``
``..._node_router_template_IPv4``      (and ``_IPv6``) -> all endpoints, resolved per    ``clusterRouterLBGroup``
                                       chassis from its ``Chassis_Template_Var``
=====================================  ===============================================  =======================

Template load balancers (``node_ip_slots`` given; the controller does unless
``[gateway] nodeport-templates`` is off): a NodePort
whose rules are the same on every node (no ``Local`` traffic policy, no
host-network endpoint, no session-affinity timer) gets one LB per side and
family instead of one per node. Its VIPs name the chassis variables
``NODEIP_IPv4_0``, ``NODEIP_IPv4_1``... up to the most addresses a node has;
each ovn-controller expands them with its own node's addresses, and a chassis
without the variable (a node serving no NodePorts) gets no VIP. The rows then
grow with the services, not with services x nodes, and a node coming up
touches none of them.

Per-node rules: NodePort VIPs ``<nodeIP>:<nodePort>`` go to the router (north-south
through the gateway router) and to the switch (pods reaching a node IP's NodePort);
with ETP=Local the router side holds only local endpoints and skips SNAT (the
client address is kept) while the switch side keeps all endpoints (traffic from
pods is not external). ITP=Local moves the ClusterIPs out of the cluster LB into
per-node rules with local endpoints only, on both sides.

Endpoints: the ready ones; if a port has none, the serving and terminating ones
(per port and, for ``Local`` policies, per node). Endpoints are matched to a
service port by the EndpointSlice port name (so named target ports resolve per
slice) and protocol.

Host-network endpoints (a node's own IP) are reached from that node's switch
and gateway router through its management port: in their rules the address
becomes the management port's IP. A pod or the host itself then reaches a
backend on its own node without the detour through the cluster router (where
the host's own connections would come back from its own address, which the
kernel drops), OVN's hairpin SNAT covers the host reaching itself, and a
wildcard-bound UDP server answers from the very address the client was sent
to. The gateway router SNATs to its join IP, which the host routes back
through the management port; without that, a NodePort connection from outside
reached the node's host from the node's own IP (the GR's SNAT), again martian.
A ClusterIP with such endpoints therefore moves from the cluster LB to
per-node rules (as ovn-kubernetes does: per-node LBs when an endpoint is
host-network, where it uses its host masquerade IP on the router side).
``externalTrafficPolicy: Local`` rules keep the node IP: they skip the SNAT,
so the host would answer the client directly.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from dataclasses import replace
from typing import Any

from ovnk.core.topology import naming as n
from ovnk.core.topology.naming import IPAddress
from ovnk.core.topology.naming import IPNetwork

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
#: EndpointSlice ``discovery.k8s.io/v1beta1`` names the node in ``topology``; v1 has ``nodeName``.
HOSTNAME_TOPOLOGY_KEY = "kubernetes.io/hostname"
PROTOCOLS = {"TCP": "tcp", "UDP": "udp", "SCTP": "sctp"}
DEFAULT_AFFINITY_TIMEOUT = 10800
MAX_AFFINITY_TIMEOUT = 86400
CLUSTER_SCOPE = "cluster"
# Per-node scopes, longest first: "node_router+switch_" must be tried before "node_router_".
NODE_SCOPES = ("node_router+switch_", "node_local_router_", "node_router_", "node_switch_")
# Template scopes (one LB for every node) share the per-node prefixes, so they are recognised first.
TEMPLATE_SCOPES = ("node_switch_template_", "node_router_template_")


@dataclass(frozen=True)
class Endpoint:
    """One address:port of an EndpointSlice, with its node and conditions."""

    ip: IPAddress
    port: int
    node: str | None
    ready: bool
    serving: bool
    terminating: bool


@dataclass(frozen=True)
class ServicePort:
    name: str
    protocol: str
    port: int
    node_port: int | None


@dataclass(frozen=True)
class NodeInfo:
    """What the load balancers need of one node whose topology exists.

    :param host_ips: the node's IPs (NodePort VIPs), from its gateway config.
    :param mgmt_ips: its management port's IPs: how its switch reaches its host-network endpoints.
    :param router: ``GR_<node>`` exists.
    :param switch: the node switch ``<node>`` exists.
    :param node_port: NodePorts are served on this node.
    """

    name: str
    host_ips: tuple[IPAddress, ...]
    router: bool
    switch: bool
    node_port: bool = True
    mgmt_ips: tuple[IPAddress, ...] = ()


@dataclass
class LoadBalancer:
    """The desired ``Load_Balancer`` row and where it is attached."""

    name: str
    protocol: str
    scope: str
    vips: dict[str, str]
    options: dict[str, str]
    selection_fields: list[str] = field(default_factory=list)
    lb_group: str | None = None
    routers: tuple[str, ...] = ()
    switches: tuple[str, ...] = ()

    @property
    def node(self) -> str | None:
        return scope_node(self.scope)


@dataclass(frozen=True)
class Problem:
    """Input we cannot program (reported as a Warning event on the Service)."""

    reason: str
    message: str


@dataclass
class Result:
    load_balancers: list[LoadBalancer] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


# -- small helpers ---------------------------------------------------------------


def service_key(service: Mapping[str, Any]) -> str:
    meta = service.get("metadata") or {}
    return f"{meta.get('namespace')}/{meta.get('name')}"


def slice_service_key(endpoint_slice: Mapping[str, Any]) -> str | None:
    """``ns/name`` of the Service an EndpointSlice belongs to (its ``kubernetes.io/service-name`` label)."""
    meta = endpoint_slice.get("metadata") or {}
    name = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
    return f"{meta.get('namespace')}/{name}" if name else None


def lb_name(key: str, protocol: str, scope: str) -> str:
    """``Service_<ns>/<name>_<PROTO>_<scope>`` as ovn-kubernetes names it."""
    return f"Service_{key}_{protocol.upper()}_{scope}"


def scope_node(scope: str) -> str | None:
    """The node of a per-node scope (``node_router_n1`` -> ``n1``), ``None`` for the cluster and
    template scopes."""
    if scope.startswith(TEMPLATE_SCOPES):
        return None
    for prefix in NODE_SCOPES:
        if scope.startswith(prefix):
            return scope[len(prefix):]
    return None


def vip(ip: IPAddress, port: int) -> str:
    return f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"


def backends(endpoints: Iterable[Endpoint]) -> str:
    """The VIP value: sorted, unique ``ip:port`` list (empty: no backend, rejected by OVN)."""
    unique = {(e.ip.version, int(e.ip), e.port): vip(e.ip, e.port) for e in endpoints}
    return ",".join(unique[k] for k in sorted(unique))


def spec(service: Mapping[str, Any]) -> Mapping[str, Any]:
    return service.get("spec") or {}


#: Labels by which a Service says another proxy implements it (or none does): kube-proxy and
#: ovn-kubernetes leave such services alone, and so does ovnk.
NOT_OURS_LABELS = ("service.kubernetes.io/service-proxy-name", "service.kubernetes.io/headless")


def wants_load_balancers(service: Mapping[str, Any]) -> bool:
    """Headless (``clusterIP: None``), ExternalName and services labelled for another proxy get nothing."""
    s = spec(service)
    if s.get("type") == "ExternalName":
        return False
    labels = (service.get("metadata") or {}).get("labels") or {}
    if any(label in labels for label in NOT_OURS_LABELS):
        return False
    ips = [ip for ip in (s.get("clusterIPs") or [s.get("clusterIP")]) if ip]
    return bool(ips) and all(ip != "None" for ip in ips)


def has_node_ports(service: Mapping[str, Any]) -> bool:
    return any(p.get("nodePort") for p in spec(service).get("ports") or ())


def uses_templates(service: Mapping[str, Any]) -> bool:
    """Whether the service's NodePorts can be template LBs: rules the same on every node, i.e. no
    ``Local`` traffic policy and no affinity timer (host-network endpoints are the caller's to rule out).
    Affinity "forever" is a hash on the address pair, which templates carry like any option."""
    if not wants_load_balancers(service) or not has_node_ports(service):
        return False
    s = spec(service)
    if s.get("externalTrafficPolicy") == "Local" or s.get("internalTrafficPolicy") == "Local":
        return False
    return "affinity_timeout" not in affinity(service)[0]


def depends_on_nodes(service: Mapping[str, Any], *, templates: bool = False) -> bool:
    """Whether the service has per-node rules (NodePorts, ETP=Local external VIPs, ITP=Local).

    With ``templates``, a NodePort that :func:`uses_templates` does not: its LBs change only with
    the number of addresses a node has (the caller's ``node_ip_slots``).
    """
    if not wants_load_balancers(service):
        return False
    s = spec(service)
    if has_node_ports(service):
        return not (templates and uses_templates(service))
    if s.get("internalTrafficPolicy") == "Local":
        return True
    return s.get("externalTrafficPolicy") == "Local" and bool(s.get("externalIPs") or ingress_ips(service))


def ingress_ips(service: Mapping[str, Any]) -> list[str]:
    if spec(service).get("type") != "LoadBalancer":
        return []
    ingress = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or ()
    return [str(i["ip"]) for i in ingress if isinstance(i, Mapping) and i.get("ip")]


def service_ports(service: Mapping[str, Any]) -> list[ServicePort]:
    ports = []
    for p in spec(service).get("ports") or ():
        ports.append(ServicePort(name=str(p.get("name") or ""), protocol=str(p.get("protocol") or "TCP"),
                                 port=int(p["port"]), node_port=int(p["nodePort"]) if p.get("nodePort") else None))
    return ports


def affinity(service: Mapping[str, Any]) -> tuple[dict[str, str], list[str]]:
    """(options, selection_fields) for ``sessionAffinity: ClientIP``."""
    s = spec(service)
    if s.get("sessionAffinity") != "ClientIP":
        return {}, []
    config = ((s.get("sessionAffinityConfig") or {}).get("clientIP") or {})
    timeout = int(config.get("timeoutSeconds") or DEFAULT_AFFINITY_TIMEOUT)
    if timeout >= MAX_AFFINITY_TIMEOUT:
        # "Forever": hash on the address pair instead of OVN's affinity timer.
        return {}, ["ip_dst", "ip_src"]
    return {"affinity_timeout": str(timeout)}, []


# -- endpoints -------------------------------------------------------------------


def _condition(conditions: Mapping[str, Any], name: str, default: bool) -> bool:
    value = conditions.get(name)
    return default if value is None else bool(value)


def endpoint_node(endpoint: Mapping[str, Any]) -> str | None:
    """``nodeName`` (v1) or ``topology["kubernetes.io/hostname"]`` (v1beta1)."""
    node = endpoint.get("nodeName") or (endpoint.get("topology") or {}).get(HOSTNAME_TOPOLOGY_KEY)
    return str(node) if node else None


def slice_endpoints(endpoint_slice: Mapping[str, Any], port: ServicePort) -> list[Endpoint]:
    """Endpoints of one slice for one service port (matched by port name and protocol)."""
    if endpoint_slice.get("addressType") not in ("IPv4", "IPv6"):
        return []  # FQDN slices cannot be load-balanced by address
    numbers = [int(p["port"]) for p in endpoint_slice.get("ports") or ()
               if (p.get("name") or "") == port.name and (p.get("protocol") or "TCP") == port.protocol
               and p.get("port")]
    if not numbers:
        return []
    found = []
    for entry in endpoint_slice.get("endpoints") or ():
        conditions = entry.get("conditions") or {}
        # API semantics: an unknown readiness counts as ready; serving defaults to ready.
        ready = _condition(conditions, "ready", True)
        serving = _condition(conditions, "serving", ready)
        terminating = _condition(conditions, "terminating", False)
        node = endpoint_node(entry)
        for address in entry.get("addresses") or ():
            try:
                ip = ipaddress.ip_address(address)
            except ValueError:
                continue
            found.append(Endpoint(ip=ip, port=numbers[0], node=node, ready=ready, serving=serving,
                                  terminating=terminating))
    return found


def outside_addresses(slices: Iterable[Mapping[str, Any]], networks: Sequence[IPNetwork]) -> frozenset[IPAddress]:
    """Endpoint addresses outside ``networks`` (the cluster subnets): host-network endpoints, if a node
    has them, whose load balancers then depend on the nodes (their IPs and management ports), or
    addresses outside the cluster, which load-balance like pods."""
    found: set[IPAddress] = set()
    for endpoint_slice in slices:
        if endpoint_slice.get("addressType") not in ("IPv4", "IPv6"):
            continue
        for entry in endpoint_slice.get("endpoints") or ():
            for address in entry.get("addresses") or ():
                try:
                    ip = ipaddress.ip_address(address)
                except ValueError:
                    continue
                if not any(ip.version == net.version and ip in net for net in networks):
                    found.add(ip)
    return frozenset(found)


def as_seen_from(node: NodeInfo, endpoints: Sequence[Endpoint]) -> list[Endpoint]:
    """``endpoints`` as ``node``'s switch and gateway router reach them: its own host-network ones at its
    management port."""
    seen = []
    for endpoint in endpoints:
        if endpoint.ip in node.host_ips:
            mgmt = next((ip for ip in node.mgmt_ips if ip.version == endpoint.ip.version), None)
            if mgmt is not None:
                endpoint = replace(endpoint, ip=mgmt)
        seen.append(endpoint)
    return seen


def select(endpoints: Sequence[Endpoint]) -> list[Endpoint]:
    """The ready endpoints; if there are none, the serving and terminating ones."""
    ready = [e for e in endpoints if e.ready]
    if ready:
        return ready
    return [e for e in endpoints if e.serving and e.terminating]


# -- building ----------------------------------------------------------------------


@dataclass
class _NodeRules:
    router: dict[str, dict[str, str]] = field(default_factory=dict)  # protocol -> vip -> backends
    switch: dict[str, dict[str, str]] = field(default_factory=dict)
    local_router: dict[str, dict[str, str]] = field(default_factory=dict)


def _parse_ips(values: Iterable[Any], *, what: str, families: set[int], problems: list[Problem]) -> list[IPAddress]:
    ips: list[IPAddress] = []
    for raw in values:
        try:
            ip = ipaddress.ip_address(str(raw))
        except ValueError:
            problems.append(Problem("InvalidIP", f"{what} {raw!r} is not an IP address; ignored"))
            continue
        if ip.version not in families:
            problems.append(Problem(
                "UnsupportedIPFamily",
                f"{what} {ip} is IPv{ip.version} but the cluster network is "
                f"{'/'.join(f'IPv{f}' for f in sorted(families))} only; ignored"))
            continue
        ips.append(ip)
    return ips


def build(service: Mapping[str, Any], slices: Sequence[Mapping[str, Any]], nodes: Sequence[NodeInfo], *,
          families: set[int], hairpin_ips: Sequence[IPAddress], nodeport_enabled: bool = True,
          node_ip_slots: Mapping[int, int] | None = None) -> Result:
    """The load balancers of ``service`` (nothing for headless and ExternalName services).

    :param slices: the service's EndpointSlices (any API version).
    :param nodes: nodes whose topology exists; per-node LBs only for them.
    :param families: IP versions the cluster network serves.
    :param hairpin_ips: ``options:hairpin_snat_ip`` (a pod reaching itself through its service).
    :param nodeport_enabled: ``[gateway] nodeport``.
    :param node_ip_slots: IP version -> the most NodePort addresses of that family any node has. Given
        (the caller checked :func:`uses_templates` and that no endpoint is host-network), the NodePorts
        become template LBs with that many VIPs per family; ``nodes`` then serve no NodePort rule.
    """
    result = Result()
    if not wants_load_balancers(service):
        return result
    key = service_key(service)
    s = spec(service)
    problems = result.problems
    cluster_ips = _parse_ips([ip for ip in (s.get("clusterIPs") or [s.get("clusterIP")]) if ip],
                             what="ClusterIP", families=families, problems=problems)
    external_ips = _parse_ips(s.get("externalIPs") or (), what="external IP", families=families, problems=problems)
    external_ips += _parse_ips(ingress_ips(service), what="LoadBalancer ingress IP", families=families,
                               problems=problems)
    etp_local = s.get("externalTrafficPolicy") == "Local"
    itp_local = s.get("internalTrafficPolicy") == "Local"

    cluster: dict[str, dict[str, str]] = {}
    template: dict[tuple[str, int], dict[str, str]] = {}  # (protocol, IP version) -> vip -> backends
    per_node: dict[str, _NodeRules] = {node.name: _NodeRules() for node in nodes}
    # Which node has a host-network endpoint of its own to reach through its management port.
    host_ip_node = {ip: node.name for node in nodes if node.switch and node.mgmt_ips for ip in node.host_ips}
    for port in service_ports(service):
        protocol = PROTOCOLS.get(port.protocol)
        if protocol is None:
            problems.append(Problem("UnsupportedProtocol", f"port {port.name or port.port}: protocol "
                                    f"{port.protocol} is not supported (TCP, UDP, SCTP); ignored"))
            continue
        endpoints = [e for sl in slices for e in slice_endpoints(sl, port)]
        for family in sorted(families):
            family_eps = [e for e in endpoints if e.ip.version == family]
            selected = select(family_eps)
            every = backends(selected)
            host_backed = {host_ip_node[e.ip] for e in selected if e.ip in host_ip_node}
            local: dict[str, list[Endpoint]] = {}
            seen: dict[str, str] = {}

            def local_selected(node: str, eps: list[Endpoint] = family_eps,
                               cache: dict[str, list[Endpoint]] = local) -> list[Endpoint]:
                if node not in cache:
                    cache[node] = select([e for e in eps if e.node == node])
                return cache[node]

            def local_backends(node: str) -> str:
                return backends(local_selected(node))

            def switch_local(node: NodeInfo) -> str:
                return backends(as_seen_from(node, local_selected(node.name)))

            def seen_every(node: NodeInfo, selected: list[Endpoint] = selected, every: str = every,
                           host_backed: set[str] = host_backed, cache: dict[str, str] = seen) -> str:
                if node.name not in host_backed:
                    return every
                if node.name not in cache:
                    cache[node.name] = backends(as_seen_from(node, selected))
                return cache[node.name]

            for ip in (i for i in cluster_ips if i.version == family):
                if not itp_local and not host_backed:
                    cluster.setdefault(protocol, {})[vip(ip, port.port)] = every
                    continue
                for node in nodes:
                    rules = per_node[node.name]
                    if node.switch:
                        rules.switch.setdefault(protocol, {})[vip(ip, port.port)] = (
                            switch_local(node) if itp_local else seen_every(node))
                    if node.router:
                        rules.router.setdefault(protocol, {})[vip(ip, port.port)] = (
                            local_backends(node.name) if itp_local else seen_every(node))
            for ip in (i for i in external_ips if i.version == family):
                if not etp_local:
                    cluster.setdefault(protocol, {})[vip(ip, port.port)] = every
                    continue
                for node in nodes:
                    rules = per_node[node.name]
                    if node.router:
                        rules.local_router.setdefault(protocol, {})[vip(ip, port.port)] = local_backends(node.name)
                    if node.switch:
                        rules.switch.setdefault(protocol, {})[vip(ip, port.port)] = seen_every(node)
            if port.node_port is None or not nodeport_enabled:
                continue
            if node_ip_slots is not None:
                for slot in range(node_ip_slots.get(family, 0)):
                    template.setdefault((protocol, family), {})[
                        f"^{n.node_ip_var(family, slot)}:{port.node_port}"] = every
                continue
            for node in nodes:
                if not node.node_port:
                    continue
                rules = per_node[node.name]
                for host_ip in (i for i in node.host_ips if i.version == family):
                    node_vip = vip(host_ip, port.node_port)
                    if node.router:
                        if etp_local:
                            rules.local_router.setdefault(protocol, {})[node_vip] = local_backends(node.name)
                        else:
                            rules.router.setdefault(protocol, {})[node_vip] = seen_every(node)
                    if node.switch:
                        rules.switch.setdefault(protocol, {})[node_vip] = seen_every(node)

    options, selection_fields = affinity(service)
    options.update(common_options(hairpin_ips))

    def add(protocol: str, scope: str, vips: dict[str, str], extra: Mapping[str, str] | None = None,
            **where: Any) -> None:
        lb_options = dict(options)
        lb_options.update(extra or {})
        if scope.startswith("node_local_router_"):
            lb_options["skip_snat"] = "true"
        if protocol == "udp":
            # A UDP client that keeps its source port (DNS resolvers, syslog, the e2e suite's
            # conntrack specs) refreshes its conntrack entry forever: without a flush it would keep
            # going to a deleted backend. kube-proxy deletes those entries; OVN does it with ct_flush.
            lb_options["ct_flush"] = "true"
        result.load_balancers.append(LoadBalancer(
            name=lb_name(key, protocol, scope), protocol=protocol, scope=scope, vips=dict(vips),
            options=lb_options, selection_fields=list(selection_fields), **where))

    for protocol in sorted(cluster):
        add(protocol, CLUSTER_SCOPE, cluster[protocol], lb_group=n.CLUSTER_LB_GROUP)
    for (protocol, family), vips in sorted(template.items()):
        extra = {"template": "true", "address-family": f"ipv{family}"}
        add(protocol, f"node_switch_template_IPv{family}", vips, extra, lb_group=n.CLUSTER_SWITCH_LB_GROUP)
        add(protocol, f"node_router_template_IPv{family}", vips, extra, lb_group=n.CLUSTER_ROUTER_LB_GROUP)
    for node in nodes:
        rules = per_node[node.name]
        gr, switch = n.gateway_router(node.name), n.node_switch(node.name)
        for protocol in sorted(set(rules.router) | set(rules.switch) | set(rules.local_router)):
            router_vips = rules.router.get(protocol, {})
            switch_vips = rules.switch.get(protocol, {})
            if router_vips and router_vips == switch_vips:
                add(protocol, f"node_router+switch_{node.name}", router_vips, routers=(gr,), switches=(switch,))
            else:
                if router_vips:
                    add(protocol, f"node_router_{node.name}", router_vips, routers=(gr,))
                if switch_vips:
                    add(protocol, f"node_switch_{node.name}", switch_vips, switches=(switch,))
            if rules.local_router.get(protocol):
                add(protocol, f"node_local_router_{node.name}", rules.local_router[protocol], routers=(gr,))
    return result


def common_options(hairpin_ips: Sequence[IPAddress]) -> dict[str, str]:
    """Options of every service LB.

    ``reject=true``: a VIP without backends answers with a TCP reset / ICMP
    unreachable instead of dropping. ``hairpin_snat_ip``: a pod reaching itself
    through its service is SNATed to the hairpin masquerade IP. ``neighbor_responder=none``:
    OVN does not answer ARP/ND for VIPs (ignored by OVN versions that lack it).
    """
    options = {"reject": "true", "neighbor_responder": "none"}
    if hairpin_ips:
        options["hairpin_snat_ip"] = " ".join(str(ip) for ip in hairpin_ips)
    return options
