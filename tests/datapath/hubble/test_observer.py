"""The observer on the real datapath: BPF's from-container runs crafted packets with
BPF_PROG_TEST_RUN, its events cross the real ring buffer into an Observer reading it on the
asyncio loop, and come out as enriched flows, also through GET /v1/flows, the Observer gRPC API
and the flow metrics."""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from click.testing import CliRunner
from prometheus_client import CollectorRegistry

from pylium import paths
from pylium.cli.main import cli
from pylium.datapath.lxc import MAP_EVENTS, LxcObjects
from pylium.datapath.testrun import prog_run
from pylium.endpoint.model import Endpoint as AgentEndpoint
from pylium.hubble.endpoints import EndpointsLookup
from pylium.hubble.flow import (
    UDP,
    DropReason,
    TraceObservationPoint,
    TrafficDirection,
    Verdict,
)
from pylium.hubble.metrics import FlowMetrics
from pylium.hubble.observer import Observer, ObserverParams
from pylium.hubble.parser import FlowParser
from pylium.hubble.proto import flow_pb2, observer_pb2, observer_pb2_grpc
from pylium.hubble.rest import add_routes
from pylium.hubble.server import GrpcParams, hubble_server
from pylium.lab.record import LabRecord, save
from pylium.paths import BPFFS_ROOT
from tests.datapath.bpf import packets as pk
from tests.datapath.bpf.conftest import (
    A_IP,
    A_MAC,
    A_NODE_MAC,
    B_IP,
    CONFIG,
    OUTSIDE_IP,
    POD_CIDR,
    ROUTER_IP,
    load_objects,
)
from tests.support import eventually

pytestmark = pytest.mark.root

B_IFINDEX = 4242  # B's host-side veth in BPF's fixture (A owns ifindex 1, test-run's device)
B_IFNAME = "lxcb0000000000"


def agent_endpoint(ep_id: int, ip: str, pod: str, ifindex: int, ifname: str) -> AgentEndpoint:
    return AgentEndpoint(
        id=ep_id,
        container_id=f"c{ep_id}",
        ifname="eth0",
        netns=f"/var/run/netns/p{ep_id}",
        host_ifname=ifname,
        state="ready",
        created_at="2025-11-26T09:40:00Z",
        mtu=1500,
        pod_name=pod,
        pod_namespace="shop",
        ipv4=ip,
        host_ifindex=ifindex,
    )


ENDPOINTS = [
    agent_endpoint(101, A_IP, "client-1", 1, "lxca0000000000"),
    agent_endpoint(102, B_IP, "server-1", B_IFINDEX, B_IFNAME),
]


@pytest.fixture
def pin_dir() -> Iterator[Path]:
    path = BPFFS_ROOT / f"tf-{secrets.token_hex(4)}"
    path.mkdir(parents=True)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def objs(pin_dir: Path) -> Iterator[LxcObjects]:
    with load_objects(pin_dir) as loaded:
        yield loaded


@pytest.fixture
async def observer(pin_dir: Path, objs: LxcObjects) -> AsyncIterator[Observer]:
    lookup = EndpointsLookup(lambda: ENDPOINTS, router_ip=ROUTER_IP, pod_cidr=POD_CIDR)
    obs = Observer(
        ObserverParams(events_pin=pin_dir / MAP_EVENTS, capacity=1000, batch=64),
        FlowParser(lookup, "lab-node1"),
    )
    await obs.start()
    try:
        yield obs
    finally:
        await obs.stop()


def from_a(l3: bytes) -> bytes:
    return pk.ethernet(A_MAC, A_NODE_MAC, pk.ETH_P_IP, l3)


async def flows_seen(observer: Observer, count: int):
    async def enough():
        return list(observer.ring) if len(observer.ring) >= count else None

    return await eventually(enough, timeout=5)


async def test_that_a_packet_to_a_local_pod_becomes_a_forwarded_flow_between_named_pods(
    objs, observer
):
    prog_run(objs.from_container, from_a(pk.udp(A_IP, B_IP, 5000, 53)))

    (flow,) = await flows_seen(observer, 1)
    assert flow.verdict == Verdict.FORWARDED
    assert flow.IP is not None
    assert (flow.IP.source, flow.IP.destination) == (A_IP, B_IP)
    assert flow.l4 == UDP(5000, 53)
    assert (flow.source.namespace, flow.source.pod_name, flow.source.ID) == (
        "shop",
        "client-1",
        101,
    )
    assert (flow.destination.pod_name, flow.destination.ID) == ("server-1", 102)
    assert flow.trace_observation_point == TraceObservationPoint.TO_ENDPOINT
    assert flow.traffic_direction == TrafficDirection.EGRESS
    assert (flow.interface.index, flow.interface.name) == (B_IFINDEX, B_IFNAME)
    assert flow.node_name == "lab-node1" and flow.uuid


