"""Shared state of the default network: allocators and what each node was built from.

One instance per controller process, filled by the node reconciler and read by
the pod reconciler and by plugins (through ``ctx.topology``).
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Iterable
from collections.abc import Sequence
from dataclasses import dataclass

from ovnk.core.config import Config
from ovnk.core.ovn.ids import OwnerType
from ovnk.core.topology import naming as n
from ovnk.core.topology.annotations import GatewayConfig
from ovnk.core.topology.ipam import MacRegistry
from ovnk.core.topology.ipam import NodeIdAllocator
from ovnk.core.topology.ipam import SubnetAllocator
from ovnk.core.topology.ipam import SubnetIpPool
from ovnk.core.topology.naming import IPAddress
from ovnk.core.topology.naming import IPNetwork


@dataclass(frozen=True)
class NodeFacts:
    """What a node's topology was last built from (read-only view for pods and plugins)."""

    name: str
    node_id: int
    subnets: tuple[IPNetwork, ...]
    chassis_id: str | None
    gateway: GatewayConfig | None
    reserved_ips: tuple[IPAddress, ...] = ()

    @property
    def gateway_ips(self) -> tuple[IPAddress, ...]:
        return tuple(n.gateway_ip(s) for s in self.subnets)

    @property
    def mgmt_ips(self) -> tuple[IPAddress, ...]:
        return tuple(n.mgmt_ip(s) for s in self.subnets)

    def join_ip(self, join_subnet: ipaddress.IPv4Network) -> ipaddress.IPv4Address:
        return n.join_ip(join_subnet, self.node_id)

    @property
    def host_ips(self) -> tuple[IPAddress, ...]:
        return self.gateway.host_ips if self.gateway else ()


class TopologyState:
    """Allocators (node subnets, node ids, pod IPs per node subnet, pod MACs) and node facts."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.subnets = SubnetAllocator(config.default.cluster_subnets)
        self.node_ids = NodeIdAllocator()
        self.macs = MacRegistry()
        self._lock = threading.Lock()
        self._pools: dict[str, list[SubnetIpPool]] = {}
        self._facts: dict[str, NodeFacts] = {}
        self._node_owners: dict[str, set[OwnerType]] = {}
        self.cluster_ready = threading.Event()

    # -- nodes -----------------------------------------------------------------

    def set_node(self, facts: NodeFacts) -> None:
        """Record a node's facts and make sure its IP pools exist with the current exclusions."""
        with self._lock:
            self._facts[facts.name] = facts
            pools = self._pools.get(facts.name, [])
            by_subnet = {p.subnet: p for p in pools}
            updated = []
            for subnet in facts.subnets:
                pool = by_subnet.get(subnet) or SubnetIpPool(subnet)
                pool.set_excluded(ip for ip in facts.reserved_ips if ip in subnet)
                updated.append(pool)
            self._pools[facts.name] = updated

    def pools_for(self, node: str, subnets: Sequence[IPNetwork]) -> list[SubnetIpPool]:
        """Pools of ``node`` (created empty if unknown; used to restore pod IPs before nodes are reconciled)."""
        with self._lock:
            pools = self._pools.setdefault(node, [])
            have = {p.subnet for p in pools}
            for subnet in subnets:
                if subnet not in have:
                    pools.append(SubnetIpPool(subnet))
            return list(pools)

    def remove_node(self, node: str) -> None:
        with self._lock:
            self._facts.pop(node, None)
            self._pools.pop(node, None)
            self._node_owners.pop(node, None)

    def note_node_owners(self, node: str, owners: Iterable[OwnerType]) -> set[OwnerType]:
        """Record owner types a node's rows were written with; returns every one seen for it."""
        with self._lock:
            seen = self._node_owners.setdefault(node, set())
            seen.update(owners)
            return set(seen)

    def node_owners(self, node: str) -> set[OwnerType]:
        with self._lock:
            return set(self._node_owners.get(node, set()))

    def node(self, name: str) -> NodeFacts | None:
        with self._lock:
            return self._facts.get(name)

    def nodes(self) -> list[NodeFacts]:
        with self._lock:
            return list(self._facts.values())

    def pools(self, node: str) -> list[SubnetIpPool]:
        with self._lock:
            return list(self._pools.get(node, []))

    def pool_for_ip(self, node: str, ip: IPAddress) -> SubnetIpPool | None:
        for pool in self.pools(node):
            if ip in pool.subnet:
                return pool
        return None

    def all_pools(self) -> Iterable[tuple[str, SubnetIpPool]]:
        with self._lock:
            items = [(node, pool) for node, pools in self._pools.items() for pool in pools]
        return items
