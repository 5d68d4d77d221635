"""Cluster-wide identity allocation through the store: one id per label set on every node."""

from __future__ import annotations

import asyncio
import multiprocessing
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pylium.api import validate
from pylium.identity import (
    AllocatorParams,
    IdentityAllocator,
    IdentityExhausted,
    Labels,
    identity_from_object,
)
from pylium.store import Store, open_store
from tests.support import eventually
from tests.unit.store.etcd_server import EtcdServer

WEB = Labels.of(["k8s:app=web", "k8s:io.kubernetes.pod.namespace=shop"])
DB = Labels.of(["k8s:app=db", "k8s:io.kubernetes.pod.namespace=shop"])


def _label_sets(n: int) -> list[Labels]:
    return [Labels.of([f"k8s:app=a{i}", "k8s:io.kubernetes.pod.namespace=ns"]) for i in range(n)]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = open_store(f"sqlite://{tmp_path}/store.db")
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
async def allocator(store: Store) -> AsyncIterator[IdentityAllocator]:
    a = IdentityAllocator(store)
    await a.start()
    try:
        yield a
    finally:
        await a.stop()


async def test_allocate_creates_a_valid_cilium_identity(
    store: Store, allocator: IdentityAllocator
) -> None:
    """The first label set gets 256, stored as a valid CiliumIdentity named by its number."""
    web = await allocator.allocate(WEB)
    assert web.id == 256
    obj = await store.get("CiliumIdentity", "", "256")
    assert validate(obj) == obj
    assert obj["security-labels"] == {
        "k8s:app": "web",
        "k8s:io.kubernetes.pod.namespace": "shop",
    }
    assert identity_from_object(obj) == web
    assert (await allocator.allocate(DB)).id == 257
    assert (await allocator.allocate(WEB)).id == 256
    assert allocator.references() == {256: 2, 257: 1}


async def test_release_counts_references_and_keeps_cluster_identities(
    store: Store, allocator: IdentityAllocator
) -> None:
    """The last release reports True; the CiliumIdentity stays (the operator collects it)."""
    web = await allocator.allocate(WEB)
    await allocator.allocate(WEB)
    assert allocator.release(web) is False
    assert allocator.release(web) is True
    assert allocator.references() == {}
    assert (await store.get("CiliumIdentity", "", "256"))["metadata"]["name"] == "256"
    with pytest.raises(ValueError):
        allocator.release(web)


async def test_reserved_and_local_identities_stay_off_the_store(
    store: Store, allocator: IdentityAllocator
) -> None:
    """Reserved labels give their fixed id; CIDR labels get a node-local id from 1 << 24 that
    is freed with its last reference."""
    assert (await allocator.allocate(Labels.of(["reserved:world"]))).id == 2
    cidr = await allocator.allocate(Labels.of(["cidr:10.0.0.0/8"]))
    assert cidr.id == (1 << 24) + 1
    other = await allocator.allocate(Labels.of(["cidr:192.168.0.0/16"]))
    assert other.id == (1 << 24) + 2
    assert allocator.release(cidr) is True
    assert allocator.lookup(Labels.of(["cidr:10.0.0.0/8"])) is None
    assert (await allocator.allocate(Labels.of(["cidr:172.16.0.0/12"]))).id == (1 << 24) + 1
    assert (await store.list("CiliumIdentity"))[0] == []
    with pytest.raises(ValueError):
        await allocator.allocate(Labels.of(["reserved:host", "k8s:app=x"]))


async def test_identities_created_elsewhere_are_learned_and_forgotten(
    store: Store, allocator: IdentityAllocator
) -> None:
    """The reflector cache follows identities other agents create and the operator deletes."""
    other = IdentityAllocator(store)
    await other.start()
    try:
        web = await other.allocate(WEB)
    finally:
        await other.stop()
    assert await eventually(lambda: _async(allocator.lookup(WEB))) == web
    await store.delete("CiliumIdentity", "", str(web.id))
    await eventually(lambda: _async(allocator.get(web.id) is None))