async def test_that_drops_carry_ciliums_reason_and_who_was_involved(objs, observer):
    prog_run(objs.from_container, from_a(pk.udp("10.244.1.66", B_IP, 5000, 53)))  # spoofed
    prog_run(objs.from_container, from_a(pk.tcp(A_IP, "10.244.1.99", 40000, 80, pk.TCP_SYN)))

    spoofed, no_pod = await flows_seen(observer, 2)
    assert spoofed.verdict == no_pod.verdict == Verdict.DROPPED
    assert (spoofed.drop_reason, spoofed.drop_reason_desc) == (132, DropReason.INVALID_SOURCE_IP)
    assert spoofed.IP is not None
    assert (spoofed.IP.source, spoofed.IP.destination) == ("10.244.1.66", B_IP)
    assert spoofed.source.pod_name == "" and spoofed.destination.pod_name == "server-1"
    assert no_pod.drop_reason_desc == DropReason.NO_MATCHING_LOCAL_CONTAINER_FOUND
    assert no_pod.source.pod_name == "client-1"
    assert no_pod.to_json()["l4"] == {
        "TCP": {"source_port": 40000, "destination_port": 80, "flags": {"SYN": True}}
    }


async def test_that_a_burst_is_read_in_batches_into_a_bounded_ring(objs, observer):
    # 1500 drops in one test run: more than the ring keeps, many loop wake-ups of 64 events.
    prog_run(objs.from_container, from_a(pk.udp("10.244.1.66", B_IP, 5000, 53)), repeat=1500)

    async def all_read():
        return observer.ring.seen == 1500

    await eventually(all_read, timeout=10)
    assert len(observer.ring) == 1000
    assert observer.status().lost == {
        "PERF_EVENT_RING_BUFFER": 0,
        "OBSERVER_EVENTS_QUEUE": 0,
        "HUBBLE_RING_BUFFER": 0,
    }


async def test_that_events_a_full_ring_buffer_refused_are_counted(objs, observer):
    # One test run of 8000 drops: the loop cannot read in between, and the 256 KiB ring holds
    # fewer than 5000 events; the datapath counts the rest.
    prog_run(objs.from_container, from_a(pk.udp("10.244.1.66", B_IP, 5000, 53)), repeat=8000)

    async def all_accounted() -> bool:
        lost = observer.status().lost["PERF_EVENT_RING_BUFFER"]
        return lost > 0 and observer.ring.seen + lost == 8000

    await eventually(all_accounted, timeout=10)


async def test_that_flow_export_off_reports_drops_but_no_traces(pin_dir: Path):
    with load_objects(pin_dir, replace(CONFIG, trace_events=False)) as objs:
        lookup = EndpointsLookup(lambda: ENDPOINTS, router_ip=ROUTER_IP, pod_cidr=POD_CIDR)
        obs = Observer(ObserverParams(events_pin=pin_dir / MAP_EVENTS), FlowParser(lookup, "n1"))
        await obs.start()
        try:
            prog_run(objs.from_container, from_a(pk.udp(A_IP, B_IP, 5000, 53)))  # new: traced
            prog_run(objs.from_container, from_a(pk.udp("10.244.1.66", B_IP, 5000, 53)))
            # The drop comes after the forwarded packet: once it is read, nothing else waits.
            flows = await flows_seen(obs, 1)
            assert [f.verdict for f in flows] == [Verdict.DROPPED]
        finally:
            await obs.stop()


async def test_that_get_flows_serves_the_datapaths_flows_filtered(objs, observer):
    prog_run(objs.from_container, from_a(pk.udp(A_IP, B_IP, 5000, 53)))
    prog_run(objs.from_container, from_a(pk.udp("10.244.1.66", B_IP, 5000, 53)))
    prog_run(objs.from_container, from_a(pk.tcp(A_IP, OUTSIDE_IP, 40000, 443, pk.TCP_SYN)))
    await flows_seen(observer, 3)
    app = web.Application()
    add_routes(app, observer)

    async with TestClient(TestServer(app)) as client:
        dropped = await (await client.get("/v1/flows?verdict=DROPPED")).json()
        to_server = await (await client.get("/v1/flows?to-pod=shop/server&protocol=udp")).json()
        to_world = await (await client.get("/v1/flows?ip=192.0.2.0/24")).json()

    assert [r["flow"]["drop_reason_desc"] for r in dropped] == ["INVALID_SOURCE_IP"]
    assert [r["flow"]["verdict"] for r in to_server] == ["FORWARDED", "DROPPED"]
    (world,) = to_world
    assert world["flow"]["destination"] == {"identity": 2, "labels": ["reserved:world"]}
    assert world["flow"]["trace_observation_point"] == "TO_STACK"
    assert world["flow"]["source"]["pod_name"] == "client-1"


