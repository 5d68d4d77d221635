"""Flow filters with Hubble's semantics (flow.FlowFilter), and the query that builds them.

A `FlowFilter` holds lists of values per field: values of one field are ORed, fields are ANDed,
an empty field matches everything. A request carries a whitelist and a blacklist: a flow passes
when it matches at least one whitelist filter (or the whitelist is empty) and no blacklist
filter. Pod values are `namespace/name-prefix` as in Hubble (`x/web` matches `x/web-1`).

`FlowQuery` is the `pylium observe` / `GET /v1/flows` form: options such as `pod`, `port` or
`ip` mean "on either side", so each one expands into a source and a destination variant and
the whitelist is every combination; `from-*`/`to-*` options pick a side. Options prefixed
`not-` build the blacklist the same way.
"""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

from pylium.hubble.flow import (
    RESERVED_IDENTITIES,
    TCP,
    UDP,
    DropReason,
    Endpoint,
    Flow,
    ICMPv4,
    IPVersion,
    Service,
    TrafficDirection,
    Verdict,
)

DEFAULT_NAMESPACE = "default"

EVENT_TYPES = {"drop": 1, "trace": 4, "trace-sock": 7}
"""`--type` names and Cilium's monitor message types."""


class InvalidFilter(ValueError):
    """A filter value that cannot be understood (names the option and the value)."""


@dataclass(frozen=True)
class FlowFilter:
    """flow.FlowFilter (the fields pylium's flows carry). Hubble field names."""

    uuid: tuple[str, ...] = ()
    source_ip: tuple[str, ...] = ()
    destination_ip: tuple[str, ...] = ()
    source_pod: tuple[str, ...] = ()
    destination_pod: tuple[str, ...] = ()
    source_service: tuple[str, ...] = ()
    """`namespace/name-prefix` of the Service a side was translated from/to, as pods."""
    destination_service: tuple[str, ...] = ()
    source_identity: tuple[int, ...] = ()
    destination_identity: tuple[int, ...] = ()
    verdict: tuple[Verdict, ...] = ()
    event_type: tuple[int, ...] = ()
    """Cilium monitor types: 1 drop, 4 trace."""
    protocol: tuple[str, ...] = ()
    source_port: tuple[int, ...] = ()
    destination_port: tuple[int, ...] = ()
    traffic_direction: tuple[TrafficDirection, ...] = ()
    reply: tuple[bool, ...] = ()
    node_name: tuple[str, ...] = ()
    source_label: tuple[str, ...] = ()
    """Label selectors (`k8s:app=web`, `app=web,tier!=db`, `!canary`): a comma-separated AND."""
    destination_label: tuple[str, ...] = ()
    ip_version: tuple[IPVersion, ...] = ()
    drop_reason_desc: tuple[DropReason, ...] = ()
    tcp_flags: tuple[frozenset[str], ...] = ()
    """Each a set of flag names (`SYN`, `ACK`) that must all be set."""
    unmatchable: tuple[str, ...] = ()
    """Fields set in a Hubble filter that pylium's flows never carry: the filter matches
    nothing (Hubble's answer for flows without that data)."""

    def matches(self, flow: Flow) -> bool:
        """True when every non-empty field has a value matching the flow."""
        src_ip, dst_ip = (flow.IP.source, flow.IP.destination) if flow.IP else ("", "")
        sport, dport = _ports(flow)
        checks = (
            (self.uuid, lambda v: v == flow.uuid),
            (self.source_ip, lambda v: _ip_matches(v, src_ip)),
            (self.destination_ip, lambda v: _ip_matches(v, dst_ip)),
            (self.source_pod, lambda v: _pod_matches(v, flow.source)),
            (self.destination_pod, lambda v: _pod_matches(v, flow.destination)),
            (self.source_service, lambda v: _service_matches(v, flow.source_service)),
            (
                self.destination_service,
                lambda v: _service_matches(v, flow.destination_service),
            ),
            (self.source_identity, lambda v: v == flow.source.identity),
            (self.destination_identity, lambda v: v == flow.destination.identity),
            (self.verdict, lambda v: v == flow.verdict),
            (self.event_type, lambda v: flow.event_type is not None and v == flow.event_type.type),
            (self.protocol, lambda v: _protocol_matches(v, flow)),
            (self.source_port, lambda v: sport is not None and v == sport),
            (self.destination_port, lambda v: dport is not None and v == dport),
            (self.traffic_direction, lambda v: v == flow.traffic_direction),
            (self.reply, lambda v: flow.is_reply is not None and v == flow.is_reply),
            (self.node_name, lambda v: _glob_prefix_matches(v, flow.node_name)),
            (self.source_label, lambda v: _labels_match(v, flow.source.labels)),
            (self.destination_label, lambda v: _labels_match(v, flow.destination.labels)),
            (self.ip_version, lambda v: flow.IP is not None and v == flow.IP.ipVersion),
            (self.drop_reason_desc, lambda v: v == flow.drop_reason_desc),
            (self.tcp_flags, lambda v: _flags_match(v, flow)),
        )
        if self.unmatchable:
            return False
        return all(not values or any(match(v) for v in values) for values, match in checks)

    def add(self, **values: Iterable[Any]) -> FlowFilter:
        """A copy with more values in the named fields."""
        return replace(self, **{k: (*getattr(self, k), *v) for k, v in values.items()})

    def to_json(self) -> dict[str, Any]:
        """Hubble's JSON form (non-empty fields; enums by name, ports as strings)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            values = getattr(self, f.name)
            if not values or f.name == "unmatchable":
                continue
            if f.name == "event_type":
                out[f.name] = [{"type": v} for v in values]
            elif f.name in ("source_port", "destination_port"):
                out[f.name] = [str(v) for v in values]
            elif f.name == "tcp_flags":
                out[f.name] = [dict.fromkeys(sorted(v), True) for v in values]
            else:
                out[f.name] = [getattr(v, "name", v) for v in values]
        return out


def matches(flow: Flow, whitelist: Sequence[FlowFilter], blacklist: Sequence[FlowFilter]) -> bool:
    """Hubble's rule: in the whitelist (if any) and in no blacklist filter."""
    if whitelist and not any(f.matches(flow) for f in whitelist):
        return False
    return not any(f.matches(flow) for f in blacklist)


