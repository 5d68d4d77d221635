"""The relay over two in-process node servers: merged history, first/last N across nodes,
follow, and a node that is down."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import grpc
import pytest

from pylium.hubble.convert import set_time
from pylium.hubble.observer import LOST_DECODE, Observer, ObserverParams
from pylium.hubble.parser import FlowParser
from pylium.hubble.proto import flow_pb2, observer_pb2, observer_pb2_grpc, relay_pb2
from pylium.hubble.relay import Peer, Relay
from pylium.hubble.server import LOST_METADATA, GrpcParams, hubble_server
from tests.support import eventually
from tests.unit.hubble.flows import T0, UDP, WEB1, WEB2, make_flow
from tests.unit.hubble.test_parser import FakeLookup


def node_observer(node: str, times: list[int]) -> Observer:
    obs = Observer(
        ObserverParams(events_pin=Path("/nonexistent"), capacity=100),
        FlowParser(FakeLookup(), node),
    )
    for t in times:
        obs.ring.append(make_flow(time_ns=T0 + t, uuid=f"{node}-{t}", node=node))
    return obs


@pytest.fixture
async def lab(tmp_path):
    """Two nodes (flows at odd and even times) and a relay over them plus a dead node."""
    observers = {
        "n1": node_observer("n1", [1, 3, 5, 7]),
        "n2": node_observer("n2", [2, 4, 6]),
    }
    servers = [
        hubble_server(GrpcParams(tmp_path / f"{name}.sock"), lambda o=obs: o, name)
        for name, obs in observers.items()
    ]
    peers = [Peer(name, f"unix://{tmp_path / name}.sock") for name in observers]
    relay = Relay(GrpcParams(tmp_path / "relay.sock"), peers)
    for server in servers:
        await server.start()
    await relay.start()
    try:
        async with grpc.aio.insecure_channel(relay.server.target) as channel:
            yield observer_pb2_grpc.ObserverStub(channel), observers, tmp_path
    finally:
        await relay.stop()
        for server in servers:
            await server.stop()


async def uuids(stub, **request) -> list[str]:
    return [
        r.flow.uuid
        async for r in stub.GetFlows(observer_pb2.GetFlowsRequest(**request))
        if r.HasField("flow")
    ]


async def test_that_history_is_merged_in_time_order(lab):
    stub, _, _ = lab
    assert await uuids(stub) == ["n1-1", "n2-2", "n1-3", "n2-4", "n1-5", "n2-6", "n1-7"]
    assert await uuids(stub, number=3) == ["n1-5", "n2-6", "n1-7"]
    assert await uuids(stub, number=3, first=True) == ["n1-1", "n2-2", "n1-3"]


async def test_that_filters_reach_the_nodes(lab):
    stub, observers, _ = lab
    observers["n2"].ring.append(
        make_flow(WEB2, WEB1, UDP(1, 53), time_ns=T0 + 8, uuid="udp", node="n2")
    )
    black = [flow_pb2.FlowFilter(protocol=["tcp"])]
    assert await uuids(stub, blacklist=black) == ["udp"]
    req = {"whitelist": [flow_pb2.FlowFilter(node_name=["n2"])]}
    assert await uuids(stub, **req) == ["n2-2", "n2-4", "n2-6", "udp"]


async def test_that_follow_sends_the_backlog_then_every_nodes_new_flows(lab):
    stub, observers, _ = lab
    call = stub.GetFlows(observer_pb2.GetFlowsRequest(number=2, follow=True))
    got: list[str] = []

    async def read():
        async for resp in call:
            got.append(resp.flow.uuid)

    reader = asyncio.create_task(read())
    try:

        async def count(n):
            return len(got) >= n

        await eventually(lambda: count(2), timeout=5)
        for obs in observers.values():
            await eventually(lambda o=obs: _async(o.ring.follower_count == 1), timeout=5)
        observers["n2"].ring.append(make_flow(time_ns=T0 + 10, uuid="new-n2", node="n2"))
        observers["n1"].ring.append(make_flow(time_ns=T0 + 11, uuid="new-n1", node="n1"))
        await eventually(lambda: count(4), timeout=5)
        assert got[:2] == ["n2-6", "n1-7"]
        assert sorted(got[2:]) == ["new-n1", "new-n2"]
    finally:
        call.cancel()
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)


async def _async(value):
    return value


async def test_that_status_and_nodes_sum_over_the_nodes(lab):
    stub, observers, _ = lab
    observers["n1"].decode_errors = 2
    observers["n2"].decode_errors = 1
    call = stub.ServerStatus(observer_pb2.ServerStatusRequest())
    status = await call
    assert (status.num_flows, status.max_flows, status.seen_flows) == (7, 200, 7)
    assert status.num_connected_nodes.value == 2
    assert status.num_unavailable_nodes.value == 0
    assert f"{LOST_DECODE}=3" in dict(await call.trailing_metadata())[LOST_METADATA]
    nodes = await stub.GetNodes(observer_pb2.GetNodesRequest())
    assert [(n.name, n.state, n.num_flows) for n in nodes.nodes] == [
        ("n1", relay_pb2.NODE_CONNECTED, 4),
        ("n2", relay_pb2.NODE_CONNECTED, 3),
    ]
    namespaces = await stub.GetNamespaces(observer_pb2.GetNamespacesRequest())
    assert [n.namespace for n in namespaces.namespaces] == ["default"]


async def test_that_a_dead_node_is_reported_not_fatal(tmp_path):
    live = node_observer("n1", [1])
    server = hubble_server(GrpcParams(tmp_path / "n1.sock"), lambda: live, "n1")
    peers = [Peer("n1", f"unix://{tmp_path}/n1.sock"), Peer("gone", f"unix://{tmp_path}/x.sock")]
    relay = Relay(GrpcParams(tmp_path / "relay.sock"), peers)
    await server.start()
    await relay.start()
    try:
        async with grpc.aio.insecure_channel(relay.server.target) as channel:
            stub = observer_pb2_grpc.ObserverStub(channel)
            since = observer_pb2.GetFlowsRequest()
            set_time(since.since, T0)
            responses = [r async for r in stub.GetFlows(since)]
            assert responses[0].node_status.state_change == relay_pb2.NODE_UNAVAILABLE
            assert list(responses[0].node_status.node_names) == ["gone"]
            assert [r.flow.uuid for r in responses[1:]] == ["n1-1"]
            status = await stub.ServerStatus(observer_pb2.ServerStatusRequest())
            assert list(status.unavailable_nodes) == ["gone"]
            assert status.num_unavailable_nodes.value == 1
    finally:
        await relay.stop()
        await server.stop()


async def test_that_the_relay_process_serves_and_stops_on_sigterm(tmp_path):
    node = node_observer("n1", [1, 2])
    server = hubble_server(GrpcParams(tmp_path / "n1.sock"), lambda: node, "n1")
    await server.start()
    relay_sock = tmp_path / "relay.sock"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pylium.hubble.relay",
        "--peer",
        f"n1=unix://{tmp_path}/n1.sock",
        "--socket",
        str(relay_sock),
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await eventually(lambda: _async(relay_sock.exists()), timeout=10)
        async with grpc.aio.insecure_channel(f"unix://{relay_sock}") as channel:
            stub = observer_pb2_grpc.ObserverStub(channel)
            assert await uuids(stub, number=1) == ["n1-2"]
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 10) == 0
        assert not relay_sock.exists()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await server.stop()


async def test_that_pylium_observe_reads_the_relay_over_grpc(lab):
    _, _, tmp_path = lab
    cli = "from pylium.cli.main import main; main()"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        cli,
        "observe",
        "--server",
        f"unix://{tmp_path}/relay.sock",
        "--last",
        "2",
        "-o",
        "json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, err.decode()
    lines = [json.loads(line) for line in out.decode().splitlines()]
    assert [line["flow"]["uuid"] for line in lines] == ["n2-6", "n1-7"]
    assert lines[1]["node_name"] == "n1"
    assert set(lines[1]) == {"flow", "node_name", "time"}
