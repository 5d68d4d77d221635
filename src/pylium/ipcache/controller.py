"""The ipcache component: keeps the IPCacheTable in step with the store, on every node.

Reflectors on Pods, Namespaces, Nodes and CiliumNodes only record which keys need a look (a
pod, a node); one worker re-derives each key's entries from the reflector caches, so events
never race each other and a burst of changes to one pod costs one sync. A Namespace change
re-syncs its pods (namespace labels are part of a pod's identity); a node change re-syncs the
node's own entries and its pods (their tunnel endpoint is the node's IP).

Entries:
- every pod IP -> the pod's identity (labels + namespace labels, allocated cluster-wide),
  tunnelled to its node's InternalIP unless the pod is local;
- every node InternalIP and router IP -> host (1) for this node, remote-node (6) for others;
  a remote router IP is tunnelled to its node;
- every remote node's pod CIDR -> world (2), tunnelled to the node, so a pod the store has
  not told this node about yet is still reached (its /32 entry, once known, is more specific);
- 0.0.0.0/0 -> world (2).

The local agent registers its endpoints (`endpoint_identity`) so an endpoint is in the table,
with its identity, before the kubelet has written the pod's IP into the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from pylium.identity import (
    IDENTITY_HOST,
    IDENTITY_INIT,
    IDENTITY_REMOTE_NODE,
    IDENTITY_WORLD,
    Identity,
    IdentityAllocator,
    IdentityExhausted,
    LabelFilter,
    pod_labels,
    reserved_labels,
)
from pylium.identity.labels import DEFAULT_CLUSTER
from pylium.ipcache.addresses import node_internal_ips, pod_cidrs, pod_ips, router_ips
from pylium.ipcache.table import Entry, IPCacheTable, Source
from pylium.store import Event, Store, StoreError
from pylium.store.reflector import Reflector

log = logging.getLogger(__name__)

WORLD_PREFIX = IPv4Network("0.0.0.0/0")
_INIT = Identity(IDENTITY_INIT, reserved_labels(IDENTITY_INIT))

PodKey = tuple[str, str]
"""(namespace, name)"""
WorkKey = tuple[str, ...]
"""("pod", namespace, name), ("node", name) or ("world",)."""


@dataclass(frozen=True)
class IPCacheParams:
    """Settings of the ipcache component."""

    node: str
    """This node's name: its addresses map to host, other nodes' to remote-node."""
    cluster: str = DEFAULT_CLUSTER
    label_rules: tuple[str, ...] = ()
    """Identity-relevant label rules added to Cilium's defaults (`[source:][!]regex`)."""
    retry_interval: float = 1.0
    """Seconds before a sync that failed (store error) is tried again."""


