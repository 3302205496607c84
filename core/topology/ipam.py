"""Allocators: node host subnets, node ids and pod IPs of each node subnet.

All three are rebuilt from annotations at start (node ``k8s.ovn.org/node-subnets``
and ``k8s.ovn.org/node-id``, pod ``k8s.ovn.org/pod-networks``) before any new
allocation, so a restart never hands out an address that is in use.
Thread-safe: reconcilers of different keys allocate concurrently.
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Iterable
from collections.abc import Sequence

from ovnk.core.config import ClusterSubnet
from ovnk.core.topology.naming import IPAddress
from ovnk.core.topology.naming import IPNetwork

MIN_NODE_ID = 2
MAX_NODE_ID = 5000


class AllocationError(Exception):
    """No address, subnet or id is available, or a requested one cannot be used."""


class SubnetAllocator:
    """Hands out host subnets (``/hostPrefix``) of the cluster subnets, per IP family."""

    def __init__(self, cluster_subnets: Sequence[ClusterSubnet]) -> None:
        self._lock = threading.Lock()
        self._ranges = list(cluster_subnets)
        self._owner: dict[IPNetwork, str] = {}
        self._by_node: dict[str, list[IPNetwork]] = {}
        self._next: dict[int, int] = {}

    def families(self) -> list[int]:
        return sorted({r.network.version for r in self._ranges})

    def _contains(self, subnet: IPNetwork) -> ClusterSubnet | None:
        for cluster in self._ranges:
            if (subnet.version == cluster.network.version and subnet.subnet_of(cluster.network)  # type: ignore[arg-type]
                    and subnet.prefixlen == cluster.host_prefix):
                return cluster
        return None

    def reserve(self, node: str, subnets: Iterable[IPNetwork]) -> None:
        """Record subnets a node already has (from its annotation); conflicts raise."""
        with self._lock:
            for subnet in subnets:
                if self._contains(subnet) is None:
                    raise AllocationError(f"subnet {subnet} of node {node} is not a host subnet of the cluster subnets")
                owner = self._owner.get(subnet)
                if owner is not None and owner != node:
                    raise AllocationError(f"subnet {subnet} of node {node} is already allocated to node {owner}")
                self._owner[subnet] = node
                current = self._by_node.setdefault(node, [])
                if subnet not in current:
                    current.append(subnet)

    def allocate(self, node: str) -> list[IPNetwork]:
        """The node's subnets, allocating one per family it lacks (IPv4 first)."""
        with self._lock:
            have = self._by_node.setdefault(node, [])
            for family in self.families():
                if any(s.version == family for s in have):
                    continue
                have.append(self._allocate_family(node, family))
            return sorted(have, key=lambda s: s.version)

    def _allocate_family(self, node: str, family: int) -> IPNetwork:
        for cluster in (r for r in self._ranges if r.network.version == family):
            count = 1 << (cluster.host_prefix - cluster.network.prefixlen)
            start = self._next.get(family, 0)
            for step in range(count):
                index = (start + step) % count
                base = int(cluster.network.network_address) + index * (1 << (cluster.network.max_prefixlen - cluster.host_prefix))
                subnet = ipaddress.ip_network((base, cluster.host_prefix))
                if subnet not in self._owner:
                    self._owner[subnet] = node
                    self._next[family] = index + 1
                    return subnet
        raise AllocationError(f"no free IPv{family} host subnet left in the cluster subnets")

    def release(self, node: str) -> list[IPNetwork]:
        with self._lock:
            subnets = self._by_node.pop(node, [])
            for subnet in subnets:
                if self._owner.get(subnet) == node:
                    del self._owner[subnet]
            return subnets

    def subnets_of(self, node: str) -> list[IPNetwork]:
        with self._lock:
            return list(self._by_node.get(node, []))

    def allocated(self) -> dict[str, list[IPNetwork]]:
        with self._lock:
            return {node: list(subnets) for node, subnets in self._by_node.items()}


class NodeIdAllocator:
    """Node ids 2..5000 (0 and 1 are reserved), published as ``k8s.ovn.org/node-id``."""

    def __init__(self, lo: int = MIN_NODE_ID, hi: int = MAX_NODE_ID) -> None:
        self._lock = threading.Lock()
        self.lo, self.hi = lo, hi
        self._by_node: dict[str, int] = {}
        self._by_id: dict[int, str] = {}

    def reserve(self, node: str, node_id: int) -> None:
        with self._lock:
            if not self.lo <= node_id <= self.hi:
                raise AllocationError(f"node id {node_id} of node {node} is outside {self.lo}..{self.hi}")
            owner = self._by_id.get(node_id)
            if owner is not None and owner != node:
                raise AllocationError(f"node id {node_id} of node {node} is already used by node {owner}")
            old = self._by_node.get(node)
            if old is not None and old != node_id:
                del self._by_id[old]
            self._by_node[node] = node_id
            self._by_id[node_id] = node

    def allocate(self, node: str) -> int:
        with self._lock:
            if node in self._by_node:
                return self._by_node[node]
            for candidate in range(self.lo, self.hi + 1):
                if candidate not in self._by_id:
                    self._by_node[node] = candidate
                    self._by_id[candidate] = node
                    return candidate
        raise AllocationError("no free node id left (2..5000)")

    def release(self, node: str) -> int | None:
        with self._lock:
            node_id = self._by_node.pop(node, None)
            if node_id is not None:
                self._by_id.pop(node_id, None)
            return node_id

    def get(self, node: str) -> int | None:
        with self._lock:
            return self._by_node.get(node)


