"""IP address management, host scope: the node's pod addresses by IPAM mode (`sources`), handed
out by `ClusterPoolAllocator` (a pod CIDR) or `PoolListAllocator` (an explicit list)."""

from __future__ import annotations

from pylium.ipam.allocator import (
    Allocation,
    ClusterPoolAllocator,
    IpamError,
    NodeAllocator,
    NotInPool,
    PoolExhausted,
    parse_ipv4,
)
from pylium.ipam.pool import PoolListAllocator
from pylium.ipam.sources import (
    AddressSource,
    IpamMode,
    PodAddresses,
    node_addresses,
    source_for,
)
from pylium.ipam.watcher import AddressWatcher

__all__ = [
    "AddressSource",
    "AddressWatcher",
    "Allocation",
    "ClusterPoolAllocator",
    "IpamError",
    "IpamMode",
    "NodeAllocator",
    "NotInPool",
    "PodAddresses",
    "PoolExhausted",
    "PoolListAllocator",
    "node_addresses",
    "parse_ipv4",
    "source_for",
]
