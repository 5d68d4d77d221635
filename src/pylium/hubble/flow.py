"""The flow model: typed dataclasses with Hubble's names (flow.Flow of Cilium's API v1).

Field names, enum names and the JSON form follow `conformance/hubble/WIRE.md`, so the later
gRPC API serialises these objects field for field. `Flow.to_json` is protobuf JSON with the
original field names (what `hubble observe -o json` prints): fields at their default value are
left out, except `is_reply`, a BoolValue that is printed whenever it is known; fields come in
field-number order. `GetFlowsResponse`-style lines (`{"flow", "node_name", "time"}`) come from
`response_json`; `compact` is `hubble observe`'s one-line text form.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import IntEnum
from typing import Any


class Verdict(IntEnum):
    """flow.Verdict."""

    VERDICT_UNKNOWN = 0
    FORWARDED = 1
    DROPPED = 2
    ERROR = 3
    AUDIT = 4
    REDIRECTED = 5
    TRACED = 6
    TRANSLATED = 7


class FlowType(IntEnum):
    """flow.FlowType."""

    UNKNOWN_TYPE = 0
    L3_L4 = 1
    L7 = 2
    SOCK = 3


class TrafficDirection(IntEnum):
    """flow.TrafficDirection, relative to the endpoint that reported the event."""

    TRAFFIC_DIRECTION_UNKNOWN = 0
    INGRESS = 1
    EGRESS = 2


class TraceObservationPoint(IntEnum):
    """flow.TraceObservationPoint (TO_ENDPOINT is Cilium's TRACE_TO_LXC)."""

    UNKNOWN_POINT = 0
    TO_PROXY = 1
    TO_HOST = 2
    TO_STACK = 3
    TO_OVERLAY = 4
    TO_ENDPOINT = 101
    FROM_ENDPOINT = 5
    FROM_PROXY = 6
    FROM_HOST = 7
    FROM_STACK = 8
    FROM_OVERLAY = 9
    FROM_NETWORK = 10
    TO_NETWORK = 11
    FROM_CRYPTO = 12
    TO_CRYPTO = 13


class SocketTranslationPoint(IntEnum):
    """flow.SocketTranslationPoint: where socket LB reported a service translation."""

    SOCK_XLATE_POINT_UNKNOWN = 0
    SOCK_XLATE_POINT_PRE_DIRECTION_FWD = 1
    SOCK_XLATE_POINT_POST_DIRECTION_FWD = 2
    SOCK_XLATE_POINT_PRE_DIRECTION_REV = 3
    SOCK_XLATE_POINT_POST_DIRECTION_REV = 4


class TraceReason(IntEnum):
    """flow.TraceReason: the connection state of a traced packet."""

    TRACE_REASON_UNKNOWN = 0
    NEW = 1
    ESTABLISHED = 2
    REPLY = 3
    RELATED = 4
    REOPENED = 5


class IPVersion(IntEnum):
    """flow.IPVersion."""

    IP_NOT_USED = 0
    IPv4 = 1
    IPv6 = 2


class DropReason(IntEnum):
    """flow.DropReason: Cilium's drop codes by Hubble's names (the ones a datapath can emit)."""

    DROP_REASON_UNKNOWN = 0
    INVALID_SOURCE_MAC = 130
    INVALID_DESTINATION_MAC = 131
    INVALID_SOURCE_IP = 132
    POLICY_DENIED = 133
    INVALID_PACKET_DROPPED = 134
    CT_TRUNCATED_OR_INVALID_HEADER = 135
    CT_MISSING_TCP_ACK_FLAG = 136
    CT_UNKNOWN_L4_PROTOCOL = 137
    CT_CANNOT_CREATE_ENTRY_FROM_PACKET = 138
    UNSUPPORTED_L3_PROTOCOL = 139
    MISSED_TAIL_CALL = 140
    ERROR_WRITING_TO_PACKET = 141
    UNKNOWN_L4_PROTOCOL = 142
    UNKNOWN_ICMPV4_CODE = 143
    UNKNOWN_ICMPV4_TYPE = 144
    UNKNOWN_ICMPV6_CODE = 145
    UNKNOWN_ICMPV6_TYPE = 146
    ERROR_RETRIEVING_TUNNEL_KEY = 147
    ERROR_RETRIEVING_TUNNEL_OPTIONS = 148
    INVALID_GENEVE_OPTION = 149
    UNKNOWN_L3_TARGET_ADDRESS = 150
    STALE_OR_UNROUTABLE_IP = 151
    NO_MATCHING_LOCAL_CONTAINER_FOUND = 152
    ERROR_WHILE_CORRECTING_L3_CHECKSUM = 153
    ERROR_WHILE_CORRECTING_L4_CHECKSUM = 154
    CT_MAP_INSERTION_FAILED = 155
    INVALID_IPV6_EXTENSION_HEADER = 156
    IP_FRAGMENTATION_NOT_SUPPORTED = 157
    SERVICE_BACKEND_NOT_FOUND = 158
    NO_TUNNEL_OR_ENCAPSULATION_ENDPOINT = 160
    FAILED_TO_INSERT_INTO_PROXYMAP = 161
    REACHED_EDT_RATE_LIMITING_DROP_HORIZON = 162
    UNKNOWN_CONNECTION_TRACKING_STATE = 163
    LOCAL_HOST_IS_UNREACHABLE = 164
    NO_CONFIGURATION_AVAILABLE_TO_PERFORM_POLICY_DECISION = 165
    UNSUPPORTED_L2_PROTOCOL = 166
    NO_MAPPING_FOR_NAT_MASQUERADE = 167
    UNSUPPORTED_PROTOCOL_FOR_NAT_MASQUERADE = 168
    FIB_LOOKUP_FAILED = 169
    ENCAPSULATION_TRAFFIC_IS_PROHIBITED = 170
    INVALID_IDENTITY = 171
    UNKNOWN_SENDER = 172
    NAT_NOT_NEEDED = 173
    IS_A_CLUSTERIP = 174
    FIRST_LOGICAL_DATAGRAM_FRAGMENT_NOT_FOUND = 175
    FORBIDDEN_ICMPV6_MESSAGE = 176
    DENIED_BY_LB_SRC_RANGE_CHECK = 177
    SOCKET_LOOKUP_FAILED = 178
    SOCKET_ASSIGN_FAILED = 179
    PROXY_REDIRECTION_NOT_SUPPORTED_FOR_PROTOCOL = 180
    POLICY_DENY = 181
    VLAN_FILTERED = 182
    INVALID_VNI = 183
    INVALID_TC_BUFFER = 184
    NO_SID = 185
    MISSING_SRV6_STATE = 186
    NAT46 = 187
    NAT64 = 188
    AUTH_REQUIRED = 189
    CT_NO_MAP_FOUND = 190
    SNAT_NO_MAP_FOUND = 191
    INVALID_CLUSTER_ID = 192
    UNSUPPORTED_PROTOCOL_FOR_DSR_ENCAP = 193
    NO_EGRESS_GATEWAY = 194
    UNENCRYPTED_TRAFFIC = 195
    TTL_EXCEEDED = 196
    NO_NODE_ID = 197
    DROP_RATE_LIMITED = 198

    @classmethod
    def of_code(cls, code: int) -> DropReason:
        """The reason of a datapath code; DROP_REASON_UNKNOWN for a code Hubble doesn't name."""
        try:
            return cls(code)
        except ValueError:
            return cls.DROP_REASON_UNKNOWN

    @property
    def text(self) -> str:
        """Cilium's human text (pkg/monitor/api/drop.go), as `hubble observe` prints it."""
        return _DROP_TEXT.get(self, self.name)


# Cilium's wording where it differs from a plain reading of the enum name.
_DROP_TEXT: dict[DropReason, str] = {
    DropReason.INVALID_SOURCE_MAC: "Invalid source mac",
    DropReason.INVALID_DESTINATION_MAC: "Invalid destination mac",
    DropReason.INVALID_SOURCE_IP: "Invalid source ip",
    DropReason.POLICY_DENIED: "Policy denied",
    DropReason.INVALID_PACKET_DROPPED: "Invalid packet",
    DropReason.CT_TRUNCATED_OR_INVALID_HEADER: "CT: Truncated or invalid header",
    DropReason.CT_UNKNOWN_L4_PROTOCOL: "CT: Unknown L4 protocol",
    DropReason.UNSUPPORTED_L3_PROTOCOL: "Unsupported L3 protocol",
    DropReason.UNKNOWN_L4_PROTOCOL: "Unknown L4 protocol",
    DropReason.NO_MATCHING_LOCAL_CONTAINER_FOUND: "No matching local container found",
    DropReason.CT_MAP_INSERTION_FAILED: "CT: Map insertion failed",
    DropReason.SERVICE_BACKEND_NOT_FOUND: "Service backend not found",
    DropReason.POLICY_DENY: "Policy denied by denylist",
    DropReason.TTL_EXCEEDED: "TTL exceeded",
}

# Reserved identities (Cilium's pkg/identity): printed by name instead of "ID:n".
RESERVED_IDENTITIES: dict[int, str] = {
    0: "unknown",
    1: "host",
    2: "world",
    3: "unmanaged",
    4: "health",
    5: "init",
    6: "remote-node",
    7: "kube-apiserver",
    8: "ingress",
    9: "world-ipv4",
    10: "world-ipv6",
}
MIN_CLUSTER_IDENTITY = 256
"""Identities below this are reserved (Cilium's MinimalNumericIdentity)."""


@dataclass(frozen=True)
class Endpoint:
    """flow.Endpoint: one side of a flow, as far as the agent knows it."""

    ID: int = 0
    """The endpoint id on its node (0: not a local endpoint)."""
    identity: int = 0
    """The security identity (reserved ones < 256: 1 host, 2 world, ...)."""
    namespace: str = ""
    labels: tuple[str, ...] = ()
    """`source:key=value` strings, e.g. `k8s:app=web`."""
    pod_name: str = ""

    def to_json(self) -> dict[str, Any]:
        return _prune(
            {
                "ID": self.ID,
                "identity": self.identity,
                "namespace": self.namespace,
                "labels": list(self.labels),
                "pod_name": self.pod_name,
            }
        )

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Endpoint:
        return cls(
            ID=int(data.get("ID", 0)),
            identity=int(data.get("identity", 0)),
            namespace=str(data.get("namespace", "")),
            labels=tuple(data.get("labels", ())),
            pod_name=str(data.get("pod_name", "")),
        )


@dataclass(frozen=True)
class Policy:
    """flow.Policy: a policy a verdict names (`*_allowed_by`, `*_denied_by`)."""

    name: str
    namespace: str = ""
    kind: str = ""
    labels: tuple[str, ...] = ()
    """The deciding rules of the policy (`netpol:ns/name spec.ingress[0]`)."""
    revision: int = 0

    def to_json(self) -> dict[str, Any]:
        return _prune(
            {
                "name": self.name,
                "namespace": self.namespace,
                "labels": list(self.labels),
                "revision": str(self.revision) if self.revision else "",  # uint64: a string
                "kind": self.kind,
            }
        )

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Policy:
        return cls(
            str(data.get("name", "")),
            str(data.get("namespace", "")),
            str(data.get("kind", "")),
            tuple(str(x) for x in data.get("labels", [])),
            int(data.get("revision", 0)),
        )


@dataclass(frozen=True)
class Service:
    """flow.Service: the Kubernetes Service a flow side was translated from or to."""

    name: str
    namespace: str = ""

    def to_json(self) -> dict[str, Any]:
        return _prune({"name": self.name, "namespace": self.namespace})

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Service:
        return cls(str(data.get("name", "")), str(data.get("namespace", "")))


@dataclass(frozen=True)
class IP:
    """flow.IP."""

    source: str
    destination: str
    ipVersion: IPVersion = IPVersion.IPv4

    def to_json(self) -> dict[str, Any]:
        return _prune(
            {"source": self.source, "destination": self.destination, "ipVersion": self.ipVersion}
        )


@dataclass(frozen=True)
class TCPFlags:
    """flow.TCPFlags."""

    FIN: bool = False
    SYN: bool = False
    RST: bool = False
    PSH: bool = False
    ACK: bool = False
    URG: bool = False
    ECE: bool = False
    CWR: bool = False
    NS: bool = False

    @classmethod
    def of_byte(cls, flags: int) -> TCPFlags:
        """From the TCP header's flags byte (FIN 0x01 ... CWR 0x80)."""
        names = ("FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR")
        return cls(**{name: bool(flags & (1 << bit)) for bit, name in enumerate(names)})

    def names(self) -> list[str]:
        """The set flags in Hubble's print order (SYN, ACK, ... as `TCP Flags: SYN, ACK`)."""
        order = ("SYN", "FIN", "RST", "PSH", "ACK", "URG", "ECE", "CWR", "NS")
        return [name for name in order if getattr(self, name)]

    def to_json(self) -> dict[str, Any]:
        return {name: True for name in self.__dataclass_fields__ if getattr(self, name)}


@dataclass(frozen=True)
class TCP:
    """flow.TCP."""

    source_port: int
    destination_port: int
    flags: TCPFlags | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "TCP": _prune(
                {
                    "source_port": self.source_port,
                    "destination_port": self.destination_port,
                    "flags": None if self.flags is None else self.flags.to_json(),
                }
            )
        }


