"""IP address management: cluster-pool (host scope) allocation from the node's pod CIDR."""

from __future__ import annotations

from pylium.ipam.allocator import (
    Allocation,
    ClusterPoolAllocator,
    IpamError,
    NotInPool,
    PoolExhausted,
    parse_ipv4,
)

__all__ = [
    "Allocation",
    "ClusterPoolAllocator",
    "IpamError",
    "NotInPool",
    "PoolExhausted",
    "parse_ipv4",
]
