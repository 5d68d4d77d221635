"""Flow routes of the agent's REST API: `add_routes(app, observer)`.

`observer` is the Observer, or a callable returning it once the agent has one (None before:
the routes answer 503 with CNI code 11, try again later, as the rest of the API while the
agent starts).

    GET /v1/flows?last=N&first=1&since=RFC3339&until=RFC3339&follow=1&<filters>
    GET /v1/flows/status

Flows are `observer.GetFlowsResponse` objects in Hubble's JSON form (`{"flow", "node_name",
"time"}`, one per line of `hubble observe -o json`). Without `follow` the answer is a JSON list,
oldest first: the newest `last` matching flows (the oldest with `first=1`; all kept ones when
`last` is absent) at or after `since` and at or before `until`. With `follow=1` it is NDJSON:
that backlog (none unless `last` or `since` is given), then every new matching flow as it
comes, until the client goes away, the agent stops or a flow after `until` comes; a follower
that falls behind gets a `{"lost_events": ...}` line saying how many it missed. Filters are
`FlowQuery` parameters (`pod`, `from-pod`, `namespace`, `verdict`, `protocol`, `port`, `ip`,
`type`, `label`, `identity`, `service`, `node-name`, `traffic-direction`, `drop-reason-desc`,
sided forms `from-`/`to-`, each also `not-...`); a bad one answers 400 with CNI code 7, as
the rest of the API.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from pylium.hubble.filters import FlowQuery, InvalidFilter, matches
from pylium.hubble.flow import Flow, format_time, parse_time, response_json
from pylium.hubble.observer import LOST_FOLLOWERS, Observer

CNI_INVALID_CONFIG = 7
CNI_TRY_AGAIN_LATER = 11
NDJSON = "application/x-ndjson"

ObserverSource = Observer | Callable[[], Observer | None]


def add_routes(app: web.Application, observer: ObserverSource) -> None:
    """Serve the observer's flows on `app`."""
    routes = _FlowRoutes(observer if callable(observer) else lambda: observer)
    app.router.add_get("/v1/flows", routes.flows)
    app.router.add_get("/v1/flows/status", routes.status)
    app.on_shutdown.append(routes.end_streams)


class _BadRequest(Exception):
    pass


class _Request:
    """The parsed query of GET /v1/flows."""

    def __init__(self, request: web.Request) -> None:
        query = request.query
        try:
            self.last = int(query["last"]) if "last" in query else None
            if self.last is not None and self.last < 0:
                raise ValueError("negative")
        except ValueError:
            raise _BadRequest(f"last must be a number >= 0, got {query['last']!r}") from None
        try:
            self.since = parse_time(query["since"]) if "since" in query else None
        except ValueError:
            raise _BadRequest(f"since must be an RFC 3339 time, got {query['since']!r}") from None
        try:
            self.until = parse_time(query["until"]) if "until" in query else None
        except ValueError:
            raise _BadRequest(f"until must be an RFC 3339 time, got {query['until']!r}") from None
        self.follow = _flag(query.get("follow", "0"))
        self.first = _flag(query.get("first", "0"))
        if self.first and self.follow:
            raise _BadRequest("first and follow cannot be combined")
        try:
            self.whitelist, self.blacklist = FlowQuery.from_params(query.items()).filters()
        except InvalidFilter as err:
            raise _BadRequest(str(err)) from None

    def select(self, flows: list[Flow]) -> list[Flow]:
        """The backlog: matching flows at or after `since`, the newest `last` of them."""
        chosen = [f for f in flows if self.wanted(f) and not self.after_until(f)]
        if self.last is None:
            return chosen
        return chosen[: self.last] if self.first else chosen[max(0, len(chosen) - self.last) :]

    def after_until(self, flow: Flow) -> bool:
        return self.until is not None and flow.time_ns > self.until

    def wanted(self, flow: Flow) -> bool:
        return matches(flow, self.whitelist, self.blacklist)


def _flag(value: str) -> bool:
    return value.lower() in ("1", "true", "yes")


def _error(status: int, code: int, msg: str) -> web.Response:
    return web.json_response({"code": code, "msg": msg, "details": ""}, status=status)


_NOT_READY = "flow observer not running yet"


class _FlowRoutes:
    def __init__(self, observer: Callable[[], Observer | None]) -> None:
        self._observer = observer

    async def flows(self, request: web.Request) -> web.StreamResponse:
        observer = self._observer()
        if observer is None:
            return _error(503, CNI_TRY_AGAIN_LATER, _NOT_READY)
        try:
            req = _Request(request)
        except _BadRequest as err:
            return _error(400, CNI_INVALID_CONFIG, str(err))
        ring = observer.ring
        if not req.follow:
            kept = ring.since(req.since) if req.since is not None else list(ring)
            return web.json_response([response_json(f) for f in req.select(kept)])

        # Subscribe before reading the backlog: both happen on the loop thread with no await
        # between them, so no flow falls in the gap or comes twice.
        follower = ring.follow()
        if req.since is not None:
            backlog = req.select(ring.since(req.since))
        elif req.last is not None:
            backlog = req.select(list(ring))
        else:
            backlog = []
        response = web.StreamResponse(headers={"Content-Type": NDJSON})
        try:
            await response.prepare(request)
            for flow in backlog:
                await _write(response, response_json(flow))
            reported_lost = 0
            async for flow in follower:
                if follower.lost > reported_lost:
                    await _write(response, _lost_line(follower.lost - reported_lost, flow))
                    reported_lost = follower.lost
                if req.after_until(flow):
                    break
                if req.wanted(flow):
                    await _write(response, response_json(flow))
        except ConnectionResetError:
            pass  # the client went away
        finally:
            follower.close()
        return response

    async def end_streams(self, app: web.Application) -> None:
        """End `follow` streams when the server shuts down (they would hold it up)."""
        observer = self._observer()
        if observer is not None:
            observer.ring.close()

    async def status(self, request: web.Request) -> web.Response:
        observer = self._observer()
        if observer is None:
            return _error(503, CNI_TRY_AGAIN_LATER, _NOT_READY)
        s = observer.status()
        # Hubble's ServerStatusResponse in protobuf JSON (uint64 as strings), plus the lost
        # counters per source.
        return web.json_response(
            {
                "num_flows": str(s.num_flows),
                "max_flows": str(s.max_flows),
                "seen_flows": str(s.seen_flows),
                "uptime_ns": str(s.uptime_ns),
                "lost_events": {source: str(n) for source, n in s.lost.items()},
            }
        )


async def _write(response: web.StreamResponse, obj: dict[str, Any]) -> None:
    await response.write(json.dumps(obj, separators=(",", ":")).encode() + b"\n")


def _lost_line(count: int, flow: Flow) -> dict[str, Any]:
    """observer.GetFlowsResponse with a flow.LostEvent."""
    return {
        "lost_events": {"source": LOST_FOLLOWERS, "num_events_lost": str(count)},
        "node_name": flow.node_name,
        "time": format_time(time.time_ns()),
    }