def _ports(flow: Flow) -> tuple[int | None, int | None]:
    if isinstance(flow.l4, TCP | UDP):
        return flow.l4.source_port, flow.l4.destination_port
    return None, None


def _ip_matches(value: str, ip: str) -> bool:
    if not ip:
        return False
    if "/" in value:
        return ipaddress.ip_address(ip) in ipaddress.ip_network(value, strict=False)
    return value == ip


def _pod_matches(value: str, ep: Endpoint) -> bool:
    namespace, _, prefix = value.rpartition("/")
    if not ep.pod_name and not ep.namespace:
        return False
    return (namespace or DEFAULT_NAMESPACE) == ep.namespace and ep.pod_name.startswith(prefix)


def _service_matches(value: str, svc: Service | None) -> bool:
    namespace, _, prefix = value.rpartition("/")
    if svc is None:
        return False
    return (namespace or DEFAULT_NAMESPACE) == svc.namespace and svc.name.startswith(prefix)


def _protocol_matches(value: str, flow: Flow) -> bool:
    value = value.lower()
    if isinstance(flow.l4, TCP):
        return value == "tcp"
    if isinstance(flow.l4, UDP):
        return value == "udp"
    if isinstance(flow.l4, ICMPv4):
        return value in ("icmp", "icmpv4")
    return False


def _flags_match(names: frozenset[str], flow: Flow) -> bool:
    if not isinstance(flow.l4, TCP) or flow.l4.flags is None:
        return False
    return all(getattr(flow.l4.flags, name, False) for name in names)


def _labels_match(selector: str, labels: tuple[str, ...]) -> bool:
    """A Kubernetes-style equality selector over `source:key=value` labels; a requirement
    without a source (`app=web`) matches any source."""
    pairs: dict[str, str] = {}
    for label in labels:
        key, _, value = label.partition("=")
        pairs[key] = value
        pairs.setdefault(key.partition(":")[2] or key, value)
    for req in (r.strip() for r in selector.split(",") if r.strip()):
        if req.startswith("!"):
            if req[1:] in pairs:
                return False
        elif "!=" in req:
            key, value = req.split("!=", 1)
            if pairs.get(key.strip()) == value.strip():
                return False
        elif "=" in req:
            key, value = req.replace("==", "=").split("=", 1)
            if pairs.get(key.strip()) != value.strip():
                return False
        elif req not in pairs:
            return False
    return True


