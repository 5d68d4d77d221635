"""pylium's flow model <-> Hubble's protobuf messages (`flow.Flow`, `flow.FlowFilter`).

`flow_to_proto` builds the message field by field (the gRPC server's hot path); its protobuf
JSON (`json_format.MessageToDict(..., preserving_proto_field_name=True)`) is exactly
`Flow.to_json()`. The other direction goes through that JSON (`flow_from_proto`), so there is
one parser of Hubble's form. Filters: `filter_from_proto` maps a request's FlowFilter onto
`filters.FlowFilter`; fields pylium's flows never carry (L7, DNS, services, workloads,
clusters, ...) make the filter match nothing, as in Hubble for a flow without them.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format

from pylium.hubble.filters import FlowFilter
from pylium.hubble.flow import (
    TCP,
    UDP,
    DropReason,
    Endpoint,
    Flow,
    ICMPv4,
    IPVersion,
    TrafficDirection,
    Verdict,
)
from pylium.hubble.proto import flow_pb2

JSON_OPTIONS: dict[str, Any] = {"preserving_proto_field_name": True}
"""json_format options giving Hubble's JSON (`hubble observe -o json`)."""


def to_json(message: Any) -> dict[str, Any]:
    """Protobuf JSON of any message with Hubble's options."""
    result: dict[str, Any] = json_format.MessageToDict(message, **JSON_OPTIONS)
    return result


def set_time(stamp: Any, time_ns: int) -> None:
    """Fill a google.protobuf.Timestamp from nanoseconds since the epoch."""
    stamp.seconds, stamp.nanos = divmod(time_ns, 1_000_000_000)


def time_of(stamp: Any) -> int:
    """Nanoseconds since the epoch of a google.protobuf.Timestamp."""
    return int(stamp.seconds) * 1_000_000_000 + int(stamp.nanos)


def flow_to_proto(flow: Flow) -> flow_pb2.Flow:
    """flow.Flow carrying every field of the model."""
    msg = flow_pb2.Flow(
        uuid=flow.uuid,
        verdict=int(flow.verdict),  # type: ignore[arg-type]
        drop_reason=flow.drop_reason,
        Type=int(flow.Type),  # type: ignore[arg-type]
        node_name=flow.node_name,
        traffic_direction=int(flow.traffic_direction),  # type: ignore[arg-type]
        trace_observation_point=int(flow.trace_observation_point),  # type: ignore[arg-type]
        trace_reason=int(flow.trace_reason),  # type: ignore[arg-type]
        drop_reason_desc=int(flow.drop_reason_desc),  # type: ignore[arg-type]
        sock_xlate_point=int(flow.sock_xlate_point),  # type: ignore[arg-type]
        Summary=flow.Summary,
    )
    set_time(msg.time, flow.time_ns)
    if flow.IP is not None:
        msg.IP.source = flow.IP.source
        msg.IP.destination = flow.IP.destination
        msg.IP.ipVersion = int(flow.IP.ipVersion)  # type: ignore[assignment]
    l4 = flow.l4
    if isinstance(l4, TCP):
        msg.l4.TCP.source_port = l4.source_port
        msg.l4.TCP.destination_port = l4.destination_port
        if l4.flags is not None:
            msg.l4.TCP.flags.SetInParent()
            for name, value in l4.flags.to_json().items():
                setattr(msg.l4.TCP.flags, name, value)
    elif isinstance(l4, UDP):
        msg.l4.UDP.source_port = l4.source_port
        msg.l4.UDP.destination_port = l4.destination_port
    elif isinstance(l4, ICMPv4):
        msg.l4.ICMPv4.SetInParent()
        msg.l4.ICMPv4.type = l4.type
        msg.l4.ICMPv4.code = l4.code
    for ep, out in ((flow.source, msg.source), (flow.destination, msg.destination)):
        if ep == _NO_ENDPOINT:
            continue  # an empty message would print as {} where the model prints nothing
        out.ID, out.identity, out.namespace = ep.ID, ep.identity, ep.namespace
        out.labels.extend(ep.labels)
        out.pod_name = ep.pod_name
    if flow.event_type is not None:
        msg.event_type.type = flow.event_type.type
        msg.event_type.sub_type = flow.event_type.sub_type
    for svc, out_svc in (
        (flow.source_service, msg.source_service),
        (flow.destination_service, msg.destination_service),
    ):
        if svc is not None:
            out_svc.name, out_svc.namespace = svc.name, svc.namespace
    if flow.is_reply is not None:
        msg.is_reply.value = flow.is_reply
    if flow.interface is not None:
        msg.interface.index = flow.interface.index
        msg.interface.name = flow.interface.name
    for policies, out_policies in (
        (flow.egress_allowed_by, msg.egress_allowed_by),
        (flow.ingress_allowed_by, msg.ingress_allowed_by),
        (flow.egress_denied_by, msg.egress_denied_by),
        (flow.ingress_denied_by, msg.ingress_denied_by),
    ):
        for policy in policies:
            out_policies.add(
                name=policy.name,
                namespace=policy.namespace,
                labels=policy.labels,
                revision=policy.revision,
                kind=policy.kind,
            )
    return msg


