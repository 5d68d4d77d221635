"""Trace and drop events from the `pylium_events` ring buffer (bpf/lib/events.h).

Codes are Cilium's (bpf/lib/common.h, pkg/monitor/api/drop.go), so Hubble-style tools can name
them. `RingBuffer` drives libbpf's consumer and hands each decoded `Event` to a callback.
"""

from __future__ import annotations

import ctypes
import ipaddress
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import TypeVar

from pylium.datapath import libbpf
from pylium.datapath.closing import Closing
from pylium.datapath.maps import RawMap


class EventType(IntEnum):
    """Cilium's CILIUM_NOTIFY_* for the events pylium emits."""

    DROP = 1
    TRACE = 4
    TRACE_SOCK = 7
    """A socket-LB translation (bpf/sock.c): no packet, `source` is the service's rev-NAT id."""


class DropReason(IntEnum):
    """Drop reasons (the positive codes of Cilium's DROP_*); 0 means forwarded in metrics."""

    FORWARDED = 0
    INVALID_SIP = 132
    """"Invalid source ip": a pod sent from an address that is not its own."""
    POLICY_DENIED = 133
    """"Policy denied": an enforced direction with no allow entry for the connection."""
    INVALID = 134
    """"Invalid packet": truncated headers, TTL exhausted."""
    UNKNOWN_L3 = 139
    """"Unsupported L3 protocol": not IPv4 or ARP."""
    NO_LXC = 152
    """"No matching local container found": a pod-CIDR address without an endpoint."""
    CT_CREATE_FAILED = 155
    """"CT: Map insertion failed"."""
    NO_SERVICE = 158
    """"Service backend not found": a service frontend from outside without a backend to take
    the flow (refused with a TCP RST / ICMP port unreachable when it has none at all)."""
    NAT_NO_MAPPING = 167
    """"No mapping for NAT masquerade": no free port (or the NAT map refused the entry)."""
    NAT_UNSUPP_PROTO = 168
    """"Unsupported protocol for NAT masquerade": not TCP, UDP or ICMP echo, or a fragment."""
    NO_TUNNEL_ENDPOINT = 160
    """"No tunnel/encapsulation endpoint": the tunnel key could not be set or read."""
    INVALID_IDENTITY = 171
    """"Invalid identity": a node-local identity would have gone into a tunnel."""
    POLICY_DENY = 181
    """"Policy denied by denylist": a deny rule matched the connection."""


class TracePoint(IntEnum):
    """Observation points (Cilium's TRACE_*)."""

    TO_LXC = 0
    TO_STACK = 3
    TO_OVERLAY = 4


class XlatePoint(IntEnum):
    """Where a socket-LB event looked (Cilium's enum xlate_point)."""

    PRE_DIRECTION_FWD = 1
    """The service address the socket asked for."""
    POST_DIRECTION_FWD = 2
    """The backend it was given."""


class PolicyVerdict(IntEnum):
    """The policy decision of a new connection (bpf/lib/drop.h POLICY_VERDICT_*)."""

    NONE = 0
    """Not looked up: direction not enforced, or not a new connection."""
    ALLOWED = 1
    DENIED = 2
    AUDIT = 3
    """Would have been denied; passed because the endpoint is in audit mode."""


class Direction(IntEnum):
    """Cilium's METRIC_INGRESS/EGRESS: to the pod (to-container) or from it."""

    INGRESS = 1
    EGRESS = 2


RAW_EVENT = struct.Struct("<BBHIIBBBB4s4sHHIIIB3x")
"""struct pylium_event (little-endian host; addresses and ports in network order), unpacked in
one call: the observer decodes tens of thousands of these a second."""
# Enum members and addresses by their raw value: a dict lookup costs a tenth of an Enum or
# IPv4Address constructor call, and the observer makes several per event.
_TYPES = {int(m): m for m in EventType}
_DROPS = {int(m): m for m in DropReason}
_POINTS = {int(m): m for m in TracePoint}
_XLATES = {int(m): m for m in XlatePoint}
_DIRECTIONS = {int(m): m for m in Direction}
_VERDICTS = {int(m): m for m in PolicyVerdict}
_E = TypeVar("_E", bound=IntEnum)
_ADDRESSES: dict[bytes, ipaddress.IPv4Address] = {}
_ADDRESS_CACHE_MAX = 4096
"""Addresses kept decoded (bounded: emptied when full)."""


