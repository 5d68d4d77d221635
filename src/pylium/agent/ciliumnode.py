"""This node's CiliumNode: where the agent reports its IPAM usage.

The object (cilium.io/v2, cluster-scoped, name = node name) is created by `pylium lab up` or the
operator; where the agent's addresses come from depends on the IPAM mode (`ipam.sources`). The
agent keeps `status.ipam` current.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from pylium.ipam import NodeAllocator
from pylium.ipam.sources import cilium_node_pod_cidrs
from pylium.store import Conflict, NotFound, Object, Store, StoreError

log = logging.getLogger(__name__)

KIND = "CiliumNode"


def pod_cidr_of(obj: Object) -> str | None:
    """The first IPv4 pod CIDR of a CiliumNode, if it has one."""
    cidrs = cilium_node_pod_cidrs(obj)
    return cidrs[0] if cidrs else None


class IpamStatusPublisher:
    """Writes IPAM usage into CiliumNode `status.ipam`, at most once per `interval` seconds.

    Polls the allocator's generation rather than taking callbacks, so allocation stays a plain
    synchronous call and a burst of ADDs costs one store write."""

    def __init__(self, store: Store, node: str, ipam: NodeAllocator, interval: float = 0.5) -> None:
        self._store = store
        self._node = node
        self._ipam = ipam
        self._interval = interval
        self._published = -1
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Publish now, then keep publishing changes in a task. A store error now (etcd
        timing out under load) is not fatal to the agent: the task retries."""
        try:
            await self._publish_if_changed()
        except StoreError as e:
            log.warning("publishing IPAM status of %s failed (retrying): %s", self._node, e)
        self._task = asyncio.create_task(self._loop(), name="ipam-status")

    async def stop(self) -> None:
        """Stop publishing; wait for the task to end."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def status(self) -> dict[str, Any]:
        """The `status.ipam` the allocator's state calls for."""
        return {
            "podCIDR": None if self._ipam.cidr is None else str(self._ipam.cidr),
            "used": {ip: {"owner": owner} for ip, owner in self._ipam.used().items()},
            "usedCount": self._ipam.used_count,
            "available": self._ipam.available,
        }

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self._publish_if_changed()
            except Exception:
                # the store may be briefly locked or the object recreated; retry next tick
                log.exception("publishing IPAM status of %s failed", self._node)

    async def _publish_if_changed(self) -> None:
        generation = self._ipam.generation
        if generation == self._published:
            return
        status = self.status()
        for _ in range(5):
            try:
                obj = await self._store.get(KIND, "", self._node)
            except NotFound:
                log.warning("CiliumNode %s is gone; IPAM status not published", self._node)
                return
            obj.setdefault("status", {})
            obj["status"] = {**(obj["status"] or {}), "ipam": status}
            try:
                await self._store.update(obj)
            except Conflict:
                continue  # someone else wrote the node meanwhile: read again
            self._published = generation
            return
        log.warning("CiliumNode %s kept changing; IPAM status retried next tick", self._node)
