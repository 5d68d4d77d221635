"""The lab scheduler: least-loaded node, ties by node order, pinned pods left alone, binds that
lose a race retried from the watch."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pylium.lab.scheduler import Scheduler, node_order, pick_node
from pylium.store import Store, open_store
from tests.support import eventually


def test_pick_node_prefers_the_least_loaded_then_node_order() -> None:
    nodes = ["l-node10", "l-node2", "l-node1"]
    assert sorted(nodes, key=node_order) == ["l-node1", "l-node2", "l-node10"]
    assert pick_node(nodes, {}) == "l-node1"
    assert pick_node(nodes, {"l-node1": 1}) == "l-node2"
    assert pick_node(nodes, {"l-node1": 1, "l-node2": 1}) == "l-node10"
    assert pick_node(nodes, {"l-node1": 2, "l-node2": 1, "l-node10": 1}) == "l-node2"
    assert pick_node([], {}) is None


def pod(name: str, node: str | None = None, phase: str | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"containers": [{"name": "c", "image": "x"}]},
    }
    if node:
        obj["spec"]["nodeName"] = node
    if phase:
        obj["status"] = {"phase": phase}
    return obj


def node(name: str, unschedulable: bool = False) -> dict[str, Any]:
    spec = {"unschedulable": True} if unschedulable else {}
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, "spec": spec}


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = open_store(f"sqlite://{tmp_path}/store.db")
    try:
        yield s
    finally:
        await s.close()


async def _placement(store: Store) -> dict[str, str | None]:
    pods, _ = await store.list("Pod", "default")
    return {p["metadata"]["name"]: p["spec"].get("nodeName") for p in pods}


async def test_a_burst_of_pods_spreads_evenly(store: Store) -> None:
    for n in ("n1", "n2", "n3"):
        await store.create(node(n))
    await store.create(node("n4", unschedulable=True))
    await store.create(pod("pinned", "n1"))
    await store.create(pod("done", "n2", phase="Succeeded"))  # no longer counts
    task = asyncio.create_task(Scheduler(store).run())
    try:
        for i in range(5):
            await store.create(pod(f"p{i}"))

        async def all_bound() -> dict[str, str | None] | None:
            placed = await _placement(store)
            return placed if all(placed.values()) else None

        placed = await eventually(all_bound, timeout=5)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert placed["pinned"] == "n1" and placed["done"] == "n2"
    load: dict[str, int] = {}
    for name, where in placed.items():
        if name != "done" and where is not None:
            load[where] = load.get(where, 0) + 1
    assert load == {"n1": 2, "n2": 2, "n3": 2}


async def test_a_pod_made_before_any_node_is_bound_when_one_appears(store: Store) -> None:
    await store.create(pod("early"))
    task = asyncio.create_task(Scheduler(store).run())
    try:
        await store.create(node("n1"))

        async def bound() -> bool:
            return (await _placement(store)) == {"early": "n1"}

        await eventually(bound, timeout=5)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