@dataclass(frozen=True)
class UDP:
    """flow.UDP."""

    source_port: int
    destination_port: int

    def to_json(self) -> dict[str, Any]:
        return {
            "UDP": _prune(
                {"source_port": self.source_port, "destination_port": self.destination_port}
            )
        }


@dataclass(frozen=True)
class ICMPv4:
    """flow.ICMPv4."""

    type: int = 0
    code: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"ICMPv4": _prune({"type": self.type, "code": self.code})}


Layer4 = TCP | UDP | ICMPv4
"""flow.Layer4 is a oneof: one of these, or None."""


@dataclass(frozen=True)
class CiliumEventType:
    """flow.CiliumEventType: the monitor message type (1 drop, 4 trace) and its subtype."""

    type: int
    sub_type: int = 0

    def to_json(self) -> dict[str, Any]:
        return _prune({"type": self.type, "sub_type": self.sub_type})


@dataclass(frozen=True)
class NetworkInterface:
    """flow.NetworkInterface."""

    index: int
    name: str = ""

    def to_json(self) -> dict[str, Any]:
        return _prune({"index": self.index, "name": self.name})


@dataclass(frozen=True)
class Flow:
    """flow.Flow (the L3/L4 part pylium's datapath reports)."""

    time_ns: int
    """Wall-clock time in nanoseconds since the epoch (JSON: `time`, RFC 3339)."""
    uuid: str = ""
    verdict: Verdict = Verdict.VERDICT_UNKNOWN
    drop_reason: int = 0
    """The datapath's numeric code (deprecated in Hubble in favour of drop_reason_desc)."""
    IP: IP | None = None
    l4: Layer4 | None = None
    source: Endpoint = field(default_factory=Endpoint)
    destination: Endpoint = field(default_factory=Endpoint)
    Type: FlowType = FlowType.L3_L4
    node_name: str = ""
    event_type: CiliumEventType | None = None
    source_service: Service | None = None
    destination_service: Service | None = None
    traffic_direction: TrafficDirection = TrafficDirection.TRAFFIC_DIRECTION_UNKNOWN
    trace_observation_point: TraceObservationPoint = TraceObservationPoint.UNKNOWN_POINT
    trace_reason: TraceReason = TraceReason.TRACE_REASON_UNKNOWN
    drop_reason_desc: DropReason = DropReason.DROP_REASON_UNKNOWN
    is_reply: bool | None = None
    """None when the datapath could not tell (a BoolValue in Hubble)."""
    interface: NetworkInterface | None = None
    sock_xlate_point: SocketTranslationPoint = SocketTranslationPoint.SOCK_XLATE_POINT_UNKNOWN
    egress_allowed_by: tuple[Policy, ...] = ()
    ingress_allowed_by: tuple[Policy, ...] = ()
    egress_denied_by: tuple[Policy, ...] = ()
    ingress_denied_by: tuple[Policy, ...] = ()
    Summary: str = ""

    def to_json(self) -> dict[str, Any]:
        """Protobuf JSON of flow.Flow, fields in field-number order."""
        return _prune(
            {
                "time": format_time(self.time_ns),
                "verdict": self.verdict,
                "drop_reason": self.drop_reason,
                "IP": None if self.IP is None else self.IP.to_json(),
                "l4": None if self.l4 is None else self.l4.to_json(),
                "source": self.source.to_json(),
                "destination": self.destination.to_json(),
                "Type": self.Type,
                "node_name": self.node_name,
                "event_type": None if self.event_type is None else self.event_type.to_json(),
                "source_service": _opt_json(self.source_service),
                "destination_service": _opt_json(self.destination_service),
                "traffic_direction": self.traffic_direction,
                "trace_observation_point": self.trace_observation_point,
                "drop_reason_desc": self.drop_reason_desc,
                "is_reply": self.is_reply,
                "interface": None if self.interface is None else self.interface.to_json(),
                "sock_xlate_point": self.sock_xlate_point,
                "uuid": self.uuid,
                "trace_reason": self.trace_reason,
                "egress_allowed_by": [p.to_json() for p in self.egress_allowed_by],
                "ingress_allowed_by": [p.to_json() for p in self.ingress_allowed_by],
                "egress_denied_by": [p.to_json() for p in self.egress_denied_by],
                "ingress_denied_by": [p.to_json() for p in self.ingress_denied_by],
                "Summary": self.Summary,
            },
            keep=("is_reply",),
        )

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Flow:
        """Parse the JSON `to_json` (or Hubble) writes; fields pylium doesn't model are
        ignored."""
        ip = data.get("IP")
        return cls(
            time_ns=parse_time(data["time"]) if "time" in data else 0,
            uuid=str(data.get("uuid", "")),
            verdict=Verdict[data.get("verdict", "VERDICT_UNKNOWN")],
            drop_reason=int(data.get("drop_reason", 0)),
            IP=None
            if ip is None
            else IP(
                source=str(ip.get("source", "")),
                destination=str(ip.get("destination", "")),
                ipVersion=IPVersion[ip.get("ipVersion", "IP_NOT_USED")],
            ),
            l4=_l4_from_json(data.get("l4")),
            source=Endpoint.from_json(data.get("source", {})),
            destination=Endpoint.from_json(data.get("destination", {})),
            Type=FlowType[data.get("Type", "UNKNOWN_TYPE")],
            node_name=str(data.get("node_name", "")),
            event_type=CiliumEventType(
                int(data["event_type"].get("type", 0)), int(data["event_type"].get("sub_type", 0))
            )
            if "event_type" in data
            else None,
            source_service=Service.from_json(data["source_service"])
            if "source_service" in data
            else None,
            destination_service=Service.from_json(data["destination_service"])
            if "destination_service" in data
            else None,
            traffic_direction=TrafficDirection[
                data.get("traffic_direction", "TRAFFIC_DIRECTION_UNKNOWN")
            ],
            trace_observation_point=TraceObservationPoint[
                data.get("trace_observation_point", "UNKNOWN_POINT")
            ],
            trace_reason=TraceReason[data.get("trace_reason", "TRACE_REASON_UNKNOWN")],
            drop_reason_desc=DropReason[data.get("drop_reason_desc", "DROP_REASON_UNKNOWN")],
            is_reply=data.get("is_reply"),
            interface=NetworkInterface(
                int(data["interface"].get("index", 0)), str(data["interface"].get("name", ""))
            )
            if "interface" in data
            else None,
            sock_xlate_point=SocketTranslationPoint[
                data.get("sock_xlate_point", "SOCK_XLATE_POINT_UNKNOWN")
            ],
            egress_allowed_by=_policies(data, "egress_allowed_by"),
            ingress_allowed_by=_policies(data, "ingress_allowed_by"),
            egress_denied_by=_policies(data, "egress_denied_by"),
            ingress_denied_by=_policies(data, "ingress_denied_by"),
            Summary=str(data.get("Summary", "")),
        )


