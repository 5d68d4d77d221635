"""Datapath events to flows: decode what the programs reported, enrich it with who is who.

The parser knows Cilium's event codes (`pylium.datapath.events`) and Hubble's flow model
(`flow`); who owns an address comes through `EndpointLookup`, which the agent's endpoint list
satisfies (`hubble.endpoints.EndpointsLookup`) and tests fake with a dict.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from ipaddress import IPv4Address
from random import getrandbits
from typing import Protocol

from pylium.datapath.conntrack import CtStatus
from pylium.datapath.events import (
    Direction,
    Event,
    EventType,
    PolicyVerdict,
    TracePoint,
    XlatePoint,
)
from pylium.hubble.flow import (
    IP,
    TCP,
    UDP,
    CiliumEventType,
    DropReason,
    Endpoint,
    Flow,
    FlowType,
    ICMPv4,
    Layer4,
    NetworkInterface,
    Policy,
    Service,
    SocketTranslationPoint,
    TCPFlags,
    TraceObservationPoint,
    TraceReason,
    TrafficDirection,
    Verdict,
    l4_summary,
)

PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17
ICMP_ECHO_REPLY = 0
ICMP_ECHO_REQUEST = 8

_UNSPECIFIED = IPv4Address(0)
_TEXT_CACHE_MAX = 4096


class EndpointLookup(Protocol):
    """Who is behind an address or a device, as far as this node knows."""

    def endpoint_by_ip(self, ip: str) -> Endpoint | None:
        """The flow endpoint (pod name, namespace, labels, ids) owning `ip`, or None."""

    def interface_name(self, ifindex: int) -> str:
        """The name of a device of this node ("" when unknown)."""


_POINTS = {
    TracePoint.TO_LXC: TraceObservationPoint.TO_ENDPOINT,
    TracePoint.TO_STACK: TraceObservationPoint.TO_STACK,
    TracePoint.TO_OVERLAY: TraceObservationPoint.TO_OVERLAY,
}
_DIRECTIONS = {
    Direction.INGRESS: TrafficDirection.INGRESS,
    Direction.EGRESS: TrafficDirection.EGRESS,
}
_TRACE_REASONS: dict[int, TraceReason] = {
    CtStatus.NEW: TraceReason.NEW,
    CtStatus.ESTABLISHED: TraceReason.ESTABLISHED,
    CtStatus.REPLY: TraceReason.REPLY,
}


def random_uuid() -> str:
    """A version 4 UUID string, as uuid.uuid4() but from `random.getrandbits`: about a quarter
    of a flow's parse time less (no urandom syscall, no UUID object); flow ids need to be
    unique, not secret."""
    value = getrandbits(128) & ~(0xC000 << 48) | 0x8000 << 48  # RFC 4122 variant
    value = value & ~(0xF000 << 64) | 4 << 76  # version 4
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class FlowParser:
    """Turns `Event`s into `Flow`s of one node, stamped with the time they were read."""

    def __init__(
        self,
        lookup: EndpointLookup,
        node_name: str,
        clock: Callable[[], int] = time.time_ns,
        new_uuid: Callable[[], str] = random_uuid,
        policies: Callable[[Event], tuple[Policy, ...]] | None = None,
        services: Callable[[int], Service | None] | None = None,
    ) -> None:
        """`clock` gives wall-clock nanoseconds (the events carry no time of their own);
        `policies` names the policies behind an event's policy verdict (its cookie);
        `services` names the service of a rev-NAT id (socket-LB translations)."""
        self._lookup = lookup
        self._node = node_name
        self._clock = clock
        self._uuid = new_uuid
        self._policies = policies
        self._services = services
        self._texts: dict[IPv4Address, str] = {}

    def parse(self, event: Event) -> Flow:
        """The flow an event describes."""
        if event.type is EventType.TRACE_SOCK:
            return self._parse_sock(event)
        dropped = event.type is EventType.DROP
        has_l3 = event.saddr != _UNSPECIFIED or event.daddr != _UNSPECIFIED
        is_reply = event.ct_status == CtStatus.REPLY and not dropped
        l4 = _layer4(event, is_reply) if has_l3 else None
        code = event.drop_reason.value if event.drop_reason is not None else 0
        point = _POINTS.get(event.trace_point) if event.trace_point is not None else None
        # sub_type is a plain integer in Hubble's proto (not an enum), so never the TracePoint.
        subtype = code if dropped else int(event.trace_point or 0)
        named = self._named_policies(event)
        none: tuple[Policy, ...] = ()
        src, dst = self._text(event.saddr), self._text(event.daddr)
        return Flow(
            time_ns=self._clock(),
            uuid=self._uuid(),
            verdict=_verdict(event),
            drop_reason=code,
            IP=IP(src, dst) if has_l3 else None,
            l4=l4,
            source=self._endpoint(src, event.src_identity) if has_l3 else Endpoint(),
            destination=self._endpoint(dst, event.dst_identity) if has_l3 else Endpoint(),
            Type=FlowType.L3_L4,
            node_name=self._node,
            event_type=CiliumEventType(int(event.type), subtype),
            traffic_direction=_DIRECTIONS[event.direction],
            trace_observation_point=point or TraceObservationPoint.UNKNOWN_POINT,
            trace_reason=TraceReason.TRACE_REASON_UNKNOWN
            if dropped
            else _TRACE_REASONS.get(event.ct_status, TraceReason.TRACE_REASON_UNKNOWN),
            drop_reason_desc=DropReason.of_code(code) if dropped else DropReason(0),
            # Drops happen before (or instead of) conntrack's verdict: reported as not a reply.
            is_reply=is_reply,
            interface=NetworkInterface(event.ifindex, self._lookup.interface_name(event.ifindex))
            if event.ifindex
            else None,
            Summary=_summary(event, l4),
            egress_allowed_by=named.get("egress_allowed_by", none),
            ingress_allowed_by=named.get("ingress_allowed_by", none),
            egress_denied_by=named.get("egress_denied_by", none),
            ingress_denied_by=named.get("ingress_denied_by", none),
        )

    def _parse_sock(self, event: Event) -> Flow:
        """A socket-LB translation as Hubble shows it: verdict TRANSLATED, type SOCK, the
        destination before (pre-xlate-fwd: the service address) or after (post-xlate-fwd: the
        backend) translation, and the service by name. The source address is known only for
        sendmsg() (connect() chooses it later); "" when not."""
        l4 = _layer4(event, False)
        point = event.xlate_point or XlatePoint.PRE_DIRECTION_FWD
        source = str(event.saddr) if event.saddr != _UNSPECIFIED else ""
        destination = str(event.daddr)
        return Flow(
            time_ns=self._clock(),
            uuid=self._uuid(),
            verdict=Verdict.TRANSLATED,
            IP=IP(source, destination),
            l4=l4,
            source=self._endpoint(source, 0) if source else Endpoint(),
            destination=self._endpoint(destination, 0),
            Type=FlowType.SOCK,
            node_name=self._node,
            event_type=CiliumEventType(int(event.type), int(point)),
            destination_service=self._services(event.source) if self._services else None,
            traffic_direction=TrafficDirection.EGRESS,
            sock_xlate_point=SocketTranslationPoint(int(point)),
            Summary=l4_summary(l4),
        )

    def _text(self, address: IPv4Address) -> str:
        """An address as text, cached (bounded): the same few addresses come again and again,
        and the flow and both endpoint lookups need the text."""
        text = self._texts.get(address)
        if text is None:
            if len(self._texts) >= _TEXT_CACHE_MAX:
                self._texts.clear()
            text = self._texts[address] = str(address)
        return text

    def _named_policies(self, event: Event) -> dict[str, tuple[Policy, ...]]:
        """`{ingress,egress}_{allowed,denied}_by` of an event with a policy verdict (an AUDIT
        names the policy that would have denied)."""
        if self._policies is None or event.policy_verdict is PolicyVerdict.NONE:
            return {}
        policies = self._policies(event)
        if not policies:
            return {}
        side = "ingress" if event.direction is Direction.INGRESS else "egress"
        verdict = "allowed" if event.policy_verdict is PolicyVerdict.ALLOWED else "denied"
        return {f"{side}_{verdict}_by": policies}

    def _endpoint(self, ip: str, identity: int) -> Endpoint:
        # The datapath's identity (own endpoint, ipcache or tunnel VNI) wins over the lookup's.
        endpoint = self._lookup.endpoint_by_ip(ip) or Endpoint()
        return dataclasses.replace(endpoint, identity=identity) if identity else endpoint


def _verdict(event: Event) -> Verdict:
    if event.type is EventType.DROP:
        return Verdict.DROPPED
    # Audit mode: policy would have dropped it; the packet went on.
    return Verdict.AUDIT if event.policy_verdict is PolicyVerdict.AUDIT else Verdict.FORWARDED


def _summary(event: Event, l4: Layer4 | None) -> str:
    if event.proto == PROTO_ICMP and not event.sport:
        return "ICMPv4"  # a type the event does not carry
    return l4_summary(l4)


def _layer4(event: Event, is_reply: bool) -> Layer4 | None:
    if event.proto == PROTO_TCP:
        # Every real segment has a flag set: 0 means the event did not say (a drop before parsing).
        flags = TCPFlags.of_byte(event.tcp_flags) if event.tcp_flags else None
        return TCP(event.sport, event.dport, flags)
    if event.proto == PROTO_UDP:
        return UDP(event.sport, event.dport)
    if event.proto == PROTO_ICMP:
        # The datapath fills both ports with the identifier for echo request/reply only and
        # leaves them 0 otherwise; conntrack's reply status tells the two apart.
        if event.sport:
            return ICMPv4(type=ICMP_ECHO_REPLY if is_reply else ICMP_ECHO_REQUEST)
        return ICMPv4()
    return None
