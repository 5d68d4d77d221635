"""GET /v1/flows and /v1/flows/status on a real aiohttp server, over a ring filled by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from pylium.hubble.flow import TCP, Verdict
from pylium.hubble.observer import (
    LOST_DATAPATH,
    LOST_DECODE,
    LOST_FOLLOWERS,
    Observer,
    ObserverParams,
)
from pylium.hubble.parser import FlowParser
from pylium.hubble.rest import add_routes
from tests.unit.hubble.flows import DB, T0, UDP, WEB1, WEB2, make_flow
from tests.unit.hubble.test_parser import FakeLookup

FLOWS = [
    make_flow(WEB1, WEB2, TCP(43210, 80), time_ns=T0 + 1, uuid="a"),
    make_flow(WEB2, DB, UDP(5000, 53), time_ns=T0 + 2, uuid="b"),
    make_flow(DB, WEB1, TCP(1, 2), verdict=Verdict.DROPPED, time_ns=T0 + 3, uuid="c"),
]


@pytest.fixture
def observer() -> Observer:
    obs = Observer(
        ObserverParams(events_pin=Path("/nonexistent"), capacity=100),
        FlowParser(FakeLookup(), "lab-node1"),
    )
    for flow in FLOWS:
        obs.ring.append(flow)
    return obs


@pytest.fixture
async def client(observer):
    app = web.Application()
    add_routes(app, observer)
    async with TestClient(TestServer(app)) as c:
        yield c


async def get_json(client, url):
    resp = await client.get(url)
    assert resp.status == 200, await resp.text()
    return await resp.json()


def uuids(lines) -> list[str]:
    return [line["flow"]["uuid"] for line in lines]


async def test_that_flows_are_get_flows_responses_oldest_first(client):
    lines = await get_json(client, "/v1/flows")
    assert uuids(lines) == ["a", "b", "c"]
    assert set(lines[0]) == {"flow", "node_name", "time"}
    assert lines[0]["flow"]["source"]["pod_name"] == "web-1"
    assert lines[0]["time"] == "2025-11-26T09:40:00.000000001Z"


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("last=2", ["b", "c"]),
        ("last=0", []),
        ("verdict=DROPPED", ["c"]),
        ("pod=web-1&last=1", ["c"]),
        ("from-pod=web-1", ["a"]),
        ("namespace=prod&protocol=udp", ["b"]),
        ("port=53", ["b"]),
        ("not-protocol=tcp", ["b"]),
        ("since=2025-11-26T09:40:00.000000002Z", ["b", "c"]),
        ("until=2025-11-26T09:40:00.000000002Z", ["a", "b"]),
        ("last=2&first=1", ["a", "b"]),
        ("drop-reason-desc=INVALID_SOURCE_IP", ["c"]),
        ("from-identity=5678", ["b"]),
    ],
)
async def test_that_the_query_filters_and_limits(client, query, expected):
    assert uuids(await get_json(client, f"/v1/flows?{query}")) == expected


@pytest.mark.parametrize(
    "query",
    [
        "last=-1",
        "last=x",
        "verdict=maybe",
        "port=http",
        "since=yesterday",
        "until=x",
        "first=1&follow=1",
        "traffic-direction=sideways",
    ],
)
async def test_that_a_bad_query_is_a_400_with_cni_code_7(client, query):
    resp = await client.get(f"/v1/flows?{query}")
    assert resp.status == 400
    body = await resp.json()
    assert body["code"] == 7 and body["msg"]


async def test_that_follow_streams_the_backlog_then_new_matching_flows(client, observer):
    resp = await client.get("/v1/flows?follow=1&last=1&not-verdict=FORWARDED")
    assert resp.headers["Content-Type"] == "application/x-ndjson"
    first = json.loads(await resp.content.readline())
    assert first["flow"]["uuid"] == "c"
    observer.ring.append(make_flow(uuid="d", time_ns=T0 + 4))  # forwarded: filtered out
    observer.ring.append(make_flow(verdict=Verdict.DROPPED, uuid="e", time_ns=T0 + 5))
    assert json.loads(await resp.content.readline())["flow"]["uuid"] == "e"
    observer.ring.close()  # the agent stops: the stream ends
    assert await resp.content.readline() == b""


async def test_that_a_follower_that_fell_behind_is_told_how_many_it_lost(client, observer):
    resp = await client.get("/v1/flows?follow=1&last=1")
    assert json.loads(await resp.content.readline())["flow"]["uuid"] == "c"
    for i in range(1100):  # more than a follower queue holds, with no await in between
        observer.ring.append(make_flow(uuid=f"n{i}", time_ns=T0 + 10 + i))
    lines = []
    while len(lines) < 2:
        lines.append(json.loads(await resp.content.readline()))
    assert lines[0] == {
        "lost_events": {"source": LOST_FOLLOWERS, "num_events_lost": "76"},
        "node_name": "lab-node1",
        "time": lines[0]["time"],
    }
    assert lines[1]["flow"]["uuid"] == "n0"
    assert observer.ring.follower_lost == 76


async def test_that_status_reports_counts_capacity_and_lost_by_source(client, observer):
    observer.decode_errors = 2
    body = await get_json(client, "/v1/flows/status")
    assert body == {
        "num_flows": "3",
        "max_flows": "100",
        "seen_flows": "3",
        "uptime_ns": "0",
        "lost_events": {LOST_DATAPATH: "0", LOST_DECODE: "2", LOST_FOLLOWERS: "0"},
    }


async def test_that_shutting_the_server_down_ends_follow_streams(client):
    resp = await client.get("/v1/flows?follow=1&last=1")
    assert json.loads(await resp.content.readline())["flow"]["uuid"] == "c"
    await client.app.shutdown()
    assert await resp.content.readline() == b""


@pytest.mark.parametrize("path", ["/v1/flows", "/v1/flows/status"])
async def test_that_routes_answer_try_again_later_until_the_agent_has_an_observer(path):
    current: list[Observer] = []
    app = web.Application()
    add_routes(app, lambda: current[0] if current else None)
    async with TestClient(TestServer(app)) as client:
        resp = await client.get(path)
        assert resp.status == 503
        assert (await resp.json())["code"] == 11
        current.append(
            Observer(ObserverParams(events_pin=Path("/x")), FlowParser(FakeLookup(), "n"))
        )
        assert (await client.get(path)).status == 200
