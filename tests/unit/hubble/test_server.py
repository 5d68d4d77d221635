"""The Observer gRPC API on a real grpc.aio server over a unix socket, spoken to as a Hubble
client would: Hubble's own request bytes, sent unchanged, and the stream decoded."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

import grpc
import pytest

from pylium.hubble.convert import set_time
from pylium.hubble.flow import TCP, CiliumEventType, Endpoint, TrafficDirection, Verdict
from pylium.hubble.observer import LOST_DECODE, LOST_FOLLOWERS, Observer, ObserverParams
from pylium.hubble.parser import FlowParser
from pylium.hubble.proto import flow_pb2, observer_pb2, observer_pb2_grpc
from pylium.hubble.server import LOST_METADATA, GrpcParams, hubble_server
from tests.support import eventually
from tests.unit.hubble.flows import DB, T0, UDP, WEB1, WEB2, ICMPv4, make_flow
from tests.unit.hubble.test_parser import FakeLookup

GOLDEN = Path(__file__).parent / "golden"
A = Endpoint(ID=1, identity=300, namespace="x", labels=("k8s:app=echo",), pod_name="a")
B = Endpoint(ID=2, identity=301, namespace="y", pod_name="b")
IPS = {A: "10.0.1.15", B: "10.0.2.27"}


def xflow(src, dst, l4, uuid, verdict=Verdict.FORWARDED, t=0, direction=TrafficDirection.EGRESS):
    base = make_flow(WEB1, WEB2, l4, verdict=verdict, time_ns=T0 + t, uuid=uuid, node="lab/node-1")
    ip = dataclasses.replace(base.IP, source=IPS[src], destination=IPS[dst])
    return dataclasses.replace(
        base,
        source=src,
        destination=dst,
        IP=ip,
        traffic_direction=direction,
        event_type=CiliumEventType(1 if verdict == Verdict.DROPPED else 4),
    )


FLOWS = [
    xflow(A, B, TCP(41234, 8080), "a-b", t=1),
    xflow(B, A, ICMPv4(8, 0), "b-a-icmp", t=2),
    xflow(
        A, B, UDP(5000, 8080), "a-b-drop", Verdict.DROPPED, t=3, direction=TrafficDirection.INGRESS
    ),
    xflow(B, A, TCP(8080, 41234), "b-a", t=4),
    make_flow(WEB1, DB, TCP(1, 2), time_ns=T0 + 5, uuid="web-db"),
]


@pytest.fixture
def observer() -> Observer:
    obs = Observer(
        ObserverParams(events_pin=Path("/nonexistent"), capacity=100),
        FlowParser(FakeLookup(), "lab/node-1"),
    )
    for flow in FLOWS:
        obs.ring.append(flow)
    return obs


@pytest.fixture
async def channel(observer, tmp_path):
    server = hubble_server(GrpcParams(tmp_path / "hubble.sock"), lambda: observer, "lab/node-1")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(server.target) as ch:
            yield ch
    finally:
        await server.stop()


def async_(check):
    async def run():
        return check()

    return run


def raw_get_flows(channel, name: str):
    """GetFlows with Hubble's request bytes, untouched (identity serializers)."""
    call = channel.unary_stream("/observer.Observer/GetFlows")
    return call((GOLDEN / f"getflowsrequest-{name}.bin").read_bytes())


async def collect(call, count=None):
    out = []
    async for raw in call:
        out.append(observer_pb2.GetFlowsResponse.FromString(raw))
        if count is not None and len(out) == count:
            call.cancel()
            break
    return out


async def test_that_the_last_100_request_gets_every_flow_oldest_first(channel):
    responses = await collect(raw_get_flows(channel, "last-100"))
    assert [r.flow.uuid for r in responses] == [f.uuid for f in FLOWS]
    first = responses[0]
    assert first.node_name == "lab/node-1"
    assert first.time.seconds * 10**9 + first.time.nanos == T0 + 1
    assert first.flow.l4.TCP.destination_port == 8080
    assert list(first.flow.source.labels) == ["k8s:app=echo"]


async def test_that_the_first_n_label_port_request_narrows(channel):
    responses = await collect(raw_get_flows(channel, "first-ns-port-label"))
    # source label app=echo, to port 8080, drop events, INGRESS, node lab/*
    assert [r.flow.uuid for r in responses] == ["a-b-drop"]


async def test_that_the_follow_request_sends_backlog_then_new_flows(channel, observer):
    call = raw_get_flows(channel, "follow-pod-verdict")
    got = []

    async def read():
        async for raw in call:
            got.append(observer_pb2.GetFlowsResponse.FromString(raw))

    reader = asyncio.create_task(read())
    try:
        # whitelist: from x/a with FORWARDED/DROPPED, or to x/a; blacklist icmp
        await eventually(async_(lambda: len(got) >= 3), timeout=5)
        assert [r.flow.uuid for r in got] == ["a-b", "a-b-drop", "b-a"]
        observer.ring.append(xflow(B, A, ICMPv4(0, 0), "late-icmp", t=10))
        observer.ring.append(xflow(A, B, TCP(1, 2), "late", t=11))
        await eventually(async_(lambda: len(got) >= 4), timeout=5)
        assert got[3].flow.uuid == "late"
    finally:
        call.cancel()
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)


