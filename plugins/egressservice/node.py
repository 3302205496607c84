"""EgressService on the node agent: the SNAT to the ingress IP, and ip rules into ``network``.

Traffic of a served endpoint arrives at the host node through its management
port (the priority-101 reroute). The agent of the host node keeps one
nftables table (owner ``egressservice``: ``inet ovnk-egressservice``)::

    map egress-service-snat-v4 { type ipv4_addr : ipv4_addr; elements = { <endpoint> : <ingress IP>, ... } }
    chain egress-services {
        type nat hook postrouting priority srcnat;
        oifname "ovn-k8s-mp0" return            # back into the cluster: keep the pod's address
        snat ip to ip saddr map @egress-service-snat-v4
        (the IPv6 analog)
    }

so the outside sees the ingress IP, and conntrack turns the replies back to
the endpoint. With ``spec.network`` set, ip rules priority 5000 ``from
<endpoint> lookup <network>`` steer the endpoints' traffic into that table:
on the host node for every endpoint, and on every node for its local
endpoints when the host is ``ALL`` (``sourceIPBy: Network``). A table given
by name is looked up in the node's ``rt_tables``.

One node controller (``egressservice-node``, one key) computes both from the
EgressServices' ``status.host``, their Services and EndpointSlices, and
converges them through ``ctx.nft`` and ``ctx.net`` (which write nothing when
the kernel already holds it); a resync repairs drift. Switching the plugin off
makes the agent remove the table and the rules at its next start.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

from ovnk import ENDPOINTSLICES
from ovnk import SERVICES
from ovnk import ControllerSpec
from ovnk import IpRule
from ovnk import NftChain
from ovnk import NftMap
from ovnk import NftRule
from ovnk import NftTable
from ovnk import NodeContext
from ovnk import ReconcileRequest
from ovnk import Watch
from ovnk.names import IPAddress
from ovnk.plugins.egressservice.controller import EGRESSSERVICES
from ovnk.plugins.egressservice.controller import endpoints_changed
from ovnk.plugins.egressservice.controller import object_key
from ovnk.plugins.egressservice.controller import service_changed
from ovnk.plugins.egressservice.models import ALL_NODES
from ovnk.plugins.egressservice.models import LOAD_BALANCER_IP
from ovnk.plugins.egressservice.models import SERVICE_NAME_LABEL
from ovnk.plugins.egressservice.models import EgressServiceError
from ovnk.plugins.egressservice.models import Endpoint
from ovnk.plugins.egressservice.models import endpoints
from ovnk.plugins.egressservice.models import parse_ingress_ips
from ovnk.plugins.egressservice.models import parse_network
from ovnk.plugins.egressservice.models import parse_rt_tables

logger = logging.getLogger(__name__)

OWNER = "egressservice"
CONTROLLER = "egressservice-node"
KEY = "egress-services"
CHAIN = "egress-services"
RULE_PRIORITY = 5000
SNAT_PRIORITY = 100  # srcnat
RESYNC_INTERVAL = 10.0
RT_TABLES = (Path("/etc/iproute2/rt_tables"), Path("/usr/share/iproute2/rt_tables"))


def snat_map_name(version: int) -> str:
    return f"egress-service-snat-v{version}"


@dataclass
class NodeState:
    """What this node should hold: endpoint -> ingress IP, and (endpoint, table) rules."""

    snat: dict[IPAddress, IPAddress] = field(default_factory=dict)
    rules: set[tuple[IPAddress, int]] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)


def node_state(*, node: str, objects: Iterable[Mapping[str, Any]], services: Mapping[str, Mapping[str, Any]],
               endpoints_of: Any, tables: Mapping[str, int]) -> NodeState:
    """The SNAT map and ip rules of ``node`` (pure given its inputs).

    :param services: ``<ns>/<name>`` -> Service.
    :param endpoints_of: ``(namespace, name) -> list[Endpoint]``.
    :param tables: routing table names the node knows.
    """
    state = NodeState()
    for obj in sorted(objects, key=object_key):
        key = object_key(obj)
        host = str((obj.get("status") or {}).get("host") or "")
        spec = obj.get("spec") or {}
        if host not in (node, ALL_NODES):
            continue
        service = services.get(key)
        if service is None:
            continue
        namespace, _, name = key.partition("/")
        found: list[Endpoint] = endpoints_of(namespace, name)
        if host == node and spec.get("sourceIPBy") == LOAD_BALANCER_IP:
            ingress = parse_ingress_ips(service)
            for endpoint in found:
                target = next((ip for ip in ingress if ip.version == endpoint.ip.version), None)
                if target is not None:
                    state.snat.setdefault(endpoint.ip, target)
        try:
            table = parse_network(spec.get("network"), tables)
        except EgressServiceError as exc:
            state.problems.append(f"EgressService {key}: {exc}")
            continue
        if table is None:
            continue
        for endpoint in found:
            if host == node or endpoint.node == node:
                state.rules.add((endpoint.ip, table))
    return state


def nft_table(state: NodeState, *, mgmt_port: str) -> NftTable:
    """The ``egressservice`` table for ``state`` (both families, empty maps included)."""
    maps = []
    rules = [NftRule(expr=({"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": mgmt_port}},
                           {"return": None}),
                     comment="back into the cluster: keep the pod's address")]
    for version, (proto, addr_type) in ((4, ("ip", "ipv4_addr")), (6, ("ip6", "ipv6_addr"))):
        elements = tuple(sorted(((str(k), str(v)) for k, v in state.snat.items() if k.version == version),
                                key=lambda kv: ipaddress.ip_address(kv[0])))
        maps.append(NftMap(snat_map_name(version), type=addr_type, map=addr_type, elements=elements))
        rules.append(NftRule(expr=({"snat": {"family": proto, "addr": {"map": {
            "key": {"payload": {"protocol": proto, "field": "saddr"}},
            "data": f"@{snat_map_name(version)}"}}}},)))
    chain = NftChain(CHAIN, type="nat", hook="postrouting", priority=SNAT_PRIORITY, rules=tuple(rules))
    return NftTable(chains=(chain,), maps=tuple(maps))


def ip_rules(state: NodeState) -> list[IpRule]:
    return [IpRule(priority=RULE_PRIORITY, table=table, src=ipaddress.ip_network(ip))
            for ip, table in sorted(state.rules, key=lambda r: (r[0].version, r[0], r[1]))]


def read_rt_tables(paths: Iterable[Path] = RT_TABLES) -> dict[str, int]:
    """Routing table names from the node's ``rt_tables`` files (missing files are skipped)."""
    tables: dict[str, int] = {}
    for path in paths:
        try:
            text = path.read_text()
        except OSError:
            continue
        for table_name, number in parse_rt_tables(text).items():
            tables.setdefault(table_name, number)
    return tables


