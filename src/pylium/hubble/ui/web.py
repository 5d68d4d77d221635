"""The UI's HTTP server (aiohttp), run inside the relay process on a loopback address.

`/` is the page (static HTML/JS/CSS under `static/`, plain ES modules, no build step);
`/api/flows` and `/api/servicemap` answer from the relay's merged flows, read over its own
Observer API like any client, plus the store's pods and services for the map. Both take
`pylium observe`'s filter options as query parameters (`pod=`, `verdict=`, `not-protocol=`,
...) and `number` (newest N flows, default 1000).
"""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path
from typing import Any

import grpc
from aiohttp import web

from pylium.hubble.convert import filter_to_proto, flow_from_proto, to_json
from pylium.hubble.filters import FlowQuery, InvalidFilter
from pylium.hubble.flow import Flow
from pylium.hubble.proto import observer_pb2, observer_pb2_grpc
from pylium.hubble.ui import servicemap
from pylium.store.interface import Store

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
DEFAULT_NUMBER = 1000
MAX_NUMBER = 20_000


def loopback_address(listen: str) -> tuple[str, int]:
    """`HOST:PORT` split, refusing a host that is not a loopback address (the UI has no
    authentication)."""
    host, sep, port = listen.rpartition(":")
    host = host.strip("[]")
    if not sep or not port.isdigit():
        raise ValueError(f"{listen!r}: expected HOST:PORT")
    if not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"{listen!r}: the UI listens on loopback only")
    return host, int(port)


class UiServer:
    """The HTTP server: start()/stop(); `url` is where it listens once started."""

    def __init__(self, listen: str, relay_target: str, store: Store | None) -> None:
        self._host, self._port = loopback_address(listen)
        self._relay_target = relay_target
        self._store = store
        self._runner: web.AppRunner | None = None
        self._channel: grpc.aio.Channel | None = None
        self.url = ""

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/", self._index)
        app.router.add_get("/api/flows", self._flows)
        app.router.add_get("/api/servicemap", self._servicemap)
        app.router.add_static("/static/", STATIC_DIR)
        return app

    async def start(self) -> None:
        self._channel = grpc.aio.insecure_channel(self._relay_target)
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        port = self._runner.addresses[0][1]  # the bound port (0 picks one)
        host = f"[{self._host}]" if ":" in self._host else self._host
        self.url = f"http://{host}:{port}/"
        log.info("UI on %s", self.url)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    async def _index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC_DIR / "index.html")

    async def _read(self, request: web.Request) -> tuple[list[dict[str, Any]], list[Flow]]:
        """The relay's answer to the request's filters: (responses as JSON, the flows)."""
        number = request.query.get("number", str(DEFAULT_NUMBER))
        if not number.isdigit() or not 0 < int(number) <= MAX_NUMBER:
            raise web.HTTPBadRequest(text=f"number: 1..{MAX_NUMBER}")
        try:
            whitelist, blacklist = FlowQuery.from_params(request.query.items()).filters()
        except InvalidFilter as err:
            raise web.HTTPBadRequest(text=str(err)) from None
        assert self._channel is not None
        req = observer_pb2.GetFlowsRequest(
            number=int(number),
            whitelist=[filter_to_proto(f) for f in whitelist],
            blacklist=[filter_to_proto(f) for f in blacklist],
        )
        stub = observer_pb2_grpc.ObserverStub(self._channel)
        responses, flows = [], []
        try:
            async for resp in stub.GetFlows(req, timeout=10):
                responses.append(to_json(resp))
                if resp.HasField("flow"):
                    flows.append(flow_from_proto(resp.flow))
        except grpc.aio.AioRpcError as err:
            raise web.HTTPBadGateway(text=f"relay: {err.details()}") from None
        return responses, flows

    async def _flows(self, request: web.Request) -> web.Response:
        responses, _ = await self._read(request)
        return web.json_response({"flows": responses})

    async def _servicemap(self, request: web.Request) -> web.Response:
        _, flows = await self._read(request)
        pods: list[dict[str, Any]] = []
        services: list[dict[str, Any]] = []
        if self._store is not None:
            pods, _ = await self._store.list("Pod")
            services, _ = await self._store.list("Service")
        return web.json_response(servicemap.build(pods, services, flows))
