"""The cluster's pod CIDR assignments, kept in one store object changed by compare-and-swap.

Why one object: a node's subnet is written into that node's own object (CiliumNode or Node), and
a resourceVersion check on one node's object cannot stop two operators from giving the same
subnet to two *different* nodes. Every change therefore goes through the ledger
(`pylium.io/v1 PodCIDRPool "cluster-pool"`, `status.allocated`: subnet -> node): read it, change
the assignments with `PodCIDRAllocator`, write it back carrying the resourceVersion that was
read. A concurrent writer makes that write fail with Conflict, and the change is computed again
on the fresh state, so a subnet is handed out once however many operators run.

The ledger is written before the node's object, so a crash in between leaves an assignment the
node gets back on the next try (allocation returns what a node already holds).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterable, Sequence
from ipaddress import IPv4Network
from typing import TypeVar

from pylium.operator.podcidr import PodCIDRAllocator
from pylium.store import AlreadyExists, Conflict, NotFound, Object, Store

log = logging.getLogger(__name__)

T = TypeVar("T")

API_VERSION = "pylium.io/v1"
KIND = "PodCIDRPool"
NAME = "cluster-pool"

MAX_ATTEMPTS = 100
"""CAS attempts before giving up (each failure means another writer made progress)."""


def allocated_of(obj: Object | None) -> dict[str, str]:
    """Subnet -> node recorded in a ledger object (empty when there is none)."""
    if obj is None:
        return {}
    allocated = (obj.get("status") or {}).get("allocated") or {}
    return {str(k): str(v) for k, v in allocated.items()}


class CIDRLedger:
    """Reads and changes the ledger with CAS retries.

    Args:
        store: the cluster store.
        pools: the cluster pool list (validated by `parse_pools`).
        mask_size: prefix length of each node's subnet.
    """

    def __init__(self, store: Store, pools: Sequence[IPv4Network], mask_size: int) -> None:
        self._store = store
        self.pools = tuple(pools)
        self.mask_size = mask_size

    async def assignments(self) -> dict[str, str]:
        """Subnet -> node as stored now."""
        return allocated_of(await self._get())

    async def assign(self, node: str) -> IPv4Network:
        """The node's subnet: the one it holds, else a newly recorded one (PoolExhausted)."""
        return await self.change(lambda alloc: alloc.allocate(node))

    async def set_node(self, node: str, cidrs: Iterable[str]) -> None:
        """Record exactly `cidrs` for `node` (CIDRTaken if another node holds one)."""
        wanted = list(cidrs)
        await self.change(lambda alloc: alloc.set_node(node, wanted))

    async def release(self, node: str) -> list[IPv4Network]:
        """Free the node's subnets; returns them."""
        return await self.change(lambda alloc: alloc.release(node))

    async def release_all_but(self, nodes: set[str]) -> dict[str, str]:
        """Free the subnets of every node not in `nodes`; returns subnet -> node freed."""

        def prune(alloc: PodCIDRAllocator) -> dict[str, str]:
            stale = {c: n for c, n in alloc.assignments().items() if n not in nodes}
            for node in set(stale.values()):
                alloc.release(node)
            return stale

        return await self.change(prune)

    async def change(self, fn: Callable[[PodCIDRAllocator], T]) -> T:
        """Apply `fn` to the current assignments and store the result by CAS, retrying on a
        concurrent write; `fn` may run several times and must only touch the allocator.
        Nothing is written when `fn` changes nothing. Exceptions of `fn` propagate."""
        for _ in range(MAX_ATTEMPTS):
            obj = await self._get()
            recorded = allocated_of(obj)
            alloc = PodCIDRAllocator.rebuild(self.pools, self.mask_size, recorded)
            result = fn(alloc)
            if alloc.assignments() == recorded:
                return result
            try:
                await self._write(obj, alloc.assignments())
            except (Conflict, AlreadyExists, NotFound):
                log.debug("pod CIDR ledger changed under us; retrying")
                continue
            return result
        raise Conflict(f"{KIND} {NAME!r} kept changing over {MAX_ATTEMPTS} attempts")

    async def _get(self) -> Object | None:
        try:
            return await self._store.get(KIND, "", NAME)
        except NotFound:
            return None

    async def _write(self, obj: Object | None, allocated: dict[str, str]) -> None:
        spec = {"ipv4": {"cidrs": [str(p) for p in self.pools], "maskSize": self.mask_size}}
        if obj is None:
            await self._store.create(
                {
                    "apiVersion": API_VERSION,
                    "kind": KIND,
                    "metadata": {"name": NAME},
                    "spec": spec,
                    "status": {"allocated": allocated},
                }
            )
            return
        new = copy.deepcopy(obj)  # carries metadata.resourceVersion: the CAS
        new["spec"] = spec
        new["status"] = {**(new.get("status") or {}), "allocated": allocated}
        await self._store.update(new)
