"""The running secondary networks of one controller process and their allocators.

:class:`Network` is one network: its config, the NADs that currently define
it, its address pools and node subnets, and which attachments (pod key ->
annotation keys) it has programmed. :class:`Registry` maps network names and
NAD keys to them. The NAD controller adds and removes networks; each
network's controller, core's pod path (``ovnk_pod_networks``), restore and
repair read and fill them, from several threads: every method takes the
object's lock briefly.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

from ovnk.names import IPAddress
from ovnk.names import IPNetwork
from ovnk.plugins.secondary_networks import models
from ovnk.plugins.secondary_networks.ipam import AddressPool
from ovnk.plugins.secondary_networks.ipam import AllocationError
from ovnk.plugins.secondary_networks.ipam import SubnetAllocator
from ovnk.plugins.secondary_networks.models import IPInterface
from ovnk.plugins.secondary_networks.models import NetworkSpec
from ovnk.plugins.secondary_networks.models import Selection

#: layer3 node subnets keep .1 (router port) and .2 (upstream's management port address).
LAYER3_RESERVED = (1, 2)


class Network:
    """One running secondary network (see the module docstring)."""

    def __init__(self, spec: NetworkSpec) -> None:
        self.spec = spec
        self.controller_name = f"{spec.name}-network-controller"
        self._lock = threading.Lock()
        self._nads: set[str] = set()
        # NAD keys deleted while pods still used them: the network keeps serving those pods.
        self._retired: set[str] = set()
        self._attached: dict[str, set[str]] = {}
        self._network_ready = False
        self._ready_nodes: set[str] = set()
        self.node_subnets: SubnetAllocator | None = None
        self._node_pools: dict[str, list[AddressPool]] = {}
        self._pools: list[AddressPool] = []
        if spec.topology == models.LAYER3:
            self.node_subnets = SubnetAllocator((s.cidr, s.host_prefix or s.cidr.max_prefixlen) for s in spec.subnets)
        else:
            self._pools = [AddressPool(s.cidr, excluded=spec.exclude_subnets) for s in spec.subnets]

    # -- NADs ------------------------------------------------------------------------

    def set_nads(self, keys: Iterable[str]) -> tuple[set[str], set[str]]:
        """Make ``keys`` the network's NADs; returns (added, removed). Removed ones still in use are retired."""
        wanted = set(keys)
        with self._lock:
            added = wanted - self._nads
            removed = self._nads - wanted
            self._nads = wanted
            self._retired -= wanted
            in_use = self._nads_in_use()
            self._retired |= {key for key in removed if key in in_use}
            return added, removed

    def _nads_in_use(self) -> set[str]:
        return {models.nad_name_of(key) for keys in self._attached.values() for key in keys}

    @property
    def nads(self) -> set[str]:
        with self._lock:
            return set(self._nads)

    @property
    def retired(self) -> set[str]:
        with self._lock:
            return set(self._retired)

    def serves(self, nad_name: str) -> bool:
        """Whether attachments of NAD ``nad_name`` belong to this network (its NADs, and retired ones in use)."""
        with self._lock:
            return nad_name in self._nads or nad_name in self._retired

    # -- attachments -------------------------------------------------------------------

    def note_attached(self, pod: str, nad_keys: Iterable[str]) -> None:
        keys = set(nad_keys)
        with self._lock:
            if keys:
                self._attached[pod] = keys
            else:
                self._attached.pop(pod, None)
            self._retired &= self._nads_in_use()

    def attached(self) -> dict[str, set[str]]:
        with self._lock:
            return {pod: set(keys) for pod, keys in self._attached.items()}

    @property
    def in_use(self) -> bool:
        with self._lock:
            return bool(self._attached)

    # -- nodes (layer3) ---------------------------------------------------------------

    def node_subnet_list(self, node: str) -> list[IPNetwork]:
        return self.node_subnets.subnets_of(node) if self.node_subnets is not None else []

    def allocate_node(self, node: str) -> list[IPNetwork]:
        assert self.node_subnets is not None
        subnets = self.node_subnets.allocate(node)
        self._ensure_node_pools(node, subnets)
        return subnets

    def reserve_node(self, node: str, subnets: Sequence[IPNetwork]) -> None:
        assert self.node_subnets is not None
        for subnet in subnets:
            self.node_subnets.reserve(node, subnet)
        self._ensure_node_pools(node, self.node_subnets.subnets_of(node))

    def _ensure_node_pools(self, node: str, subnets: Sequence[IPNetwork]) -> None:
        with self._lock:
            pools = self._node_pools.setdefault(node, [])
            for subnet in subnets:
                if not any(p.subnet == subnet for p in pools):
                    pools.append(AddressPool(subnet, reserved_offsets=LAYER3_RESERVED))

    def release_node(self, node: str) -> None:
        with self._lock:
            self._node_pools.pop(node, None)
            self._ready_nodes.discard(node)
        if self.node_subnets is not None:
            self.node_subnets.release(node)

    def mark_ready(self, node: str | None = None, *, ready: bool = True) -> None:
        """Note that the network's own rows (``node=None``) or a layer3 node's rows are committed."""
        with self._lock:
            if node is None:
                self._network_ready = ready
            elif ready:
                self._ready_nodes.add(node)
            else:
                self._ready_nodes.discard(node)

    @property
    def network_ready(self) -> bool:
        """Whether the rows that do not depend on nodes (the layer3 router) are committed."""
        with self._lock:
            return self._network_ready

    def ready_for(self, node: str) -> bool:
        """Whether the rows pods of ``node`` attach to exist (layer3: the router and the node's switch)."""
        with self._lock:
            return self._network_ready and (self.spec.topology != models.LAYER3 or node in self._ready_nodes)

    def nodes_with_subnets(self) -> list[str]:
        return self.node_subnets.nodes() if self.node_subnets is not None else []

    # -- addresses -------------------------------------------------------------------------

    def pools_for(self, node: str) -> list[AddressPool]:
        if self.spec.topology == models.LAYER3:
            with self._lock:
                return list(self._node_pools.get(node, ()))
        return list(self._pools)

    def addresses_for(self, *, node: str, holder: str, selection: Selection) -> tuple[list[IPInterface], str]:
        """(IPs, MAC) of a new attachment: static ones when requested (and allowed), else allocated.

        :raises AllocationError: a static request cannot be had, or the network is full.
        """
        spec = self.spec
        pools = self.pools_for(node)
        if spec.ipam and not pools:
            raise AllocationError(f"node {node} has no subnet of network {spec.name} yet")
        ips: list[IPInterface] = []
        try:
            if selection.ips:
                if not spec.static_ips:
                    raise AllocationError(f"static IPs ('ips') are honoured on layer2 and localnet networks with "
                                          f"subnets only; {spec.name} is {spec.topology}"
                                          + ("" if spec.ipam else " without subnets"))
                for iface in selection.ips:
                    pool = next((p for p in pools if iface.ip in p.subnet), None)
                    if pool is None:
                        raise AllocationError(f"static IP {iface.ip} is not in the subnets of network {spec.name}")
                    pool.reserve(iface.ip, holder)
                    ips.append(_interface(iface.ip, pool.subnet))
            else:
                for pool in pools:
                    ips.append(_interface(pool.allocate(holder), pool.subnet))
        except AllocationError:
            self.release(node=node, holder=holder)
            raise
        mac = selection.mac or (names_mac(ips[0].ip) if ips else models.derived_mac(holder))
        return ips, mac

    def reserve_addresses(self, *, node: str, holder: str, ips: Sequence[IPInterface]) -> None:
        """Re-hold an annotated attachment's IPs (restore, or a reconcile finding its own annotation).

        :raises AllocationError: an IP is outside the network's subnets or held by another attachment.
        """
        pools = self.pools_for(node)
        for iface in ips:
            pool = next((p for p in pools if iface.ip in p.subnet), None)
            if pool is None:
                raise AllocationError(f"annotated IP {iface.ip} is not in network {self.spec.name}'s subnets"
                                      + (f" of node {node}" if self.spec.topology == models.LAYER3 else ""))
            pool.reserve(iface.ip, holder)

    def release(self, *, node: str, holder: str) -> list[IPAddress]:
        released: list[IPAddress] = []
        for pool in self.pools_for(node):
            released += pool.release_holder(holder)
        return released

    def release_everywhere(self, holder: str) -> list[IPAddress]:
        """Release ``holder``'s addresses in every pool (the node may be unknown, or gone)."""
        with self._lock:
            pools = [*self._pools, *(p for ps in self._node_pools.values() for p in ps)]
        released: list[IPAddress] = []
        for pool in pools:
            released += pool.release_holder(holder)
        return released