_NO_ENDPOINT = Endpoint()


def flow_from_proto(msg: flow_pb2.Flow) -> Flow:
    """The model of a flow.Flow (fields pylium does not model are left out)."""
    return Flow.from_json(to_json(msg))


_UNMODELLED = (
    "source_ip_xlated",
    "source_fqdn",
    "source_workload",
    "source_cluster_name",
    "destination_fqdn",
    "destination_workload",
    "destination_cluster_name",
    "interface",
    "http_status_code",
    "dns_query",
    "http_method",
    "http_path",
    "http_url",
    "http_header",
    "node_labels",
    "trace_id",
    "ip_trace_id",
    "encrypted",
)
"""FlowFilter fields about data pylium's flows never carry."""


def filter_from_proto(msg: flow_pb2.FlowFilter) -> FlowFilter:
    """The model filter of a request's flow.FlowFilter; ValueError for a malformed value."""
    for ev in msg.event_type:
        if ev.match_sub_type:
            raise ValueError("event_type sub_type matching is not supported")
    return FlowFilter(
        uuid=tuple(msg.uuid),
        source_ip=tuple(msg.source_ip),
        destination_ip=tuple(msg.destination_ip),
        source_pod=tuple(msg.source_pod),
        destination_pod=tuple(msg.destination_pod),
        source_label=tuple(msg.source_label),
        destination_label=tuple(msg.destination_label),
        source_service=tuple(msg.source_service),
        destination_service=tuple(msg.destination_service),
        source_identity=tuple(msg.source_identity),
        destination_identity=tuple(msg.destination_identity),
        verdict=tuple(Verdict(v) for v in msg.verdict),
        event_type=tuple(ev.type for ev in msg.event_type),
        protocol=tuple(p.lower() for p in msg.protocol),
        source_port=tuple(_port(p) for p in msg.source_port),
        destination_port=tuple(_port(p) for p in msg.destination_port),
        traffic_direction=tuple(TrafficDirection(d) for d in msg.traffic_direction),
        reply=tuple(msg.reply),
        node_name=tuple(msg.node_name),
        ip_version=tuple(IPVersion(v) for v in msg.ip_version),
        drop_reason_desc=tuple(DropReason.of_code(d) for d in msg.drop_reason_desc),
        tcp_flags=tuple(frozenset(to_json(f)) for f in msg.tcp_flags),
        unmatchable=tuple(name for name in _UNMODELLED if _is_set(msg, name)),
    )


def filter_to_proto(flt: FlowFilter) -> flow_pb2.FlowFilter:
    """flow.FlowFilter of a model filter (what `pylium observe --server` sends)."""
    return json_format.ParseDict(flt.to_json(), flow_pb2.FlowFilter())


def _is_set(msg: flow_pb2.FlowFilter, name: str) -> bool:
    return len(getattr(msg, name)) > 0


def _port(value: str) -> int:
    if not value.isdigit():
        raise ValueError(f"invalid port {value!r}")
    return int(value)