def enable_forwarding(ctx: NodeContext) -> None:
    """IPv4 forwarding between the management port and the gateway bridge: the host node routes the
    endpoints' traffic out (and the replies back in) instead of delivering it locally."""
    for dev in (ctx.config.node.mgmt_port, ctx.gateway_bridge):
        if dev and ctx.net.sysctl(f"net/ipv4/conf/{dev}/forwarding") != "1":
            ctx.net.set_sysctls([(f"net/ipv4/conf/{dev}/forwarding", "1")])
            logger.info("egress services: IPv4 forwarding on %s", dev)


class EgressServiceNode:
    """The node controller keeping this node's SNAT table and ip rules."""

    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        self.reported: set[str] = set()

    def spec(self) -> ControllerSpec:
        to_key = lambda _obj: [KEY]  # noqa: E731
        return ControllerSpec(name=CONTROLLER, workers=1, reconcile=self.reconcile, resync_period=RESYNC_INTERVAL,
                              initial_keys=lambda: [KEY], watches=(
            Watch(EGRESSSERVICES, keys=to_key, needs_update=service_changed),
            Watch(SERVICES, keys=self.keys_for_service, needs_update=service_changed),
            Watch(ENDPOINTSLICES, keys=self.keys_for_slice, needs_update=endpoints_changed),
        ))

    def keys_for_service(self, service: Mapping[str, Any]) -> list[str]:
        return [KEY] if self.ctx.cache(EGRESSSERVICES).get(object_key(service)) is not None else []

    def keys_for_slice(self, endpoint_slice: Mapping[str, Any]) -> list[str]:
        meta = endpoint_slice.get("metadata") or {}
        name = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
        key = f"{meta.get('namespace', '')}/{name}"
        return [KEY] if name and self.ctx.cache(EGRESSSERVICES).get(key) is not None else []

    def endpoints_of(self, namespace: str, name: str) -> list[Endpoint]:
        slices = [s for s in self.ctx.cache(ENDPOINTSLICES).list()
                  if (s.get("metadata") or {}).get("namespace") == namespace
                  and ((s.get("metadata") or {}).get("labels") or {}).get(SERVICE_NAME_LABEL) == name]
        return endpoints(slices, cluster_subnets=[s.network for s in self.ctx.config.default.cluster_subnets])

    def reconcile(self, req: ReconcileRequest) -> None:
        objects = self.ctx.cache(EGRESSSERVICES).list()
        services = {k: s for k in {object_key(o) for o in objects}
                    if (s := self.ctx.cache(SERVICES).get(k)) is not None}
        state = node_state(node=self.ctx.node_name, objects=objects, services=services,
                           endpoints_of=self.endpoints_of, tables=read_rt_tables())
        for problem in state.problems:
            if problem not in self.reported:
                logger.warning("%s: no ip rules (the node knows no such table)", problem)
        self.reported = set(state.problems)
        changed = self.ctx.nft.set_table(OWNER, nft_table(state, mgmt_port=self.ctx.config.node.mgmt_port))
        changed = self.ctx.net.set_rules(OWNER, ip_rules(state)) or changed
        if changed:
            logger.info("egress services on %s: SNAT %s; rules %s", self.ctx.node_name,
                        ", ".join(f"{k}->{v}" for k, v in sorted(state.snat.items(), key=lambda kv: str(kv[0])))
                        or "(none)", ", ".join(f"from {ip} lookup {t}" for ip, t in sorted(state.rules, key=str))
                        or "(none)")
