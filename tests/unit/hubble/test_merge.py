"""Flows of several agents merge in time order; following picks up where history ended."""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from pylium.agent.client import AgentClient
from pylium.hubble.flow import Verdict
from pylium.hubble.merge import NodeSource, follow_flows, history
from pylium.hubble.observer import Observer, ObserverParams
from pylium.hubble.parser import FlowParser
from pylium.hubble.rest import add_routes
from tests.unit.hubble.flows import T0, make_flow
from tests.unit.hubble.test_parser import FakeLookup


class Node:
    def __init__(self, name: str, socket: Path) -> None:
        self.name = name
        self.socket = socket
        self.observer = Observer(
            ObserverParams(events_pin=Path("/nonexistent")), FlowParser(FakeLookup(), name)
        )
        self.runner: web.AppRunner | None = None

    def add(self, uuid: str, t: int, verdict: Verdict = Verdict.FORWARDED) -> None:
        self.observer.ring.append(
            make_flow(uuid=uuid, time_ns=T0 + t, node=self.name, verdict=verdict)
        )

    async def start(self) -> None:
        app = web.Application()
        add_routes(app, self.observer)
        self.runner = web.AppRunner(app, handle_signals=False)
        await self.runner.setup()
        await web.UnixSite(self.runner, str(self.socket)).start()

    async def stop(self) -> None:
        self.observer.ring.close()
        if self.runner is not None:
            await self.runner.cleanup()

    def source(self) -> NodeSource:
        return NodeSource(self.name, AgentClient(self.socket, timeout=5))


@pytest.fixture
async def nodes() -> AsyncIterator[list[Node]]:
    with tempfile.TemporaryDirectory() as tmp:
        made = [Node(f"lab-node{i}", Path(tmp) / f"n{i}.sock") for i in (1, 2)]
        for node in made:
            await node.start()
        try:
            yield made
        finally:
            for node in made:
                await node.stop()


def uuids(responses) -> list[str]:
    return [r["flow"]["uuid"] for r in responses]


async def test_that_history_merges_nodes_in_time_order_and_keeps_the_newest(nodes):
    n1, n2 = nodes
    for uuid, t in (("a", 1), ("c", 3), ("e", 5)):
        n1.add(uuid, t)
    for uuid, t in (("b", 2), ("d", 4)):
        n2.add(uuid, t)
    sources = [n1.source(), n2.source()]

    shown, failures = await asyncio.to_thread(history, sources, [], 4)

    assert failures == []
    assert uuids(shown) == ["b", "c", "d", "e"]
    assert [r["node_name"] for r in shown] == ["lab-node2", "lab-node1", "lab-node2", "lab-node1"]


async def test_that_history_passes_filters_and_reports_a_dead_node(nodes, tmp_path):
    n1, _ = nodes
    n1.add("a", 1)
    n1.add("x", 2, Verdict.DROPPED)
    dead = NodeSource("lab-node9", AgentClient(tmp_path / "none.sock", timeout=1))

    shown, failures = await asyncio.to_thread(
        history, [n1.source(), dead], [("verdict", "DROPPED")], 10
    )

    assert uuids(shown) == ["x"]
    assert [f.node for f in failures] == ["lab-node9"]


async def test_that_following_starts_after_what_history_showed(nodes):
    n1, n2 = nodes
    n1.add("a", 1)
    n1.add("b", 1)  # as old as "a", which --last 1 cut: not followed either
    sources = [n1.source(), n2.source()]
    shown, _ = await asyncio.to_thread(history, sources, [], 1)
    assert uuids(shown) == ["b"]

    stream = follow_flows(sources, [])
    pending = asyncio.ensure_future(asyncio.to_thread(next, stream))
    n1.add("c", 10**9)  # newer than the history
    first = await asyncio.wait_for(pending, 5)
    n2.add("d", time.time_ns() - T0)  # node 2 had no history: it follows from "now"
    second = await asyncio.wait_for(asyncio.to_thread(next, stream), 5)
    assert uuids([first, second]) == ["c", "d"]
    for node in nodes:
        await node.stop()  # every stream ends: so does the merged one
    assert await asyncio.wait_for(asyncio.to_thread(list, stream), 5) == []