def response_json(flow: Flow) -> dict[str, Any]:
    """observer.GetFlowsResponse carrying one flow: one line of `hubble observe -o json`."""
    return {"flow": flow.to_json(), "node_name": flow.node_name, "time": format_time(flow.time_ns)}


def l4_summary(l4: Layer4 | None) -> str:
    """What Hubble prints in parentheses after the verdict: `TCP Flags: SYN`, `UDP`, ..."""
    if isinstance(l4, TCP):
        names = l4.flags.names() if l4.flags is not None else []
        return "TCP Flags: " + ", ".join(names) if names else "TCP"
    if isinstance(l4, UDP):
        return "UDP"
    if isinstance(l4, ICMPv4):
        return f"ICMPv4 {_ICMP_TYPES.get(l4.type, str(l4.type))}"
    return ""


_ICMP_TYPES = {0: "EchoReply", 3: "DestinationUnreachable", 8: "EchoRequest", 11: "TimeExceeded"}


@dataclass(frozen=True)
class _Columns:
    """The columns of Hubble's text outputs (compact, dict, table)."""

    stamp: str
    source: str
    destination: str
    what: str
    verdict: str
    summary: str


def _columns(flow: Flow) -> _Columns:
    when = datetime.fromtimestamp(flow.time_ns / 1e9).astimezone()
    sport, dport = _ports(flow.l4)
    src_ip, dst_ip = (flow.IP.source, flow.IP.destination) if flow.IP else ("", "")
    if flow.verdict == Verdict.DROPPED:
        what = flow.drop_reason_desc.text
    elif flow.sock_xlate_point:
        what = _XLATE_TEXT[flow.sock_xlate_point]
    else:
        what = _POINT_TEXT.get(flow.trace_observation_point, "")
    return _Columns(
        stamp=f"{when:%b} {when.day:2d} {when:%H:%M:%S}.{when.microsecond // 1000:03d}",
        source=_host(flow.source, src_ip, sport),
        destination=_host(flow.destination, dst_ip, dport),
        what=what,
        verdict=flow.verdict.name,
        summary=flow.Summary or l4_summary(flow.l4),
    )


