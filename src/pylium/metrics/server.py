"""The agent's Prometheus endpoint: `GET /metrics` over HTTP on a TCP address, as an agent
component (start/stop). Cilium serves agent metrics on :9962 and Hubble's on :9965; pylium
serves one registry holding both, on one configurable address."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger(__name__)

DEFAULT_LISTEN = ":9962"


@dataclass(frozen=True)
class MetricsParams:
    listen: str = DEFAULT_LISTEN
    """`host:port` (empty host: every address); port 0 picks a free one (see `port`)."""


class MetricsServer:
    """Serves `registry` at /metrics. `port` is the bound port once started."""

    def __init__(self, params: MetricsParams, registry: CollectorRegistry) -> None:
        host, sep, port = params.listen.rpartition(":")
        if not sep or not port.isdigit():
            raise ValueError(f"metrics address {params.listen!r}: expected HOST:PORT")
        self.params = params
        self._host, self._port = host.strip("[]") or None, int(port)
        self._registry = registry
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self._host, self._port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self.port = int(runner.addresses[0][1])  # the real port when 0 was asked for
        self._runner = runner
        log.info("metrics on %s (port %d)", self.params.listen, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self._registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
