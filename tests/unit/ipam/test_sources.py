"""Address sources per IPAM mode: what each reads, and waiting for / following it in a real
sqlite store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pylium.ipam import (
    ClusterPoolAllocator,
    IpamMode,
    PodAddresses,
    PoolListAllocator,
    node_addresses,
    source_for,
)
from pylium.store import Object
from pylium.store.sqlite import SqliteStore


def cilium_node(name: str, **ipam: object) -> Object:
    return {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNode",
        "metadata": {"name": name},
        "spec": {"ipam": ipam},
    }


def node(name: str, **spec: object) -> Object:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, "spec": spec}


@pytest.mark.parametrize(
    ("mode", "obj", "expected"),
    [
        (
            "cluster-pool",
            cilium_node("n", podCIDRs=["fd00::/64", "10.244.3.0/24"]),
            "10.244.3.0/24",
        ),
        ("cluster-pool", cilium_node("n", pool={"10.1.0.1": {}, "10.1.0.2": {}}), None),
        ("kubernetes", node("n", podCIDRs=["10.244.4.0/24", "fd00::/64"]), "10.244.4.0/24"),
        ("kubernetes", node("n", podCIDR="10.244.5.0/24"), "10.244.5.0/24"),
        ("kubernetes", node("n"), None),
    ],
)
def test_cidr_sources_read_the_first_ipv4_cidr(mode, obj, expected):
    """cluster-pool reads CiliumNode.spec.ipam.podCIDRs, kubernetes Node.spec.podCIDRs (then
    podCIDR); IPv6 entries are skipped."""
    got = source_for(mode).read(obj)
    assert got == (PodAddresses(cidr=expected) if expected else None)


def test_crd_source_reads_the_pool_keys():
    """crd reads the IPv4 keys of spec.ipam.pool, sorted; fewer than two is not enough."""
    source = source_for(IpamMode.CRD)
    pool = {"10.1.0.9": {"resource": "eni-1"}, "10.1.0.2": {}, "fd00::1": {}}
    assert source.kind == "CiliumNode"
    assert source.read(cilium_node("n", pool=pool)) == PodAddresses(pool=("10.1.0.2", "10.1.0.9"))
    assert source.read(cilium_node("n", pool={"10.1.0.2": {}})) is None
    assert source.read(cilium_node("n", podCIDRs=["10.244.0.0/24"])) is None


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError):
        source_for("eni")


def test_addresses_pick_their_allocator(tmp_path):
    """A CIDR gets the CIDR allocator, an address list the pool allocator."""
    by_cidr = PodAddresses(cidr="10.244.0.0/24").allocator(tmp_path / "a.json")
    by_pool = PodAddresses(pool=("10.1.0.1", "10.1.0.2")).allocator(tmp_path / "b.json")
    assert isinstance(by_cidr, ClusterPoolAllocator)
    assert str(by_cidr.router_ip) == "10.244.0.1"
    assert isinstance(by_pool, PoolListAllocator)
    assert str(by_pool.router_ip) == "10.1.0.1"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path / "store.db", poll_interval=0.01)
    try:
        yield s
    finally:
        await s.close()


async def test_waits_for_the_node_then_follows_changes(store):
    """node_addresses skips another node's addresses and a node object without any: the first
    thing it yields is n1's pool once written; then each change, never a repeat."""
    stream = node_addresses(store, "n1", source_for("crd"))
    first = asyncio.ensure_future(anext(stream))
    await store.create(cilium_node("n2", pool={"10.1.0.1": {}, "10.1.0.2": {}}))
    await store.create(cilium_node("n1"))
    obj = await store.get("CiliumNode", "", "n1")
    obj["spec"]["ipam"]["pool"] = {"10.2.0.1": {}, "10.2.0.2": {}}
    obj = await store.update(obj)
    assert await asyncio.wait_for(first, 5) == PodAddresses(pool=("10.2.0.1", "10.2.0.2"))

    obj["status"] = {"ipam": {"usedCount": 1}}  # status only: no new addresses
    obj = await store.update(obj)
    obj["spec"]["ipam"]["pool"]["10.2.0.3"] = {}
    await store.update(obj)
    grown = await asyncio.wait_for(anext(stream), 5)
    assert grown == PodAddresses(pool=("10.2.0.1", "10.2.0.2", "10.2.0.3"))
    await stream.aclose()


async def test_kubernetes_mode_reads_an_existing_node_at_once(store):
    """A Node that already has spec.podCIDRs is answered from the list, without a change."""
    await store.create(node("n1", podCIDRs=["10.244.7.0/24"]))
    stream = node_addresses(store, "n1", source_for("kubernetes"))
    assert await asyncio.wait_for(anext(stream), 5) == PodAddresses(cidr="10.244.7.0/24")
    await stream.aclose()
