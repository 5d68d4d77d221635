"""The agent serves Hubble's Observer API (next to its REST socket, and on TCP when asked)
and Prometheus metrics: flow and endpoint series, and REST latency by route."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path

import aiohttp
import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pylium.agent.cells import Agent, AgentParams
from pylium.agent.client import AgentClient
from pylium.hubble.proto import observer_pb2, observer_pb2_grpc
from pylium.store import open_store
from tests.support import eventually
from tests.unit.agent.test_api import POD, node_object
from tests.unit.endpoint.fakes import FakeDatapath, FakeNetlink
from tests.unit.hubble.test_observer import FakeReader
from tests.unit.hubble.test_parser import event
from tests.unit.routing.test_component import FakeKernel


@pytest.fixture
async def agent():
    root = Path(tempfile.mkdtemp(prefix="pyl-to-"))  # short: unix socket paths max 107 bytes
    store = open_store(f"sqlite://{root}/store.db")
    await store.create(node_object("10.244.1.0/29"))
    netlink = FakeNetlink()
    netlink.add_pod_netns(POD)
    readers: list[FakeReader] = []

    def open_events(pin: Path, callback) -> FakeReader:
        readers.append(FakeReader(pin, callback))
        return readers[-1]

    a = Agent(
        AgentParams(
            node="n1",
            store_url="unused",
            socket=root / "agent.sock",
            state_dir=root / "state",
            bpf_dir=root / "bpf",
            hubble_listen="127.0.0.1:0",
            metrics_listen="127.0.0.1:0",
        ),
        store=store,
        netlink=netlink,
        datapath=FakeDatapath(),
        open_events=open_events,
        route_kernel=FakeKernel(),
    )
    try:
        await a.start()
        yield a, readers[0]
    finally:
        await a.stop()
        shutil.rmtree(root)


async def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as resp,
    ):
        assert resp.status == 200
        text = await resp.text()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_that_metrics_count_endpoints_flows_and_api_calls(agent):
    a, reader = agent
    client = AgentClient(a.params.socket, timeout=5)
    await asyncio.to_thread(client.create_endpoint, "c1", "eth0", POD)
    reader.push(event())
    port = a.metrics_port
    assert port
    got = await eventually(lambda: _with_flows(scrape(port)), timeout=5)
    assert got[("pylium_endpoint", ())] == 1
    put = (("method", "PUT"), ("path", "/v1/endpoints"), ("return_code", "201"))
    assert got[("pylium_agent_api_process_time_seconds_count", put)] == 1


async def _with_flows(scraped):
    got = await scraped
    processed = [k for k in got if k[0] == "hubble_flows_processed_total"]
    return got if processed else None


async def observer_state(target: str) -> tuple[int, list[str]]:
    """(flows seen, node names) as the Observer API at `target` reports them."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = observer_pb2_grpc.ObserverStub(channel)
        status = await stub.ServerStatus(observer_pb2.ServerStatusRequest())
        nodes = await stub.GetNodes(observer_pb2.GetNodesRequest())
        return status.seen_flows, [n.name for n in nodes.nodes]


async def test_that_the_observer_api_answers_on_the_socket_and_on_tcp(agent):
    a, reader = agent
    reader.push(event(), event())
    sock = a.params.socket.parent / "hubble.sock"
    assert a.hubble_port
    for target in (f"unix://{sock}", f"127.0.0.1:{a.hubble_port}"):

        async def seen(target: str = target) -> tuple[int, list[str]] | None:
            state = await observer_state(target)
            return state if state[0] == 2 else None

        assert await eventually(seen, timeout=5) == (2, ["n1"])
