"""`NodeRoutes`: keeps the node's routes to other nodes' pod CIDRs equal to what the store
says (native routing).

Two reflectors (CiliumNode, Node) record changes and wake one reconcile loop; the loop computes
the desired set and diffs it against the kernel's (our routes only): missing or changed routes
are replaced, stale ones deleted. A failed pass is retried with backoff, and a periodic pass
repairs routes someone removed by hand.

The agent runs it in native routing (`agent/cells.py`, Datapath group), over a
`PyrouteRouteKernel` of the node's uplink, from after the node set-up until before netlink stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from pylium.routing.desired import NodeRoute, desired_routes
from pylium.routing.kernel import RouteKernel
from pylium.store import Store
from pylium.store.reflector import Reflector

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RoutesParams:
    """Settings of the node-routes component."""

    node: str
    """This node's name (its own CIDR gets no route)."""
    device: str = "eth0"
    """The uplink the routes leave through."""
    resync_interval: float = 30.0
    """Seconds between full passes that repair routes changed behind our back."""
    retry_max: float = 5.0
    """Longest wait, in seconds, before retrying a failed pass."""


class NodeRoutes:
    """Reconciles the node's routes to other nodes. `start()` spawns, `stop()` joins."""

    def __init__(self, params: RoutesParams, store: Store, kernel: RouteKernel) -> None:
        self.params = params
        self._store = store
        self._kernel = kernel
        self._cilium_nodes = Reflector(store, "CiliumNode")
        self._nodes = Reflector(store, "Node")
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.installed: set[NodeRoute] = set()
        """The routes as of the last successful pass."""
        self.passes = 0
        """Successful reconcile passes (tests wait on it)."""

    async def start(self) -> None:
        """Start watching and reconciling."""
        for reflector in (self._cilium_nodes, self._nodes):
            self._tasks.append(asyncio.create_task(reflector.run(self._changed)))
        self._tasks.append(asyncio.create_task(self._loop(), name="node-routes"))

    async def stop(self) -> None:
        """Stop; returns once every task has ended. Routes stay (traffic keeps flowing while
        the agent restarts)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    def _changed(self, _event: object) -> None:
        self._wake.set()

    def desired(self) -> set[NodeRoute]:
        """The routes the cached objects call for."""
        return desired_routes(self.params.node, self._cilium_nodes.items(), self._nodes.items())

    async def reconcile(self) -> None:
        """One pass: replace missing or changed routes, then delete stale ones."""
        want = self.desired()
        have = await self._kernel.routes()
        for route in sorted(want - have):
            log.info("route %s via %s", route.dst, route.gateway)
            await self._kernel.replace(route)
        wanted_dsts = {r.dst for r in want}
        for route in sorted(have - want):
            if route.dst not in wanted_dsts:  # a changed gateway was replaced above
                log.info("removing route %s via %s", route.dst, route.gateway)
                await self._kernel.delete(route)
        self.installed = want
        self.passes += 1

    async def _loop(self) -> None:
        await self._cilium_nodes.wait_synced()
        await self._nodes.wait_synced()
        delay = 0.1
        while True:
            self._wake.clear()
            try:
                await self.reconcile()
                delay = 0.1
                timeout = self.params.resync_interval
            except Exception:
                log.exception("reconciling node routes failed; retry in %.1fs", delay)
                timeout, delay = delay, min(self.params.retry_max, delay * 2)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
