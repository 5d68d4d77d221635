"""Where a node's pod addresses come from, by the cluster's IPAM mode (Cilium's `ipam`).

| mode | object | field | allocator |
|---|---|---|---|
| `cluster-pool` | CiliumNode | `spec.ipam.podCIDRs` (the operator's) | ClusterPoolAllocator |
| `kubernetes` | Node | `spec.podCIDRs[0]` / `spec.podCIDR` | ClusterPoolAllocator |
| `crd` | CiliumNode | `spec.ipam.pool` (ip -> {resource}) | PoolListAllocator |

A source only reads: `read(obj)` turns the node's object into `PodAddresses` (None until it
carries some). `node_addresses()` lists then watches the store for them, so the agent waits for
its addresses at start and learns of later changes (the crd pool grows) from the same stream.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from pylium.ipam.allocator import ClusterPoolAllocator, NodeAllocator
from pylium.ipam.pool import PoolListAllocator
from pylium.store import Expired, Object, Store

log = logging.getLogger(__name__)


class IpamMode(StrEnum):
    """The cluster's IPAM mode (the same on the agent and the operator)."""

    CLUSTER_POOL = "cluster-pool"
    KUBERNETES = "kubernetes"
    CRD = "crd"


@dataclass(frozen=True)
class PodAddresses:
    """What a node may hand to its pods: a pod CIDR or an explicit address list."""

    cidr: str | None = None
    pool: tuple[str, ...] = ()

    def allocator(self, state_file: Path) -> NodeAllocator:
        """The allocator for these addresses (not loaded yet)."""
        if self.cidr is not None:
            return ClusterPoolAllocator(self.cidr, state_file)
        return PoolListAllocator(self.pool, state_file)


class AddressSource(Protocol):
    """Reads a node's pod addresses from one kind of object."""

    kind: str
    """The kind holding them (named like the node)."""
    field: str
    """Where in it, for messages."""

    def read(self, obj: Object) -> PodAddresses | None:
        """The addresses the object carries, or None while it carries none."""
        ...


def ipv4_cidrs(values: Any) -> list[str]:
    """The IPv4 entries of a CIDR list (IPv6 ones are not pylium's yet)."""
    if not isinstance(values, list):
        return []
    return [v for v in values if isinstance(v, str) and ":" not in v]


def node_pod_cidrs(node: Object) -> list[str]:
    """IPv4 pod CIDRs of a Node: `spec.podCIDRs`, else `spec.podCIDR`."""
    spec = node.get("spec") or {}
    return ipv4_cidrs(spec.get("podCIDRs")) or ipv4_cidrs([spec.get("podCIDR")])


def cilium_node_pod_cidrs(obj: Object) -> list[str]:
    """IPv4 `spec.ipam.podCIDRs` of a CiliumNode."""
    return ipv4_cidrs(((obj.get("spec") or {}).get("ipam") or {}).get("podCIDRs"))


class CiliumNodePodCIDRs:
    """cluster-pool: the first IPv4 entry of `CiliumNode.spec.ipam.podCIDRs`."""

    kind = "CiliumNode"
    field = "spec.ipam.podCIDRs"

    def read(self, obj: Object) -> PodAddresses | None:
        """The pod CIDR the operator (or `lab up`) wrote."""
        cidrs = cilium_node_pod_cidrs(obj)
        return PodAddresses(cidr=cidrs[0]) if cidrs else None


class NodePodCIDRs:
    """kubernetes: `Node.spec.podCIDRs[0]` (IPv4), else `Node.spec.podCIDR`."""

    kind = "Node"
    field = "spec.podCIDRs"

    def read(self, obj: Object) -> PodAddresses | None:
        """The pod CIDR node-ipam (the operator here, kube-controller-manager in a cluster)
        wrote."""
        cidrs = node_pod_cidrs(obj)
        return PodAddresses(cidr=cidrs[0]) if cidrs else None


class CiliumNodePool:
    """crd: the IPv4 keys of `CiliumNode.spec.ipam.pool`, at least two (router and a pod)."""

    kind = "CiliumNode"
    field = "spec.ipam.pool"

    def read(self, obj: Object) -> PodAddresses | None:
        """The addresses an outside controller listed."""
        pool = ((obj.get("spec") or {}).get("ipam") or {}).get("pool") or {}
        ips = tuple(sorted(ip for ip in pool if isinstance(ip, str) and ":" not in ip))
        return PodAddresses(pool=ips) if len(ips) >= 2 else None


def source_for(mode: IpamMode | str) -> AddressSource:
    """The address source of an IPAM mode (ValueError for an unknown one)."""
    sources: dict[IpamMode, AddressSource] = {
        IpamMode.CLUSTER_POOL: CiliumNodePodCIDRs(),
        IpamMode.KUBERNETES: NodePodCIDRs(),
        IpamMode.CRD: CiliumNodePool(),
    }
    return sources[IpamMode(mode)]


async def node_addresses(
    store: Store, node: str, source: AddressSource
) -> AsyncGenerator[PodAddresses, None]:
    """The node's addresses once present, then again each time they change (list, then
    watch; lists again when the watch expires). Ends when the store closes."""
    last: PodAddresses | None = None
    while True:
        objects, revision = await store.list(source.kind)
        mine = next((o for o in objects if o["metadata"]["name"] == node), None)
        current = source.read(mine) if mine is not None else None
        if current is not None and current != last:
            last = current
            yield current
        if last is None:
            log.info("waiting for %s %s with %s", source.kind, node, source.field)
        try:
            async for event in store.watch(source.kind, revision):
                obj = event.object
                if event.type == "DELETED" or obj["metadata"]["name"] != node:
                    continue
                current = source.read(obj)
                if current is not None and current != last:
                    last = current
                    yield current
            return
        except Expired:
            continue  # compacted past our revision: list again
