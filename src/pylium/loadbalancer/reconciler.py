"""`ServiceLB`: the agent component that keeps the node's LB maps equal to the cluster's
Services (eBPF mode, `kube-proxy-replacement=true`).

`ServiceWatch` (watch.py: Reflectors on Service, EndpointSlice and Node, a `ServiceTable`, one
loop) runs the passes. Each pass turns the table's changes into a `MapDelta` with
`LBMaps.sync` and hands it to the datapath (`apply`: backends before services, service
deletes before backend deletes; a missing key deletes fine). The node's own InternalIP (from
its Node object) becomes the NodePort frontend address.

The first pass, every `resync_interval` seconds and any pass after a failed write is a full
one: `prune(maps.encoded())` rewrites every entry that differs from the desired content and
deletes the rest. That is also the restart story: the ids are rebuilt from the store, not read
back from the pinned maps, and the first full pass overwrites the pinned entries that got other
ids. Socket LB translates at connect time, so established connections do not notice; a
per-packet datapath (conntrack holding backend ids) will need the ids read back first.
Maglev tables are computed from backend addresses, then mapped to this node's ids, so every
node's table names the same backends in the same slots.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from pylium.loadbalancer.lbmaps import LBMaps, LBParams, MapDelta
from pylium.loadbalancer.maglev import DEFAULT_SEED, DEFAULT_TABLE_SIZE
from pylium.loadbalancer.model import Algorithm
from pylium.loadbalancer.watch import ServiceWatch
from pylium.store import Store

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
    algorithm: Algorithm = Algorithm.RANDOM
    """Backend selection of services that name none (`bpf-lb-algorithm`)."""
    maglev_table_size: int = DEFAULT_TABLE_SIZE
    """M: must equal the datapath's (`datapath.lbconfig.LBConfig`)."""
    maglev_seed: int = DEFAULT_SEED


class ServiceLB(ServiceWatch):
    """Services -> LB maps. `start()` spawns, `stop()` joins; the maps stay filled."""

    def __init__(self, params: ServiceLBParams, store: Store, datapath: LBDatapath) -> None:
        super().__init__(params.node, store, params.resync_interval, params.retry_max)
        self.params = params
        self._datapath = datapath
        self.maps = LBMaps(
            LBParams(
                params.node,
                algorithm=params.algorithm,
                maglev_table_size=params.maglev_table_size,
                maglev_seed=params.maglev_seed,
            )
        )

    def dump(self) -> dict[str, Any]:
        """The desired maps as text (`LBMaps.dump`), entry counts of the kernel's maps and
        whether they hold exactly the desired entries (`GET /v1/lb`)."""
        kernel = self._datapath.contents()
        desired = {m: v for m, v in self.maps.encoded().items() if m in kernel}
        return {
            "maps": self.maps.dump().splitlines(),
            "kernel": {m: len(entries) for m, entries in sorted(kernel.items())},
            "inSync": kernel == desired,
        }

    def reconcile(self, full: bool) -> None:
        """One pass: the table's changes (and node address changes) into the maps."""
        for delta in (
            self.maps.set_node_addresses(self.node_addresses()),
            self.maps.sync(self.table.take_changes()),
        ):
            if not delta.empty():
                self._datapath.apply(delta)
        if full:
            pruned = self._datapath.prune(self.maps.encoded())
            if not pruned.empty():
                log.info("LB maps: repaired entries that differed from the desired content")

    async def run_pass(self, full: bool) -> float | None:
        """One pass in the event loop (map writes are syscalls of microseconds)."""
        self.reconcile(full)
        return None
