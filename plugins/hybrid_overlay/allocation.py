"""Foreign nodes' pod subnets out of ``[hybrid_overlay] cluster-subnets`` (pure: no I/O).

Each foreign node gets one block of its range's host prefix (a /23 of
``10.132.0.0/14/23``), the lowest free one, ranges in the order configured, as
ovn-kubernetes' cluster-manager hands out host subnets. A node keeps its block
for as long as it exists: a restart rebuilds the allocator from the nodes'
annotations (:meth:`SubnetAllocator.reserve`) before anything new is handed out.
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Sequence

from ovnk.plugins.hybrid_overlay.models import HybridSubnet


class AllocationError(Exception):
    """No block is free, or a block cannot be reserved; the message says why."""


class SubnetAllocator:
    """Which foreign node holds which block (thread-safe)."""

    def __init__(self, ranges: Sequence[HybridSubnet]) -> None:
        self.ranges = tuple(ranges)
        self._lock = threading.Lock()
        self._by_node: dict[str, ipaddress.IPv4Network] = {}
        self._by_subnet: dict[ipaddress.IPv4Network, str] = {}

    @property
    def capacity(self) -> int:
        """How many blocks the ranges hold together."""
        return sum(2 ** (r.host_prefix - r.network.prefixlen) for r in self.ranges)

    def allocated(self) -> dict[str, ipaddress.IPv4Network]:
        with self._lock:
            return dict(self._by_node)

    def subnet_of(self, node: str) -> ipaddress.IPv4Network | None:
        with self._lock:
            return self._by_node.get(node)

    def reserve(self, node: str, subnet: ipaddress.IPv4Network) -> None:
        """Record that ``node`` holds ``subnet`` (from its annotation).

        :raises AllocationError: the subnet is not a block of a configured range, or another node holds it
            (or one overlapping it).
        """
        if not any(subnet.prefixlen == r.host_prefix and subnet.subnet_of(r.network) for r in self.ranges):
            ranges = ", ".join(str(r) for r in self.ranges) or "none"
            raise AllocationError(f"{subnet} is not a block of the hybrid overlay cluster subnets ({ranges})")
        with self._lock:
            holder = self._by_subnet.get(subnet)
            if holder is not None and holder != node:
                raise AllocationError(f"{subnet} is already held by node {holder}")
            current = self._by_node.get(node)
            if current is not None and current != subnet:
                del self._by_subnet[current]
            self._by_node[node] = subnet
            self._by_subnet[subnet] = node

    def allocate(self, node: str) -> ipaddress.IPv4Network:
        """The block ``node`` holds, or the lowest free one.

        :raises AllocationError: every block is taken.
        """
        with self._lock:
            current = self._by_node.get(node)
            if current is not None:
                return current
            for entry in self.ranges:
                for block in entry.network.subnets(new_prefix=entry.host_prefix):
                    if block not in self._by_subnet:
                        self._by_node[node] = block
                        self._by_subnet[block] = node
                        return block
        raise AllocationError(f"every hybrid overlay subnet is in use ({self.capacity} in "
                              f"{', '.join(str(r) for r in self.ranges) or 'no range'})")

    def release(self, node: str) -> ipaddress.IPv4Network | None:
        """Free ``node``'s block; returns it (``None`` when it held none)."""
        with self._lock:
            subnet = self._by_node.pop(node, None)
            if subnet is not None:
                self._by_subnet.pop(subnet, None)
            return subnet
