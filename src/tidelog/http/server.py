"""The HTTP listener (aiohttp), in the broker's event loop, on ``http.port`` (default 9644).

- ``GET /metrics``: Prometheus text format (state gauges refreshed at each scrape).
- ``GET /health``: 200 while the process serves HTTP (liveness).
- ``GET /ready``: 200 once the Kafka listener accepts connections and groups are loaded, else 503
  with the reason ("starting", or "log directory offline: ..." after an I/O error).
- ``/api/v1/...``: the JSON API (api.py), its OpenAPI 3.1 document at ``/api/v1/openapi.json``.
- ``GET /``: the web console, static files from this package's ``static/`` (no build step, no CDN).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from tidelog.http.api import PREFIX, Api, json_errors
from tidelog.http.openapi import openapi_document

if TYPE_CHECKING:
    from tidelog.server.broker import Broker

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"


def count_requests(broker: "Broker"):
    """Count every HTTP request by method, route template (not the raw path) and status."""

    @web.middleware
    async def middleware(request: web.Request, handler):
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as e:
            status = e.status
            raise
        finally:
            resource = request.match_info.route.resource
            route = resource.canonical if resource is not None else "unmatched"
            broker.metrics.http_requests.labels(request.method, route, str(status)).inc()

    return middleware


def make_app(broker: "Broker") -> web.Application:
    async def metrics(_request: web.Request) -> web.Response:
        broker.refresh_gauges()
        body = generate_latest(broker.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def health(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "node_id": broker.node_id, "cluster_id": broker.cluster_id})

    async def ready(_request: web.Request) -> web.Response:
        if broker.ready:
            return web.json_response({"status": "ready"})
        return web.json_response({"status": broker.status}, status=503)

    document = openapi_document()

    async def openapi(_request: web.Request) -> web.Response:
        return web.json_response(document)

    async def console(_request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    app = web.Application(middlewares=[count_requests(broker), json_errors], client_max_size=64 * 1024 * 1024)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    app.router.add_get(PREFIX + "/openapi.json", openapi)
    Api(broker).add_routes(app)
    app.router.add_get("/", console)
    app.router.add_static("/static/", STATIC_DIR, append_version=False)
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
        logger.info("HTTP listening on %s:%d (console at /, API at %s, /metrics, /health, /ready)", self.host, self.port, PREFIX)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