def _glob_prefix_matches(value: str, name: str) -> bool:
    # Hubble node-name filters allow a trailing `*` ("lab/*").
    return name.startswith(value[:-1]) if value.endswith("*") else name == value


# --- the query form ------------------------------------------------------------------------


@dataclass(frozen=True)
class FlowQuery:
    """The options of `pylium observe` / `GET /v1/flows`; each holds one or more values."""

    pod: tuple[str, ...] = ()
    from_pod: tuple[str, ...] = ()
    to_pod: tuple[str, ...] = ()
    namespace: tuple[str, ...] = ()
    ip: tuple[str, ...] = ()
    from_ip: tuple[str, ...] = ()
    to_ip: tuple[str, ...] = ()
    port: tuple[str, ...] = ()
    from_port: tuple[str, ...] = ()
    to_port: tuple[str, ...] = ()
    verdict: tuple[str, ...] = ()
    protocol: tuple[str, ...] = ()
    type: tuple[str, ...] = ()
    label: tuple[str, ...] = ()
    from_label: tuple[str, ...] = ()
    to_label: tuple[str, ...] = ()
    identity: tuple[str, ...] = ()
    from_identity: tuple[str, ...] = ()
    to_identity: tuple[str, ...] = ()
    service: tuple[str, ...] = ()
    from_service: tuple[str, ...] = ()
    to_service: tuple[str, ...] = ()
    node_name: tuple[str, ...] = ()
    traffic_direction: tuple[str, ...] = ()
    drop_reason_desc: tuple[str, ...] = ()
    negated: FlowQuery | None = field(default=None)
    """Options prefixed `not-`: what must not match (the blacklist)."""

    @classmethod
    def option_names(cls) -> list[str]:
        """The query keys (`pod`, `from-pod`, ...), without the `not-` forms."""
        return [f.name.replace("_", "-") for f in fields(cls) if f.name != "negated"]

    def to_params(self) -> list[tuple[str, str]]:
        """URL query pairs (`from-pod=x/a`, `not-protocol=icmp`, ...)."""
        pairs = [
            (f.name.replace("_", "-"), v)
            for f in fields(self)
            if f.name != "negated"
            for v in getattr(self, f.name)
        ]
        if self.negated is not None:
            pairs += [("not-" + k, v) for k, v in self.negated.to_params()]
        return pairs

    @classmethod
    def from_params(cls, pairs: Iterable[tuple[str, str]]) -> FlowQuery:
        """Parse query pairs; unknown keys are ignored (they belong to the request)."""
        names = set(cls.option_names())
        positive: dict[str, list[str]] = {}
        negative: list[tuple[str, str]] = []
        for key, value in pairs:
            if key.startswith("not-") and key[4:] in names:
                negative.append((key[4:], value))
            elif key in names:
                positive.setdefault(key.replace("-", "_"), []).append(value)
        return cls(
            **{k: tuple(v) for k, v in positive.items()},
            negated=cls.from_params(negative) if negative else None,
        )

    def filters(self) -> tuple[list[FlowFilter], list[FlowFilter]]:
        """(whitelist, blacklist); raises InvalidFilter for a malformed value."""
        whitelist = self._expand()
        blacklist = self.negated._expand() if self.negated is not None else []
        return whitelist, blacklist

    def _expand(self) -> list[FlowFilter]:
        if not any(getattr(self, f.name) for f in fields(self) if f.name != "negated"):
            return []
        default_ns = self.namespace[0] if len(self.namespace) == 1 else DEFAULT_NAMESPACE
        pods = [_qualify(p, default_ns) for p in self.pod]
        base = FlowFilter(
            source_pod=tuple(_qualify(p, default_ns) for p in self.from_pod),
            destination_pod=tuple(_qualify(p, default_ns) for p in self.to_pod),
            source_ip=tuple(_checked_ip(v) for v in self.from_ip),
            destination_ip=tuple(_checked_ip(v) for v in self.to_ip),
            source_port=tuple(_port(v) for v in self.from_port),
            destination_port=tuple(_port(v) for v in self.to_port),
            verdict=tuple(_verdict(v) for v in self.verdict),
            protocol=tuple(_protocol(v) for v in self.protocol),
            event_type=tuple(_event_type(v) for v in self.type),
            source_label=self.from_label,
            destination_label=self.to_label,
            source_identity=tuple(_identity(v) for v in self.from_identity),
            destination_identity=tuple(_identity(v) for v in self.to_identity),
            source_service=tuple(_qualify(v, default_ns, "service") for v in self.from_service),
            destination_service=tuple(_qualify(v, default_ns, "service") for v in self.to_service),
            node_name=self.node_name,
            traffic_direction=tuple(_direction(v) for v in self.traffic_direction),
            drop_reason_desc=tuple(_drop_reason(v) for v in self.drop_reason_desc),
        )
        # Namespaces alone (no pod option to qualify) select either side in them.
        namespaces = () if self.pod or self.from_pod or self.to_pod else self.namespace
        either: list[tuple[str, str, tuple[Any, ...]]] = [
            ("source_pod", "destination_pod", tuple(pods)),
            ("source_pod", "destination_pod", tuple(f"{ns}/" for ns in namespaces)),
            ("source_ip", "destination_ip", tuple(_checked_ip(v) for v in self.ip)),
            ("source_port", "destination_port", tuple(_port(v) for v in self.port)),
            ("source_label", "destination_label", self.label),
            ("source_identity", "destination_identity", tuple(map(_identity, self.identity))),
            (
                "source_service",
                "destination_service",
                tuple(_qualify(v, default_ns, "service") for v in self.service),
            ),
        ]
        sides = [[{src: values}, {dst: values}] for src, dst, values in either if values]
        return [
            base.add(**{k: v for choice in combo for k, v in choice.items()})
            for combo in itertools.product(*sides)
        ]


