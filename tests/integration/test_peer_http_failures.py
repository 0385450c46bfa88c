"""How a broker's HTTP API logs and remembers other brokers' HTTP APIs that do not answer
(http/peer_http.py): a broker's first failure is one WARNING, the ones after it DEBUG, its next
answer one INFO; and the failing addresses remembered for that are bounded (MAX_FAILING, the
oldest forgotten): brokers gone for good, or an address that changes, must not grow the map.

A real broker in this process (its metrics, config and TLS settings), asking over real sockets:
addresses with a bound socket that does not listen (refused at once), and one whose listening
socket is not served at first (no answer within the timeout), then served by a real aiohttp
server on that same socket (the port never changes hands)."""

from __future__ import annotations

import asyncio
import logging
import socket

import aiohttp
import pytest
from aiohttp import web

from tidelog.config import BrokerConfig
from tidelog.http.peer_http import MAX_FAILING, PeerHttp
from tidelog.node import make_broker

LOGGER = "tidelog.http.peer_http"


def _refusing_addresses(count: int) -> tuple[list[str], list[socket.socket]]:
    """``count`` distinct addresses that refuse a connection: one port bound on every address and
    not listening, asked at as many loopback addresses (127.0.1.1 ...)."""
    holder = socket.socket()
    holder.bind(("0.0.0.0", 0))
    port = holder.getsockname()[1]
    return [f"127.0.{1 + n // 250}.{1 + n % 250}:{port}" for n in range(count)], [holder]


async def _ask(peer: PeerHttp, address: str, timeout_s: float = 5) -> int | None:
    try:
        async with peer.request("broker", "GET", address, "/api/v1/broker", timeout_s) as response:
            return response.status
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return None


async def _answering(listening: socket.socket) -> web.AppRunner:
    """A peer's HTTP API on ``listening`` that answers GET /api/v1/broker (cleaned up by the caller)."""
    async def answer(_request: web.Request) -> web.Response:
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/api/v1/broker", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.SockSite(runner, listening).start()
    return runner


async def _scenario(data_dir, caplog) -> None:
    broker = make_broker(BrokerConfig.load(env={}, overrides={"http.port": "0"}), data_dir, "127.0.0.1", 0)
    await broker.start()
    peer = PeerHttp(broker)
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen(16)
    quiet = f"127.0.0.1:{listening.getsockname()[1]}"
    addresses, held = _refusing_addresses(MAX_FAILING + 20)
    runner = None
    try:
        # One episode: WARNING, then DEBUG, then INFO once it answers.
        caplog.clear()
        assert await _ask(peer, quiet, 0.3) is None
        assert await _ask(peer, quiet, 0.3) is None
        levels = [r.levelname for r in caplog.records if r.name == LOGGER and quiet in r.getMessage()]
        assert levels == ["WARNING", "DEBUG"], levels

        runner = await _answering(listening)
        caplog.clear()
        assert await _ask(peer, quiet) == 200
        answered = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == LOGGER]
        assert answered == [("INFO", f"HTTP API of the broker at {quiet} answers again")], answered

        # Many brokers failing: one WARNING each, and no more of them remembered than MAX_FAILING.
        caplog.clear()
        for address in addresses:
            assert await _ask(peer, address) is None, address
        warned = [r for r in caplog.records if r.name == LOGGER and r.levelname == "WARNING"]
        assert len(warned) == len(addresses), len(warned)
        assert len(peer._failing) == MAX_FAILING, len(peer._failing)
        assert addresses[0] not in peer._failing and addresses[-1] in peer._failing
        caplog.clear()
        assert await _ask(peer, addresses[-1]) is None  # still remembered: its episode goes on
        assert [r.levelname for r in caplog.records if r.name == LOGGER] == ["DEBUG"]
    finally:
        for sock in held:
            sock.close()
        if runner is not None:
            await runner.cleanup()
        listening.close()
        await peer.close()
        await broker.stop()


def test_failing_peers_are_logged_once_an_episode_and_remembered_within_a_bound(tmp_path, caplog):
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        asyncio.run(_scenario(tmp_path, caplog))


async def _closed_scenario(data_dir, caplog) -> None:
    broker = make_broker(BrokerConfig.load(env={}, overrides={"http.port": "0"}), data_dir, "127.0.0.1", 0)
    await broker.start()
    peer = PeerHttp(broker)
    runner = None
    try:
        listening = socket.socket()
        listening.bind(("127.0.0.1", 0))
        listening.listen(16)
        runner = await _answering(listening)
        address = f"127.0.0.1:{listening.getsockname()[1]}"
        assert await _ask(peer, address) == 200
        await peer.close()  # the broker shutting down, a route still running
        caplog.clear()
        failed_before = broker.metrics.http_peer_requests.labels("broker", "failed")._value.get()
        with pytest.raises(aiohttp.ClientError, match="shutting down"):
            async with peer.request("broker", "GET", address, "/api/v1/broker", 5):
                pass
        assert broker.metrics.http_peer_requests.labels("broker", "failed")._value.get() == failed_before + 1
        # the peer did not fail: no WARNING naming it, and no new session made after the close
        assert [r.levelname for r in caplog.records if r.name == LOGGER and r.levelno >= logging.WARNING] == []
        assert peer._session is None or peer._session.closed
    finally:
        if runner is not None:
            await runner.cleanup()
        await peer.close()
        await broker.stop()


def test_a_request_after_close_takes_the_unanswered_path(tmp_path, caplog):
    """robust16: after close() (the broker stopping) aiohttp raised RuntimeError('Session is
    closed'), which no caller catches: a route running during shutdown answered 500 instead of
    taking its peer-unreachable path. Now aiohttp.ClientError, counted failed, logged DEBUG."""
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        asyncio.run(_closed_scenario(tmp_path, caplog))
