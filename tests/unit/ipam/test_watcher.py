"""The agent's IPAM component on a real sqlite store: waits for the node's addresses, builds
the mode's allocator, follows a crd pool, stops cleanly."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pylium.ipam import AddressWatcher, ClusterPoolAllocator, IpamMode, PoolListAllocator
from pylium.store import Object
from pylium.store.sqlite import SqliteStore
from tests.support import eventually


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path / "store.db", poll_interval=0.01)
    try:
        yield s
    finally:
        await s.close()


def cilium_node(name: str, **ipam: object) -> Object:
    return {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNode",
        "metadata": {"name": name},
        "spec": {"ipam": ipam},
    }


async def test_cluster_pool_waits_then_keeps_its_cidr(store, tmp_path):
    """start() returns once the CiliumNode has a pod CIDR; a later CIDR change does not
    renumber the running allocator."""
    watcher = AddressWatcher(store, "n1", IpamMode.CLUSTER_POOL, tmp_path / "ipam.json")
    starting = asyncio.ensure_future(watcher.start())
    await store.create(cilium_node("n1", podCIDRs=["10.244.3.0/24"]))
    ipam = await asyncio.wait_for(starting, 5)
    try:
        assert isinstance(ipam, ClusterPoolAllocator)
        assert str(ipam.cidr) == "10.244.3.0/24"
        assert str(ipam.allocate("pod").ip) == "10.244.3.2"
        obj = await store.get("CiliumNode", "", "n1")
        obj["spec"]["ipam"]["podCIDRs"] = ["10.244.9.0/24"]
        await store.update(obj)
        assert str(ipam.allocate("pod2").ip) == "10.244.3.3"
    finally:
        await watcher.stop()


async def test_crd_pool_growth_reaches_the_allocator(store, tmp_path):
    """In crd mode the allocator hands out the listed addresses and picks up ones the
    controller adds later."""
    await store.create(cilium_node("n1", pool={"10.9.0.1": {}, "10.9.0.2": {}}))
    watcher = AddressWatcher(store, "n1", IpamMode.CRD, tmp_path / "ipam.json")
    ipam = await asyncio.wait_for(watcher.start(), 5)
    try:
        assert isinstance(ipam, PoolListAllocator)
        assert str(ipam.router_ip) == "10.9.0.1"
        assert str(ipam.allocate("a").ip) == "10.9.0.2"
        assert ipam.available == 0
        obj = await store.get("CiliumNode", "", "n1")
        obj["spec"]["ipam"]["pool"]["10.9.0.3"] = {"resource": "eni-2"}
        await store.update(obj)

        async def grown() -> bool:
            return ipam.available == 1

        await eventually(grown)
        assert str(ipam.allocate("b").ip) == "10.9.0.3"
    finally:
        await watcher.stop()


async def test_stop_while_still_waiting(store, tmp_path):
    """An agent stopped before its addresses arrive cancels start() and stops cleanly."""
    watcher = AddressWatcher(store, "n1", IpamMode.KUBERNETES, tmp_path / "ipam.json")
    starting = asyncio.ensure_future(watcher.start())
    await store.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}})
    starting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await starting
    await watcher.stop()
    assert not (tmp_path / "ipam.json").exists()