@pytest.fixture
async def lab_of_one_node(observer: Observer) -> AsyncIterator[str]:
    """A lab record whose only node's agent socket serves `observer`'s flows."""
    lab = f"tf-{secrets.token_hex(4)}"
    rec = LabRecord.new(lab, 1)
    node_dir = paths.RUN_ROOT / f"{lab}-sock"
    node_dir.mkdir(parents=True)
    rec.nodes[0].agentSocket = str(node_dir / "agent.sock")
    app = web.Application()
    add_routes(app, observer)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    try:
        await web.UnixSite(runner, rec.nodes[0].agentSocket).start()
        save(rec)
        yield lab
    finally:
        await runner.cleanup()
        shutil.rmtree(paths.lab_dir(lab), ignore_errors=True)
        shutil.rmtree(node_dir, ignore_errors=True)


async def observe(lab: str, *args: str) -> list[str]:
    result = await asyncio.to_thread(
        CliRunner().invoke, cli, ["--lab", lab, "observe", *args], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    return result.output.splitlines()


async def test_that_pylium_observe_prints_the_labs_flows(objs, observer, lab_of_one_node):
    prog_run(objs.from_container, from_a(pk.udp(A_IP, B_IP, 5000, 53)))
    prog_run(objs.from_container, from_a(pk.udp("10.244.1.66", B_IP, 5000, 53)))
    await flows_seen(observer, 2)

    compact_lines = await observe(lab_of_one_node)
    json_lines = await observe(lab_of_one_node, "--verdict", "DROPPED", "-o", "json")

    assert [line.split(": ", 1)[1] for line in compact_lines] == [
        "shop/client-1:5000 (unknown) -> shop/server-1:53 (unknown) to-endpoint FORWARDED (UDP)",
        "10.244.1.66:5000 (unknown) -> shop/server-1:53 (unknown) Invalid source ip DROPPED (UDP)",
    ]
    (line,) = json_lines
    resp = json.loads(line)
    assert set(resp) == {"flow", "node_name", "time"}
    assert resp["flow"]["drop_reason_desc"] == "INVALID_SOURCE_IP"


async def test_that_pylium_observe_follows_new_flows_until_the_agent_stops(
    objs, observer, lab_of_one_node
):
    prog_run(objs.from_container, from_a(pk.udp(A_IP, B_IP, 5000, 53)))
    await flows_seen(observer, 1)
    following = asyncio.ensure_future(
        observe(lab_of_one_node, "--follow", "--last", "1", "--protocol", "tcp", "-o", "json")
    )

    async def subscribed():
        return observer.status().seen_flows and observer.ring.follower_count

    await eventually(subscribed, timeout=5)
    prog_run(objs.from_container, from_a(pk.tcp(A_IP, OUTSIDE_IP, 40000, 443, pk.TCP_SYN)))
    prog_run(objs.from_container, from_a(pk.udp(A_IP, OUTSIDE_IP, 5000, 53)))  # not tcp
    await flows_seen(observer, 3)
    observer.ring.close()  # as when the agent stops: the stream ends, and so does observe

    lines = await asyncio.wait_for(following, 10)
    assert [json.loads(line)["flow"]["l4"] for line in lines] == [
        {"TCP": {"source_port": 40000, "destination_port": 443, "flags": {"SYN": True}}}
    ]


async def test_that_the_grpc_api_and_flow_metrics_see_the_datapaths_flows(objs, observer):
    registry = CollectorRegistry()
    FlowMetrics(registry).attach(observer)
    server = hubble_server(GrpcParams(None, "127.0.0.1:0"), lambda: observer, "lab-node1")
    await server.start()
    try:
        prog_run(objs.from_container, from_a(pk.udp(A_IP, B_IP, 5000, 53)))
        prog_run(objs.from_container, from_a(pk.udp("10.244.1.66", B_IP, 5000, 53)))
        await flows_seen(observer, 2)
        async with grpc.aio.insecure_channel(server.target) as channel:
            stub = observer_pb2_grpc.ObserverStub(channel)
            request = observer_pb2.GetFlowsRequest(
                whitelist=[flow_pb2.FlowFilter(verdict=[flow_pb2.DROPPED])]
            )
            (dropped,) = [r async for r in stub.GetFlows(request)]
    finally:
        await server.stop()
    assert dropped.flow.drop_reason_desc == flow_pb2.INVALID_SOURCE_IP
    assert dropped.flow.destination.pod_name == "server-1"
    assert dropped.node_name == "lab-node1"
    drops = registry.get_sample_value(
        "hubble_drop_total", {"reason": "INVALID_SOURCE_IP", "protocol": "UDP"}
    )
    assert drops == 1
