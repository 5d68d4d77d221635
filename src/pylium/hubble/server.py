"""Hubble's gRPC API (`observer.Observer`) over the agent's Observer: a grpc.aio server on a
unix socket and, optionally, a TCP address (Hubble's port 4244), as an agent component.

GetFlows follows Hubble's request semantics:

- `whitelist`/`blacklist` FlowFilters (`filters.matches`);
- `since`/`until` bound the flows' times; `number` N keeps the newest N matching flows (the
  oldest N with `first`); 0 means every kept flow in the window;
- `follow`: after that backlog (none unless `number`, `since` or `first` asks for one), every new
  matching flow until the client goes away, `until` passes or the server stops.

Losses are never silent: a follower that falls behind, or events the observer could not decode
while a stream runs, reach the client as `lost_events` responses (HUBBLE_RING_BUFFER,
OBSERVER_EVENTS_QUEUE); ServerStatus sends the lost counters per source as trailing metadata
(`pylium-lost-events`: `SOURCE=N,...`), since Hubble's response has no field for them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from pylium.hubble.convert import filter_from_proto, flow_to_proto, set_time, time_of
from pylium.hubble.filters import FlowFilter, matches
from pylium.hubble.flow import Flow
from pylium.hubble.observer import LOST_DECODE, LOST_FOLLOWERS, Observer
from pylium.hubble.proto import flow_pb2, observer_pb2, observer_pb2_grpc, relay_pb2

log = logging.getLogger(__name__)

DEFAULT_PORT = 4244
"""Hubble's gRPC port on every node."""
VERSION = "pylium-0.1.0"
LOST_METADATA = "pylium-lost-events"
RATE_WINDOW_NS = 60_000_000_000
"""flows_rate is the flows per second over the last minute."""

ObserverGetter = Callable[[], Observer | None]


class FlowQueryError(ValueError):
    """A GetFlowsRequest that cannot be answered (INVALID_ARGUMENT)."""


@dataclass(frozen=True)
class FlowRequest:
    """A GetFlowsRequest in the model's terms."""

    number: int
    first: bool
    follow: bool
    whitelist: tuple[FlowFilter, ...]
    blacklist: tuple[FlowFilter, ...]
    since_ns: int | None
    until_ns: int | None

    @classmethod
    def of(cls, req: observer_pb2.GetFlowsRequest) -> FlowRequest:
        if req.first and req.follow:
            raise FlowQueryError("first and follow cannot be combined")
        try:
            whitelist = tuple(filter_from_proto(f) for f in req.whitelist)
            blacklist = tuple(filter_from_proto(f) for f in req.blacklist)
        except ValueError as err:
            raise FlowQueryError(str(err)) from None
        return cls(
            number=req.number,
            first=req.first,
            follow=req.follow,
            whitelist=whitelist,
            blacklist=blacklist,
            since_ns=time_of(req.since) if req.HasField("since") else None,
            until_ns=time_of(req.until) if req.HasField("until") else None,
        )

    def wanted(self, flow: Flow) -> bool:
        if self.since_ns is not None and flow.time_ns < self.since_ns:
            return False
        if self.until_ns is not None and flow.time_ns > self.until_ns:
            return False
        return matches(flow, self.whitelist, self.blacklist)

    def backlog(self, kept: list[Flow]) -> list[Flow]:
        """The matching kept flows this request asks for before following, oldest first."""
        if self.follow and not (self.number or self.since_ns is not None):
            return []
        chosen = [f for f in kept if self.wanted(f)]
        if not self.number:
            return chosen
        return chosen[: self.number] if self.first else chosen[max(0, len(chosen) - self.number) :]


def flow_response(flow: Flow) -> observer_pb2.GetFlowsResponse:
    resp = observer_pb2.GetFlowsResponse(flow=flow_to_proto(flow), node_name=flow.node_name)
    set_time(resp.time, flow.time_ns)
    return resp


def lost_response(source: str, count: int, node: str) -> observer_pb2.GetFlowsResponse:
    resp = observer_pb2.GetFlowsResponse(
        lost_events=flow_pb2.LostEvent(
            source=flow_pb2.LostEventSource.Value(source), num_events_lost=count
        ),
        node_name=node,
    )
    set_time(resp.time, time.time_ns())
    return resp


def lost_metadata(lost: dict[str, int]) -> tuple[tuple[str, str], ...]:
    return ((LOST_METADATA, ",".join(f"{k}={v}" for k, v in sorted(lost.items()))),)