class SubnetIpPool:
    """IP addresses of one node subnet.

    ``.0``, ``.1`` (gateway), ``.2`` (management port), the broadcast address
    and any excluded IPs are never handed out. Allocation takes the lowest free
    address, like ovn-kubernetes' contiguous allocator: a freed IP is reused by
    the next pod, but only once the pod instance that held it is gone (the
    holder check), so two live pods never share one.
    Each IP records the pod key that holds it; one pod may hold one IP.
    """

    def __init__(self, subnet: IPNetwork, *, excluded: Iterable[IPAddress] = ()) -> None:
        self.subnet = subnet
        self._lock = threading.Lock()
        self._holder: dict[IPAddress, str] = {}
        self._excluded: set[IPAddress] = set()
        self.set_excluded(excluded)

    @property
    def size(self) -> int:
        return int(self.subnet.num_addresses)

    def set_excluded(self, excluded: Iterable[IPAddress]) -> None:
        with self._lock:
            reserved = {self.subnet.network_address, self.subnet.network_address + 1, self.subnet.network_address + 2}
            if self.subnet.version == 4:
                reserved.add(self.subnet.broadcast_address)
            self._excluded = reserved | set(excluded)

    def excluded(self, ip: IPAddress) -> bool:
        return ip in self._excluded

    def reserve(self, ip: IPAddress, holder: str) -> None:
        """Mark ``ip`` as held by ``holder`` (restore or static request); conflicts raise."""
        with self._lock:
            if ip not in self.subnet:
                raise AllocationError(f"{ip} is not in node subnet {self.subnet}")
            if ip in self._excluded:
                raise AllocationError(f"{ip} is reserved in node subnet {self.subnet}")
            owner = self._holder.get(ip)
            if owner is not None and owner != holder:
                raise AllocationError(f"{ip} is already in use by {owner}")
            self._holder[ip] = holder

    def allocate(self, holder: str) -> IPAddress:
        with self._lock:
            for existing, owner in self._holder.items():
                if owner == holder:
                    return existing
            base = int(self.subnet.network_address)
            for offset in range(3, self.size):
                ip = ipaddress.ip_address(base + offset)
                if ip in self._excluded or ip in self._holder:
                    continue
                self._holder[ip] = holder
                return ip
        raise AllocationError(f"node subnet {self.subnet} is full ({len(self._holder)} addresses in use)")

    def release(self, ip: IPAddress, holder: str | None = None) -> bool:
        """Free ``ip`` (only if ``holder`` holds it, when given)."""
        with self._lock:
            owner = self._holder.get(ip)
            if owner is None or (holder is not None and owner != holder):
                return False
            del self._holder[ip]
            return True

    def held_by(self, holder: str) -> list[IPAddress]:
        """IPs ``holder`` holds in this pool."""
        with self._lock:
            return [ip for ip, owner in self._holder.items() if owner == holder]

    def holder(self, ip: IPAddress) -> str | None:
        with self._lock:
            return self._holder.get(ip)

    def in_use(self) -> dict[IPAddress, str]:
        with self._lock:
            return dict(self._holder)


class MacRegistry:
    """Which pod instance holds which MAC address, cluster-wide.

    MACs are derived from IPs, so they are unique as long as every pod's
    annotation is ovnk's own; a hand-written ``k8s.ovn.org/pod-networks`` (or a
    static MAC request) could still claim another pod's MAC, which would break
    both pods' traffic. Reserving every MAC a pod uses makes that a refusal.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holder: dict[str, str] = {}

    @staticmethod
    def normalize(mac: str) -> str:
        return mac.strip().lower()

    def reserve(self, mac: str, holder: str) -> None:
        """Mark ``mac`` as held by ``holder``; another holder's MAC raises :class:`AllocationError`."""
        key = self.normalize(mac)
        with self._lock:
            owner = self._holder.get(key)
            if owner is not None and owner != holder:
                raise AllocationError(f"MAC {key} is already in use by {owner}")
            self._holder[key] = holder

    def release(self, mac: str, holder: str | None = None) -> bool:
        """Free ``mac`` (only if ``holder`` holds it, when given)."""
        key = self.normalize(mac)
        with self._lock:
            owner = self._holder.get(key)
            if owner is None or (holder is not None and owner != holder):
                return False
            del self._holder[key]
            return True

    def release_holder(self, holder: str) -> list[str]:
        """Free every MAC ``holder`` holds (a pod gone before its annotation reached the cache)."""
        with self._lock:
            macs = [mac for mac, owner in self._holder.items() if owner == holder]
            for mac in macs:
                del self._holder[mac]
            return macs

    def holder(self, mac: str) -> str | None:
        with self._lock:
            return self._holder.get(self.normalize(mac))
