"""Node reconciler: every Node gets a CiliumNode and, by IPAM mode, a pod CIDR.

Watches Node objects (a Reflector) and keeps, for each:

- a CiliumNode of the same name (created if absent, deleted when the Node goes), in every mode:
  the agent reports its IPAM usage there;
- `cluster-pool`: `CiliumNode.spec.ipam.podCIDRs` from the ledger; a subnet a CiliumNode already
  carries is kept (adopted into the ledger), so a restart or `pylium lab up`'s own writes never
  renumber a node;
- `kubernetes`: `Node.spec.podCIDR`/`podCIDRs` from the ledger, as kube-controller-manager's
  node-ipam controller does;
- `crd`: nothing more (an outside controller fills `CiliumNode.spec.ipam.pool`).

An allocation failure (pool exhausted, a subnet another node holds) goes into
`CiliumNode.status.ipam.operator-status.error`, as Cilium's operator reports it, and is cleared
once the node has its subnet. Failed nodes are retried when a subnet is freed and at every
resync, which also frees what Nodes deleted while no operator ran held (after a second look).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
from collections.abc import Callable

from pylium.ipam.sources import IpamMode, cilium_node_pod_cidrs, ipv4_cidrs, node_pod_cidrs
from pylium.operator.ledger import CIDRLedger
from pylium.operator.podcidr import PodCIDRError
from pylium.store import AlreadyExists, Conflict, Event, NotFound, Object, Store
from pylium.store.reflector import Reflector

log = logging.getLogger(__name__)

CILIUM_NODE = "CiliumNode"
NODE = "Node"
MAX_ATTEMPTS = 20
"""Read-modify-write attempts on one object before the next resync takes over."""


def operator_error(obj: Object) -> str | None:
    """`status.ipam.operator-status.error` of a CiliumNode, if set."""
    ipam = (obj.get("status") or {}).get("ipam") or {}
    error = (ipam.get("operator-status") or {}).get("error")
    return str(error) if error else None


class NodeIpamReconciler:
    """Keeps CiliumNodes (and pod CIDRs) in line with Nodes.

    Args:
        store: the cluster store.
        mode: the cluster's IPAM mode.
        ledger: the pod CIDR ledger (cluster-pool and kubernetes modes).
        resync_interval: seconds between full passes over every node.
    """

    def __init__(
        self,
        store: Store,
        mode: IpamMode,
        ledger: CIDRLedger | None,
        resync_interval: float = 30.0,
    ) -> None:
        if mode != IpamMode.CRD and ledger is None:
            raise ValueError(f"IPAM mode {mode} needs a pod CIDR ledger")
        self._store = store
        self.mode = mode
        self._ledger = ledger
        self._resync_interval = resync_interval
        self._nodes = Reflector(store, NODE)
        self._pending: set[str] = set()
        """Nodes whose allocation failed; retried when a subnet is freed."""
        self._orphans: set[str] = set()
        """Names holding a CiliumNode or subnet without a Node at the last resync."""
        self._lock = asyncio.Lock()

    async def run(self) -> None:
        """Reconcile until cancelled: every Node event, then a resync every interval."""
        resync = asyncio.create_task(self._resync_loop(), name="node-ipam-resync")
        try:
            await self._nodes.run(self._on_event)
        finally:
            resync.cancel()
            await asyncio.gather(resync, return_exceptions=True)

    async def wait_synced(self) -> None:
        """Return once the Node list has been read."""
        await self._nodes.wait_synced()

    async def _resync_loop(self) -> None:
        await self._nodes.wait_synced()
        while True:
            try:
                await self.resync()
            except Exception:
                log.exception("node IPAM resync failed; next try in %.0fs", self._resync_interval)
            await asyncio.sleep(self._resync_interval)

    async def resync(self) -> None:
        """One full pass: clean up after Nodes that are gone, then ensure every Node.

        A CiliumNode or ledger entry without a Node is removed only when the previous pass
        found it orphaned too: the Node list is read after the others, but a Node created just
        now (by a writer that makes the CiliumNode first, or one another operator already gave
        a subnet) must not lose what it holds to a single glance.
        """
        async with self._lock:
            cilium_nodes, _ = await self._store.list(CILIUM_NODE)
            holders = {cn["metadata"]["name"] for cn in cilium_nodes}
            if self._ledger is not None:
                holders |= set((await self._ledger.assignments()).values())
            nodes, _ = await self._store.list(NODE)
            orphans = holders - {n["metadata"]["name"] for n in nodes}
            confirmed, self._orphans = orphans & self._orphans, orphans - self._orphans
            for name in sorted(confirmed):
                log.info("node %s is gone: removing its CiliumNode and pod CIDR", name)
                await self._node_deleted(name)
            for name in sorted(n["metadata"]["name"] for n in self._nodes.items()):
                await self._ensure_logged(name)

    async def _on_event(self, event: Event) -> None:
        name = event.object["metadata"]["name"]
        async with self._lock:
            if event.type == "DELETED":
                try:
                    await self._node_deleted(name)
                except Exception:
                    log.exception("cleaning up after node %s failed; the resync retries", name)
            elif event.type == "ADDED" or self.mode == IpamMode.KUBERNETES:
                # Node.spec holds the CIDR only in kubernetes mode; elsewhere a change to a
                # Node changes nothing here (the resync repairs a CiliumNode lost meanwhile).
                await self._ensure_logged(name)

    async def _node_deleted(self, name: str) -> None:
        self._pending.discard(name)
        await _delete_missing_ok(self._store, CILIUM_NODE, name)
        if self._ledger is None:
            return
        freed = await self._ledger.release(name)
        if freed:
            log.info("node %s deleted: released %s", name, ", ".join(map(str, freed)))
            for waiting in sorted(self._pending):
                await self._ensure_logged(waiting)

    async def _ensure_logged(self, name: str) -> None:
        try:
            await self._ensure(name)
        except Exception:
            # one bad node must not stop the others; the resync retries it
            log.exception("reconciling node %s failed", name)

    async def _ensure(self, name: str) -> None:
        node = self._nodes.get("", name)
        if node is None:
            return  # deleted meanwhile; its DELETED event follows
        if self.mode == IpamMode.CRD:
            await self._write_cilium_node(name, lambda cn: None)
            return
        assert self._ledger is not None
        if self.mode == IpamMode.CLUSTER_POOL:
            current = await self._get(CILIUM_NODE, name)
            have = cilium_node_pod_cidrs(current) if current else []
        else:
            have = node_pod_cidrs(node)
        try:
            if have:
                await self._ledger.set_node(name, have)
                cidrs = have
            else:
                cidrs = [str(await self._ledger.assign(name))]
        except PodCIDRError as exc:
            error = str(exc)
            log.warning("node %s: no pod CIDR: %s", name, error)
            self._pending.add(name)
            await self._write_cilium_node(name, lambda cn: _set_error(cn, error))
            return
        self._pending.discard(name)
        if self.mode == IpamMode.KUBERNETES:
            await self._write_node(name, cidrs)
            await self._write_cilium_node(name, lambda cn: _set_error(cn, None))
        else:
            await self._write_cilium_node(name, lambda cn: _set_pod_cidrs(cn, cidrs))
        if not have:
            log.info("node %s: pod CIDR %s", name, cidrs[0])

    async def _get(self, kind: str, name: str) -> Object | None:
        try:
            return await self._store.get(kind, "", name)
        except NotFound:
            return None

    async def _write_cilium_node(self, name: str, edit: Callable[[Object], None]) -> None:
        """Create the CiliumNode if absent, apply `edit`, write if it changed (CAS, retried)."""
        for _ in range(MAX_ATTEMPTS):
            current = await self._get(CILIUM_NODE, name)
            if current is None:
                new: Object = {
                    "apiVersion": "cilium.io/v2",
                    "kind": CILIUM_NODE,
                    "metadata": {"name": name},
                    "spec": {},
                }
                edit(new)
                try:
                    await self._store.create(new)
                except AlreadyExists:
                    continue
                return
            new = copy.deepcopy(current)
            edit(new)
            if new == current:
                return
            try:
                await self._store.update(new)  # carries the resourceVersion read: a CAS
            except (Conflict, NotFound):
                continue  # the agent wrote its status meanwhile, or the object went: again
            return
        raise Conflict(f"CiliumNode {name!r} kept changing")

    async def _write_node(self, name: str, cidrs: list[str]) -> None:
        """Set Node.spec.podCIDR/podCIDRs (CAS, retried); a vanished Node is left alone."""
        for _ in range(MAX_ATTEMPTS):
            current = await self._get(NODE, name)
            if current is None:
                return
            new = copy.deepcopy(current)
            spec = new["spec"] = new.get("spec") or {}
            spec["podCIDR"] = cidrs[0]
            spec["podCIDRs"] = list(cidrs)
            if new == current:
                return
            try:
                await self._store.update(new)
            except Conflict:
                continue
            except NotFound:
                return
            return
        raise Conflict(f"Node {name!r} kept changing")


def _set_pod_cidrs(cn: Object, cidrs: list[str]) -> None:
    spec = cn.get("spec") or {}
    cn["spec"] = spec
    ipam = spec.get("ipam") or {}
    spec["ipam"] = ipam
    # keep IPv6 entries someone else wrote; ours are the IPv4 ones
    others = [c for c in ipam.get("podCIDRs") or [] if c not in ipv4_cidrs(ipam.get("podCIDRs"))]
    ipam["podCIDRs"] = [*cidrs, *others]
    _set_error(cn, None)


def _set_error(cn: Object, error: str | None) -> None:
    """Set or clear status.ipam.operator-status.error, leaving the agent's fields alone."""
    status = cn.get("status") or {}
    ipam = status.get("ipam") or {}
    if error is None:
        if "operator-status" not in ipam:
            return
        ipam.pop("operator-status")
    else:
        ipam["operator-status"] = {"error": error}
    status["ipam"] = ipam
    cn["status"] = status


async def _delete_missing_ok(store: Store, kind: str, name: str) -> None:
    with contextlib.suppress(NotFound):
        await store.delete(kind, "", name)