async def test_that_a_slow_follower_is_told_what_it_lost(channel, observer):
    stub = observer_pb2_grpc.ObserverStub(channel)
    call = stub.GetFlows(observer_pb2.GetFlowsRequest(follow=True))
    it = call.__aiter__()
    await eventually(async_(lambda: observer.ring.follower_count == 1), timeout=5)
    for i in range(1100):  # more than a follower queue holds (1024)
        observer.ring.append(make_flow(time_ns=T0 + 100 + i, uuid=f"n{i}"))
    lost: dict[str, int] = {}
    flows: list[str] = []

    async def read_until(uuid):
        while uuid not in flows:
            resp = await asyncio.wait_for(it.__anext__(), 5)
            if resp.HasField("lost_events"):
                name = flow_pb2.LostEventSource.Name(resp.lost_events.source)
                lost[name] = lost.get(name, 0) + resp.lost_events.num_events_lost
            else:
                flows.append(resp.flow.uuid)

    await read_until("n1023")  # the queue's worth; the rest was lost
    observer.decode_errors += 2
    observer.ring.append(make_flow(time_ns=T0 + 5000, uuid="last"))
    await read_until("last")
    call.cancel()
    assert lost[LOST_FOLLOWERS] == observer.ring.follower_lost > 0
    assert lost[LOST_DECODE] == 2


async def test_that_since_until_and_filters_bound_the_answer(channel):
    stub = observer_pb2_grpc.ObserverStub(channel)
    req = observer_pb2.GetFlowsRequest(
        blacklist=[flow_pb2.FlowFilter(protocol=["udp"])],
        whitelist=[flow_pb2.FlowFilter(source_pod=["x/"]), flow_pb2.FlowFilter(source_pod=["y/b"])],
    )
    set_time(req.since, T0 + 2)
    set_time(req.until, T0 + 4)
    got = [r.flow.uuid async for r in stub.GetFlows(req)]
    assert got == ["b-a-icmp", "b-a"]
    first2 = [
        r.flow.uuid async for r in stub.GetFlows(observer_pb2.GetFlowsRequest(number=2, first=True))
    ]
    assert first2 == ["a-b", "b-a-icmp"]


async def test_that_a_bad_request_is_invalid_argument(channel):
    stub = observer_pb2_grpc.ObserverStub(channel)
    bad = observer_pb2.GetFlowsRequest(whitelist=[flow_pb2.FlowFilter(destination_port=["http"])])
    with pytest.raises(grpc.aio.AioRpcError) as err:
        [r async for r in stub.GetFlows(bad)]
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_that_server_status_has_hubbles_shape_and_the_lost_counters(channel, observer):
    observer.decode_errors = 3
    observer._started_ns = time.monotonic_ns() - 10**9  # as if started a second ago
    observer.ring.append(make_flow(time_ns=time.time_ns(), uuid="now"))
    stub = observer_pb2_grpc.ObserverStub(channel)
    call = stub.ServerStatus(observer_pb2.ServerStatusRequest())
    status = await call
    golden = observer_pb2.ServerStatusResponse.FromString(
        (GOLDEN / "serverstatusresponse.bin").read_bytes()
    )
    assert {f.name for f, _ in golden.ListFields()} <= {f.name for f, _ in status.ListFields()}
    assert (status.num_flows, status.max_flows, status.seen_flows) == (6, 100, 6)
    assert status.uptime_ns >= 10**9
    assert status.flows_rate == pytest.approx(1 / 60)
    trailers = dict(await call.trailing_metadata())
    assert f"{LOST_DECODE}=3" in trailers[LOST_METADATA]


async def test_that_nodes_and_namespaces_are_listed(channel):
    stub = observer_pb2_grpc.ObserverStub(channel)
    nodes = await stub.GetNodes(observer_pb2.GetNodesRequest())
    assert [(n.name, n.num_flows) for n in nodes.nodes] == [("lab/node-1", 5)]
    namespaces = await stub.GetNamespaces(observer_pb2.GetNamespacesRequest())
    assert [n.namespace for n in namespaces.namespaces] == ["default", "prod", "x", "y"]


async def test_that_calls_wait_for_the_observer(tmp_path):
    server = hubble_server(GrpcParams(tmp_path / "h.sock", listen="127.0.0.1:0"), lambda: None, "n")
    await server.start()
    try:
        assert server.port > 0
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as ch:
            stub = observer_pb2_grpc.ObserverStub(ch)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.ServerStatus(observer_pb2.ServerStatusRequest())
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop()
    assert not (tmp_path / "h.sock").exists()