async def _async(value: object) -> object:
    return value


async def test_exhausted_range_raises(store: Store) -> None:
    """With every id of the range taken, allocation fails with IdentityExhausted."""
    a = IdentityAllocator(store, AllocatorParams(min_id=256, max_id=257))
    await a.start()
    try:
        await a.allocate(WEB)
        await a.allocate(DB)
        with pytest.raises(IdentityExhausted):
            await a.allocate(Labels.of(["k8s:app=third"]))
    finally:
        await a.stop()


async def _race(
    urls: list[str], label_sets: list[Labels], tasks: int, seed: int = 0
) -> list[dict[Labels, int]]:
    """Allocators (one per URL, each its own store connection) race `tasks` tasks each over
    the label sets in shuffled orders; returns every task's view."""
    stores = [open_store(u) for u in urls]
    allocators = [IdentityAllocator(s) for s in stores]
    try:
        for a in allocators:
            await a.start()

        async def run(a: IdentityAllocator, shuffle: int) -> dict[Labels, int]:
            order = list(label_sets)
            random.Random(shuffle).shuffle(order)
            return {labels: (await a.allocate(labels)).id for labels in order}

        return list(
            await asyncio.gather(
                *(
                    run(a, seed + i * tasks + t)
                    for i, a in enumerate(allocators)
                    for t in range(tasks)
                )
            )
        )
    finally:
        for a in allocators:
            await a.stop()
        for s in stores:
            await s.close()


def _assert_converged(views: list[dict[Labels, int]], label_sets: list[Labels]) -> None:
    first = views[0]
    disagree = [
        (str(labels), [view[labels] for view in views])
        for labels in label_sets
        if any(view[labels] != first[labels] for view in views)
    ]
    assert not disagree, f"allocators disagree: {disagree}"
    assert sorted(first.values()) == list(range(256, 256 + len(label_sets)))


async def test_two_allocators_racing_agree_on_sqlite(tmp_path: Path) -> None:
    """Two allocators (4 tasks each) on one sqlite store end with one id per label set, the
    ids dense from 256."""
    url = f"sqlite://{tmp_path}/store.db"
    label_sets = _label_sets(40)
    views = await _race([url, url], label_sets, tasks=4)
    _assert_converged(views, label_sets)
    s = open_store(url)
    try:
        objects, _ = await s.list("CiliumIdentity")
    finally:
        await s.close()
    assert len(objects) == len(label_sets)


async def test_two_allocators_racing_agree_on_etcd(etcd_server: EtcdServer) -> None:
    """The same race through etcd."""
    label_sets = _label_sets(25)
    views = await _race([etcd_server.url("/t"), etcd_server.url("/t")], label_sets, tasks=4)
    _assert_converged(views, label_sets)


def _process_main(url: str, seed: int, queue: multiprocessing.Queue[dict[str, int]]) -> None:
    async def main() -> dict[str, int]:
        views = await _race([url], _label_sets(30), tasks=1, seed=seed)
        return {labels.canonical(): number for labels, number in views[0].items()}

    queue.put(asyncio.run(main()))


def test_four_processes_racing_agree(tmp_path: Path) -> None:
    """Four agent processes allocating the same label sets at once agree on every id."""
    url = f"sqlite://{tmp_path}/store.db"
    open_store(url)  # creates the schema once, before the racers
    ctx = multiprocessing.get_context("spawn")
    queue: multiprocessing.Queue[dict[str, int]] = ctx.Queue()
    procs = [ctx.Process(target=_process_main, args=(url, i, queue)) for i in range(4)]
    for p in procs:
        p.start()
    try:
        views = [queue.get(timeout=60) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=30)
    assert all(v == views[0] for v in views)
    assert sorted(views[0].values()) == list(range(256, 286))
