"""The agent's IPAM component: wait for this node's addresses, build its allocator, keep it
current.

`start()` blocks until the node's object carries addresses for the cluster's IPAM mode (see
`sources`), then returns the loaded allocator. In crd mode a task keeps following the pool and
hands each new list to the allocator (the outside controller grows it as pods come). A pod CIDR
that changes under a running agent is only logged: live pods hold addresses of the old one, so
the new CIDR takes effect at the next agent start (which drops what lies outside it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator
from pathlib import Path

from pylium.ipam.allocator import NodeAllocator
from pylium.ipam.pool import PoolListAllocator
from pylium.ipam.sources import IpamMode, PodAddresses, node_addresses, source_for
from pylium.store import Store

log = logging.getLogger(__name__)


class AddressWatcher:
    """This node's pod addresses from the store, as an allocator.

    Args:
        store: the cluster store.
        node: this node's name.
        mode: the cluster's IPAM mode.
        state_file: the allocator's state file.
    """

    def __init__(self, store: Store, node: str, mode: IpamMode, state_file: Path) -> None:
        self._store = store
        self._node = node
        self.mode = IpamMode(mode)
        self._state_file = state_file
        self._stream: AsyncGenerator[PodAddresses, None] | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> NodeAllocator:
        """Wait for the node's addresses; return their allocator, loaded from its state."""
        self._stream = node_addresses(self._store, self._node, source_for(self.mode))
        addresses = await anext(self._stream)
        allocator = addresses.allocator(self._state_file)
        allocator.load()
        self._task = asyncio.create_task(self._follow(addresses, allocator), name="ipam-source")
        return allocator

    async def stop(self) -> None:
        """Stop following; wait for the task to end."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._stream is not None:
            await self._stream.aclose()
            self._stream = None

    async def _follow(self, first: PodAddresses, allocator: NodeAllocator) -> None:
        assert self._stream is not None
        async for addresses in self._stream:
            if isinstance(allocator, PoolListAllocator) and addresses.pool:
                allocator.set_pool(addresses.pool)
                log.info("node %s: address pool now %s", self._node, allocator.describe())
            else:
                log.warning(
                    "node %s: addresses changed from %s to %s; they apply at the next agent start",
                    self._node,
                    first,
                    addresses,
                )
