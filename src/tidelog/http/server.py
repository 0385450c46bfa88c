"""The HTTP listener (aiohttp): ``GET /metrics`` (Prometheus text format) and ``GET /health``."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

if TYPE_CHECKING:
    from tidelog.server.broker import Broker

logger = logging.getLogger(__name__)


def make_app(broker: "Broker") -> web.Application:
    async def metrics(_request: web.Request) -> web.Response:
        broker.refresh_gauges()
        body = generate_latest(broker.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def health(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "node_id": broker.node_id, "cluster_id": broker.cluster_id})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/health", health)
    return app


class HttpServer:
    def __init__(self, broker: "Broker", host: str, port: int) -> None:
        self.broker = broker
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        self._runner = web.AppRunner(make_app(self.broker), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        if self.port == 0:
            self.port = site._server.sockets[0].getsockname()[1]  # aiohttp has no public accessor
        logger.info("HTTP listening on %s:%d (/metrics, /health)", self.host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
