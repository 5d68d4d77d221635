"""Reflector: list then watch into a cache; relist after Expired with synthetic events. Each test
runs on sqlite (a change log of 3 entries) and on etcd (compacted by the test)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aetcd
import pytest

from pylium.store.etcd import EtcdStore
from pylium.store.interface import Event, Store
from pylium.store.reflector import Reflector
from pylium.store.sqlite import SqliteStore
from tests.support import eventually
from tests.unit.store.etcd_server import EtcdServer


def pod(name: str, ns: str = "default", image: str = "busybox") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"containers": [{"name": "c", "image": image}]},
    }


def summary(events: list[Event]) -> list[tuple[str, str]]:
    return [(e.type, e.object["metadata"]["name"]) for e in events]


async def take(it: Any, n: int) -> list[Event]:
    async with asyncio.timeout(10):
        return [await anext(it) for _ in range(n)]


@pytest.fixture(params=["sqlite", "etcd"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    s: Store
    if request.param == "sqlite":
        s = SqliteStore(tmp_path / "store.db", keep_changes=3, poll_interval=0.01)
    else:
        server: EtcdServer = request.getfixturevalue("etcd_server")
        s = EtcdStore([server.endpoint], root="/test")
    try:
        yield s
    finally:
        await s.close()


async def forget_history(store: Store) -> None:
    """Drop the store's change history up to now (sqlite keeps 3 changes by itself)."""
    if isinstance(store, EtcdStore):
        async with aetcd.Client(*store.endpoints[0]) as client:
            await client.compact(await store.revision(), physical=True)


async def test_initial_list_then_watched_changes(store: Store) -> None:
    r0 = await store.revision()
    await store.create(pod("a"))
    await store.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}})
    reflector = Reflector(store, "Pod")
    events = reflector.events()
    assert summary(await take(events, 1)) == [("ADDED", "a")]
    await store.create(pod("b"))
    await store.delete("Pod", "default", "a")
    assert summary(await take(events, 2)) == [("ADDED", "b"), ("DELETED", "a")]
    assert [o["metadata"]["name"] for o in reflector.items()] == ["b"]
    assert reflector.revision == r0 + 4
    await events.aclose()


async def test_relist_after_expired_emits_synthetic_events(store: Store) -> None:
    for name in ("a", "b", "c"):
        await store.create(pod(name))
    reflector = Reflector(store, "Pod")
    events = reflector.events()
    assert summary(await take(events, 3)) == [("ADDED", "a"), ("ADDED", "b"), ("ADDED", "c")]
    # While the consumer is away, more changes happen than the log keeps.
    await store.delete("Pod", "default", "a")
    b = await store.get("Pod", "default", "b")
    await store.update({**b, "spec": {"containers": [{"name": "c", "image": "nginx"}]}})
    await store.create(pod("d"))
    await store.create(pod("e"))
    await store.delete("Pod", "default", "e")
    await forget_history(store)
    synthetic = await take(events, 3)
    assert summary(synthetic) == [("DELETED", "a"), ("MODIFIED", "b"), ("ADDED", "d")]
    assert {e.revision for e in synthetic} == {await store.revision()}
    assert reflector.relists == 1
    cached_b = reflector.get("default", "b")
    assert cached_b is not None and cached_b["spec"]["containers"][0]["image"] == "nginx"
    assert reflector.get("default", "a") is None
    # After the relist, the watch continues from the listed revision.
    await store.create(pod("f"))
    assert summary(await take(events, 1)) == [("ADDED", "f")]
    await events.aclose()


async def test_namespace_filter(store: Store) -> None:
    await store.create(pod("a", "one"))
    await store.create(pod("b", "two"))
    reflector = Reflector(store, "Pod", namespace="two")
    events = reflector.events()
    assert summary(await take(events, 1)) == [("ADDED", "b")]
    await store.create(pod("c", "one"))
    await store.create(pod("d", "two"))
    assert summary(await take(events, 1)) == [("ADDED", "d")]
    assert [o["metadata"]["name"] for o in reflector.items()] == ["b", "d"]
    await events.aclose()


async def test_run_calls_handler_and_syncs(store: Store) -> None:
    await store.create(pod("a"))
    reflector = Reflector(store, "Pod")
    seen: list[Event] = []
    task = asyncio.create_task(reflector.run(seen.append))
    try:
        await asyncio.wait_for(reflector.wait_synced(), 5)
        await store.create(pod("b"))

        async def both_seen() -> bool:
            return summary(seen) == [("ADDED", "a"), ("ADDED", "b")]

        await eventually(both_seen)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
