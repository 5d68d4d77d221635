"""Agent and Hubble flow metrics: what they count, and that the exposition is valid for
Prometheus (`promtool check metrics`)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pylium.datapath.endpoints import MetricSample
from pylium.hubble.flow import TCP, TCPFlags, Verdict
from pylium.hubble.metrics import FlowMetrics
from pylium.hubble.observer import Observer, ObserverParams
from pylium.hubble.parser import FlowParser
from pylium.metrics.agent import AgentMetrics, AgentSources
from pylium.metrics.server import MetricsParams, MetricsServer
from tests.unit.hubble.flows import DB, T0, UDP, WEB1, WEB2, make_flow
from tests.unit.hubble.test_parser import FakeLookup


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def fed_registry() -> tuple[CollectorRegistry, Observer, AgentMetrics]:
    registry = CollectorRegistry()
    observer = Observer(
        ObserverParams(events_pin=Path("/nonexistent"), capacity=10),
        FlowParser(FakeLookup(), "lab-node1"),
    )
    FlowMetrics(registry).attach(observer)
    agent = AgentMetrics(
        registry,
        AgentSources(
            endpoints=lambda: 3,
            identities=lambda: 7,
            datapath=lambda: [
                MetricSample(0, "FORWARDED", "egress", 10, 1000),
                MetricSample(132, "INVALID_SIP", "egress", 2, 120),
            ],
            map_pressure=lambda: {"pylium_ct4": 0.25},
        ),
    )
    ring = observer.ring
    ring.append(make_flow(WEB1, WEB2, TCP(43210, 80, TCPFlags(SYN=True)), time_ns=T0))
    ring.append(make_flow(WEB2, WEB1, TCP(80, 43210, TCPFlags(SYN=True, ACK=True)), reply=True))
    ring.append(make_flow(WEB1, DB, UDP(5000, 53), verdict=Verdict.DROPPED))
    observer.decode_errors = 4
    agent.regenerated()
    agent.store_event("Pod", "added")
    agent.map_op("pylium_ct4", "update")
    return registry, observer, agent


def test_that_flow_metrics_count_hubbles_series():
    registry, _, _ = fed_registry()
    got = samples(registry)
    processed = "hubble_flows_processed_total"
    assert (
        got[(processed, (("subtype", "to-endpoint"), ("type", "L3_L4"), ("verdict", "FORWARDED")))]
        == 2
    )
    assert got[(processed, (("subtype", "drop"), ("type", "L3_L4"), ("verdict", "DROPPED")))] == 1
    drop = ("hubble_drop_total", (("protocol", "UDP"), ("reason", "INVALID_SOURCE_IP")))
    assert got[drop] == 1
    assert got[("hubble_tcp_flags_total", (("family", "IPv4"), ("flag", "SYN")))] == 2
    assert got[("hubble_tcp_flags_total", (("family", "IPv4"), ("flag", "ACK")))] == 1
    # the reply is not a request to port 43210
    assert got[("hubble_port_distribution_total", (("port", "80"), ("protocol", "TCP")))] == 1
    assert ("hubble_port_distribution_total", (("port", "43210"), ("protocol", "TCP"))) not in got
    lost = ("hubble_lost_events_total", (("source", "OBSERVER_EVENTS_QUEUE"),))
    assert got[lost] == 4


def test_that_agent_metrics_read_their_sources():
    registry, _, _ = fed_registry()
    got = samples(registry)
    assert got[("pylium_endpoint", ())] == 3
    assert got[("pylium_identity", ())] == 7
    assert got[("pylium_forward_count_total", (("direction", "EGRESS"),))] == 10
    drop = ("pylium_drop_count_total", (("direction", "EGRESS"), ("reason", "INVALID_SIP")))
    assert got[drop] == 2
    assert got[("pylium_bpf_map_pressure", (("map_name", "pylium_ct4"),))] == 0.25
    assert got[("pylium_endpoint_regenerations_total", (("outcome", "success"),))] == 1


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian prometheus)")
def test_that_promtool_accepts_the_exposition():
    registry, _, _ = fed_registry()
    result = subprocess.run(
        ["promtool", "check", "metrics"],
        input=generate_latest(registry),
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr


async def test_that_api_latency_is_observed_per_route():
    registry = CollectorRegistry()
    metrics = AgentMetrics(registry)
    app = web.Application(middlewares=[metrics.api_middleware()])

    async def endpoint(request: web.Request) -> web.Response:
        return web.json_response({})

    app.router.add_get("/v1/endpoints/{id}", endpoint)
    async with TestClient(TestServer(app)) as client:
        for i in (1, 2):
            assert (await client.get(f"/v1/endpoints/{i}")).status == 200
    got = samples(registry)
    key = (
        "pylium_agent_api_process_time_seconds_count",
        (("method", "GET"), ("path", "/v1/endpoints/{id}"), ("return_code", "200")),
    )
    assert got[key] == 2


async def test_that_the_server_serves_the_registry_on_a_chosen_port():
    registry, _, _ = fed_registry()
    server = MetricsServer(MetricsParams("127.0.0.1:0"), registry)
    await server.start()
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{server.port}/metrics") as resp,
        ):
            assert resp.status == 200
            assert "hubble_flows_processed_total" in await resp.text()
    finally:
        await server.stop()
