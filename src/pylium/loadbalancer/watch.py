"""`ServiceWatch`: what both service components of the agent share (socket LB's `ServiceLB`
and kube-proxy mode's `KubeProxy`): Reflectors on Service, EndpointSlice and Node feeding one
`ServiceTable`, and one loop that runs a pass on every change.

The first pass, one every `resync_interval` seconds and any pass after a failed one are full:
a failed write leaves the kernel in an unknown state, and only a full pass puts it back in
line with the table (kube-proxy's "we've lost the state needed" rule).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from ipaddress import IPv4Address

from pylium.loadbalancer.servicetable import ServiceTable
from pylium.routing.desired import internal_ip
from pylium.store import Event, Store
from pylium.store.reflector import Reflector

log = logging.getLogger(__name__)


class ServiceWatch(ABC):
    """Services -> one node's service datapath. `start()` spawns, `stop()` joins.

    Args:
        node: this node's name (its Node object gives the NodePort address).
        store: the cluster store.
        resync_interval: seconds between full passes.
        retry_max: longest wait, in seconds, before retrying a failed pass.
    """

    def __init__(self, node: str, store: Store, resync_interval: float, retry_max: float) -> None:
        self.node = node
        self.table = ServiceTable()
        self._resync_interval = resync_interval
        self._retry_max = retry_max
        self._services = Reflector(store, "Service")
        self._slices = Reflector(store, "EndpointSlice")
        self._nodes = Reflector(store, "Node")
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.passes = 0
        """Successful passes (tests wait on it)."""

    @abstractmethod
    async def run_pass(self, full: bool) -> float | None:
        """Bring the datapath in line with the table; raise on failure. Returns the seconds
        after which another pass is due even without a change (None: at the next resync)."""

    async def start(self) -> None:
        """Start watching and reconciling."""
        self._tasks = [
            asyncio.create_task(self._services.run(self._on_service)),
            asyncio.create_task(self._slices.run(self._on_slice)),
            asyncio.create_task(self._nodes.run(self._on_node)),
            asyncio.create_task(self._loop(), name=type(self).__name__),
        ]

    async def stop(self) -> None:
        """Stop; returns once every task has ended (the datapath keeps its state)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    def node_addresses(self) -> list[IPv4Address]:
        """The node's InternalIP from its Node object (the NodePort address), if known."""
        ip = internal_ip(None, self._nodes.get("", self.node))
        return [IPv4Address(ip)] if ip else []

    def _on_service(self, event: Event) -> None:
        if event.type == "DELETED":
            self.table.delete_service(event.object)
        else:
            self.table.upsert_service(event.object)
        self._wake.set()

    def _on_slice(self, event: Event) -> None:
        if event.type == "DELETED":
            self.table.delete_slice(event.object)
        else:
            self.table.upsert_slice(event.object)
        self._wake.set()

    def _on_node(self, event: Event) -> None:
        if event.object["metadata"]["name"] == self.node:
            self._wake.set()

    async def _loop(self) -> None:
        for reflector in (self._services, self._slices, self._nodes):
            await reflector.wait_synced()
        delay, full = 0.1, True
        loop = asyncio.get_running_loop()
        next_full = loop.time()
        while True:
            self._wake.clear()
            try:
                full = full or loop.time() >= next_full
                again = await self.run_pass(full)
                self.passes += 1
                if full:
                    next_full = loop.time() + self._resync_interval
                delay, full = 0.1, False
                timeout = max(0.0, next_full - loop.time())
                if again is not None:
                    timeout = min(timeout, again)
            except Exception:
                # The table's changes are taken already: only a full pass puts the kernel
                # back in line with it.
                log.exception("%s: pass failed; full pass in %.1fs", type(self).__name__, delay)
                timeout, delay, full = delay, min(self._retry_max, delay * 2), True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
