"""SqliteStore: CRUD, revisions, watch, compaction, conflicts, writers in several processes."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import multiprocessing
from pathlib import Path
from typing import Any

import pytest

import pylium.store
from pylium.store import (
    AlreadyExists,
    Conflict,
    Event,
    Expired,
    NotFound,
    UnsupportedStoreURL,
    open_store,
)
from pylium.store.sqlite import SqliteStore
from tests.support import eventually


def pod(name: str, ns: str = "default", **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }


@pytest.fixture
async def store(tmp_path: Path):
    s = SqliteStore(tmp_path / "store.db", poll_interval=0.01)
    try:
        yield s
    finally:
        await s.close()


async def collect(store: SqliteStore, kind: str | None, since: int, n: int) -> list[Event]:
    """The first n events of a watch."""
    out: list[Event] = []
    async with asyncio.timeout(10):
        async for ev in store.watch(kind, since):
            out.append(ev)
            if len(out) == n:
                break
    return out


async def test_create_sets_metadata_and_get_returns_it(store: SqliteStore) -> None:
    created = await store.create(pod("web"))
    meta = created["metadata"]
    assert meta["resourceVersion"] == "1"
    assert len(meta["uid"]) == 36
    assert meta["creationTimestamp"].endswith("Z")
    assert await store.get("Pod", "default", "web") == created
    assert await store.revision() == 1


async def test_create_twice_raises_already_exists(store: SqliteStore) -> None:
    await store.create(pod("web"))
    with pytest.raises(AlreadyExists):
        await store.create(pod("web"))
    assert await store.revision() == 1


async def test_missing_objects_raise_not_found(store: SqliteStore) -> None:
    with pytest.raises(NotFound):
        await store.get("Pod", "default", "nope")
    with pytest.raises(NotFound):
        await store.update(pod("nope"))
    with pytest.raises(NotFound):
        await store.delete("Pod", "default", "nope")


async def test_list_filters_by_kind_and_namespace(store: SqliteStore) -> None:
    await store.create(pod("a", "default"))
    await store.create(pod("b", "other"))
    await store.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other"}})
    objs, rev = await store.list("Pod")
    assert [o["metadata"]["name"] for o in objs] == ["a", "b"]
    assert rev == 3
    objs, _ = await store.list("Pod", "other")
    assert [o["metadata"]["name"] for o in objs] == ["b"]
    objs, _ = await store.list("Namespace")
    assert [(o["metadata"]["name"], o["metadata"].get("namespace")) for o in objs] == [
        ("other", None)
    ]


async def test_update_bumps_revision_and_keeps_identity(store: SqliteStore) -> None:
    created = await store.create(pod("web"))
    changed = dict(created, spec={"containers": [{"name": "c", "image": "nginx"}]})
    updated = await store.update(changed)
    assert updated["metadata"]["resourceVersion"] == "2"
    assert updated["metadata"]["uid"] == created["metadata"]["uid"]
    assert updated["spec"]["containers"][0]["image"] == "nginx"


async def test_update_with_stale_resource_version_conflicts(store: SqliteStore) -> None:
    created = await store.create(pod("web"))
    await store.update(created)  # now at revision 2
    with pytest.raises(Conflict):
        await store.update(created)  # still carries resourceVersion 1
    assert (await store.get("Pod", "default", "web"))["metadata"]["resourceVersion"] == "2"


async def test_apply_reports_created_configured_unchanged(store: SqliteStore) -> None:
    _, result = await store.apply(pod("web", app="a"))
    assert result == "created"
    obj, result = await store.apply(pod("web", app="a"))
    assert (result, obj["metadata"]["resourceVersion"]) == ("unchanged", "1")
    obj, result = await store.apply(pod("web", app="b"))
    assert (result, obj["metadata"]["resourceVersion"]) == ("configured", "2")


async def test_reapply_keeps_fields_controllers_wrote(store: SqliteStore) -> None:
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


async def test_watch_from_revision_misses_nothing(store: SqliteStore) -> None:
    await store.create(pod("a"))
    objs, rev = await store.list("Pod")
    created = await store.create(pod("b"))
    await store.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}})
    await store.update(created)
    await store.delete("Pod", "default", "a")
    events = await collect(store, "Pod", rev, 3)
    assert [(e.type, e.object["metadata"]["name"], e.revision) for e in events] == [
        ("ADDED", "b", 2),
        ("MODIFIED", "b", 4),
        ("DELETED", "a", 5),
    ]
    # A DELETED event carries the last state, stamped with the deletion's revision.
    assert events[2].object["spec"] == objs[0]["spec"]
    assert events[2].object["metadata"]["resourceVersion"] == "5"


async def test_watch_all_kinds_and_live_changes(store: SqliteStore) -> None:
    task = asyncio.create_task(collect(store, None, 0, 2))
    await store.create(pod("a"))
    await store.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}})
    events = await task
    assert [(e.type, e.object["kind"]) for e in events] == [
        ("ADDED", "Pod"),
        ("ADDED", "Namespace"),
    ]


async def test_watch_catches_up_over_several_batches(store: SqliteStore) -> None:
    for i in range(1200):
        await store.create(pod(f"p{i}"))
    events = await collect(store, "Pod", 0, 1200)
    assert [e.revision for e in events] == list(range(1, 1201))


async def test_watch_from_compacted_revision_raises_expired(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db", keep_changes=5, poll_interval=0.01)
    try:
        for i in range(10):
            await store.create(pod(f"p{i}"))
        with pytest.raises(Expired):
            await collect(store, "Pod", 2, 1)
        events = await collect(store, "Pod", 5, 5)
        assert [e.revision for e in events] == [6, 7, 8, 9, 10]
    finally:
        await store.close()


async def test_watch_ends_when_store_closes(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db", poll_interval=0.01)
    task = asyncio.create_task(collect(store, "Pod", 0, 1))
    await asyncio.sleep(0)
    await store.close()
    assert await asyncio.wait_for(task, 5) == []


def _writer(path: str, worker: int, count: int) -> None:
    async def run() -> None:
        store = SqliteStore(path)
        try:
            for i in range(count):
                await store.create(pod(f"w{worker}-{i}"))
        finally:
            await store.close()

    asyncio.run(run())


async def test_concurrent_writer_processes_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    watcher = SqliteStore(path, poll_interval=0.01)
    try:
        workers, count = 4, 200
        seen: list[Event] = []

        async def watch_all() -> None:
            async for ev in watcher.watch("Pod", 0):
                seen.append(ev)

        watch_task = asyncio.create_task(watch_all())
        ctx = multiprocessing.get_context("spawn")
        procs = [ctx.Process(target=_writer, args=(str(path), w, count)) for w in range(workers)]
        for p in procs:
            p.start()
        await asyncio.to_thread(lambda: [p.join(60) for p in procs])
        assert [p.exitcode for p in procs] == [0] * workers

        objs, rev = await watcher.list("Pod")
        assert len(objs) == workers * count
        assert rev == workers * count
        revisions = sorted(int(o["metadata"]["resourceVersion"]) for o in objs)
        assert revisions == list(range(1, workers * count + 1))

        async def watched_all() -> bool:
            return len(seen) == workers * count

        await eventually(watched_all)
        watch_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watch_task
        assert [e.revision for e in seen] == list(range(1, workers * count + 1))
        assert {e.object["metadata"]["name"] for e in seen} == {o["metadata"]["name"] for o in objs}
    finally:
        await watcher.close()


async def test_open_store_by_url(tmp_path: Path) -> None:
    store = open_store(f"sqlite://{tmp_path}/x.db")
    try:
        await store.create(pod("a"))
        assert (await store.list("Pod"))[1] == 1
    finally:
        await store.close()
    with pytest.raises(UnsupportedStoreURL, match="unknown scheme 'etcd'"):
        open_store("etcd://127.0.0.1:2379")
    with pytest.raises(UnsupportedStoreURL, match="absolute"):
        open_store("sqlite://rel.db")


def test_public_surface_is_importable() -> None:
    for name in pylium.store.__all__:
        assert hasattr(pylium.store, name)