def _member(members: dict[int, _E], enum: type[_E], value: int) -> _E:
    """The member of `value`; an unknown value raises ValueError as `enum(value)` does."""
    found = members.get(value)
    return found if found is not None else enum(value)


def _address(packed: bytes) -> ipaddress.IPv4Address:
    found = _ADDRESSES.get(packed)
    if found is None:
        if len(_ADDRESSES) >= _ADDRESS_CACHE_MAX:
            _ADDRESSES.clear()
        found = _ADDRESSES[packed] = ipaddress.IPv4Address(packed)
    return found


@dataclass(frozen=True)
class Event:
    """A decoded event. `ifindex`: trace: where the packet goes; drop: where it arrived."""

    type: EventType
    drop_reason: DropReason | None
    trace_point: TracePoint | None
    source: int
    ifindex: int
    ct_status: int
    direction: Direction
    length: int
    proto: int
    saddr: ipaddress.IPv4Address
    daddr: ipaddress.IPv4Address
    sport: int
    dport: int
    tcp_flags: int = 0
    """The TCP flags byte (0 for other protocols)."""
    src_identity: int = 0
    """Security identity of the source (0: the reporting program did not know it)."""
    dst_identity: int = 0
    policy_verdict: PolicyVerdict = PolicyVerdict.NONE
    policy_cookie: int = 0
    """Cookie of the policy entry that decided (names its rules; 0 = none)."""
    xlate_point: XlatePoint | None = None
    """Trace-sock events only."""

    @classmethod
    def decode(cls, data: bytes) -> Event:
        if len(data) != RAW_EVENT.size:
            raise ValueError(
                f"event of {len(data)} bytes, struct pylium_event has {RAW_EVENT.size}"
            )
        (kind_code, subtype, source, orig_len, ifindex, reason, proto, direction, tcp_flags,
         saddr, daddr, sport, dport, src_identity, dst_identity, policy_cookie,
         policy_verdict) = RAW_EVENT.unpack(data)  # fmt: skip
        kind = _member(_TYPES, EventType, kind_code)
        return cls(
            type=kind,
            drop_reason=_member(_DROPS, DropReason, subtype) if kind is EventType.DROP else None,
            trace_point=_member(_POINTS, TracePoint, subtype) if kind is EventType.TRACE else None,
            source=source,
            ifindex=ifindex,
            ct_status=reason,
            direction=_member(_DIRECTIONS, Direction, direction),
            length=orig_len,
            proto=proto,
            saddr=_address(saddr),
            daddr=_address(daddr),
            sport=socket.ntohs(sport),
            dport=socket.ntohs(dport),
            tcp_flags=tcp_flags,
            src_identity=src_identity,
            dst_identity=dst_identity,
            policy_verdict=_member(_VERDICTS, PolicyVerdict, policy_verdict),
            policy_cookie=policy_cookie,
            xlate_point=_member(_XLATES, XlatePoint, subtype)
            if kind is EventType.TRACE_SOCK
            else None,
        )


class RingBuffer(Closing):
    """A consumer of one ring buffer map; `callback` runs inside poll/consume.

    An exception from the callback stops the current poll and is re-raised from it.
    """

    def __init__(self, events: RawMap, callback: Callable[[Event], None]) -> None:
        self._callback = callback
        self._error: BaseException | None = None
        self._sample = libbpf.SAMPLE_FN(self._on_sample)  # kept alive as long as the buffer
        self._rb = libbpf.check_ptr(
            libbpf.lib().ring_buffer__new(events.fd, self._sample, None, None),
            f"ring buffer on {events.name}",
        )

    def _on_sample(self, ctx: int | None, data: int, size: int) -> int:
        try:
            self._callback(Event.decode(ctypes.string_at(data, size)))
        except BaseException as exc:  # re-raised by poll/consume; C must not unwind
            self._error = exc
            return -1
        return 0

    def _finish(self, ret: int, what: str) -> int:
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        return libbpf.check(ret, what)

    def poll(self, timeout_ms: int) -> int:
        """Wait up to `timeout_ms` for events and handle them; returns how many."""
        return self._finish(libbpf.lib().ring_buffer__poll(self._rb, timeout_ms), "poll events")

    def consume(self) -> int:
        """Handle every event already in the buffer without waiting; returns how many."""
        return self._finish(libbpf.lib().ring_buffer__consume(self._rb), "consume events")

    def close(self) -> None:
        if self._rb:
            libbpf.lib().ring_buffer__free(self._rb)
            self._rb = 0
