"""`ServiceLB`: the agent component that keeps the node's LB maps equal to the cluster's
Services (eBPF mode, `kube-proxy-replacement=true`).

Reflectors on Service, EndpointSlice and Node feed a `ServiceTable` and wake one loop. Each
pass turns the table's changes into a `MapDelta` with `LBMaps.sync` and hands it to the
datapath (`apply`: backends before services, service deletes before backend deletes; a missing
key deletes fine). The node's own InternalIP (from its Node object) becomes the NodePort
frontend address.

The first pass, every `resync_interval` seconds and any pass after a failed write is a full
one: `prune(maps.encoded())` rewrites every entry that differs from the desired content and
deletes the rest. That is also the restart story: the ids are rebuilt from the store, not read
back from the pinned maps, and the first full pass overwrites the pinned entries that got other
ids. Socket LB translates at connect time, so established connections do not notice; a
per-packet datapath (conntrack holding backend ids) will need the ids read back first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Any, Protocol

from pylium.loadbalancer.lbmaps import MAGLEV, LBMaps, LBParams, MapDelta
from pylium.loadbalancer.servicetable import ServiceTable
from pylium.routing.desired import internal_ip
from pylium.store import Event, Store
from pylium.store.reflector import Reflector

log = logging.getLogger(__name__)


class LBDatapath(Protocol):
    """What the component needs of the LB maps in the kernel (`datapath.socklb.SockLB`)."""

    def apply(self, delta: MapDelta) -> None: ...

    def prune(self, desired: Mapping[str, Mapping[bytes, bytes]]) -> MapDelta: ...

    def contents(self) -> dict[str, dict[bytes, bytes]]: ...


@dataclass(frozen=True)
class ServiceLBParams:
    """Settings of the service load-balancer component."""

    node: str
    resync_interval: float = 30.0
    """Seconds between full passes (repairs entries changed behind our back)."""
    retry_max: float = 5.0
    """Longest wait, in seconds, before retrying a failed pass."""


class ServiceLB:
    """Services -> LB maps. `start()` spawns, `stop()` joins; the maps stay filled."""

    def __init__(self, params: ServiceLBParams, store: Store, datapath: LBDatapath) -> None:
        self.params = params
        self._datapath = datapath
        self.table = ServiceTable()
        self.maps = LBMaps(LBParams(params.node))
        self._services = Reflector(store, "Service")
        self._slices = Reflector(store, "EndpointSlice")
        self._nodes = Reflector(store, "Node")
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.passes = 0
        """Successful passes (tests wait on it)."""

    async def start(self) -> None:
        """Start watching and reconciling."""
        self._tasks = [
            asyncio.create_task(self._services.run(self._on_service)),
            asyncio.create_task(self._slices.run(self._on_slice)),
            asyncio.create_task(self._nodes.run(self._on_node)),
            asyncio.create_task(self._loop(), name="service-lb"),
        ]

    async def stop(self) -> None:
        """Stop; returns once every task has ended."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

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
        if event.object["metadata"]["name"] == self.params.node:
            self._wake.set()

    def _node_addresses(self) -> list[IPv4Address]:
        ip = internal_ip(None, self._nodes.get("", self.params.node))
        return [IPv4Address(ip)] if ip else []

    def dump(self) -> dict[str, Any]:
        """The desired maps as text (`LBMaps.dump`), entry counts of the kernel's maps and
        whether they hold exactly the desired entries (`GET /v1/lb`)."""
        kernel = self._datapath.contents()
        desired = {m: v for m, v in self.maps.encoded().items() if m in kernel}
        return {
            "maps": self.maps.dump().splitlines(),
            "kernel": {m: len(entries) for m, entries in sorted(kernel.items())},
            "inSync": kernel == desired,
            "maglevSkipped": bool(self.maps.contents[MAGLEV]),
        }

    def reconcile(self, full: bool) -> None:
        """One pass: the table's changes (and node address changes) into the maps."""
        for delta in (
            self.maps.set_node_addresses(self._node_addresses()),
            self.maps.sync(self.table.take_changes()),
        ):
            if not delta.empty():
                self._datapath.apply(delta)
        if full:
            pruned = self._datapath.prune(self.maps.encoded())
            if not pruned.empty():
                log.info("LB maps: repaired entries that differed from the desired content")
        self.passes += 1

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
                self.reconcile(full)
                if full:
                    next_full = loop.time() + self.params.resync_interval
                delay, full = 0.1, False
                timeout = max(0.0, next_full - loop.time())
            except Exception:
                # The table's changes are taken and LBMaps already counts them: only a full
                # pass puts the kernel back in line with it.
                log.exception("writing the LB maps failed; full pass in %.1fs", delay)
                timeout, delay, full = delay, min(self.params.retry_max, delay * 2), True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
