"""The flow model speaks Hubble's JSON (checked against Hubble's own messages) and prints
`hubble observe`'s compact lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pylium.hubble.flow import (
    IP,
    TCP,
    CiliumEventType,
    Flow,
    ICMPv4,
    NetworkInterface,
    TCPFlags,
    TraceObservationPoint,
    TraceReason,
    Verdict,
    compact,
    format_time,
    parse_time,
    response_json,
)
from tests.unit.hubble.flows import T0, UDP, WEB1, WEB2, WORLD, make_flow

GOLDEN = Path(__file__).parent / "golden"
# What Hubble has that pylium's flows do not carry yet (no MACs, workloads or policy names).
UNMODELLED = {"ethernet", "workloads"}


def golden(name: str) -> dict:
    return json.loads((GOLDEN / f"{name}.json").read_text())


def without_unmodelled(data):
    if isinstance(data, dict):
        return {k: without_unmodelled(v) for k, v in data.items() if k not in UNMODELLED}
    if isinstance(data, list):
        return [without_unmodelled(v) for v in data]
    return data


@pytest.mark.parametrize(
    "name", ["flow-forwarded-tcp", "flow-dropped-policy-udp", "flow-forwarded-icmp"]
)
def test_that_hubble_flow_json_round_trips_through_the_model(name):
    data = golden(name)
    assert Flow.from_json(data).to_json() == without_unmodelled(data)


def test_that_json_fields_come_in_hubbles_field_number_order():
    data = without_unmodelled(golden("flow-forwarded-tcp"))
    assert list(Flow.from_json(data).to_json()) == list(data)


def test_that_a_response_line_is_a_get_flows_response():
    data = without_unmodelled(golden("getflowsresponse-flow-forwarded-tcp"))
    flow = Flow.from_json(data["flow"])
    assert response_json(flow) == data


def test_that_defaults_are_left_out_but_a_known_is_reply_is_kept():
    flow = Flow(time_ns=T0, verdict=Verdict.FORWARDED, is_reply=False)
    assert flow.to_json() == {
        "time": "2025-11-26T09:40:00Z",
        "verdict": "FORWARDED",
        "Type": "L3_L4",
        "is_reply": False,
    }
    assert "is_reply" not in Flow(time_ns=T0).to_json()


def test_that_a_pylium_flow_has_the_hubble_shape():
    flow = Flow(
        time_ns=T0 + 123_456_789,
        uuid="0b4c",
        verdict=Verdict.FORWARDED,
        IP=IP("10.244.1.10", "10.244.1.20"),
        l4=TCP(43210, 80, TCPFlags.of_byte(0x12)),
        source=WEB1,
        destination=WEB2,
        node_name="lab-node1",
        event_type=CiliumEventType(4),
        trace_observation_point=TraceObservationPoint.TO_ENDPOINT,
        trace_reason=TraceReason.NEW,
        is_reply=False,
        interface=NetworkInterface(17, "lxc0123456789a"),
        Summary="TCP Flags: SYN, ACK",
    )
    assert flow.to_json() == {
        "time": "2025-11-26T09:40:00.123456789Z",
        "verdict": "FORWARDED",
        "IP": {"source": "10.244.1.10", "destination": "10.244.1.20", "ipVersion": "IPv4"},
        "l4": {
            "TCP": {
                "source_port": 43210,
                "destination_port": 80,
                "flags": {"SYN": True, "ACK": True},
            }
        },
        "source": {"ID": 11, "identity": 1234, "namespace": "default", "pod_name": "web-1"},
        "destination": {"ID": 12, "identity": 5678, "namespace": "default", "pod_name": "web-2"},
        "Type": "L3_L4",
        "node_name": "lab-node1",
        "event_type": {"type": 4},
        "trace_observation_point": "TO_ENDPOINT",
        "is_reply": False,
        "interface": {"index": 17, "name": "lxc0123456789a"},
        "uuid": "0b4c",
        "trace_reason": "NEW",
        "Summary": "TCP Flags: SYN, ACK",
    }


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (0, "2025-11-26T09:40:00Z"),
        (5, "2025-11-26T09:40:00.000000005Z"),
        (123_000_000, "2025-11-26T09:40:00.123Z"),
        (123_456_000, "2025-11-26T09:40:00.123456Z"),
    ],
)
def test_that_times_are_written_as_protobuf_json_and_read_back(ns, text):
    assert format_time(T0 + ns) == text
    assert parse_time(text) == T0 + ns


def test_that_a_time_with_an_offset_is_read_in_utc():
    assert parse_time("2025-11-26T10:40:00.5+01:00") == T0 + 500_000_000


def stamp(flow: Flow) -> str:
    return compact(flow).split(": ", 1)[0]


def test_that_the_compact_line_reads_like_hubble_observe():
    flow = make_flow(l4=TCP(43210, 80, TCPFlags(SYN=True)), time_ns=T0 + 123_000_000)
    line = compact(flow)
    assert line == (
        f"{stamp(flow)}: default/web-1:43210 (ID:1234) -> default/web-2:80 (ID:5678) "
        "to-endpoint FORWARDED (TCP Flags: SYN)"
    )
    assert stamp(flow).endswith(":00.123")
    assert stamp(flow).split()[0] in {"Nov", "Nov."}


def test_that_a_drop_names_its_reason():
    flow = make_flow(l4=UDP(5000, 53), verdict=Verdict.DROPPED)
    assert compact(flow).endswith(
        "default/web-1:5000 (ID:1234) -> default/web-2:53 (ID:5678) Invalid source ip DROPPED (UDP)"
    )


def test_that_replies_unknown_parties_and_icmp_read_like_hubble():
    flow = make_flow(src=WEB2, dst=WORLD, l4=ICMPv4(type=0), reply=True)
    assert compact(flow).endswith(
        "default/web-2 (ID:5678) <- 192.0.2.7 (world) to-endpoint FORWARDED (ICMPv4 EchoReply)"
    )
