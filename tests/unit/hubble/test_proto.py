"""The protobuf definitions against Hubble's own serialized messages, and the model <->
message conversion."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from google.protobuf import json_format

from pylium.hubble.convert import (
    filter_from_proto,
    filter_to_proto,
    flow_from_proto,
    flow_to_proto,
    to_json,
)
from pylium.hubble.filters import FlowFilter, FlowQuery
from pylium.hubble.flow import (
    TCP,
    CiliumEventType,
    Flow,
    NetworkInterface,
    Service,
    SocketTranslationPoint,
    TCPFlags,
    TraceReason,
    TrafficDirection,
    Verdict,
)
from pylium.hubble.proto import flow_pb2, observer_pb2
from tests.unit.hubble.flows import DB, T0, UDP, WEB1, WEB2, WORLD, ICMPv4, make_flow

GOLDEN = Path(__file__).parent / "golden"
INDEX = json.loads((GOLDEN / "index.json").read_text())
TYPES = {
    "flow.Flow": flow_pb2.Flow,
    "observer.GetFlowsResponse": observer_pb2.GetFlowsResponse,
    "observer.GetFlowsRequest": observer_pb2.GetFlowsRequest,
    "observer.ServerStatusResponse": observer_pb2.ServerStatusResponse,
}


@pytest.mark.parametrize("entry", INDEX, ids=[e["name"] for e in INDEX])
def test_that_every_golden_message_decodes_to_its_json(entry):
    raw = (GOLDEN / f"{entry['name']}.bin").read_bytes()
    msg = TYPES[entry["message"]].FromString(raw)
    assert to_json(msg) == json.loads((GOLDEN / f"{entry['name']}.json").read_text())
    # Nothing was left as unknown fields: re-encoding gives Hubble's bytes back.
    assert msg.SerializeToString(deterministic=True) == raw


def test_that_the_service_has_hubbles_method_names():
    service = observer_pb2.DESCRIPTOR.services_by_name["Observer"]
    assert service.full_name == "observer.Observer"
    assert {m.name for m in service.methods} >= {
        "GetFlows",
        "ServerStatus",
        "GetNodes",
        "GetNamespaces",
    }
    assert flow_pb2.DESCRIPTOR.package == "flow"
    assert flow_pb2.Flow.DESCRIPTOR.fields_by_name["Summary"].number == 100000


MODEL_FLOWS = [
    make_flow(WEB1, WEB2, TCP(43210, 80, TCPFlags(SYN=True, ACK=True)), time_ns=T0 + 123),
    make_flow(WEB2, DB, UDP(5000, 53), verdict=Verdict.DROPPED, reply=True),
    make_flow(WORLD, WEB1, ICMPv4(8, 0), time_ns=T0 + 1_000_000),
    Flow(
        time_ns=T0,
        uuid="x",
        verdict=Verdict.TRACED,
        IP=None,
        l4=ICMPv4(0, 0),
        event_type=CiliumEventType(4, 3),
        trace_reason=TraceReason.ESTABLISHED,
        traffic_direction=TrafficDirection.INGRESS,
        interface=NetworkInterface(7, "lxc0"),
        Summary="s",
    ),
]


@pytest.mark.parametrize("flow", MODEL_FLOWS)
def test_that_a_model_flow_converts_field_by_field_and_back(flow):
    msg = flow_to_proto(flow)
    assert to_json(msg) == flow.to_json()
    again = flow_pb2.Flow.FromString(msg.SerializeToString())
    assert flow_from_proto(again) == flow


def test_that_golden_flows_keep_what_the_model_knows():
    for name in ("flow-forwarded-tcp", "flow-dropped-policy-udp", "flow-forwarded-icmp"):
        msg = flow_pb2.Flow.FromString((GOLDEN / f"{name}.bin").read_bytes())
        model = flow_from_proto(msg)
        back = to_json(flow_to_proto(model))
        assert back == model.to_json()
        assert back["time"] == to_json(msg)["time"]
        assert back["source"]["labels"] == to_json(msg)["source"]["labels"]


def test_that_the_golden_socket_translation_keeps_its_point_and_service():
    msg = flow_pb2.Flow.FromString((GOLDEN / "flow-translated-sock.bin").read_bytes())
    model = flow_from_proto(msg)
    assert model.sock_xlate_point == SocketTranslationPoint.SOCK_XLATE_POINT_PRE_DIRECTION_FWD
    assert model.destination_service == Service("echo", "y")
    back = to_json(flow_to_proto(model))
    assert back == model.to_json()
    assert back["sock_xlate_point"] == to_json(msg)["sock_xlate_point"]


def test_that_the_golden_request_filters_become_model_filters():
    raw = (GOLDEN / "getflowsrequest-first-ns-port-label.bin").read_bytes()
    req = observer_pb2.GetFlowsRequest.FromString(raw)
    (flt,) = [filter_from_proto(f) for f in req.whitelist]
    assert flt.source_label == ("k8s:app=echo",)
    assert flt.destination_port == (8080,)
    assert flt.event_type == (1,)
    assert flt.node_name == ("lab/*",)
    assert flt.traffic_direction == (TrafficDirection.INGRESS,)


def test_that_labels_select_with_or_without_source():
    web = dataclasses.replace(
        make_flow(), source=dataclasses.replace(WEB1, labels=("k8s:app=web",))
    )
    assert FlowFilter(source_label=("k8s:app=web",)).matches(web)
    assert FlowFilter(source_label=("app=web",)).matches(web)
    assert FlowFilter(source_label=("app",)).matches(web)
    assert not FlowFilter(source_label=("app=db",)).matches(web)
    assert not FlowFilter(source_label=("!app",)).matches(web)
    assert not FlowFilter(source_label=("app!=web",)).matches(web)


def test_that_filters_on_data_pylium_lacks_match_nothing():
    flt = filter_from_proto(flow_pb2.FlowFilter(http_status_code=["200"]))
    assert flt.unmatchable == ("http_status_code",)
    assert not flt.matches(make_flow())


def test_that_cli_filters_go_over_the_wire_unchanged():
    whitelist, _ = FlowQuery(
        pod=("default/web",), protocol=("tcp",), verdict=("DROPPED",)
    ).filters()
    for flt in whitelist:
        msg = flow_pb2.FlowFilter.FromString(filter_to_proto(flt).SerializeToString())
        assert filter_from_proto(msg) == flt
    assert json_format.MessageToDict(filter_to_proto(whitelist[0]))["verdict"] == ["DROPPED"]
