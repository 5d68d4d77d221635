"""The Store protocol's behaviour, the same on every backend (the `store` fixture runs each test
on sqlite and on etcd): CRUD, revisions, apply, watch, conflicts, concurrent writers."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import multiprocessing
from typing import Any

import pytest

import pylium.store
from pylium.store import (
    AlreadyExists,
    Conflict,
    Event,
    NotFound,
    Store,
    UnsupportedStoreURL,
    open_store,
)
from pylium.store.etcd import EtcdStore
from pylium.store.sqlite import SqliteStore
from tests.support import eventually


def pod(name: str, ns: str = "default", **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }


def namespace(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


async def collect(store: Store, kind: str | None, since: int, n: int) -> list[Event]:
    """The first n events of a watch."""
    out: list[Event] = []
    async with asyncio.timeout(10):
        async for ev in store.watch(kind, since):
            out.append(ev)
            if len(out) == n:
                break
    return out


async def test_create_sets_metadata_and_get_returns_it(store: Store) -> None:
    r0 = await store.revision()
    created = await store.create(pod("web"))
    meta = created["metadata"]
    assert meta["resourceVersion"] == str(r0 + 1)
    assert len(meta["uid"]) == 36
    assert meta["creationTimestamp"].endswith("Z")
    assert await store.get("Pod", "default", "web") == created
    assert await store.revision() == r0 + 1


async def test_create_twice_raises_already_exists(store: Store) -> None:
    r0 = await store.revision()
    await store.create(pod("web"))
    with pytest.raises(AlreadyExists):
        await store.create(pod("web"))
    assert await store.revision() == r0 + 1


async def test_missing_objects_raise_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        await store.get("Pod", "default", "nope")
    with pytest.raises(NotFound):
        await store.update(pod("nope"))
    with pytest.raises(NotFound):
        await store.delete("Pod", "default", "nope")


async def test_list_filters_by_kind_and_namespace(store: Store) -> None:
    r0 = await store.revision()
    await store.create(pod("b", "other"))
    await store.create(pod("a", "default"))
    await store.create(pod("c", "default-2"))
    await store.create(namespace("other"))
    objs, rev = await store.list("Pod")
    # Ordered by namespace, then name.
    assert [o["metadata"]["name"] for o in objs] == ["a", "c", "b"]
    assert rev == r0 + 4
    objs, _ = await store.list("Pod", "other")
    assert [o["metadata"]["name"] for o in objs] == ["b"]
    objs, _ = await store.list("Namespace")
    assert [(o["metadata"]["name"], o["metadata"].get("namespace")) for o in objs] == [
        ("other", None)
    ]
    objs, _ = await store.list("Namespace", "")
    assert [o["metadata"]["name"] for o in objs] == ["other"]


async def test_update_bumps_revision_and_keeps_identity(store: Store) -> None:
    r0 = await store.revision()
    created = await store.create(pod("web"))
    changed = dict(created, spec={"containers": [{"name": "c", "image": "nginx"}]})
    updated = await store.update(changed)
    assert updated["metadata"]["resourceVersion"] == str(r0 + 2)
    assert updated["metadata"]["uid"] == created["metadata"]["uid"]
    assert updated["spec"]["containers"][0]["image"] == "nginx"
    assert await store.get("Pod", "default", "web") == updated


async def test_update_with_stale_resource_version_conflicts(store: Store) -> None:
    r0 = await store.revision()
    created = await store.create(pod("web"))
    await store.update(created)  # now at r0 + 2
    with pytest.raises(Conflict):
        await store.update(created)  # still carries resourceVersion r0 + 1
    stored = await store.get("Pod", "default", "web")
    assert stored["metadata"]["resourceVersion"] == str(r0 + 2)


async def test_apply_reports_created_configured_unchanged(store: Store) -> None:
    r0 = await store.revision()
    _, result = await store.apply(pod("web", app="a"))
    assert result == "created"
    obj, result = await store.apply(pod("web", app="a"))
    assert (result, obj["metadata"]["resourceVersion"]) == ("unchanged", str(r0 + 1))
    obj, result = await store.apply(pod("web", app="b"))
    assert (result, obj["metadata"]["resourceVersion"]) == ("configured", str(r0 + 2))
    assert await store.get("Pod", "default", "web") == obj


async def test_reapply_keeps_fields_controllers_wrote(store: Store) -> None:
    applied, _ = await store.apply(pod("web", app="a"))
    bound = copy.deepcopy(applied)
    bound["spec"]["nodeName"] = "lab-node1"
    bound["status"] = {"phase": "Running", "podIP": "10.0.0.5"}
    await store.update(bound)
    obj, result = await store.apply(pod("web", app="a"))
    assert result == "unchanged"
    obj, result = await store.apply(pod("web", app="b"))
    assert result == "configured"
    assert obj["metadata"]["labels"] == {"app": "b"}
    assert (obj["spec"]["nodeName"], obj["status"]["podIP"]) == ("lab-node1", "10.0.0.5")


async def test_delete_returns_last_state_at_the_deletion_revision(store: Store) -> None:
    r0 = await store.revision()
    created = await store.create(pod("web"))
    deleted = await store.delete("Pod", "default", "web")
    assert deleted["metadata"]["resourceVersion"] == str(r0 + 2)
    assert (deleted["spec"], deleted["metadata"]["uid"]) == (
        created["spec"],
        created["metadata"]["uid"],
    )
    with pytest.raises(NotFound):
        await store.get("Pod", "default", "web")


async def test_watch_from_revision_misses_nothing(store: Store) -> None:
    r0 = await store.revision()
    await store.create(pod("a"))
    objs, rev = await store.list("Pod")
    created = await store.create(pod("b"))
    await store.create(namespace("x"))
    await store.update(created)
    await store.delete("Pod", "default", "a")
    events = await collect(store, "Pod", rev, 3)
    assert [(e.type, e.object["metadata"]["name"], e.revision - r0) for e in events] == [
        ("ADDED", "b", 2),
        ("MODIFIED", "b", 4),
        ("DELETED", "a", 5),
    ]
    # Each event's object carries its revision; DELETED carries the last state.
    assert [e.object["metadata"]["resourceVersion"] for e in events] == [
        str(e.revision) for e in events
    ]
    assert events[2].object["spec"] == objs[0]["spec"]


async def test_watch_all_kinds_and_live_changes(store: Store) -> None:
    task = asyncio.create_task(collect(store, None, await store.revision(), 2))
    await store.create(pod("a"))
    await store.create(namespace("x"))
    events = await task
    assert [(e.type, e.object["kind"]) for e in events] == [
        ("ADDED", "Pod"),
        ("ADDED", "Namespace"),
    ]


async def test_watch_catches_up_over_several_batches(store: Store) -> None:
    r0 = await store.revision()
    for i in range(1200):
        await store.create(pod(f"p{i}"))
    events = await collect(store, "Pod", r0, 1200)
    assert [e.revision for e in events] == list(range(r0 + 1, r0 + 1201))


async def test_watch_ends_when_store_closes(store_url: str) -> None:
    store = open_store(store_url)
    task = asyncio.create_task(collect(store, "Pod", 0, 1))
    await asyncio.sleep(0)
    await store.close()
    assert await asyncio.wait_for(task, 5) == []


async def test_concurrent_updates_with_resource_version_lose_nothing(store: Store) -> None:
    """Read-modify-write loops retrying on Conflict: every increment lands exactly once."""
    await store.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "n"}})
    workers, rounds = 5, 8

    async def increment() -> int:
        conflicts = 0
        for _ in range(rounds):
            while True:
                obj = await store.get("ConfigMap", "", "n")
                obj["data"] = {"count": obj.get("data", {}).get("count", 0) + 1}
                try:
                    await store.update(obj)
                    break
                except Conflict:
                    conflicts += 1
        return conflicts

    conflicts = await asyncio.gather(*(increment() for _ in range(workers)))
    assert (await store.get("ConfigMap", "", "n"))["data"] == {"count": workers * rounds}
    assert sum(conflicts) > 0  # the writers did interleave


def _writer(url: str, worker: int, count: int) -> None:
    async def run() -> None:
        store = open_store(url)
        try:
            for i in range(count):
                await store.create(pod(f"w{worker}-{i}"))
        finally:
            await store.close()

    asyncio.run(run())


async def test_concurrent_writer_processes_lose_nothing(store_url: str) -> None:
    watcher = open_store(store_url)
    try:
        r0 = await watcher.revision()
        workers, count = 4, 200
        seen: list[Event] = []

        async def watch_all() -> None:
            async for ev in watcher.watch("Pod", r0):
                seen.append(ev)

        watch_task = asyncio.create_task(watch_all())
        ctx = multiprocessing.get_context("spawn")
        args = [(store_url, w, count) for w in range(workers)]
        procs = [ctx.Process(target=_writer, args=a) for a in args]
        for p in procs:
            p.start()
        await asyncio.to_thread(lambda: [p.join(60) for p in procs])
        assert [p.exitcode for p in procs] == [0] * workers

        objs, rev = await watcher.list("Pod")
        assert len(objs) == workers * count
        assert rev == r0 + workers * count
        revisions = sorted(int(o["metadata"]["resourceVersion"]) for o in objs)
        assert revisions == list(range(r0 + 1, rev + 1))

        async def watched_all() -> bool:
            return len(seen) == workers * count

        await eventually(watched_all)
        watch_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watch_task
        assert [e.revision for e in seen] == list(range(r0 + 1, rev + 1))
        assert {e.object["metadata"]["name"] for e in seen} == {o["metadata"]["name"] for o in objs}
    finally:
        await watcher.close()


async def test_open_store_by_url(tmp_path) -> None:
    sqlite_store = open_store(f"sqlite://{tmp_path}/x.db")
    etcd_store = open_store("etcd://127.0.0.1:2379,127.0.0.2:2379/lab")
    try:
        assert isinstance(sqlite_store, SqliteStore)
        assert isinstance(etcd_store, EtcdStore)
        assert etcd_store.prefix == b"/lab/pylium/v1/"
    finally:
        await sqlite_store.close()
        await etcd_store.close()
    with pytest.raises(UnsupportedStoreURL, match="unknown scheme 'redis'"):
        open_store("redis://127.0.0.1:6379")
    with pytest.raises(UnsupportedStoreURL, match="absolute"):
        open_store("sqlite://rel.db")
    with pytest.raises(UnsupportedStoreURL, match="IP addresses"):
        open_store("etcd://etcd-a:2379,etcd-b:2379")
    with pytest.raises(UnsupportedStoreURL, match="not a number"):
        open_store("etcd://127.0.0.1:port")


def test_public_surface_is_importable() -> None:
    for name in pylium.store.__all__:
        assert hasattr(pylium.store, name)
