"""The agent's REST API (docs/agent-api.md): JSON over HTTP/1.1 on the node's unix socket.

Handlers only parse, call the endpoint manager or the allocator, and format; a middleware turns
exceptions into `{"code", "msg", "details"}` errors with CNI codes and logs each call's latency.
The server answers as soon as it starts: until the pod CIDR is known every route but healthz
and config answers 503 with code 11 (try again later).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware

from pylium.datapath.endpoints import Datapath
from pylium.endpoint import (
    CheckFailed,
    EndpointManager,
    EndpointNotFound,
    EndpointRequest,
    InterfaceExists,
    InvalidRequest,
    NetnsMissing,
)
from pylium.endpoint.ids import IdsExhausted
from pylium.hubble.observer import Observer
from pylium.hubble.rest import add_routes as add_flow_routes
from pylium.ipam import NodeAllocator, NotInPool, PoolExhausted, parse_ipv4

log = logging.getLogger(__name__)

CNI_UNKNOWN_CONTAINER = 3
CNI_INVALID_CONFIG = 7
CNI_TRY_AGAIN_LATER = 11
CNI_INTERNAL = 999


class ApiError(Exception):
    """An error answer: HTTP status and a CNI code."""

    def __init__(self, status: int, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.status = status
        self.code = code
        self.msg = msg
        self.details = details


# exception type -> (HTTP status, CNI code); the first match wins, so subclasses go first.
_ERRORS: list[tuple[type[Exception], int, int]] = [
    (InvalidRequest, 400, CNI_INVALID_CONFIG),
    (NotInPool, 400, CNI_INVALID_CONFIG),
    (EndpointNotFound, 404, CNI_UNKNOWN_CONTAINER),
    (NetnsMissing, 404, CNI_UNKNOWN_CONTAINER),
    (InterfaceExists, 409, CNI_INTERNAL),
    (CheckFailed, 409, CNI_INTERNAL),
    (PoolExhausted, 503, CNI_TRY_AGAIN_LATER),
    (IdsExhausted, 503, CNI_TRY_AGAIN_LATER),
]


@dataclass
class ApiBackend:
    """What the API serves from; `ipam`, `endpoints` and `datapath` are set once the agent is
    ready."""

    node: str
    mtu: int
    state_dir: Path
    ipam: NodeAllocator | None = None
    endpoints: EndpointManager | None = None
    datapath: Datapath | None = None
    observer: Observer | None = None
    ipcache_dump: Callable[[], dict[str, Any]] | None = None
    """The ipcache table and map as `GET /v1/ipcache` serves them (set once started)."""
    lb_dump: Callable[[], dict[str, Any]] | None = None
    """The LB maps as `GET /v1/lb` serves them (set once socket LB runs)."""

    def ready(self) -> tuple[NodeAllocator, EndpointManager]:
        """The live components, or a 503 'try again later' while the agent starts."""
        if self.ipam is None or self.endpoints is None:
            raise ApiError(
                503,
                CNI_TRY_AGAIN_LATER,
                f"agent of node {self.node} is not ready",
                "waiting for the node's pod CIDR (CiliumNode spec.ipam.podCIDRs)",
            )
        return self.ipam, self.endpoints

    def ready_datapath(self) -> Datapath:
        """The datapath, or a 503 while the agent starts."""
        self.ready()
        assert self.datapath is not None  # set together with ipam and endpoints
        return self.datapath


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error_response(err: ApiError) -> web.Response:
    return web.json_response(
        {"code": err.code, "msg": err.msg, "details": err.details}, status=err.status
    )


@web.middleware
async def _errors_and_latency(request: web.Request, handler: Handler) -> web.StreamResponse:
    start = time.monotonic()
    try:
        response = await handler(request)
    except ApiError as err:
        response = _error_response(err)
    except web.HTTPException:
        raise
    except Exception as err:
        for kind, status, code in _ERRORS:
            if isinstance(err, kind):
                response = _error_response(ApiError(status, code, str(err), type(err).__name__))
                break
        else:
            log.exception("%s %s failed", request.method, request.path_qs)
            response = _error_response(
                ApiError(500, CNI_INTERNAL, f"internal error: {err}", repr(err))
            )
    log.info(
        "%s %s %d %.1fms",
        request.method,
        request.path_qs,
        response.status,
        (time.monotonic() - start) * 1000,
    )
    return response


async def _body(request: web.Request) -> Any:
    try:
        return json.loads(await request.read() or b"{}")
    except ValueError as err:
        raise ApiError(400, CNI_INVALID_CONFIG, f"invalid JSON body: {err}") from err


def _endpoint_id(request: web.Request) -> int:
    return int(request.match_info["id"])


def _attachment(request: web.Request) -> tuple[str, str] | None:
    container_id = request.query.get("containerID")
    ifname = request.query.get("ifname")
    if container_id is None and ifname is None:
        return None
    if not container_id or not ifname:
        raise ApiError(400, CNI_INVALID_CONFIG, "give both containerID and ifname")
    return container_id, ifname


class Api:
    """Route handlers over one `ApiBackend`."""

    def __init__(self, backend: ApiBackend, middlewares: Sequence[Middleware] = ()) -> None:
        self._b = backend
        self._middlewares = tuple(middlewares)

    def app(self) -> web.Application:
        """The aiohttp application with every route of docs/agent-api.md."""
        app = web.Application(middlewares=[*self._middlewares, _errors_and_latency])
        app.router.add_get("/v1/healthz", self.healthz)
        app.router.add_get("/v1/config", self.config)
        app.router.add_post("/v1/ipam", self.ipam_allocate)
        app.router.add_delete("/v1/ipam/{ip}", self.ipam_release)
        app.router.add_get("/v1/endpoints", self.list_endpoints)
        app.router.add_put("/v1/endpoints", self.create_endpoint)
        app.router.add_delete("/v1/endpoints", self.delete_attachment)
        app.router.add_post("/v1/endpoints/gc", self.gc_endpoints)
        app.router.add_get(r"/v1/endpoints/{id:\d+}", self.get_endpoint)
        app.router.add_delete(r"/v1/endpoints/{id:\d+}", self.delete_endpoint)
        app.router.add_post(r"/v1/endpoints/{id:\d+}/check", self.check_endpoint)
        app.router.add_get("/v1/datapath/metrics", self.datapath_metrics)
        app.router.add_get("/v1/datapath/conntrack", self.datapath_conntrack)
        app.router.add_get("/v1/ipcache", self.ipcache)
        app.router.add_get("/v1/lb", self.lb)
        add_flow_routes(app, lambda: self._b.observer)  # /v1/flows (hubble/rest.py)
        return app

    async def healthz(self, request: web.Request) -> web.Response:
        ipam, _ = self._b.ready()
        return web.json_response(
            {
                "status": "ok",
                "node": self._b.node,
                "ipam": {
                    "cidr": _cidr(ipam),
                    "used": ipam.used_count,
                    "available": ipam.available,
                },
            }
        )

    async def config(self, request: web.Request) -> web.Response:
        ipam = self._b.ipam
        return web.json_response(
            {
                "node": self._b.node,
                "podCIDR": None if ipam is None else _cidr(ipam),
                "routerIP": None if ipam is None else str(ipam.router_ip),
                "mtu": self._b.mtu,
                "stateDir": str(self._b.state_dir),
            }
        )

    async def ipam_allocate(self, request: web.Request) -> web.Response:
        ipam, _ = self._b.ready()
        body = await _body(request)
        owner = body.get("owner") if isinstance(body, dict) else None
        if not isinstance(owner, str) or not owner:
            raise ApiError(400, CNI_INVALID_CONFIG, "owner must be a non-empty string")
        alloc = ipam.allocate(owner)
        return web.json_response(
            {
                "ip": str(alloc.ip),
                "cidr": _cidr(ipam),
                "gateway": str(ipam.router_ip),
                "owner": alloc.owner,
            },
            status=201,
        )

    async def ipam_release(self, request: web.Request) -> web.Response:
        ipam, _ = self._b.ready()
        try:
            ip = parse_ipv4(request.match_info["ip"])
        except ValueError as err:
            raise ApiError(400, CNI_INVALID_CONFIG, str(err)) from err
        ipam.release(ip)
        return web.Response(status=204)

    async def list_endpoints(self, request: web.Request) -> web.Response:
        _, endpoints = self._b.ready()
        attachment = _attachment(request)
        if attachment is None:
            found = endpoints.endpoints()
        else:
            one = endpoints.find(*attachment)
            found = [] if one is None else [one]
        return web.json_response([ep.to_json() for ep in found])

    async def get_endpoint(self, request: web.Request) -> web.Response:
        _, endpoints = self._b.ready()
        return web.json_response(endpoints.get(_endpoint_id(request)).to_json())

    async def create_endpoint(self, request: web.Request) -> web.Response:
        _, endpoints = self._b.ready()
        ep = await endpoints.create(EndpointRequest.from_json(await _body(request)))
        return web.json_response(ep.to_json(), status=201)

    async def delete_endpoint(self, request: web.Request) -> web.Response:
        _, endpoints = self._b.ready()
        await endpoints.delete(_endpoint_id(request))
        return web.Response(status=204)

    async def delete_attachment(self, request: web.Request) -> web.Response:
        _, endpoints = self._b.ready()
        attachment = _attachment(request)
        if attachment is None:
            raise ApiError(
                400, CNI_INVALID_CONFIG, "DELETE /v1/endpoints needs containerID and ifname"
            )
        await endpoints.delete_attachment(*attachment)
        return web.Response(status=204)

    async def check_endpoint(self, request: web.Request) -> web.Response:
        _, endpoints = self._b.ready()
        body = await _body(request)
        netns = body.get("netns") if isinstance(body, dict) else None
        if netns is not None and not isinstance(netns, str):
            raise ApiError(400, CNI_INVALID_CONFIG, "netns must be a string")
        ep = await endpoints.check(_endpoint_id(request), netns or None)
        return web.json_response(ep.to_json())

    async def gc_endpoints(self, request: web.Request) -> web.Response:
        _, endpoints = self._b.ready()
        body = await _body(request)
        items = body.get("valid") if isinstance(body, dict) else None
        if not isinstance(items, list):
            raise ApiError(400, CNI_INVALID_CONFIG, "valid must be a list")
        valid: set[tuple[str, str]] = set()
        for item in items:
            if not isinstance(item, dict) or not all(
                isinstance(item.get(k), str) for k in ("containerID", "ifname")
            ):
                raise ApiError(400, CNI_INVALID_CONFIG, f"invalid attachment {item!r}")
            valid.add((item["containerID"], item["ifname"]))
        removed = await endpoints.gc(valid)
        return web.json_response({"removed": [ep.to_json() for ep in removed]})

    async def datapath_metrics(self, request: web.Request) -> web.Response:
        samples = self._b.ready_datapath().metrics()
        return web.json_response({"metrics": [s.to_json() for s in samples]})

    async def datapath_conntrack(self, request: web.Request) -> web.Response:
        entries = self._b.ready_datapath().conntrack()
        return web.json_response({"entries": [e.to_json() for e in entries]})

    async def ipcache(self, request: web.Request) -> web.Response:
        self._b.ready()
        if self._b.ipcache_dump is None:
            raise ApiError(503, CNI_TRY_AGAIN_LATER, "the ipcache is not running")
        return web.json_response(self._b.ipcache_dump())

    async def lb(self, request: web.Request) -> web.Response:
        self._b.ready()
        if self._b.lb_dump is None:
            raise ApiError(503, CNI_TRY_AGAIN_LATER, "service load balancing is not running")
        return web.json_response(self._b.lb_dump())


class RestServer:
    """Serves `Api` on a unix socket. start() binds (replacing a stale socket), stop() closes."""

    def __init__(
        self,
        socket_path: Path,
        backend: ApiBackend,
        middlewares: Sequence[Middleware] = (),
    ) -> None:
        """`middlewares` wrap every request outside the error handling, so they see the
        status code the client gets (the metrics' API latency histogram)."""
        self._socket = socket_path
        self._api = Api(backend, middlewares)
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Bind the socket and serve."""
        self._socket.parent.mkdir(parents=True, exist_ok=True)
        self._socket.unlink(missing_ok=True)  # left by an agent that was killed
        self._runner = web.AppRunner(self._api.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.UnixSite(self._runner, str(self._socket)).start()
        log.info("serving the agent API on %s", self._socket)

    async def stop(self) -> None:
        """Stop serving and remove the socket."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._socket.unlink(missing_ok=True)


def _cidr(ipam: NodeAllocator) -> str | None:
    """The pod CIDR; None in crd mode, where addresses come from a list."""
    return None if ipam.cidr is None else str(ipam.cidr)
