"""EtcdStore specifics: URL parsing, the key layout, Expired after compaction, a watch that
resumes across an etcd restart, failover between endpoints (the shared suite is in
test_store.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import multiprocessing
from typing import Any

import aetcd
import pytest

from pylium.store import Event, Expired, open_store
from pylium.store.etcd import grpc_target, parse_url
from tests.support import eventually
from tests.unit.store.etcd_server import EtcdServer, free_port
from tests.unit.store.test_store import collect, namespace, pod


def test_parse_url_endpoints_and_root() -> None:
    assert parse_url("127.0.0.1:2379") == ([("127.0.0.1", 2379)], "")
    assert parse_url("etcd-a,10.0.0.2:22379/labs/one/") == (
        [("etcd-a", 2379), ("10.0.0.2", 22379)],
        "/labs/one",
    )
    assert parse_url("[::1]:2379,[fd00::2]/") == ([("::1", 2379), ("fd00::2", 2379)], "")
    with pytest.raises(ValueError, match="no host"):
        parse_url(":2379")


def test_grpc_target_lists_every_endpoint() -> None:
    assert grpc_target([("etcd-a", 2379)]) == "etcd-a:2379"
    assert grpc_target([("::1", 2379)]) == "[::1]:2379"
    assert grpc_target([("127.0.0.1", 1), ("127.0.0.2", 2)]) == "ipv4:127.0.0.1:1,127.0.0.2:2"
    assert grpc_target([("::1", 1), ("::2", 2)]) == "ipv6:[::1]:1,[::2]:2"
    with pytest.raises(ValueError, match="IPv4 or all IPv6"):
        grpc_target([("127.0.0.1", 1), ("::1", 2)])


async def test_key_layout_and_values_without_resource_version(etcd_server: EtcdServer) -> None:
    store = open_store(etcd_server.url("/labs/a"))
    try:
        await store.create(pod("web"))
        await store.create(namespace("x"))
    finally:
        await store.close()
    async with aetcd.Client(*etcd_server.endpoint) as client:
        kvs = {kv.key: json.loads(kv.value) for kv in await client.get_prefix(b"/labs/a/")}
    assert sorted(kvs) == [
        b"/labs/a/pylium/v1/Namespace/_cluster/x",
        b"/labs/a/pylium/v1/Pod/default/web",
    ]
    meta = kvs[b"/labs/a/pylium/v1/Pod/default/web"]["metadata"]
    assert sorted(meta) == ["creationTimestamp", "labels", "name", "namespace", "uid"]


async def test_watch_from_compacted_revision_raises_expired(etcd_server: EtcdServer) -> None:
    store = open_store(etcd_server.url("/test"))
    try:
        r0 = await store.revision()
        for i in range(10):
            await store.create(pod(f"p{i}"))
        async with aetcd.Client(*etcd_server.endpoint) as client:
            await client.compact(r0 + 5, physical=True)
        with pytest.raises(Expired):
            await collect(store, "Pod", r0 + 2, 1)
        # The compaction revision itself is kept: watching from just before it works.
        events = await collect(store, "Pod", r0 + 4, 6)
        assert [e.revision - r0 for e in events] == [5, 6, 7, 8, 9, 10]
    finally:
        await store.close()


def _change_pods(url: str, a: dict[str, Any]) -> None:
    """Create pod b, modify then delete pod a (run in another process)."""

    async def run() -> None:
        store = open_store(url)
        try:
            await store.create(pod("b"))
            await store.update(dict(a, spec={"containers": [{"name": "c", "image": "x"}]}))
            await store.delete("Pod", "default", "a")
        finally:
            await store.close()

    asyncio.run(run())


async def test_watch_resumes_after_etcd_restart(
    etcd_server: EtcdServer, caplog: pytest.LogCaptureFixture
) -> None:
    """etcd stops and starts again: the watcher reconnects and delivers, in order and once,
    the changes made before it was back."""
    url = etcd_server.url("/test")
    watcher = open_store(url)
    seen: list[Event] = []

    async def watch_all(since: int) -> None:
        async for ev in watcher.watch("Pod", since):
            seen.append(ev)

    async def seen_count(n: int) -> bool:
        return len(seen) == n

    caplog.set_level(logging.WARNING, logger="pylium.store.etcd")
    try:
        r0 = await watcher.revision()
        task = asyncio.create_task(watch_all(r0))
        created = await watcher.create(pod("a"))
        await eventually(lambda: seen_count(1))

        # Restart etcd and change pods from another process while this event loop is blocked
        # on purpose: the watcher cannot reconnect before every change has landed.
        etcd_server.stop()
        etcd_server.start()
        writer = multiprocessing.get_context("spawn").Process(
            target=_change_pods, args=(url, created)
        )
        writer.start()
        writer.join(30)
        assert writer.exitcode == 0

        await eventually(lambda: seen_count(4))
        assert [(e.type, e.object["metadata"]["name"], e.revision - r0) for e in seen] == [
            ("ADDED", "a", 1),
            ("ADDED", "b", 2),
            ("MODIFIED", "a", 3),
            ("DELETED", "a", 4),
        ]
        assert seen[3].object["spec"]["containers"][0]["image"] == "x"
        assert any("resuming" in r.getMessage() for r in caplog.records)
        # The watcher's own connection is usable again, too.
        assert (await watcher.get("Pod", "default", "b"))["metadata"]["name"] == "b"
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    finally:
        await watcher.close()


async def test_several_endpoints_fail_over_to_a_live_one(etcd_server: EtcdServer) -> None:
    dead = free_port()
    store = open_store(f"etcd://127.0.0.1:{dead},127.0.0.1:{etcd_server.client_port}/test")
    try:
        created = await store.create(pod("a"))
        assert await store.get("Pod", "default", "a") == created
    finally:
        await store.close()
