"""Service address allocation against the cluster store: one ledger object changed by
compare-and-swap, so two writers (the CLI apply path, the operator) never hand out a value twice
(as `operator/ledger.py` does for pod CIDRs, and as the API server keeps its `RangeAllocation`
bitmaps in etcd).

- `ServiceLedger.allocate(obj)`: what the API server does at create/update: fill ClusterIP and
  NodePorts (or reject a taken one, naming the field). The CLI calls it before `store.apply`;
  `ServiceLedger.release(ns, name)` after a delete.
- `ServiceIPAM`: the operator component. For every Service it fills what is missing (objects
  written by other clients), assigns LoadBalancer IPs from the pools (`--lb-pool` CIDRs and
  `CiliumLoadBalancerIPPool` objects, Cilium's LB-IPAM) into `status.loadBalancer.ingress`,
  frees what deleted services held, and on every resync drops ledger entries whose service has
  been gone for two passes (the API server's repair loop).
- `admit(store, obj)` / `forget(store, kind, ns, name)`: the two calls the CLI's apply and
  delete paths make (any kind; only Services are touched).
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Callable, Sequence
from ipaddress import IPv4Network
from typing import TypeVar

from pylium.api.errors import InvalidObject
from pylium.loadbalancer.allocation import (
    Allocations,
    Ranges,
    assign_load_balancer,
    assign_service,
    owner_of,
)
from pylium.store import AlreadyExists, Conflict, Event, NotFound, Object, Store
from pylium.store.reflector import Reflector

log = logging.getLogger(__name__)

T = TypeVar("T")

API_VERSION = "pylium.io/v1"
KIND = "ServiceAllocations"
NAME = "services"
POOL_KIND = "CiliumLoadBalancerIPPool"
MAX_ATTEMPTS = 100


def _allocations(obj: Object | None) -> Allocations:
    status = (obj or {}).get("status") or {}
    return Allocations(
        cluster_ips=dict(status.get("clusterIPs") or {}),
        node_ports=dict(status.get("nodePorts") or {}),
        lb_ips=dict(status.get("loadBalancerIPs") or {}),
    )


class ServiceLedger:
    """The ledger object (`pylium.io/v1 ServiceAllocations "services"`) with CAS retries.

    Args:
        store: the cluster store.
        ranges: the service CIDR and NodePort range.
    """

    def __init__(self, store: Store, ranges: Ranges | None = None) -> None:
        self._store = store
        self.ranges = ranges or Ranges()

    async def allocations(self) -> Allocations:
        """What is recorded now."""
        return _allocations(await self._get())

    async def allocate(self, obj: Object) -> Object:
        """The Service as it must be stored, its ClusterIP and NodePorts recorded
        (InvalidObject if it asks for a value another service holds)."""
        return await self.change(lambda alloc: assign_service(alloc, self.ranges, obj))

    async def assign_load_balancer(self, obj: Object, pools: Sequence[IPv4Network]) -> Object:
        """The Service with its LB IP status (see `allocation.assign_load_balancer`)."""
        return await self.change(lambda alloc: assign_load_balancer(alloc, pools, obj))

    async def release(self, namespace: str, name: str) -> None:
        """Free everything the service holds."""
        await self.change(lambda alloc: alloc.release(f"{namespace}/{name}"))

    async def release_owners(self, owners: set[str]) -> None:
        """Free what each of `owners` (`ns/name`) holds."""

        def prune(alloc: Allocations) -> None:
            for owner in owners:
                alloc.release(owner)

        await self.change(prune)

    async def change(self, fn: Callable[[Allocations], T]) -> T:
        """Run `fn` on the recorded allocations and store them by CAS, retrying on a concurrent
        write (`fn` may run several times). Nothing is written when nothing changed."""
        for _ in range(MAX_ATTEMPTS):
            obj = await self._get()
            alloc = _allocations(obj)
            recorded = copy.deepcopy(alloc)
            result = fn(alloc)
            if alloc == recorded:
                return result
            try:
                await self._write(obj, alloc)
            except (Conflict, AlreadyExists, NotFound):
                continue
            return result
        raise Conflict(f"{KIND} {NAME!r} kept changing over {MAX_ATTEMPTS} attempts")

    async def _get(self) -> Object | None:
        try:
            return await self._store.get(KIND, "", NAME)
        except NotFound:
            return None

    async def _write(self, obj: Object | None, alloc: Allocations) -> None:
        spec = {
            "serviceCIDR": str(self.ranges.service_cidr),
            "nodePortRange": "-".join(map(str, self.ranges.node_ports)),
        }
        status = {
            "clusterIPs": alloc.cluster_ips,
            "nodePorts": alloc.node_ports,
            "loadBalancerIPs": alloc.lb_ips,
        }
        if obj is None:
            await self._store.create(
                {
                    "apiVersion": API_VERSION,
                    "kind": KIND,
                    "metadata": {"name": NAME},
                    "spec": spec,
                    "status": status,
                }
            )
            return
        new = copy.deepcopy(obj)  # carries metadata.resourceVersion: the CAS
        new["spec"], new["status"] = spec, status
        await self._store.update(new)


def pool_blocks(pools: Sequence[Object]) -> list[IPv4Network]:
    """CIDRs of enabled CiliumLoadBalancerIPPools (`spec.blocks[].cidr`, or the older
    `spec.cidrs[].cidr`), in name order."""
    out: list[IPv4Network] = []
    for pool in sorted(pools, key=lambda p: str(p["metadata"]["name"])):
        spec = pool.get("spec") or {}
        if spec.get("disabled"):
            continue
        for block in spec.get("blocks") or spec.get("cidrs") or []:
            if block.get("cidr"):
                out.append(IPv4Network(block["cidr"], strict=False))
    return out


class ServiceIPAM:
    """The operator's service allocation component (see the module docstring).

    Args:
        store: the cluster store.
        ranges: service CIDR and NodePort range.
        static_pools: LB pools given on the command line (the lab's).
        resync_interval: seconds between repair passes.
    """

    def __init__(
        self,
        store: Store,
        ranges: Ranges | None = None,
        static_pools: Sequence[IPv4Network] = (),
        resync_interval: float = 30.0,
    ) -> None:
        self._store = store
        self.ledger = ServiceLedger(store, ranges)
        self._static_pools = list(static_pools)
        self._resync_interval = resync_interval
        self._services = Reflector(store, "Service")
        self._lock = asyncio.Lock()
        self._suspects: set[str] = set()
        """Owners without a Service at the last resync."""

    async def run(self) -> None:
        """Reconcile until cancelled."""
        resync = asyncio.create_task(self._resync_loop(), name="service-ipam-resync")
        try:
            await self._services.run(self._on_event)
        finally:
            resync.cancel()
            await asyncio.gather(resync, return_exceptions=True)

    async def wait_synced(self) -> None:
        """Return once the Service list has been read."""
        await self._services.wait_synced()

    async def _resync_loop(self) -> None:
        await self._services.wait_synced()
        while True:
            try:
                await self.resync()
            except Exception:
                log.exception("service IPAM resync failed")
            await asyncio.sleep(self._resync_interval)

    async def resync(self) -> None:
        """Free what services deleted while nobody watched held, then retry every service.

        An owner is freed only when it had no Service at two resyncs in a row: the CLI records
        an allocation just *before* it creates the Service (the API server's repair loop waits
        the same way before calling an allocation leaked)."""
        async with self._lock:
            owners = {owner_of(s) for s in self._services.items()}
            missing = (await self.ledger.allocations()).owners() - owners
            leaked = missing & self._suspects
            self._suspects = missing - leaked
            if leaked:
                await self.ledger.release_owners(leaked)
                log.info("released the addresses of deleted services %s", sorted(leaked))
        for svc in self._services.items():
            await self._reconcile(svc)

    async def _on_event(self, event: Event) -> None:
        if event.type == "DELETED":
            meta = event.object["metadata"]
            async with self._lock:
                await self.ledger.release(str(meta.get("namespace") or "default"), meta["name"])
            return
        await self._reconcile(event.object)

    async def _pools(self) -> list[IPv4Network]:
        objects, _ = await self._store.list(POOL_KIND)
        return [*self._static_pools, *pool_blocks(objects)]

    async def _reconcile(self, svc: Object) -> None:
        meta = svc["metadata"]
        ns, name = str(meta.get("namespace") or "default"), str(meta["name"])
        async with self._lock:
            for _ in range(MAX_ATTEMPTS):
                try:
                    current = await self._store.get("Service", ns, name)
                except NotFound:
                    return
                try:
                    wanted = await self.ledger.allocate(current)
                except InvalidObject as exc:
                    log.warning("service %s/%s: %s", ns, name, exc)
                    return
                wanted = await self.ledger.assign_load_balancer(wanted, await self._pools())
                if wanted == current:
                    return
                try:
                    await self._store.update(wanted)
                    return
                except Conflict:
                    continue
                except NotFound:
                    return


async def admit(store: Store, obj: Object, ranges: Ranges | None = None) -> Object:
    """What the API server does to an object at create/update, for the CLI apply path: a
    Service gets its ClusterIP and NodePorts (InvalidObject when a requested one is taken);
    any other kind passes unchanged."""
    if obj.get("kind") != "Service" or obj.get("apiVersion") != "v1":
        return obj
    return await ServiceLedger(store, ranges).allocate(obj)


async def forget(store: Store, kind: str, namespace: str, name: str) -> None:
    """What the API server frees after a delete, for the CLI delete path."""
    if kind == "Service":
        await ServiceLedger(store).release(namespace, name)
