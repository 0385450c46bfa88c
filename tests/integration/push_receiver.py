"""A real HTTP receiver for push-delivery tests: an aiohttp server on 127.0.0.1 (port 0) in its own
thread and event loop, answering as the test says (``behaviour``), recording every request it got;
plus helpers to create subscriptions through the broker's HTTP API."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Callable

from aiohttp import web

from tests.integration.share_clients import wait_for  # noqa: F401 - the tests take it from here too
from tidelog.push.payload import verify_signature


@dataclass
class Delivery:
    """One request the receiver got."""

    headers: dict[str, str]
    body: bytes
    status: int
    records: list[dict] = field(default_factory=list)

    @property
    def keys(self) -> list[tuple[str, int, int]]:
        return [(r["topic"], r["partition"], r["offset"]) for r in self.records]


# behaviour(n, delivery) -> status, or (status, json answer), or None (the connection is closed),
# called for the n-th request (0-based) in the receiver's loop; an async one may sleep.
Behaviour = Callable[[int, Delivery], object]


class Receiver:
    def __init__(self, behaviour: Behaviour | None = None, raw: bool = False, ssl_context=None) -> None:
        self.ssl_context = ssl_context  # https when given
        self.behaviour = behaviour or (lambda n, d: 200)
        self.raw = raw
        self.deliveries: list[Delivery] = []
        self.lock = threading.Lock()
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self.is_down = False
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="push-receiver")

    @property
    def url(self) -> str:
        return f"{'https' if self.ssl_context else 'http'}://127.0.0.1:{self.port}/hook"

    def __enter__(self) -> "Receiver":
        self._thread.start()
        self._call(self._start())
        return self

    def __exit__(self, *exc) -> None:
        self._call(self._stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    def _call(self, coro, timeout_s: float = 30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    async def _start(self) -> None:
        app = web.Application(client_max_size=64 << 20)
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        await self._listen()

    async def _stop(self) -> None:
        await self._runner.cleanup()
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    async def _listen(self) -> None:
        self._site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True, ssl_context=self.ssl_context)
        await self._site.start()
        self.port = self._site._server.sockets[0].getsockname()[1]

    def down(self) -> None:
        """Stop listening (new connections are refused) and drop requests on open ones, until ``up()``."""
        self.is_down = True
        self._call(self._site.stop())

    def up(self) -> None:
        self._call(self._listen())
        self.is_down = False

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if self.is_down:  # a kept-alive connection of before the receiver went down
            request.transport.abort()
            raise web.HTTPServiceUnavailable()
        body = await request.read()
        delivery = Delivery(dict(request.headers), body, 0)
        if self.raw:
            h = request.headers
            delivery.records = [{"topic": h["Tidelog-Topic"], "partition": int(h["Tidelog-Partition"]),
                                 "offset": int(h["Tidelog-Offset"]), "value": body.decode(),
                                 "delivery_count": int(h["Tidelog-Delivery-Count"])}]
        else:
            delivery.records = json.loads(body)["records"]
        with self.lock:
            n = len(self.deliveries)
            self.deliveries.append(delivery)
        answer = self.behaviour(n, delivery)
        if asyncio.iscoroutine(answer):
            answer = await answer
        if answer is None:  # close the connection without an answer
            delivery.status = -1
            request.transport.abort()
            raise web.HTTPServiceUnavailable()
        status, payload = answer if isinstance(answer, tuple) else (answer, None)
        delivery.status = status
        if payload is not None:
            return web.json_response(payload, status=status)
        return web.Response(status=status, text="ok" if status < 300 else "no")

    # --- what the tests read ------------------------------------------------------------------
    def snapshot(self) -> list[Delivery]:
        with self.lock:
            return list(self.deliveries)

    def acknowledged_keys(self) -> list[tuple[str, int, int]]:
        """Every record of the requests answered 2xx (with their repeats)."""
        return [k for d in self.snapshot() if 200 <= d.status < 300 for k in d.keys]

    def received_keys(self) -> list[tuple[str, int, int]]:
        return [k for d in self.snapshot() for k in d.keys]


def api(broker, method: str, path: str, body: dict | None = None, headers: dict | None = None) -> tuple[int, dict]:
    """One call of the broker's HTTP API: (status, JSON answer)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"http://127.0.0.1:{broker.metrics_port}/api/v1{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def create_subscription(broker, **fields) -> str:
    """Create a push subscription through the HTTP API; its secret."""
    status, answer = api(broker, "POST", "/push-subscriptions", fields)
    assert status == 201, (status, answer)
    return answer["secret"]


def status_of(broker, name: str, local: bool = False) -> dict:
    """The subscription's status: over the cluster's brokers, or (``local``) this broker's own deliveries
    (asked as another broker asks it)."""
    status, answer = api(broker, "GET", f"/push-subscriptions/{name}",
                         headers={"X-Tidelog-Forwarded-By": "0"} if local else None)
    assert status == 200, (status, answer)
    return answer["status"]


def verify(secret: str, delivery: Delivery) -> bool:
    return verify_signature(secret, delivery.headers.get("Tidelog-Signature", ""), delivery.body,
                            int(time.time() * 1000))