def compact(flow: Flow) -> str:
    """`hubble observe`'s compact line, e.g.

    `Nov 26 15:40:01.123: default/web-1:43210 (ID:1234) -> default/web-2:80 (ID:5678)
    to-endpoint FORWARDED (TCP Flags: SYN)`; a drop names its reason where Hubble puts the
    observation point: `... Invalid source ip DROPPED (UDP)`.
    """
    c = _columns(flow)
    arrow = "<>" if flow.is_reply is None else ("<-" if flow.is_reply else "->")
    parts = [f"{c.stamp}:", c.source, arrow, c.destination, c.what, c.verdict]
    if c.summary:
        parts.append(f"({c.summary})")
    return " ".join(p for p in parts if p)


DICT_SEPARATOR = "------------"
"""What `hubble observe -o dict` prints between two flows."""


def dict_text(flow: Flow) -> str:
    """`hubble observe -o dict`: one `KEY: value` line per column, keys right-aligned."""
    c = _columns(flow)
    rows = [
        ("TIMESTAMP", c.stamp),
        ("SOURCE", c.source),
        ("DESTINATION", c.destination),
        ("TYPE", c.what),
        ("VERDICT", c.verdict),
        ("SUMMARY", c.summary),
    ]
    if flow.node_name:
        rows.insert(1, ("NODE", flow.node_name))
    return "\n".join(f"{key:>11}: {value}" for key, value in rows)


