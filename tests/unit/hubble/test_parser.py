"""Datapath events become Hubble flows, enriched with who owns each address."""

from __future__ import annotations

from ipaddress import IPv4Address

from pylium.datapath.conntrack import CtStatus
from pylium.datapath.events import (
    Direction,
    DropReason,
    Event,
    EventType,
    TracePoint,
    XlatePoint,
)
from pylium.hubble.flow import (
    TCP,
    UDP,
    CiliumEventType,
    Endpoint,
    Flow,
    FlowType,
    ICMPv4,
    NetworkInterface,
    Service,
    SocketTranslationPoint,
    TCPFlags,
    TraceObservationPoint,
    TraceReason,
    TrafficDirection,
    Verdict,
    compact,
)
from pylium.hubble.flow import DropReason as HubbleDrop
from pylium.hubble.parser import FlowParser
from tests.unit.hubble.flows import T0, WEB1, WEB2


class FakeLookup:
    def __init__(self) -> None:
        self.by_ip = {"10.244.1.10": WEB1, "10.244.1.20": WEB2}
        self.ifnames = {4242: "lxcb"}

    def endpoint_by_ip(self, ip: str) -> Endpoint | None:
        return self.by_ip.get(ip)

    def interface_name(self, ifindex: int) -> str:
        return self.ifnames.get(ifindex, "")


def event(**kw) -> Event:
    values = dict(
        type=EventType.TRACE,
        drop_reason=None,
        trace_point=TracePoint.TO_LXC,
        source=101,
        ifindex=4242,
        ct_status=CtStatus.NEW,
        direction=Direction.EGRESS,
        length=60,
        proto=6,
        saddr=IPv4Address("10.244.1.10"),
        daddr=IPv4Address("10.244.1.20"),
        sport=43210,
        dport=80,
    )
    values.update(kw)
    return Event(**values)


def parser() -> FlowParser:
    return FlowParser(FakeLookup(), "lab-node1", clock=lambda: T0, new_uuid=lambda: "uuid-1")


def test_that_a_trace_to_a_local_pod_is_a_forwarded_flow_between_named_pods():
    flow = parser().parse(event())

    assert flow.time_ns == T0 and flow.uuid == "uuid-1" and flow.node_name == "lab-node1"
    assert flow.verdict == Verdict.FORWARDED
    assert flow.IP is not None
    assert (flow.IP.source, flow.IP.destination) == ("10.244.1.10", "10.244.1.20")
    assert flow.l4 == TCP(43210, 80)
    assert (flow.source, flow.destination) == (WEB1, WEB2)
    assert flow.event_type == CiliumEventType(4, 0)
    assert flow.traffic_direction == TrafficDirection.EGRESS
    assert flow.trace_observation_point == TraceObservationPoint.TO_ENDPOINT
    assert flow.trace_reason == TraceReason.NEW
    assert flow.is_reply is False
    assert flow.interface == NetworkInterface(4242, "lxcb")
    assert (flow.drop_reason, flow.drop_reason_desc) == (0, HubbleDrop.DROP_REASON_UNKNOWN)
    assert flow.Summary == "TCP"


def test_that_a_drop_carries_ciliums_code_and_hubbles_reason_name():
    flow = parser().parse(
        event(
            type=EventType.DROP,
            drop_reason=DropReason.INVALID_SIP,
            trace_point=None,
            ct_status=0,
            proto=17,
            saddr=IPv4Address("10.244.1.99"),
            sport=5000,
            dport=53,
            ifindex=1,
        )
    )
    assert flow.verdict == Verdict.DROPPED
    assert (flow.drop_reason, flow.drop_reason_desc) == (132, HubbleDrop.INVALID_SOURCE_IP)
    assert flow.event_type == CiliumEventType(1, 132)
    assert flow.trace_observation_point == TraceObservationPoint.UNKNOWN_POINT
    assert flow.trace_reason == TraceReason.TRACE_REASON_UNKNOWN
    assert flow.l4 == UDP(5000, 53)
    assert flow.source == Endpoint()  # nobody owns the spoofed address
    assert flow.destination == WEB2
    assert flow.to_json()["drop_reason_desc"] == "INVALID_SOURCE_IP"


def test_that_the_datapath_identities_and_tcp_flags_reach_the_flow():
    flow = parser().parse(
        event(
            saddr=IPv4Address("10.244.2.7"),
            src_identity=31245,
            dst_identity=WEB2.identity + 1,
            tcp_flags=0x12,
            trace_point=TracePoint.TO_OVERLAY,
        )
    )

    # A remote pod the lookup does not know still gets its identity from the event.
    assert flow.source == Endpoint(identity=31245)
    assert flow.destination.pod_name == WEB2.pod_name
    assert flow.destination.identity == WEB2.identity + 1
    assert flow.l4 == TCP(43210, 80, TCPFlags(SYN=True, ACK=True))
    assert flow.trace_observation_point == TraceObservationPoint.TO_OVERLAY


