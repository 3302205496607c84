"""Address pools and layer3 node subnets (pure)."""

from __future__ import annotations

import ipaddress

import pytest

from ovnk.plugins.secondary_networks.ipam import AddressPool
from ovnk.plugins.secondary_networks.ipam import AllocationError
from ovnk.plugins.secondary_networks.ipam import SubnetAllocator

net = ipaddress.ip_network
ip = ipaddress.ip_address


def test_pool_skips_reserved_and_excluded_and_is_idempotent_per_holder() -> None:
    pool = AddressPool(net("10.1.0.0/29"), reserved_offsets=(1,), excluded=[net("10.1.0.2/31")])
    first = pool.allocate("a")
    assert first == ip("10.1.0.4")
    assert pool.allocate("a") == first
    assert pool.allocate("b") == ip("10.1.0.5")
    assert pool.allocate("c") == ip("10.1.0.6")
    with pytest.raises(AllocationError, match="no free address"):
        pool.allocate("d")
    # excluded addresses may still be had statically; reserved ones never
    pool.reserve(ip("10.1.0.2"), "d")
    with pytest.raises(AllocationError, match="reserved"):
        pool.reserve(ip("10.1.0.1"), "e")
    with pytest.raises(AllocationError, match="in use by"):
        pool.reserve(ip("10.1.0.4"), "e")
    assert pool.release_holder("a") == [ip("10.1.0.4")]
    assert pool.holder_of(ip("10.1.0.4")) is None


def test_subnet_allocator_one_block_per_node_and_restore_conflicts() -> None:
    alloc = SubnetAllocator([(net("10.200.0.0/23"), 24)])
    assert alloc.allocate("n1") == [net("10.200.0.0/24")]
    assert alloc.allocate("n1") == [net("10.200.0.0/24")]
    assert alloc.allocate("n2") == [net("10.200.1.0/24")]
    with pytest.raises(AllocationError, match="no /24 left"):
        alloc.allocate("n3")
    with pytest.raises(AllocationError, match="held by node n1"):
        alloc.reserve("n3", net("10.200.0.0/24"))
    assert alloc.release("n1") == [net("10.200.0.0/24")]
    alloc.reserve("n3", net("10.200.0.0/24"))
    assert alloc.nodes() == ["n2", "n3"]