class IPCache:
    """Build and maintain the ipcache table from the store.

    Args:
        store: the cluster store.
        allocator: the started identity allocator of this process.
        params: settings.
    """

    def __init__(self, store: Store, allocator: IdentityAllocator, params: IPCacheParams) -> None:
        if not params.node:
            raise ValueError("node name must not be empty")
        self.params = params
        self.table = IPCacheTable()
        """The desired state; reconcilers read `entries()` and wait on `wait_changed`."""
        self.allocator = allocator
        """The identity allocator pod identities come from (shared with the agent)."""
        self._filter = LabelFilter(params.label_rules)
        self._pods = Reflector(store, "Pod")
        self._namespaces = Reflector(store, "Namespace")
        self._nodes = Reflector(store, "Node")
        self._cilium_nodes = Reflector(store, "CiliumNode")
        self._queue: asyncio.Queue[WorkKey] = asyncio.Queue()
        self._queued: set[WorkKey] = set()
        self._held: dict[PodKey, Identity] = {}
        self._endpoints: dict[PodKey, set[IPv4Address]] = {}
        self._retries: set[asyncio.TimerHandle] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._synced = asyncio.Event()

    async def start(self) -> None:
        """Start the reflectors and the worker (returns at once; see `wait_synced`)."""
        handlers = (
            (self._pods, self._on_pod),
            (self._namespaces, self._on_namespace),
            (self._nodes, self._on_node),
            (self._cilium_nodes, self._on_node),
        )
        self._add(("world",))
        self._tasks = [asyncio.create_task(r.run(h)) for r, h in handlers]
        self._tasks.append(asyncio.create_task(self._work()))
        self._tasks.append(asyncio.create_task(self._mark_synced()))

    async def stop(self) -> None:
        """Stop every task; returns once they have ended. Identities held stay allocated in
        the store (they are cluster-wide)."""
        for handle in self._retries:
            handle.cancel()
        self._retries.clear()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def wait_synced(self) -> None:
        """Return once the table reflects the store's first lists (before then, a reconciler
        must not delete map entries the table lacks)."""
        await self._synced.wait()

    async def endpoint_identity(self, namespace: str, pod: str, ip: IPv4Address) -> int:
        """Register a local endpoint's IP and return its identity once the table has it.

        The identity comes from the pod's labels when the Pod is in the store, else it is
        init (5) until the Pod appears. Later label changes update the table entry.
        """
        key = (namespace, pod)
        self._endpoints.setdefault(key, set()).add(ip)
        self._add(("pod", *key))
        prefix = IPv4Network(ip)
        owner = _pod_owner(key)
        while True:
            revision = self.table.revision
            mine = next((e for e in self.table.owned(owner) if e.prefix == prefix), None)
            if mine is not None:
                return mine.identity
            await self.table.wait_changed(revision)

    def forget_endpoint(self, namespace: str, pod: str, ip: IPv4Address) -> None:
        """Unregister a local endpoint's IP (its entry goes unless the Pod still lists it)."""
        key = (namespace, pod)
        ips = self._endpoints.get(key, set())
        ips.discard(ip)
        if not ips:
            self._endpoints.pop(key, None)
        self._add(("pod", *key))

    # -- event handlers: record only ---------------------------------------------------------

    def _on_pod(self, event: Event) -> None:
        meta = event.object["metadata"]
        self._add(("pod", str(meta.get("namespace") or ""), str(meta["name"])))

    def _on_namespace(self, event: Event) -> None:
        namespace = str(event.object["metadata"]["name"])
        for pod in self._pods.items():
            if pod["metadata"].get("namespace") == namespace:
                self._add(("pod", namespace, str(pod["metadata"]["name"])))

    def _on_node(self, event: Event) -> None:
        name = str(event.object["metadata"]["name"])
        self._add(("node", name))
        for pod in self._pods.items():
            if (pod.get("spec") or {}).get("nodeName") == name:
                self._add(
                    ("pod", str(pod["metadata"].get("namespace") or ""), pod["metadata"]["name"])
                )

    def _add(self, key: WorkKey) -> None:
        if key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(key)

    # -- the worker --------------------------------------------------------------------------

    async def _mark_synced(self) -> None:
        for reflector in (self._pods, self._namespaces, self._nodes, self._cilium_nodes):
            await reflector.wait_synced()
        await self._queue.join()
        self._synced.set()
        log.info(
            "ipcache of node %s synced: %d entries", self.params.node, len(self.table.entries())
        )

    async def _work(self) -> None:
        # A pod synced before its Namespace is cached would get an identity without the
        # namespace's labels (a throwaway identity): start only once every first list is in.
        for reflector in (self._pods, self._namespaces, self._nodes, self._cilium_nodes):
            await reflector.wait_synced()
        while True:
            key = await self._queue.get()
            self._queued.discard(key)
            try:
                await self._sync(key)
            except (StoreError, IdentityExhausted) as exc:
                log.warning("ipcache sync of %s failed, retrying: %s", "/".join(key), exc)
                self._retry(key)
            finally:
                self._queue.task_done()

    def _retry(self, key: WorkKey) -> None:
        def fire() -> None:
            self._retries.discard(handle)
            self._add(key)

        handle = asyncio.get_running_loop().call_later(self.params.retry_interval, fire)
        self._retries.add(handle)

    async def _sync(self, key: WorkKey) -> None:
        if key[0] == "pod":
            await self._sync_pod((key[1], key[2]))
        elif key[0] == "node":
            self._sync_node(key[1])
        else:
            self.table.set_owner(
                "world",
                [Entry(WORLD_PREFIX, IDENTITY_WORLD, None, "", Source.GENERATED, "world")],
            )

    async def _sync_pod(self, key: PodKey) -> None:
        pod = self._pods.get(*key)
        ips = set(self._endpoints.get(key, ()))
        node = self.params.node if ips else ""
        if pod is not None:
            node = str((pod.get("spec") or {}).get("nodeName") or node)
            if node:
                ips.update(pod_ips(pod))
        owner = _pod_owner(key)
        if not ips or not node:
            self.table.set_owner(owner, [])
            self._release(key)
            return
        if pod is None:
            identity = _INIT
        else:
            namespace = self._namespaces.get("", key[0])
            labels = self._filter.identity_labels(pod_labels(pod, namespace, self.params.cluster))
            identity = await self.allocator.allocate(labels)
        self._release(key)
        if identity is not _INIT:
            self._held[key] = identity
        tunnel = None if node == self.params.node else self._node_ip(node)
        self.table.set_owner(
            owner,
            [Entry(IPv4Network(ip), identity.id, tunnel, node, Source.POD, owner) for ip in ips],
        )

    def _release(self, key: PodKey) -> None:
        held = self._held.pop(key, None)
        if held is not None:
            self.allocator.release(held)

    def _sync_node(self, name: str) -> None:
        node, cilium_node = self._nodes.get("", name), self._cilium_nodes.get("", name)
        local = name == self.params.node
        identity = IDENTITY_HOST if local else IDENTITY_REMOTE_NODE
        source = Source.LOCAL if local else Source.NODE
        owner = f"node/{name}"
        tunnel = None if local else self._node_ip(name)
        entries = [
            Entry(IPv4Network(ip), identity, None, name, source, owner)
            for ip in node_internal_ips(node, cilium_node)
        ]
        # The router IP lives behind the node, like its pods.
        entries += [
            Entry(IPv4Network(ip), identity, tunnel, name, source, owner)
            for ip in router_ips(node, cilium_node)
        ]
        if tunnel is not None:
            entries += [
                Entry(cidr, IDENTITY_WORLD, tunnel, name, source, owner)
                for cidr in pod_cidrs(node, cilium_node)
            ]
        self.table.set_owner(owner, entries)

    def _node_ip(self, name: str) -> IPv4Address | None:
        ips = node_internal_ips(self._nodes.get("", name), self._cilium_nodes.get("", name))
        return ips[0] if ips else None


def _pod_owner(key: PodKey) -> str:
    return f"pod/{key[0]}/{key[1]}"