def test_that_each_datapath_drop_code_has_a_hubble_name():
    names = {
        DropReason.INVALID_SIP: "INVALID_SOURCE_IP",
        DropReason.POLICY_DENIED: "POLICY_DENIED",
        DropReason.POLICY_DENY: "POLICY_DENY",
        DropReason.INVALID: "INVALID_PACKET_DROPPED",
        DropReason.UNKNOWN_L3: "UNSUPPORTED_L3_PROTOCOL",
        DropReason.NO_LXC: "NO_MATCHING_LOCAL_CONTAINER_FOUND",
        DropReason.NO_SERVICE: "SERVICE_BACKEND_NOT_FOUND",
        DropReason.CT_CREATE_FAILED: "CT_MAP_INSERTION_FAILED",
        DropReason.NO_TUNNEL_ENDPOINT: "NO_TUNNEL_OR_ENCAPSULATION_ENDPOINT",
        DropReason.INVALID_IDENTITY: "INVALID_IDENTITY",
        DropReason.NAT_NO_MAPPING: "NO_MAPPING_FOR_NAT_MASQUERADE",
        DropReason.NAT_UNSUPP_PROTO: "UNSUPPORTED_PROTOCOL_FOR_NAT_MASQUERADE",
    }
    for code in DropReason:
        if code is DropReason.FORWARDED:
            continue
        assert HubbleDrop.of_code(code.value).name == names[code]


def test_that_a_drop_without_a_parsed_packet_has_no_addresses():
    flow = parser().parse(
        event(
            type=EventType.DROP,
            drop_reason=DropReason.UNKNOWN_L3,
            trace_point=None,
            proto=0,
            saddr=IPv4Address(0),
            daddr=IPv4Address(0),
            sport=0,
            dport=0,
        )
    )
    assert flow.IP is None and flow.l4 is None
    assert flow.source == flow.destination == Endpoint()
    assert flow.drop_reason_desc == HubbleDrop.UNSUPPORTED_L3_PROTOCOL


def test_that_a_conntrack_reply_is_a_reply_and_an_echo_reply():
    flow = parser().parse(
        event(
            ct_status=CtStatus.REPLY,
            proto=1,
            sport=7,
            dport=7,
            direction=Direction.INGRESS,
            trace_point=TracePoint.TO_STACK,
        )
    )
    assert flow.is_reply is True
    assert flow.trace_reason == TraceReason.REPLY
    assert flow.l4 == ICMPv4(type=0)
    assert flow.Summary == "ICMPv4 EchoReply"
    assert flow.traffic_direction == TrafficDirection.INGRESS
    assert flow.trace_observation_point == TraceObservationPoint.TO_STACK


def test_that_an_icmp_message_other_than_echo_keeps_its_type_unknown():
    flow = parser().parse(event(proto=1, sport=0, dport=0))
    assert flow.l4 == ICMPv4()
    assert flow.Summary == "ICMPv4"


def test_that_an_unknown_device_has_an_index_but_no_name():
    flow = parser().parse(event(ifindex=9))
    assert flow.interface == NetworkInterface(9, "")


def test_flow_ids_are_distinct_version_4_uuids():
    import uuid

    from pylium.hubble.parser import random_uuid

    ids = [random_uuid() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    for text in ids[:200]:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, text)


def test_that_trace_points_other_than_to_lxc_give_an_integer_subtype_that_round_trips():
    """Hubble's event_type.sub_type is a plain integer; a to-stack or to-overlay trace must
    print it as one (not the enum name) so `pylium observe` can read the flow back."""
    for point in (TracePoint.TO_STACK, TracePoint.TO_OVERLAY):
        flow = parser().parse(event(trace_point=point))
        printed = flow.to_json()["event_type"]
        assert printed == {"type": 4, "sub_type": int(point)}
        assert Flow.from_json(flow.to_json()).event_type == CiliumEventType(4, int(point))


def sock_event(point: XlatePoint, daddr: str, dport: int) -> Event:
    """What bpf/sock.c reports for a connect() to the service of rev-NAT id 7."""
    return event(
        type=EventType.TRACE_SOCK,
        trace_point=None,
        source=7,
        ifindex=0,
        ct_status=0,
        length=0,
        saddr=IPv4Address(0),
        daddr=IPv4Address(daddr),
        sport=0,
        dport=dport,
        xlate_point=point,
    )


def test_that_a_socket_translation_is_a_translated_flow_naming_the_service():
    services = {7: Service("echo", "y")}
    p = FlowParser(FakeLookup(), "lab-node1", clock=lambda: T0, services=services.get)

    pre = p.parse(sock_event(XlatePoint.PRE_DIRECTION_FWD, "10.96.0.10", 80))
    post = p.parse(sock_event(XlatePoint.POST_DIRECTION_FWD, "10.244.1.20", 8080))

    for flow in (pre, post):
        assert flow.verdict == Verdict.TRANSLATED and flow.Type == FlowType.SOCK
        assert flow.destination_service == Service("echo", "y")
        assert flow.IP is not None and flow.IP.source == ""
    assert pre.sock_xlate_point == SocketTranslationPoint.SOCK_XLATE_POINT_PRE_DIRECTION_FWD
    assert pre.event_type == CiliumEventType(7, 1)
    assert pre.IP is not None and pre.IP.destination == "10.96.0.10"
    assert post.sock_xlate_point == SocketTranslationPoint.SOCK_XLATE_POINT_POST_DIRECTION_FWD
    assert post.destination == WEB2 and post.l4 == TCP(0, 8080)
    assert "post-xlate-fwd TRANSLATED" in compact(post)