class ObserverService(observer_pb2_grpc.ObserverServicer):
    """observer.Observer over one node's Observer (`observer()` is None while the agent
    starts: calls answer UNAVAILABLE)."""

    def __init__(self, observer: ObserverGetter, node: str, cluster: str = "default") -> None:
        self._observer = observer
        self._node = node
        self._cluster = cluster

    async def _ready(self, context: grpc.aio.ServicerContext[Any, Any]) -> Observer:
        observer = self._observer()
        if observer is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "flow observer not running yet")
            raise AssertionError("abort raises")
        return observer

    async def GetFlows(
        self,
        request: observer_pb2.GetFlowsRequest,
        context: grpc.aio.ServicerContext[
            observer_pb2.GetFlowsRequest, observer_pb2.GetFlowsResponse
        ],
    ) -> AsyncIterator[observer_pb2.GetFlowsResponse]:
        observer = await self._ready(context)
        try:
            req = FlowRequest.of(request)
        except FlowQueryError as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
            return
        ring = observer.ring
        if not req.follow:
            for flow in req.backlog(list(ring)):
                yield flow_response(flow)
            return
        # Subscribe and read the backlog with no await in between: nothing falls in the gap.
        follower = ring.follow()
        backlog = req.backlog(list(ring))
        try:
            for flow in backlog:
                yield flow_response(flow)
            reported_lost, reported_decode = 0, observer.decode_errors
            async for flow in follower:
                if follower.lost > reported_lost:
                    yield lost_response(LOST_FOLLOWERS, follower.lost - reported_lost, self._node)
                    reported_lost = follower.lost
                if observer.decode_errors > reported_decode:
                    count = observer.decode_errors - reported_decode
                    yield lost_response(LOST_DECODE, count, self._node)
                    reported_decode = observer.decode_errors
                if req.until_ns is not None and flow.time_ns > req.until_ns:
                    return
                if req.wanted(flow):
                    yield flow_response(flow)
        finally:
            follower.close()

    async def ServerStatus(
        self,
        request: observer_pb2.ServerStatusRequest,
        context: grpc.aio.ServicerContext[
            observer_pb2.ServerStatusRequest, observer_pb2.ServerStatusResponse
        ],
    ) -> observer_pb2.ServerStatusResponse:
        observer = await self._ready(context)
        status = observer.status()
        context.set_trailing_metadata(lost_metadata(status.lost))
        recent = observer.ring.since(time.time_ns() - RATE_WINDOW_NS)
        return observer_pb2.ServerStatusResponse(
            num_flows=status.num_flows,
            max_flows=status.max_flows,
            seen_flows=status.seen_flows,
            uptime_ns=status.uptime_ns,
            version=VERSION,
            flows_rate=len(recent) / (RATE_WINDOW_NS / 1e9),
        )

    async def GetNodes(
        self,
        request: observer_pb2.GetNodesRequest,
        context: grpc.aio.ServicerContext[
            observer_pb2.GetNodesRequest, observer_pb2.GetNodesResponse
        ],
    ) -> observer_pb2.GetNodesResponse:
        status = (await self._ready(context)).status()
        node = observer_pb2.Node(
            name=self._node,
            version=VERSION,
            state=relay_pb2.NODE_CONNECTED,
            uptime_ns=status.uptime_ns,
            num_flows=status.num_flows,
            max_flows=status.max_flows,
            seen_flows=status.seen_flows,
        )
        return observer_pb2.GetNodesResponse(nodes=[node])

    async def GetNamespaces(
        self,
        request: observer_pb2.GetNamespacesRequest,
        context: grpc.aio.ServicerContext[
            observer_pb2.GetNamespacesRequest, observer_pb2.GetNamespacesResponse
        ],
    ) -> observer_pb2.GetNamespacesResponse:
        observer = await self._ready(context)
        names = {ep.namespace for f in observer.ring for ep in (f.source, f.destination)}
        return observer_pb2.GetNamespacesResponse(
            namespaces=[
                observer_pb2.Namespace(cluster=self._cluster, namespace=n)
                for n in sorted(names)
                if n
            ]
        )


@dataclass(frozen=True)
class GrpcParams:
    """Where the Observer API listens."""

    socket: Path | None
    """Unix socket (`/var/run/pylium/<node>/hubble.sock`); None: none."""
    listen: str | None = None
    """TCP `host:port` (Hubble's `:4244`); None: unix socket only; port 0 picks one."""
    grace: float = 0.2
    """Seconds running calls get to end at stop (follow streams never end by themselves)."""


class GrpcServer:
    """A grpc.aio server with one servicer: start()/stop(). `port` is the bound TCP port."""

    def __init__(self, params: GrpcParams, servicer: observer_pb2_grpc.ObserverServicer) -> None:
        if params.socket is None and params.listen is None:
            raise ValueError("the gRPC server needs a socket or a TCP address")
        self.params = params
        self._servicer = servicer
        self._server: grpc.aio.Server | None = None
        self.port = 0

    @property
    def target(self) -> str:
        """An address clients can dial (the unix socket when there is one)."""
        if self.params.socket is not None:
            return f"unix://{self.params.socket}"
        host = (self.params.listen or "").rpartition(":")[0] or "127.0.0.1"
        return f"{'127.0.0.1' if host in ('0.0.0.0', '[::]') else host}:{self.port}"

    async def start(self) -> None:
        server = grpc.aio.server()
        observer_pb2_grpc.add_ObserverServicer_to_server(self._servicer, server)
        sock = self.params.socket
        if sock is not None:
            sock.parent.mkdir(parents=True, exist_ok=True)
            sock.unlink(missing_ok=True)  # a stale socket of an earlier run
            server.add_insecure_port(f"unix://{sock}")
        if self.params.listen is not None:
            self.port = server.add_insecure_port(self.params.listen)
            if not self.port:
                raise OSError(f"cannot listen on {self.params.listen}")
        await server.start()
        self._server = server
        log.info("Observer API on %s", ", ".join(filter(None, [str(sock), self.params.listen])))

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(self.params.grace)
            self._server = None
        if self.params.socket is not None:
            self.params.socket.unlink(missing_ok=True)


def hubble_server(
    params: GrpcParams, observer: ObserverGetter, node: str, cluster: str = "default"
) -> GrpcServer:
    """The agent component: the Observer API of one node."""
    return GrpcServer(params, ObserverService(observer, node, cluster))