def _qualify(pod: str, namespace: str, what: str = "pod") -> str:
    if not pod or pod.endswith("/"):
        raise InvalidFilter(f"invalid {what} {pod!r}: give NAME or NAMESPACE/NAME")
    return pod if "/" in pod else f"{namespace}/{pod}"


def _checked_ip(value: str) -> str:
    try:
        if "/" in value:
            ipaddress.ip_network(value, strict=False)
        else:
            ipaddress.ip_address(value)
    except ValueError as err:
        raise InvalidFilter(f"invalid ip {value!r}") from err
    return value


def _port(value: str) -> int:
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise InvalidFilter(f"invalid port {value!r}")
    return int(value)


def _verdict(value: str) -> Verdict:
    try:
        return Verdict[value.upper()]
    except KeyError:
        names = ", ".join(v.name for v in Verdict if v.value)
        raise InvalidFilter(f"invalid verdict {value!r}: one of {names}") from None


def _protocol(value: str) -> str:
    if value.lower() not in ("tcp", "udp", "icmp", "icmpv4"):
        raise InvalidFilter(f"invalid protocol {value!r}: tcp, udp or icmp")
    return value.lower()


def _event_type(value: str) -> int:
    if value.lower() not in EVENT_TYPES:
        raise InvalidFilter(f"invalid type {value!r}: one of {', '.join(EVENT_TYPES)}")
    return EVENT_TYPES[value.lower()]


def _identity(value: str) -> int:
    """A numeric identity or a reserved one's name (`world`, `reserved:host`)."""
    if value.isdigit():
        return int(value)
    name = value.lower().removeprefix("reserved:")
    for number, reserved in RESERVED_IDENTITIES.items():
        if reserved == name:
            return number
    raise InvalidFilter(f"invalid identity {value!r}: a number or a reserved name (world, ...)")


def _direction(value: str) -> TrafficDirection:
    try:
        direction = TrafficDirection[value.upper()]
    except KeyError:
        direction = TrafficDirection.TRAFFIC_DIRECTION_UNKNOWN
    if direction == TrafficDirection.TRAFFIC_DIRECTION_UNKNOWN:
        raise InvalidFilter(f"invalid traffic direction {value!r}: ingress or egress")
    return direction


def _drop_reason(value: str) -> DropReason:
    try:
        return DropReason[value.upper()]
    except KeyError:
        raise InvalidFilter(
            f"invalid drop reason {value!r}: a flow.DropReason name (POLICY_DENIED, ...)"
        ) from None