TABLE_HEADER = ("TIMESTAMP", "NODE", "SOURCE", "DESTINATION", "TYPE", "VERDICT", "SUMMARY")
"""The columns of `hubble observe -o table` (with the node name)."""


def table_row(flow: Flow) -> tuple[str, ...]:
    """One row of `hubble observe -o table`, in TABLE_HEADER's order."""
    c = _columns(flow)
    return (c.stamp, flow.node_name, c.source, c.destination, c.what, c.verdict, c.summary)


_POINT_TEXT = {
    TraceObservationPoint.TO_ENDPOINT: "to-endpoint",
    TraceObservationPoint.TO_STACK: "to-stack",
    TraceObservationPoint.TO_HOST: "to-host",
    TraceObservationPoint.TO_OVERLAY: "to-overlay",
    TraceObservationPoint.TO_PROXY: "to-proxy",
    TraceObservationPoint.FROM_ENDPOINT: "from-endpoint",
    TraceObservationPoint.FROM_STACK: "from-stack",
    TraceObservationPoint.FROM_HOST: "from-host",
    TraceObservationPoint.FROM_NETWORK: "from-network",
    TraceObservationPoint.TO_NETWORK: "to-network",
}


_XLATE_TEXT = {
    SocketTranslationPoint.SOCK_XLATE_POINT_PRE_DIRECTION_FWD: "pre-xlate-fwd",
    SocketTranslationPoint.SOCK_XLATE_POINT_POST_DIRECTION_FWD: "post-xlate-fwd",
    SocketTranslationPoint.SOCK_XLATE_POINT_PRE_DIRECTION_REV: "pre-xlate-rev",
    SocketTranslationPoint.SOCK_XLATE_POINT_POST_DIRECTION_REV: "post-xlate-rev",
}
"""Hubble's text for socket-LB translation points."""


