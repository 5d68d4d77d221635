"""`pylium observe`'s Hubble vocabulary: each filter flag against flows, the time options,
the dict and table outputs, and the flags end to end over a node's gRPC API."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from pylium.cli.observe import _time_arg, observe_cmd
from pylium.hubble.filters import FlowQuery, InvalidFilter, matches
from pylium.hubble.flow import (
    DropReason,
    Service,
    TrafficDirection,
    Verdict,
    dict_text,
    table_row,
)
from pylium.hubble.server import GrpcParams, hubble_server
from tests.unit.hubble.flows import DB, T0, WEB1, WEB2, WORLD, make_flow
from tests.unit.hubble.test_relay import node_observer

WEB1_L = replace(WEB1, labels=("k8s:app=web", "k8s:tier=front"))
DB_L = replace(DB, labels=("k8s:app=db",))
FLOWS = {
    "web->db": replace(
        make_flow(WEB1, DB, time_ns=T0 + 1, node="lab-node1"),
        source=WEB1_L,
        destination=DB_L,
        destination_service=Service("db", "prod"),
        traffic_direction=TrafficDirection.EGRESS,
    ),
    "db->web": replace(
        make_flow(DB, WEB1, time_ns=T0 + 2, node="lab-node2", reply=True),
        source=DB_L,
        destination=WEB1_L,
        source_service=Service("db", "prod"),
        traffic_direction=TrafficDirection.INGRESS,
    ),
    "world->web2 drop": replace(
        make_flow(WORLD, WEB2, verdict=Verdict.DROPPED, time_ns=T0 + 3, node="other-node1"),
        drop_reason_desc=DropReason.POLICY_DENIED,
    ),
}


def selected(**options: tuple[str, ...]) -> set[str]:
    whitelist, blacklist = FlowQuery(**options).filters()
    return {name for name, flow in FLOWS.items() if matches(flow, whitelist, blacklist)}


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"label": ("app=web",)}, {"web->db", "db->web"}),
        ({"label": ("k8s:app=db",)}, {"web->db", "db->web"}),
        ({"from_label": ("app=web,tier=front",)}, {"web->db"}),
        ({"to_label": ("app=web",)}, {"db->web"}),
        ({"label": ("app=nothing",)}, set()),
        ({"identity": ("4321",)}, {"web->db", "db->web"}),
        ({"from_identity": ("world",)}, {"world->web2 drop"}),
        ({"to_identity": ("reserved:world",)}, set()),
        ({"to_identity": ("5678",)}, {"world->web2 drop"}),
        ({"service": ("prod/db",)}, {"web->db", "db->web"}),
        ({"to_service": ("prod/d",)}, {"web->db"}),  # a name prefix, as pods
        ({"from_service": ("prod/db",)}, {"db->web"}),
        ({"service": ("db",)}, set()),  # unqualified: the default namespace
        ({"service": ("db",), "namespace": ("prod",)}, {"web->db", "db->web"}),
        ({"node_name": ("lab-node2",)}, {"db->web"}),
        ({"node_name": ("lab-*",)}, {"web->db", "db->web"}),
        ({"traffic_direction": ("ingress",)}, {"db->web"}),
        ({"traffic_direction": ("EGRESS",)}, {"web->db", "world->web2 drop"}),
        ({"drop_reason_desc": ("POLICY_DENIED",)}, {"world->web2 drop"}),
        ({"drop_reason_desc": ("invalid_source_ip",)}, set()),
        ({"type": ("drop",)}, set()),  # hand-made flows carry no event type
    ],
)
def test_each_filter_flag_selects_its_flows(options, expected):
    assert selected(**options) == expected


def test_not_negates_the_new_flags():
    negated = FlowQuery.from_params([("service", "prod/db")])
    whitelist, blacklist = FlowQuery(negated=negated).filters()
    assert {n for n, f in FLOWS.items() if matches(f, whitelist, blacklist)} == {"world->web2 drop"}


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"identity": ("nobody",)}, "invalid identity"),
        ({"traffic_direction": ("up",)}, "invalid traffic direction"),
        ({"drop_reason_desc": ("BAD_LUCK",)}, "invalid drop reason"),
        ({"service": ("prod/",)}, "invalid service"),
    ],
)
def test_a_bad_flag_value_is_refused(options, error):
    with pytest.raises(InvalidFilter, match=error):
        FlowQuery(**options).filters()


def test_times_are_rfc3339_or_a_duration_ago():
    now = T0 + 10**12
    assert _time_arg("2025-11-26T09:40:00.5Z", "--since") == T0 + 500_000_000
    assert _time_arg("90s", "--since", now) == now - 90 * 10**9
    assert _time_arg("1h30m", "--since", now) == now - 5400 * 10**9
    assert _time_arg("250ms", "--until", now) == now - 250 * 10**6
    assert _time_arg(None, "--since") is None


def test_dict_output_has_hubbles_keys():
    text = dict_text(FLOWS["world->web2 drop"])
    keys = [line.split(":")[0].strip() for line in text.splitlines()]
    assert keys == ["TIMESTAMP", "NODE", "SOURCE", "DESTINATION", "TYPE", "VERDICT", "SUMMARY"]
    assert "DESTINATION: default/web-2:80 (ID:5678)" in text
    assert "       TYPE: Policy denied" in text and "    VERDICT: DROPPED" in text


def test_table_row_follows_the_header():
    row = table_row(FLOWS["web->db"])
    assert row[1:] == (
        "lab-node1",
        "default/web-1:43210 (ID:1234)",
        "prod/db-0:80 (ID:4321)",
        "to-endpoint",
        "FORWARDED",
        "TCP",
    )


@pytest.fixture
def node_api(tmp_path: Path) -> Iterator[str]:
    """A node's gRPC Observer API with FLOWS, on its own loop in a thread."""
    obs = node_observer("lab-node1", [])
    for flow in FLOWS.values():
        obs.ring.append(flow)
    server = hubble_server(GrpcParams(tmp_path / "hubble.sock"), lambda: obs, "lab-node1")
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
    try:
        yield server.target
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def observe(target: str, *args: str) -> list[str]:
    result = CliRunner().invoke(observe_cmd, ["--server", target, *args], obj={})
    assert result.exit_code == 0, result.output
    return result.output.splitlines()


