"""Hubble relay: one Observer API over every node's (`python -m pylium.hubble.relay --lab L`).

Semantics as Hubble relay's:

- GetFlows without `follow`: every node answers the request; the flows are merged by time and
  the request's `number` applies to the merged stream (the newest N, or the oldest N with
  `first`); nodes that fail are reported first as one `node_status` NODE_UNAVAILABLE event.
- With `follow`: that backlog (when the request asks for one), then each node's new flows as
  they arrive. Each node is followed from its newest backlog flow on (`since`, skipping what is
  not newer), or from the moment the backlog was asked for, so nothing falls between the two
  and nothing comes twice. A node failing mid-stream is reported as NODE_UNAVAILABLE.
- ServerStatus sums the nodes' counters and names the unavailable nodes; GetNodes lists every
  node with its state; GetNamespaces is the union.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from pylium import paths
from pylium.hubble.convert import set_time, time_of
from pylium.hubble.proto import observer_pb2, observer_pb2_grpc, relay_pb2
from pylium.hubble.server import (
    LOST_METADATA,
    VERSION,
    GrpcParams,
    GrpcServer,
    lost_metadata,
)
from pylium.hubble.ui import write_ui_url
from pylium.hubble.ui.web import UiServer, loopback_address
from pylium.store import open_store

log = logging.getLogger(__name__)

DEFAULT_RELAY_PORT = 4245
"""Hubble relay's port."""

Response = observer_pb2.GetFlowsResponse


@dataclass(frozen=True)
class Peer:
    """A node's Observer API: `target` is `unix:///path` or `host:port`."""

    name: str
    target: str


class _Unavailable(Exception):
    def __init__(self, node: str, error: str) -> None:
        super().__init__(f"{node}: {error}")
        self.node = node


def _sort_key(resp: Response) -> int:
    return time_of(resp.time)


def _status_event(state: int, nodes: list[str], message: str) -> Response:
    resp = Response(
        node_status=relay_pb2.NodeStatusEvent(
            state_change=state,  # type: ignore[arg-type]
            node_names=nodes,
            message=message,
        )
    )
    set_time(resp.time, time.time_ns())
    return resp