def _ports(l4: Layer4 | None) -> tuple[int, int]:
    if isinstance(l4, TCP | UDP):
        return l4.source_port, l4.destination_port
    return 0, 0


def _host(ep: Endpoint, ip: str, port: int) -> str:
    name = f"{ep.namespace}/{ep.pod_name}" if ep.pod_name else ip
    if port:
        name = f"{name}:{port}"
    return f"{name} {identity_text(ep.identity)}" if name else ""


def identity_text(identity: int) -> str:
    """`(ID:31245)`, or `(world)` for a reserved identity, as Hubble prints them."""
    if identity < MIN_CLUSTER_IDENTITY:
        return f"({RESERVED_IDENTITIES.get(identity, str(identity))})"
    return f"(ID:{identity})"


def format_time(time_ns: int) -> str:
    """RFC 3339 in UTC with 0, 3, 6 or 9 fractional digits, as protobuf JSON writes Timestamps."""
    seconds, nanos = divmod(time_ns, 1_000_000_000)
    base = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if nanos == 0:
        return base + "Z"
    if nanos % 1_000_000 == 0:
        return f"{base}.{nanos // 1_000_000:03d}Z"
    if nanos % 1_000 == 0:
        return f"{base}.{nanos // 1_000:06d}Z"
    return f"{base}.{nanos:09d}Z"


