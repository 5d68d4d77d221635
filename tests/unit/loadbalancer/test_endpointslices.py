"""The EndpointSlice controller on a real sqlite store: conditions, named ports, grouping by
resolved ports, incremental and idempotent writes, deletion with the Service."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pylium.api import validate
from pylium.operator.endpointslices import EndpointSliceController, desired_slices
from pylium.store import Object
from pylium.store.sqlite import SqliteStore
from tests.support import eventually


def pod(name: str, ip: str, port: int = 8080, ready: bool = True, **meta: Any) -> Object:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "test", "labels": {"app": "web"}, **meta},
        "spec": {
            "nodeName": "lab-node1",
            "containers": [
                {"name": "c", "image": "x", "ports": [{"name": "http", "containerPort": port}]}
            ],
        },
        "status": {
            "phase": "Running",
            "podIP": ip,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def service(**spec: Any) -> Object:
    spec.setdefault("selector", {"app": "web"})
    spec.setdefault("ports", [{"name": "web", "port": 80, "targetPort": "http"}])
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "test"},
        "spec": spec,
    }


def test_conditions_ports_and_grouping() -> None:
    """Ready/serving/terminating follow the pod; a named targetPort resolving to two numbers
    makes two slices; a pod lacking the name is left out of that port; slices validate."""
    pods = [
        pod("a", "10.244.1.5"),
        pod("b", "10.244.1.6", ready=False),
        pod("c", "10.244.1.7", deletionTimestamp="2026-01-01T00:00:00Z"),
        pod("d", "10.244.1.8", port=9090),
        {**pod("e", "10.244.1.9"), "status": {"phase": "Succeeded", "podIP": "10.244.1.9"}},
        {**pod("f", "10.244.1.10"), "metadata": {"name": "f", "namespace": "other",
                                                   "labels": {"app": "web"}}},
    ]  # fmt: skip
    slices = desired_slices(service(), pods)
    assert slices is not None and len(slices) == 2
    for s in slices:
        validate(s)
    by_port = {s["ports"][0]["port"]: s for s in slices}
    eps = {e["targetRef"]["name"]: e for e in by_port[8080]["endpoints"]}
    assert set(eps) == {"a", "b", "c"}
    assert eps["a"]["conditions"] == {"ready": True, "serving": True, "terminating": False}
    assert eps["b"]["conditions"] == {"ready": False, "serving": False, "terminating": False}
    assert eps["c"]["conditions"] == {"ready": False, "serving": True, "terminating": True}
    assert eps["a"]["nodeName"] == "lab-node1"
    assert [e["targetRef"]["name"] for e in by_port[9090]["endpoints"]] == ["d"]
    assert by_port[8080]["ports"] == [{"name": "web", "port": 8080, "protocol": "TCP"}]
    assert by_port[8080]["metadata"]["labels"]["kubernetes.io/service-name"] == "web"


def test_no_selector_is_left_alone_and_no_pods_gives_a_placeholder() -> None:
    """A selector-less service is the user's; a service selecting nothing gets one empty
    slice."""
    assert desired_slices(service(selector=None), [pod("a", "10.244.1.5")]) is None
    (empty,) = desired_slices(service(), []) or []
    assert empty["endpoints"] == [] and empty["ports"] == []


def test_more_than_100_endpoints_split() -> None:
    """250 pods make slices of 100, 100 and 50."""
    pods = [pod(f"p{i}", f"10.244.{i // 200}.{i % 200 + 1}") for i in range(250)]
    slices = desired_slices(service(), pods) or []
    assert sorted(len(s["endpoints"]) for s in slices) == [50, 100, 100]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path / "store.db", poll_interval=0.01)
    try:
        yield s
    finally:
        await s.close()


async def managed(store: SqliteStore) -> list[Object]:
    objects, _ = await store.list("EndpointSlice", "test")
    return objects


async def test_controller_follows_pods_and_service(store: SqliteStore) -> None:
    """Pods arriving, turning not ready and going away show in the slice; a pass with nothing
    new writes nothing; deleting the Service deletes its slices."""
    ctl = EndpointSliceController(store, resync_interval=3600)
    task = asyncio.create_task(ctl.run())
    try:
        await store.create(service())
        await store.create(pod("a", "10.244.1.5"))

        async def addresses() -> list[str] | None:
            slices = await managed(store)
            got = sorted(e["addresses"][0] for s in slices for e in s["endpoints"])
            return got or None

        assert await eventually(addresses) == ["10.244.1.5"]
        await store.create(pod("b", "10.244.1.6"))
        await eventually(lambda: _has(addresses, ["10.244.1.5", "10.244.1.6"]))
        live = await store.get("Pod", "test", "b")
        live["status"]["conditions"] = [{"type": "Ready", "status": "False"}]
        await store.update(live)

        async def b_not_ready() -> bool:
            for s in await managed(store):
                for e in s["endpoints"]:
                    if e["targetRef"]["name"] == "b":
                        return e["conditions"]["ready"] is False
            return False

        await eventually(b_not_ready)
        await ctl.wait_idle()
        writes = ctl.writes
        await ctl.reconcile("test", "web")
        assert ctl.writes == writes  # idempotent
        await store.delete("Pod", "test", "a")
        await eventually(lambda: _has(addresses, ["10.244.1.6"]))
        await store.delete("Service", "test", "web")

        async def gone() -> bool:
            return not await managed(store)

        await eventually(gone)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _has(fn: Any, want: list[str]) -> bool:
    return bool(await fn() == want)