class RelayService(observer_pb2_grpc.ObserverServicer):
    """observer.Observer over several nodes' Observer APIs."""

    def __init__(self, peers: Sequence[Peer], timeout: float = 5.0) -> None:
        if not peers:
            raise ValueError("the relay needs at least one node")
        self._peers = list(peers)
        self._timeout = timeout
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._stubs: dict[str, observer_pb2_grpc.ObserverAsyncStub] = {}

    def _stub(self, peer: Peer) -> observer_pb2_grpc.ObserverAsyncStub:
        if peer.name not in self._stubs:
            channel = grpc.aio.insecure_channel(peer.target)
            self._channels[peer.name] = channel
            self._stubs[peer.name] = observer_pb2_grpc.ObserverStub(channel)
        return self._stubs[peer.name]

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
        self._stubs.clear()

    async def _history(self, peer: Peer, req: observer_pb2.GetFlowsRequest) -> list[Response]:
        try:
            call = self._stub(peer).GetFlows(req, timeout=self._timeout)
            return [resp async for resp in call]
        except grpc.aio.AioRpcError as err:
            raise _Unavailable(peer.name, err.details() or str(err.code())) from None

    async def GetFlows(
        self,
        request: observer_pb2.GetFlowsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[Response]:
        if request.first and request.follow:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "first and follow")
            return
        started = time.time_ns()
        backlog_req = observer_pb2.GetFlowsRequest()
        backlog_req.CopyFrom(request)
        backlog_req.follow = False
        wants_backlog = not request.follow or request.number or request.HasField("since")
        results: list[list[Response] | BaseException] = (
            list(
                await asyncio.gather(
                    *(self._history(p, backlog_req) for p in self._peers), return_exceptions=True
                )
            )
            if wants_backlog
            else [[] for _ in self._peers]
        )
        down = [
            p.name
            for p, r in zip(self._peers, results, strict=True)
            if isinstance(r, BaseException)
        ]
        for p, r in zip(self._peers, results, strict=True):
            if isinstance(r, BaseException) and not isinstance(r, _Unavailable):
                log.warning("node %s: %s", p.name, r)
        if down:
            yield _status_event(relay_pb2.NODE_UNAVAILABLE, down, "cannot read flows")
        merged = sorted(
            (resp for r in results if not isinstance(r, BaseException) for resp in r),
            key=_sort_key,
        )
        if request.number:
            flows = [r for r in merged if r.HasField("flow")]
            kept = flows[: request.number] if request.first else flows[-request.number :]
            keep = {id(r) for r in kept}
            merged = [r for r in merged if not r.HasField("flow") or id(r) in keep]
        for resp in merged:
            yield resp
        if not request.follow:
            return

        queue: asyncio.Queue[Response | None] = asyncio.Queue(maxsize=4096)
        pumps = []
        for peer, result in zip(self._peers, results, strict=True):
            if peer.name in down:
                continue
            flows = result if isinstance(result, list) else []
            newest = max((time_of(r.time) for r in flows if r.HasField("flow")), default=None)
            pumps.append(asyncio.create_task(self._follow(peer, request, newest, started, queue)))
        try:
            running = len(pumps)
            while running:
                item = await queue.get()
                if item is None:
                    running -= 1
                else:
                    yield item
        finally:
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)

    async def _follow(
        self,
        peer: Peer,
        request: observer_pb2.GetFlowsRequest,
        newest: int | None,
        started: int,
        out: asyncio.Queue[Response | None],
    ) -> None:
        req = observer_pb2.GetFlowsRequest()
        req.CopyFrom(request)
        req.number = 0
        if newest is not None or request.number or request.HasField("since"):
            set_time(req.since, newest if newest is not None else started)
        try:
            async for resp in self._stub(peer).GetFlows(req):
                # `since` is inclusive: what is not newer was in the backlog already.
                if newest is not None and resp.HasField("flow") and time_of(resp.time) <= newest:
                    continue
                await out.put(resp)
        except grpc.aio.AioRpcError as err:
            event = _status_event(relay_pb2.NODE_UNAVAILABLE, [peer.name], err.details() or "")
            await out.put(event)
        # The end mark is not sent when cancelled: the reader is gone then.
        await out.put(None)

    async def _statuses(
        self,
    ) -> list[tuple[observer_pb2.ServerStatusResponse, dict[str, int]] | None]:
        async def one(
            peer: Peer,
        ) -> tuple[observer_pb2.ServerStatusResponse, dict[str, int]] | None:
            try:
                call = self._stub(peer).ServerStatus(
                    observer_pb2.ServerStatusRequest(), timeout=self._timeout
                )
                status = await call
                trailers = dict(await call.trailing_metadata() or ())
            except grpc.aio.AioRpcError:
                return None
            lost: dict[str, int] = {}
            for item in str(trailers.get(LOST_METADATA, "")).split(","):
                source, _, count = item.partition("=")
                if count.isdigit():
                    lost[source] = int(count)
            return status, lost

        return list(await asyncio.gather(*(one(p) for p in self._peers)))

    async def ServerStatus(
        self,
        request: observer_pb2.ServerStatusRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> observer_pb2.ServerStatusResponse:
        statuses = await self._statuses()
        up = [s for s, _ in filter(None, statuses)]
        lost: dict[str, int] = {}
        for _, node_lost in filter(None, statuses):
            for source, count in node_lost.items():
                lost[source] = lost.get(source, 0) + count
        context.set_trailing_metadata(lost_metadata(lost))
        response = observer_pb2.ServerStatusResponse(
            num_flows=sum(s.num_flows for s in up),
            max_flows=sum(s.max_flows for s in up),
            seen_flows=sum(s.seen_flows for s in up),
            uptime_ns=max((s.uptime_ns for s in up), default=0),
            unavailable_nodes=[
                p.name for p, s in zip(self._peers, statuses, strict=True) if s is None
            ],
            version=VERSION,
            flows_rate=sum(s.flows_rate for s in up),
        )
        response.num_connected_nodes.value = len(up)
        response.num_unavailable_nodes.value = len(self._peers) - len(up)
        return response

    async def GetNodes(
        self,
        request: observer_pb2.GetNodesRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> observer_pb2.GetNodesResponse:
        nodes = []
        for peer, result in zip(self._peers, await self._statuses(), strict=True):
            node = observer_pb2.Node(name=peer.name, address=peer.target)
            if result is None:
                node.state = relay_pb2.NODE_UNAVAILABLE
            else:
                s = result[0]
                node.state = relay_pb2.NODE_CONNECTED
                node.version = s.version
                node.uptime_ns, node.num_flows = s.uptime_ns, s.num_flows
                node.max_flows, node.seen_flows = s.max_flows, s.seen_flows
            nodes.append(node)
        return observer_pb2.GetNodesResponse(nodes=nodes)

    async def GetNamespaces(
        self,
        request: observer_pb2.GetNamespacesRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> observer_pb2.GetNamespacesResponse:
        async def one(peer: Peer) -> list[tuple[str, str]]:
            try:
                resp = await self._stub(peer).GetNamespaces(request, timeout=self._timeout)
            except grpc.aio.AioRpcError:
                return []
            return [(n.cluster, n.namespace) for n in resp.namespaces]

        found = {ns for names in await asyncio.gather(*map(one, self._peers)) for ns in names}
        return observer_pb2.GetNamespacesResponse(
            namespaces=[observer_pb2.Namespace(cluster=c, namespace=n) for c, n in sorted(found)]
        )


class Relay:
    """The relay process's component: the service and its server. start()/stop()."""

    def __init__(self, params: GrpcParams, peers: Sequence[Peer]) -> None:
        self.service = RelayService(peers)
        self.server = GrpcServer(params, self.service)

    async def start(self) -> None:
        await self.server.start()

    async def stop(self) -> None:
        await self.server.stop()
        await self.service.close()


def lab_peers(lab: str) -> list[Peer]:
    """Every node of a lab, by its Observer unix socket."""
    from pylium.lab.record import load

    record = load(lab)
    if record is None:
        raise SystemExit(f"no lab {lab!r}")
    return [Peer(n.name, f"unix://{paths.hubble_socket(n.name)}") for n in record.nodes]


def main(argv: list[str] | None = None) -> None:
    """`python -m pylium.hubble.relay --lab L [--socket PATH] [--listen HOST:PORT]
    [--http-listen 127.0.0.1:PORT [--store URL]]`."""
    parser = argparse.ArgumentParser(prog="pylium-relay", description=__doc__.splitlines()[0])
    parser.add_argument("--lab", help="relay every node of this lab")
    parser.add_argument(
        "--peer", action="append", default=[], metavar="NAME=TARGET", help="a node's API"
    )
    parser.add_argument("--socket", type=Path, help="unix socket (default: the lab's)")
    parser.add_argument("--listen", help=f"TCP HOST:PORT (Hubble relay's :{DEFAULT_RELAY_PORT})")
    parser.add_argument(
        "--http-listen", help="serve the UI on this loopback HOST:PORT (port 0 picks one)"
    )
    parser.add_argument("--store", help="store URL for the UI's pods (default: the lab's)")
    args = parser.parse_args(argv)
    peers = lab_peers(args.lab) if args.lab else []
    for item in args.peer:
        name, sep, target = item.partition("=")
        if not sep:
            parser.error(f"--peer {item!r}: expected NAME=TARGET")
        peers.append(Peer(name, target))
    if not peers:
        parser.error("give --lab or --peer")
    if args.http_listen is not None:
        try:
            loopback_address(args.http_listen)
        except ValueError as err:
            parser.error(f"--http-listen: {err}")
    sock = args.socket or (paths.relay_socket(args.lab) if args.lab else None)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    relay = Relay(GrpcParams(sock, args.listen), peers)
    store_url = args.store or (_lab_store(args.lab) if args.lab else None)
    asyncio.run(_serve(relay, args.http_listen, store_url, args.lab))


def _lab_store(lab: str) -> str | None:
    from pylium.lab.record import load

    record = load(lab)
    return record.store if record is not None else None


async def _serve(
    relay: Relay, http_listen: str | None, store_url: str | None, lab: str | None
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await relay.start()
    store = open_store(store_url) if http_listen is not None and store_url else None
    ui = UiServer(http_listen, relay.server.target, store) if http_listen is not None else None
    try:
        if ui is not None:
            await ui.start()
            if lab is not None:
                write_ui_url(lab, ui.url)
        await stop.wait()
    finally:
        if ui is not None:
            await ui.stop()
        if store is not None:
            await store.close()
        await relay.stop()


if __name__ == "__main__":
    main()