def names_mac(ip: IPAddress) -> str:
    from ovnk import names

    return names.mac_from_ip(ip)


def _interface(ip: IPAddress, subnet: IPNetwork) -> IPInterface:
    import ipaddress

    return ipaddress.ip_interface(f"{ip}/{subnet.prefixlen}")


class Registry:
    """Running networks by name, and which network each NAD (active or retired) belongs to."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._networks: dict[str, Network] = {}

    def add(self, network: Network) -> None:
        with self._lock:
            self._networks[network.spec.name] = network

    def remove(self, name: str) -> Network | None:
        with self._lock:
            return self._networks.pop(name, None)

    def get(self, name: str) -> Network | None:
        with self._lock:
            return self._networks.get(name)

    def networks(self) -> list[Network]:
        with self._lock:
            return list(self._networks.values())

    def network_of(self, nad_name: str) -> Network | None:
        """The network attachments of NAD ``nad_name`` belong to (``None``: none runs for it)."""
        for network in self.networks():
            if network.serves(nad_name):
                return network
        return None

    def pinned(self) -> dict[str, NetworkSpec]:
        """Configs of networks pods are attached to: they do not change under them."""
        return {n.spec.name: n.spec for n in self.networks() if n.in_use}

    def snapshot(self) -> Mapping[str, Any]:
        """For logs and the status CLI: name -> (config, NADs, retired NADs, attachments)."""
        return {n.spec.name: {"spec": n.spec, "nads": sorted(n.nads), "retired": sorted(n.retired),
                              "attachments": sum(len(k) for k in n.attached().values())} for n in self.networks()}
