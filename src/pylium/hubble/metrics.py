"""Hubble's flow metrics, counted from every flow the observer keeps (a ring listener, so a
slow `--follow` reader never makes them miss a flow).

    hubble_flows_processed_total{type, subtype, verdict}
    hubble_drop_total{reason, protocol}
    hubble_tcp_flags_total{flag, family}
    hubble_port_distribution_total{protocol, port}
    hubble_policy_verdicts_total{direction, match, action}
    hubble_lost_events_total{source}

Label children are cached per label tuple (prometheus_client's `labels()` is the costly part).
Lost events are the observer's own counters, read at scrape time.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from pylium.hubble.flow import TCP, UDP, DropReason, Flow, ICMPv4, TraceObservationPoint, Verdict
from pylium.hubble.observer import LOST_DATAPATH, LOST_DECODE, LOST_FOLLOWERS, Observer

MONITOR_DROP = 1
MONITOR_POLICY_VERDICT = 5
POLICY_DROPS = (DropReason.POLICY_DENIED, DropReason.POLICY_DENY)


def _protocol(flow: Flow) -> str:
    if isinstance(flow.l4, TCP):
        return "TCP"
    if isinstance(flow.l4, UDP):
        return "UDP"
    if isinstance(flow.l4, ICMPv4):
        return "ICMPv4"
    return "Unknown"


def _subtype(flow: Flow) -> str:
    """Cilium's monitor subtype names: the trace point (`to-endpoint`) or `drop`."""
    if flow.verdict == Verdict.DROPPED:
        return "drop"
    point = flow.trace_observation_point
    if point == TraceObservationPoint.UNKNOWN_POINT:
        return ""
    return point.name.lower().replace("_", "-")


class FlowMetrics:
    """The counters, registered in `registry`; `attach(observer)` starts counting."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.processed = Counter(
            "hubble_flows_processed",
            "Flows processed by the observer",
            ["type", "subtype", "verdict"],
            registry=registry,
        )
        self.drops = Counter(
            "hubble_drop", "Dropped packets", ["reason", "protocol"], registry=registry
        )
        self.tcp_flags = Counter(
            "hubble_tcp_flags", "TCP flags seen", ["flag", "family"], registry=registry
        )
        self.ports = Counter(
            "hubble_port_distribution",
            "Destination ports of forwarded requests",
            ["protocol", "port"],
            registry=registry,
        )
        self.policy = Counter(
            "hubble_policy_verdicts",
            "Policy verdicts",
            ["direction", "match", "action"],
            registry=registry,
        )
        self._lost = _LostCollector()
        registry.register(self._lost)
        self._children: dict[tuple[Counter, tuple[str, ...]], Any] = {}

    def attach(self, observer: Observer) -> None:
        """Count every flow `observer` keeps from now on, and report its lost events."""
        self._lost.observer = observer
        observer.ring.add_listener(self.count)

    def _child(self, counter: Counter, *labels: str) -> Any:
        key = (counter, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = counter.labels(*labels)
        return child

    def count(self, flow: Flow) -> None:
        """Add one flow to every counter it belongs to."""
        verdict = flow.verdict.name
        self._child(self.processed, flow.Type.name, _subtype(flow), verdict).inc()
        protocol = _protocol(flow)
        if flow.verdict == Verdict.DROPPED:
            self._child(self.drops, flow.drop_reason_desc.name, protocol).inc()
        l4 = flow.l4
        if isinstance(l4, TCP) and l4.flags is not None:
            family = flow.IP.ipVersion.name if flow.IP is not None else "IP_NOT_USED"
            for name in l4.flags.names():
                self._child(self.tcp_flags, name, family).inc()
        if (
            isinstance(l4, TCP | UDP)
            and flow.verdict == Verdict.FORWARDED
            and flow.is_reply is not True
        ):
            self._child(self.ports, protocol, str(l4.destination_port)).inc()
        event = flow.event_type.type if flow.event_type is not None else 0
        if event == MONITOR_POLICY_VERDICT or flow.drop_reason_desc in POLICY_DROPS:
            direction = flow.traffic_direction.name.lower()
            allowed = flow.verdict != Verdict.DROPPED
            match = "l3-l4" if allowed else "none"
            self._child(self.policy, direction, match, verdict.lower()).inc()


class _LostCollector(Collector):
    """hubble_lost_events_total{source} from the observer's counters."""

    def __init__(self) -> None:
        self.observer: Observer | None = None

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "hubble_lost_events", "Events lost by the observer", labels=["source"]
        )
        lost = self.observer.status().lost if self.observer is not None else {}
        for source in (LOST_DATAPATH, LOST_DECODE, LOST_FOLLOWERS):
            family.add_metric([source], lost.get(source, 0))
        yield family
