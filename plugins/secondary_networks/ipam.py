"""Address management of secondary networks (pure, thread-safe).

* :class:`SubnetAllocator`: a layer3 network's node subnets, carved from its
  ``subnets`` (``CIDR/hostPrefix``), one per node and IP family, lowest free
  first; upstream's cluster-manager does this and publishes them in the node's
  ``k8s.ovn.org/node-subnets`` under the network's name.
* :class:`AddressPool`: the addresses of one subnet (a layer3 node subnet, or
  a layer2/localnet network's subnet), by holder. The network address and, on
  IPv4, the broadcast address are never handed out; layer3 pools also keep
  ``.1`` (the router port) and ``.2`` (upstream reserves the management port
  address on every layer3 switch); ``excludeSubnets`` are not handed out
  dynamically but may be requested statically.

A holder is one attachment of one pod instance (:func:`~.models.attachment_holder`):
allocating twice for a holder returns what it holds, so a retried reconcile
never takes a second address.
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Iterable

from ovnk.names import IPAddress
from ovnk.names import IPNetwork


class AllocationError(ValueError):
    """No address or subnet is free, or the one asked for cannot be had; the message says which."""


class AddressPool:
    """The addresses of one subnet.

    :param subnet: the subnet.
    :param reserved_offsets: offsets from the network address never handed out (``1``: the gateway).
    :param excluded: ranges not handed out dynamically (``excludeSubnets``).
    """

    def __init__(self, subnet: IPNetwork, *, reserved_offsets: Iterable[int] = (),
                 excluded: Iterable[IPNetwork] = ()) -> None:
        self.subnet = subnet
        self._base = int(subnet.network_address)
        self._size = subnet.num_addresses
        self._reserved = {0, *reserved_offsets}
        if subnet.version == 4 and self._size > 2:
            self._reserved.add(self._size - 1)
        self._excluded = tuple(e for e in excluded if e.version == subnet.version)
        self._lock = threading.Lock()
        self._holders: dict[int, str] = {}
        self._by_holder: dict[str, set[int]] = {}
        self._cursor = 0

    def _excluded_offset(self, offset: int) -> bool:
        ip = ipaddress.ip_address(self._base + offset)
        return any(ip in e for e in self._excluded)

    def _offset(self, ip: IPAddress) -> int:
        if ip not in self.subnet:
            raise AllocationError(f"{ip} is not in {self.subnet}")
        return int(ip) - self._base

    def allocate(self, holder: str) -> IPAddress:
        """An address for ``holder``: the one it holds already, else the next free one."""
        with self._lock:
            held = self._by_holder.get(holder)
            if held:
                return ipaddress.ip_address(self._base + min(held))
            for step in range(self._size):
                offset = (self._cursor + step) % self._size
                if offset in self._reserved or offset in self._holders or self._excluded_offset(offset):
                    continue
                self._take(offset, holder)
                self._cursor = (offset + 1) % self._size
                return ipaddress.ip_address(self._base + offset)
        raise AllocationError(f"no free address left in {self.subnet}")

    def reserve(self, ip: IPAddress, holder: str) -> None:
        """Give ``ip`` to ``holder`` (a static request, or an address found at restore).

        :raises AllocationError: outside the subnet, reserved, or held by another holder.
        """
        with self._lock:
            offset = self._offset(ip)
            if offset in self._reserved:
                raise AllocationError(f"{ip} is reserved in {self.subnet} (network, broadcast or router address)")
            other = self._holders.get(offset)
            if other is not None and other != holder:
                raise AllocationError(f"{ip} is in use by {other.split('#')[0]}")
            self._take(offset, holder)

    def _take(self, offset: int, holder: str) -> None:
        self._holders[offset] = holder
        self._by_holder.setdefault(holder, set()).add(offset)

    def release_holder(self, holder: str) -> list[IPAddress]:
        with self._lock:
            offsets = self._by_holder.pop(holder, set())
            for offset in offsets:
                self._holders.pop(offset, None)
            return [ipaddress.ip_address(self._base + o) for o in sorted(offsets)]

    def held_by(self, holder: str) -> list[IPAddress]:
        with self._lock:
            return [ipaddress.ip_address(self._base + o) for o in sorted(self._by_holder.get(holder, ()))]

    def holder_of(self, ip: IPAddress) -> str | None:
        with self._lock:
            try:
                return self._holders.get(self._offset(ip))
            except AllocationError:
                return None

    def holders(self) -> set[str]:
        with self._lock:
            return set(self._by_holder)

    def __len__(self) -> int:
        with self._lock:
            return len(self._holders)


class SubnetAllocator:
    """Node subnets of a layer3 network: ``subnets`` carved into ``/hostPrefix`` blocks, one per node and family."""

    def __init__(self, cidrs: Iterable[tuple[IPNetwork, int]]) -> None:
        self._cidrs = [(cidr, host_prefix) for cidr, host_prefix in cidrs]
        self._lock = threading.Lock()
        self._owners: dict[IPNetwork, str] = {}
        self._by_node: dict[str, list[IPNetwork]] = {}

    def _blocks(self, cidr: IPNetwork, host_prefix: int) -> Iterable[IPNetwork]:
        return cidr.subnets(new_prefix=host_prefix)

    def subnets_of(self, node: str) -> list[IPNetwork]:
        with self._lock:
            return list(self._by_node.get(node, ()))

    def allocate(self, node: str) -> list[IPNetwork]:
        """The node's subnets (one per family of the network), allocating what it lacks."""
        with self._lock:
            current = self._by_node.setdefault(node, [])
            for cidr, host_prefix in self._cidrs:
                if any(s.version == cidr.version and s.subnet_of(cidr) for s in current):  # type: ignore[arg-type]
                    continue
                for block in self._blocks(cidr, host_prefix):
                    if block not in self._owners:
                        self._owners[block] = node
                        current.append(block)
                        break
                else:
                    raise AllocationError(f"no /{host_prefix} left in {cidr} for node {node}")
            return list(current)

    def reserve(self, node: str, subnet: IPNetwork) -> None:
        """Record a subnet found in a node annotation (restore)."""
        with self._lock:
            cidr = next((c for c, h in self._cidrs if c.version == subnet.version and subnet.subnet_of(c)  # type: ignore[arg-type]
                         and subnet.prefixlen == h), None)
            if cidr is None:
                raise AllocationError(f"{subnet} is not a node subnet of this network")
            owner = self._owners.get(subnet)
            if owner is not None and owner != node:
                raise AllocationError(f"{subnet} is held by node {owner}")
            current = self._by_node.setdefault(node, [])
            if any(s.version == subnet.version and s != subnet for s in current):
                raise AllocationError(f"node {node} has another subnet of this family already")
            self._owners[subnet] = node
            if subnet not in current:
                current.append(subnet)

    def release(self, node: str) -> list[IPNetwork]:
        with self._lock:
            released = self._by_node.pop(node, [])
            for subnet in released:
                self._owners.pop(subnet, None)
            return released

    def nodes(self) -> list[str]:
        with self._lock:
            return sorted(self._by_node)
