"""The agent's metrics, with Cilium's names under the `pylium_` prefix.

Gauges and the datapath counters are read at scrape time from `AgentSources` (callables the
agent sets once its components run; unset ones are left out); events are counted as they
happen through the methods (`regenerated`, `store_event`, `map_op`) and the REST API latency
through `api_middleware`.

    pylium_endpoint                                       endpoints on this node
    pylium_endpoint_regenerations_total{outcome}
    pylium_identity                                       identities known
    pylium_drop_count_total{reason, direction}            from the per-CPU datapath counters
    pylium_drop_bytes_total{reason, direction}
    pylium_forward_count_total{direction}
    pylium_forward_bytes_total{direction}
    pylium_agent_api_process_time_seconds{method, path, return_code}
    pylium_store_events_total{kind, action}
    pylium_bpf_map_pressure{map_name}                     fill ratio 0..1
    pylium_bpf_map_ops_total{map_name, operation, outcome}
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pylium.datapath.endpoints import MetricSample


@dataclass
class AgentSources:
    """Where scrape-time values come from; None: not known (yet)."""

    endpoints: Callable[[], int] | None = None
    identities: Callable[[], int] | None = None
    datapath: Callable[[], list[MetricSample]] | None = None
    """The per-CPU counters summed (`Datapath.metrics`, as GET /v1/datapath/metrics)."""
    map_pressure: Callable[[], dict[str, float]] | None = None
    """Map name -> entries / max_entries."""


class AgentMetrics:
    """The agent's metrics in `registry`."""

    def __init__(self, registry: CollectorRegistry, sources: AgentSources | None = None) -> None:
        self.sources = sources if sources is not None else AgentSources()
        self.regenerations = Counter(
            "pylium_endpoint_regenerations",
            "Endpoint regenerations (datapath programmed for an endpoint)",
            ["outcome"],
            registry=registry,
        )
        self.api_time = Histogram(
            "pylium_agent_api_process_time_seconds",
            "Time to process an agent REST API request",
            ["method", "path", "return_code"],
            registry=registry,
        )
        self.store_events = Counter(
            "pylium_store_events",
            "Events received from the cluster store",
            ["kind", "action"],
            registry=registry,
        )
        self.map_ops = Counter(
            "pylium_bpf_map_ops",
            "BPF map operations",
            ["map_name", "operation", "outcome"],
            registry=registry,
        )
        registry.register(_SourcesCollector(self.sources))

    def regenerated(self, outcome: str = "success") -> None:
        self.regenerations.labels(outcome).inc()

    def store_event(self, kind: str, action: str) -> None:
        self.store_events.labels(kind, action).inc()

    def map_op(self, map_name: str, operation: str, outcome: str = "success") -> None:
        self.map_ops.labels(map_name, operation, outcome).inc()

    def api_middleware(self) -> Callable[..., Awaitable[web.StreamResponse]]:
        """aiohttp middleware timing each request by its route (not its raw path, so ids
        do not make new series)."""

        @web.middleware
        async def timed(
            request: web.Request,
            handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
        ) -> web.StreamResponse:
            start = time.monotonic()
            status = 500
            try:
                response = await handler(request)
                status = response.status
                return response
            except web.HTTPException as err:
                status = err.status
                raise
            finally:
                route = request.match_info.route.resource
                path = route.canonical if route is not None else "other"
                self.api_time.labels(request.method, path, str(status)).observe(
                    time.monotonic() - start
                )

        return timed


class _SourcesCollector(Collector):
    def __init__(self, sources: AgentSources) -> None:
        self._s = sources

    def collect(self) -> Iterator[Metric]:
        s = self._s
        if s.endpoints is not None:
            yield GaugeMetricFamily("pylium_endpoint", "Endpoints on this node", s.endpoints())
        if s.identities is not None:
            yield GaugeMetricFamily("pylium_identity", "Identities known", s.identities())
        if s.datapath is not None:
            yield from _datapath_families(s.datapath())
        if s.map_pressure is not None:
            pressure = GaugeMetricFamily(
                "pylium_bpf_map_pressure", "BPF map fill ratio", labels=["map_name"]
            )
            for name, ratio in sorted(s.map_pressure().items()):
                pressure.add_metric([name], ratio)
            yield pressure


def _datapath_families(samples: list[MetricSample]) -> Iterator[Metric]:
    drops = CounterMetricFamily(
        "pylium_drop_count", "Packets dropped by the datapath", labels=["reason", "direction"]
    )
    drop_bytes = CounterMetricFamily(
        "pylium_drop_bytes", "Bytes dropped by the datapath", labels=["reason", "direction"]
    )
    forwards = CounterMetricFamily(
        "pylium_forward_count", "Packets forwarded by the datapath", labels=["direction"]
    )
    forward_bytes = CounterMetricFamily(
        "pylium_forward_bytes", "Bytes forwarded by the datapath", labels=["direction"]
    )
    for s in samples:
        direction = s.direction.upper()
        if s.reason == 0:
            forwards.add_metric([direction], s.packets)
            forward_bytes.add_metric([direction], s.bytes)
        else:
            drops.add_metric([s.reason_name, direction], s.packets)
            drop_bytes.add_metric([s.reason_name, direction], s.bytes)
    yield from (drops, drop_bytes, forwards, forward_bytes)
