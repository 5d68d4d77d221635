"""Hand-made flows for the hubble unit tests."""

from __future__ import annotations

from pylium.hubble.flow import (
    IP,
    TCP,
    UDP,
    DropReason,
    Endpoint,
    Flow,
    ICMPv4,
    Layer4,
    TraceObservationPoint,
    TrafficDirection,
    Verdict,
)

T0 = 1_764_150_000_000_000_000  # 2025-11-26T09:40:00Z

WEB1 = Endpoint(ID=11, identity=1234, namespace="default", pod_name="web-1")
WEB2 = Endpoint(ID=12, identity=5678, namespace="default", pod_name="web-2")
DB = Endpoint(ID=13, identity=4321, namespace="prod", pod_name="db-0")
WORLD = Endpoint(identity=2, labels=("reserved:world",))
IPS = {WEB1: "10.244.1.10", WEB2: "10.244.1.20", DB: "10.244.2.5", WORLD: "192.0.2.7"}


def make_flow(
    src: Endpoint = WEB1,
    dst: Endpoint = WEB2,
    l4: Layer4 | None = None,
    verdict: Verdict = Verdict.FORWARDED,
    time_ns: int = T0,
    uuid: str = "u",
    node: str = "lab-node1",
    reply: bool = False,
) -> Flow:
    dropped = verdict == Verdict.DROPPED
    return Flow(
        time_ns=time_ns,
        uuid=uuid,
        verdict=verdict,
        drop_reason=132 if dropped else 0,
        IP=IP(IPS[src], IPS[dst]),
        l4=l4 if l4 is not None else TCP(43210, 80),
        source=src,
        destination=dst,
        node_name=node,
        traffic_direction=TrafficDirection.EGRESS,
        trace_observation_point=TraceObservationPoint.UNKNOWN_POINT
        if dropped
        else TraceObservationPoint.TO_ENDPOINT,
        drop_reason_desc=DropReason.INVALID_SOURCE_IP if dropped else DropReason(0),
        is_reply=reply,
    )


__all__ = ["DB", "T0", "UDP", "WEB1", "WEB2", "WORLD", "ICMPv4", "make_flow"]
