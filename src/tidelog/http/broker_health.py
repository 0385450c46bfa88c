"""A broker's own health, and every live broker's for the cluster view: ``GET /api/v1/broker``
answers this broker's (readiness, uptime, connections, the event loop's recent lag from
server/loop_monitor.py, internal writes timed out by writer); ``GET /api/v1/cluster`` gives each
live broker's event-loop lag and internal write timeouts, this
broker's from its monitor and the others' asked of their ``/api/v1/broker`` (as the caller: its
Authorization header goes along), all at once and for PEER_TIMEOUT_S at the most. A broker that
does not answer in that time is itself news (a stalled loop answers nothing): its lag is null and
``event_loop_error`` says why. The others are asked as their HTTP listener serves (http or
https, peer_http.py).
Not thread-safe; the event loop owns it.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from tidelog.http.errors import PREFIX
from tidelog.http.group_routes import FORWARDED_HEADER
from tidelog.http.peer_http import PeerHttp

if TYPE_CHECKING:
    from tidelog.http.cluster_view import ClusterView
    from tidelog.server.broker import Broker

__all__ = ["BrokerHealth"]

PEER_TIMEOUT_S = 1.0  # the console polls /cluster every second


class BrokerHealth:
    def __init__(self, broker: "Broker", view: "ClusterView", peer_http: PeerHttp) -> None:
        self.broker = broker
        self.view = view
        self.peer_http = peer_http

    def own(self) -> dict:
        broker = self.broker
        now_ms = int(time.time() * 1000)
        return {
            "node_id": broker.node_id, "ready": broker.ready, "not_ready_reasons": broker.not_ready_reasons(),
            "started_at_ms": broker.started_at_ms, "uptime_ms": now_ms - broker.started_at_ms,
            "connections": len(broker.connections), "event_loop": broker.loop_monitor.recent(),
            "internal_write_timeouts": broker.metrics.internal_write_timeout_counts(), "now_ms": now_ms,
        }

    async def get(self, _request: web.Request) -> web.Response:
        return web.json_response(self.own())

    async def event_loops(self, node_ids: list[int], authorization: str | None) -> dict[int, tuple[dict | None, str | None, dict | None]]:
        """node id -> (its event loop's recent lag or None, why it is None or None, its internal
        write timeouts by writer or None)."""
        answers = await asyncio.gather(*(self._event_loop(node_id, authorization) for node_id in node_ids))
        return dict(zip(node_ids, answers))

    async def _event_loop(self, node_id: int, authorization: str | None) -> tuple[dict | None, str | None, dict | None]:
        if node_id == self.broker.node_id:
            return self.broker.loop_monitor.recent(), None, self.broker.metrics.internal_write_timeout_counts()
        address = self.view.http_address(node_id)
        if address is None:
            return None, "no HTTP listener", None
        headers = {FORWARDED_HEADER: str(self.broker.node_id), **({"Authorization": authorization} if authorization else {})}
        try:
            async with self.peer_http.request("broker", "GET", address, f"{PREFIX}/broker", PEER_TIMEOUT_S,
                                              headers=headers) as response:
                if response.status != 200:
                    return None, f"its HTTP API answered {response.status}", None
                answer = await response.json()
                return answer["event_loop"], None, answer.get("internal_write_timeouts")  # (None: an older broker)
        except asyncio.TimeoutError:
            return None, f"no answer from {address} within {PEER_TIMEOUT_S:g} s", None
        except (aiohttp.ClientError, ValueError, KeyError, TypeError) as e:
            return None, f"{address}: {e or type(e).__name__}", None
