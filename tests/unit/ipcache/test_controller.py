"""The ipcache component on a real (sqlite) store: pods, namespaces and nodes -> entries."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import pytest

from pylium.api import validate
from pylium.identity import IdentityAllocator
from pylium.ipcache import Entry, IPCache, IPCacheParams, render
from pylium.store import Store, open_store
from tests.support import eventually

TWO_NODES_FROM_NODE1 = """\
0.0.0.0/0 identity=2 tunnel=- node=- source=generated
10.244.1.1/32 identity=1 tunnel=- node=lab-node1 source=local
10.244.1.5/32 identity=257 tunnel=- node=lab-node1 source=pod
10.244.2.0/24 identity=2 tunnel=192.168.10.2 node=lab-node2 source=node
10.244.2.1/32 identity=6 tunnel=192.168.10.2 node=lab-node2 source=node
10.244.2.7/32 identity=257 tunnel=192.168.10.2 node=lab-node2 source=pod
10.244.2.8/32 identity=256 tunnel=192.168.10.2 node=lab-node2 source=pod
192.168.10.1/32 identity=1 tunnel=- node=lab-node1 source=local
192.168.10.2/32 identity=6 tunnel=- node=lab-node2 source=node
"""


def _node(i: int) -> list[dict[str, Any]]:
    name = f"lab-node{i}"
    return [
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name},
            "status": {"addresses": [{"type": "InternalIP", "address": f"192.168.10.{i}"}]},
        },
        {
            "apiVersion": "cilium.io/v2",
            "kind": "CiliumNode",
            "metadata": {"name": name},
            "spec": {"ipam": {"podCIDRs": [f"10.244.{i}.0/24"]}},
        },
    ]


def _namespace(labels: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "labels": labels}}


def _pod(name: str, app: str, node: int, ip: str | None, **labels: str) -> dict[str, Any]:
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop", "labels": {"app": app, **labels}},
        "spec": {"nodeName": f"lab-node{node}", "containers": [{"name": "c", "image": "i"}]},
    }
    if ip:
        pod["status"] = {"phase": "Running", "podIP": ip}
    return pod


@pytest.fixture
def store_url(tmp_path: Path) -> Iterator[str]:
    yield f"sqlite://{tmp_path}/store.db"


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    s = open_store(store_url)
    try:
        for obj in [
            *_node(1),
            *_node(2),
            _namespace({"team": "blue"}),
            _pod("db", "db", 2, "10.244.2.8"),
            _pod("web-1", "web", 1, "10.244.1.5", **{"pod-template-hash": "aaa"}),
            _pod("web-2", "web", 2, "10.244.2.7", **{"pod-template-hash": "bbb"}),
        ]:
            await s.create(validate(obj))
        yield s
    finally:
        await s.close()


async def until(check: Callable[[], object]) -> None:
    """Wait until a synchronous check holds."""

    async def check_async() -> object:
        return check()

    await eventually(check_async)


def identity_of(cache: IPCache, ip: str) -> int | None:
    entry: Entry | None = cache.table.get(IPv4Network(ip))
    return entry.identity if entry else None


@asynccontextmanager
async def running(store_url: str, node: str) -> AsyncIterator[IPCache]:
    """An allocator and ipcache of one node, each with its own store connection."""
    store = open_store(store_url)
    allocator = IdentityAllocator(store)
    cache = IPCache(store, allocator, IPCacheParams(node=node))
    await allocator.start()
    await cache.start()
    try:
        await cache.wait_synced()
        yield cache
    finally:
        await cache.stop()
        await allocator.stop()
        await store.close()


async def test_two_nodes_golden_dump(store: Store, store_url: str) -> None:
    """Node 1 sees its own addresses as host, node 2's as remote-node, the replicas of web
    share one identity, remote pods tunnel to their node's InternalIP."""
    async with running(store_url, "lab-node1") as cache:
        assert render(cache.table.entries().values()) == TWO_NODES_FROM_NODE1


async def test_every_node_agrees_on_pod_identities(store: Store, store_url: str) -> None:
    """A second node's ipcache gives each pod the same identity, with host/remote swapped."""
    async with running(store_url, "lab-node1") as one, running(store_url, "lab-node2") as two:
        ids_one = {p: e.identity for p, e in one.table.entries().items() if e.source.name == "POD"}
        ids_two = {p: e.identity for p, e in two.table.entries().items() if e.source.name == "POD"}
        assert ids_one == ids_two
        node1 = two.table.get(IPv4Network("192.168.10.1/32"))
        node2 = two.table.get(IPv4Network("192.168.10.2/32"))
        assert (node1 and node1.identity, node2 and node2.identity) == (6, 1)
        web1 = two.table.get(IPv4Network("10.244.1.5/32"))
        assert web1 is not None and web1.tunnel_endpoint == IPv4Address("192.168.10.1")


async def test_namespace_label_change_reidentifies_its_pods(store: Store, store_url: str) -> None:
    """Changing a namespace label gives its pods new identities and drops the old ones' refs."""
    async with running(store_url, "lab-node1") as cache:
        web = IPv4Network("10.244.1.5/32")
        before = cache.table.entries()[web].identity
        await store.update(validate(_namespace({"team": "red"})))

        async def changed() -> int | None:
            entry = cache.table.get(web)
            return entry.identity if entry and entry.identity != before else None

        after = await eventually(changed)
        assert after not in (before, 256)
        await until(lambda: identity_of(cache, "10.244.2.7/32") == after)
        identity = await store.get("CiliumIdentity", "", str(after))
        assert identity["security-labels"]["k8s:io.cilium.k8s.namespace.labels.team"] == "red"
        # web-1 and web-2 now hold the new identity; db's and web's old ones are released.
        held = cache.allocator.references()
        assert before not in held and held[after] == 2


async def test_pod_and_node_removal_and_ip_change(store: Store, store_url: str) -> None:
    """A deleted pod's entry goes; a node's new InternalIP moves its pods' tunnel endpoint."""
    async with running(store_url, "lab-node1") as cache:
        await store.delete("Pod", "shop", "db")
        await until(lambda: identity_of(cache, "10.244.2.8/32") is None)
        node2 = _node(2)[0]
        node2["status"]["addresses"][0]["address"] = "192.168.10.22"
        await store.apply(validate(node2))

        async def moved() -> bool:
            web2 = cache.table.get(IPv4Network("10.244.2.7/32"))
            return web2 is not None and web2.tunnel_endpoint == IPv4Address("192.168.10.22")

        await eventually(moved)
        assert cache.table.get(IPv4Network("192.168.10.2/32")) is None
        assert cache.table.get(IPv4Network("192.168.10.22/32")) is not None


async def test_local_endpoint_is_init_until_its_pod_appears(store: Store, store_url: str) -> None:
    """An endpoint registered before its Pod is in the store gets init (5), then the pod's
    identity once the Pod arrives; forgetting it removes the entry."""
    async with running(store_url, "lab-node1") as cache:
        ip = IPv4Address("10.244.1.9")
        assert await cache.endpoint_identity("shop", "late", ip) == 5
        await store.create(validate(_pod("late", "web", 1, None)))

        async def identity() -> int | None:
            entry = cache.table.get(IPv4Network(ip))
            return entry.identity if entry and entry.identity != 5 else None

        assert (
            await eventually(identity)
            == cache.table.entries()[IPv4Network("10.244.1.5/32")].identity
        )
        cache.forget_endpoint("shop", "late", ip)
        await until(lambda: identity_of(cache, "10.244.1.9/32") is None)
