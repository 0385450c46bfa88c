"""The HTTP listener (aiohttp), in the broker's event loop, on ``http.host``:``http.port``
(default 127.0.0.1:9644: the API has no authentication yet, so it is not exposed unless asked).

- ``GET /metrics``: Prometheus text format (state gauges refreshed at each scrape, the logs' per-partition
  families written by server/gauges.py after the registry's).
- ``GET /health``: 200 while the process serves HTTP (liveness), from the start of the broker on.
- ``GET /ready``: 200 once the broker is ready (``Broker.not_ready_reasons``: starting, a log
  directory offline after an I/O error, not registered or caught up in a cluster), else 503
  with the reasons; for orchestrators' readiness probes.
- ``/api/v1/...``: the JSON API (api.py), its OpenAPI 3.1 document at ``/api/v1/openapi.json``;
  503 BROKER_NOT_AVAILABLE while the broker is still recovering its logs.
- ``GET /``: the web console, static files from this package's ``static/`` (no build step, no CDN).

The socket is bound first (``bind``) and served later (``start``): the broker binds every
listener before it serves any, so that a port in use stops it before it answers anything.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from tidelog.http.api import Api
from tidelog.http.auth import authenticate
from tidelog.http.errors import PREFIX, error_response, json_errors
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


def api_when_serving(broker: "Broker"):
    """The API works on the broker's logs and groups: 503 until they are loaded."""

    @web.middleware
    async def middleware(request: web.Request, handler):
        if request.path.startswith(PREFIX + "/") and request.path != PREFIX + "/openapi.json" and not broker.serving:
            reason = broker.startup_phase or "stopping"
            return error_response(503, "BROKER_NOT_AVAILABLE", f"the broker is not serving yet: {reason}")
        return await handler(request)

    return middleware


def make_app(broker: "Broker") -> web.Application:
    async def metrics(_request: web.Request) -> web.Response:
        if broker.serving:
            broker.refresh_gauges()
        body = generate_latest(broker.metrics.registry) + broker.metrics.partition_series.text
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def health(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "node_id": broker.node_id, "cluster_id": broker.cluster_id})

    async def ready(_request: web.Request) -> web.Response:
        reasons = broker.not_ready_reasons()
        if not reasons:
            return web.json_response({"status": "ready"})
        return web.json_response({"status": "; ".join(reasons), "reasons": reasons}, status=503)

    document = openapi_document()

    async def openapi(_request: web.Request) -> web.Response:
        return web.json_response(document)

    async def console(_request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    app = web.Application(middlewares=[count_requests(broker), authenticate(broker), json_errors,
                                       api_when_serving(broker)],
                          client_max_size=64 * 1024 * 1024)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    app.router.add_get(PREFIX + "/openapi.json", openapi)
    api = Api(broker)
    api.add_routes(app)

    async def close_api(_app: web.Application) -> None:
        await api.close()

    app.on_cleanup.append(close_api)
    app.router.add_get("/", console)
    app.router.add_static("/static/", STATIC_DIR, append_version=False)
    return app


class HttpServer:
    def __init__(self, broker: "Broker", host: str, port: int) -> None:
        self.broker = broker
        self.host = host
        self.port = port
        self._socket: socket.socket | None = None
        self._runner: web.AppRunner | None = None

    def bind(self) -> None:
        """Bind and listen (not serve yet); the port is known after this. Raises OSError."""
        info = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(info[0], socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(info[4])
            sock.listen(128)
        except OSError:
            sock.close()
            raise
        self._socket = sock
        self.port = sock.getsockname()[1]

    async def start(self) -> None:
        self._runner = web.AppRunner(make_app(self.broker), access_log=None)
        await self._runner.setup()
        tls = self.broker.tls if self.broker.config["http.ssl.enable"] else None
        await web.SockSite(self._runner, self._socket, ssl_context=tls.context if tls else None).start()
        host = f"[{self.host}]" if ":" in self.host else self.host
        scheme = "https" if tls else "http"
        logger.info("HTTP listener on %s:%d: console %s://%s:%d/, API %s, /metrics, /health, /ready",
                    self.host, self.port, scheme, host, self.port, PREFIX)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        elif self._socket is not None:
            self._socket.close()
