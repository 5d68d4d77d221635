"""Cluster-pool pod CIDR allocation: carve per-node subnets out of the cluster pool list.

Pure bookkeeping (no store): the ledger (`operator/ledger.py`) loads the recorded assignments
into a `PodCIDRAllocator`, asks it for a change, and writes the result back with a CAS.

Allocation is deterministic: a node gets the lowest free subnet of the first pool that has one
(pools in the order given, as Cilium's `clusterPoolIPv4PodCIDRList`). A subnet recorded for one
node is never handed to another, even one of a different size or outside today's pools (the
operator restarted with other flags): those still block every subnet they overlap.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from ipaddress import IPv4Network

MAX_MASK_SIZE = 30
"""A node's subnet needs network, broadcast, router and one pod address."""


class PodCIDRError(Exception):
    """Base of pod CIDR allocation errors."""


class PoolExhausted(PodCIDRError):
    """Every subnet of every pool is assigned."""


class CIDRTaken(PodCIDRError):
    """A node claims a subnet that overlaps another node's."""


def parse_pools(cidrs: Iterable[str], mask_size: int) -> tuple[IPv4Network, ...]:
    """Validate the cluster pool list against the per-node mask size.

    Raises:
        ValueError: no pool, a malformed or overlapping pool, or a mask size the pools cannot
            be cut into.
    """
    pools = tuple(IPv4Network(c, strict=True) for c in cidrs)
    if not pools:
        raise ValueError("the cluster pool list is empty")
    if not 1 <= mask_size <= MAX_MASK_SIZE:
        raise ValueError(f"mask size {mask_size} is outside 1..{MAX_MASK_SIZE}")
    for i, pool in enumerate(pools):
        if mask_size < pool.prefixlen:
            raise ValueError(f"mask size /{mask_size} is larger than the pool {pool}")
        for other in pools[:i]:
            if pool.overlaps(other):
                raise ValueError(f"pools {other} and {pool} overlap")
    return pools


class PodCIDRAllocator:
    """Assignments node -> subnets over the cluster pool list.

    Args:
        pools: the cluster pool list (see `parse_pools`).
        mask_size: prefix length of each node's subnet.
    """

    def __init__(self, pools: Sequence[IPv4Network], mask_size: int) -> None:
        self.pools = tuple(pools)
        self.mask_size = mask_size
        self._owner: dict[IPv4Network, str] = {}
        self._by_node: dict[str, list[IPv4Network]] = {}
        # Subnets not of mask_size (recorded under other flags) are checked by overlap; the
        # usual ones by exact lookup, so allocation stays cheap for thousands of nodes.
        self._odd: list[IPv4Network] = []

    @classmethod
    def rebuild(
        cls, pools: Sequence[IPv4Network], mask_size: int, assignments: Mapping[str, str]
    ) -> PodCIDRAllocator:
        """An allocator holding recorded assignments (subnet text -> node), e.g. after a
        restart. Raises CIDRTaken if two recorded subnets overlap."""
        alloc = cls(pools, mask_size)
        for cidr, node in sorted(assignments.items()):
            alloc.occupy(node, cidr)
        return alloc

    def assignments(self) -> dict[str, str]:
        """Subnet -> node, sorted by subnet (the ledger's record)."""
        return {str(n): self._owner[n] for n in sorted(self._owner)}

    def assigned(self, node: str) -> list[IPv4Network]:
        """The subnets `node` holds, in the order it got them."""
        return list(self._by_node.get(node, ()))

    def owner(self, cidr: IPv4Network | str) -> str | None:
        """The node holding exactly this subnet, if any."""
        return self._owner.get(IPv4Network(cidr))

    def occupy(self, node: str, cidr: IPv4Network | str) -> None:
        """Record that `node` holds `cidr` (adopting an existing assignment); idempotent.

        Raises:
            CIDRTaken: `cidr` overlaps a subnet of another node.
        """
        net = IPv4Network(cidr, strict=True)
        holder = self._overlapping(net)
        if holder is not None and holder[1] != node:
            raise CIDRTaken(f"{net} overlaps {holder[0]} of node {holder[1]}")
        if holder is not None and holder[0] == net:
            return
        self._owner[net] = node
        self._by_node.setdefault(node, []).append(net)
        if net.prefixlen != self.mask_size:
            self._odd.append(net)

    def set_node(self, node: str, cidrs: Iterable[IPv4Network | str]) -> None:
        """Make `cidrs` exactly the subnets `node` holds (what its object says it has).

        Raises:
            CIDRTaken: one of them overlaps another node's subnet; nothing changes then.
        """
        nets = [IPv4Network(c, strict=True) for c in cidrs]
        for net in nets:
            holder = self._overlapping(net)
            if holder is not None and holder[1] != node:
                raise CIDRTaken(f"{net} overlaps {holder[0]} of node {holder[1]}")
        if nets == self._by_node.get(node, []):
            return
        self.release(node)
        for net in nets:
            self.occupy(node, net)

    def allocate(self, node: str) -> IPv4Network:
        """The node's first subnet if it has one, else the lowest free one, now recorded.

        Raises:
            PoolExhausted: no pool has a free subnet.
        """
        held = self._by_node.get(node)
        if held:
            return held[0]
        for pool in self.pools:
            for candidate in pool.subnets(new_prefix=self.mask_size):
                if self._overlapping(candidate) is None:
                    self.occupy(node, candidate)
                    return candidate
        pools = ", ".join(map(str, self.pools))
        raise PoolExhausted(
            f"no free /{self.mask_size} left in the cluster pool ({pools}):"
            f" {len(self._owner)} subnets assigned"
        )

    def release(self, node: str) -> list[IPv4Network]:
        """Free every subnet `node` holds; returns them (empty if it held none)."""
        gone = self._by_node.pop(node, [])
        for net in gone:
            del self._owner[net]
            if net in self._odd:
                self._odd.remove(net)
        return gone

    def _overlapping(self, net: IPv4Network) -> tuple[IPv4Network, str] | None:
        """A recorded subnet overlapping `net` and its node, or None."""
        if net in self._owner:
            return net, self._owner[net]
        if net.prefixlen != self.mask_size:
            # a differently sized subnet: compare against every recorded one
            for other, node in self._owner.items():
                if other.overlaps(net):
                    return other, node
            return None
        for other in self._odd:
            if other.overlaps(net):
                return other, self._owner[other]
        return None