def parse_time(text: str) -> int:
    """Nanoseconds since the epoch of an RFC 3339 time (`Z` or an offset, up to 9 digits)."""
    main, frac = text, ""
    if "." in text:
        main, rest = text.split(".", 1)
        digits = len(rest) - len(rest.lstrip("0123456789"))
        frac, zone = rest[:digits], rest[digits:]
        main += zone
    when = datetime.fromisoformat(main.replace("Z", "+00:00"))
    if when.tzinfo is None:
        raise ValueError(f"time {text!r} has no time zone")
    return int(when.timestamp()) * 1_000_000_000 + int((frac + "000000000")[:9])


def _l4_from_json(data: dict[str, Any] | None) -> Layer4 | None:
    if not data:
        return None
    if "TCP" in data:
        tcp = data["TCP"]
        flags = tcp.get("flags")
        return TCP(
            int(tcp.get("source_port", 0)),
            int(tcp.get("destination_port", 0)),
            TCPFlags(**flags) if flags is not None else None,
        )
    if "UDP" in data:
        return UDP(
            int(data["UDP"].get("source_port", 0)), int(data["UDP"].get("destination_port", 0))
        )
    if "ICMPv4" in data:
        return ICMPv4(int(data["ICMPv4"].get("type", 0)), int(data["ICMPv4"].get("code", 0)))
    return None


def _opt_json(value: Service | None) -> dict[str, Any] | None:
    return None if value is None else value.to_json()


def _policies(data: dict[str, Any], key: str) -> tuple[Policy, ...]:
    return tuple(Policy.from_json(p) for p in data.get(key, []))


def _prune(values: dict[str, Any], keep: tuple[str, ...] = ()) -> dict[str, Any]:
    """Protobuf JSON: leave out defaults (None, 0, False, "", empty, enum value 0) except the
    wrapper-typed fields in `keep`, which are printed whenever they are set; enums by name."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if value is None:
            continue
        if key not in keep:
            if value in ("", 0, [], {}) or value is False:
                continue
            if isinstance(value, IntEnum):
                value = value.name
        out[key] = value
    return out