def test_the_flags_reach_the_server(node_api):
    lines = observe(node_api, "--label", "app=db", "--traffic-direction", "ingress")
    assert len(lines) == 1 and "prod/db-0:43210" in lines[0] and "<-" in lines[0]
    lines = observe(node_api, "--to-service", "prod/db", "-o", "table")
    assert lines[0].split() == ["TIMESTAMP", "NODE", "SOURCE", "DESTINATION", "TYPE",
                                "VERDICT", "SUMMARY"]  # fmt: skip
    assert len(lines) == 2 and "prod/db-0:80" in lines[1]
    lines = observe(node_api, "--drop-reason-desc", "POLICY_DENIED", "-o", "dict")
    assert "    VERDICT: DROPPED" in lines
    lines = observe(node_api, "--not", "identity=world", "--first", "1")
    assert len(lines) == 1 and "default/web-1:43210" in lines[0].split("->")[0]
    lines = observe(node_api, "--since", "2025-11-26T09:40:00.000000002Z", "-o", "dict")
    assert lines.count("------------") == 1  # two flows
    lines = observe(node_api, "--until", "2025-11-26T09:40:00.000000001Z")
    assert len(lines) == 1


def test_first_is_refused_with_follow(node_api):
    result = CliRunner().invoke(observe_cmd, ["--server", node_api, "--first", "1", "-f"])
    assert result.exit_code == 2 and "--first" in result.output


def test_service_fields_survive_json_and_protobuf():
    from pylium.hubble.convert import flow_from_proto, flow_to_proto
    from pylium.hubble.flow import Flow

    for flow in FLOWS.values():
        assert Flow.from_json(flow.to_json()) == flow
        assert flow_from_proto(flow_to_proto(flow)) == flow
    assert FLOWS["web->db"].to_json()["destination_service"] == {"name": "db", "namespace": "prod"}
