"""How this broker's HTTP API asks the other brokers' HTTP APIs (the cluster view's event-loop
lag and group count, group routes forwarded to the coordinator, share-partitions at their
leaders, push subscription statuses, delay topics' movers).

Every broker of a cluster serves its HTTP side alike, so the scheme and TLS come from this
broker's own HTTP listener: with ``http.ssl.enable`` the others are asked over https, their
certificates checked against ``ssl.truststore.location`` (the system's CAs without one) and
this broker's ``ssl.keystore.location`` certificate shown (a listener with ``ssl.client.auth``
asks for one), as the inter-broker Kafka client does (server/listeners.py). The client context
is made again after the listener reloaded its certificate. Asking over http:// an https
listener (or the other way round) got no answer at all, and the console showed every other
broker as unanswering.

One aiohttp session for every route, each request with its own timeout. Each request is counted
in ``tidelog_http_peer_requests_total{what, result}`` (ok: any HTTP answer; failed: none, say a
refused connection, a certificate not trusted, a timeout); a broker's first failure after an
answer is logged at WARNING with the reason, the ones after it at DEBUG until it answers again
(INFO). Not thread-safe; the event loop owns it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from typing import TYPE_CHECKING, AsyncIterator

import aiohttp

if TYPE_CHECKING:
    from tidelog.server.broker import Broker

__all__ = ["PeerHttp"]

logger = logging.getLogger(__name__)

MAX_FAILING = 256  # failing addresses remembered (for one WARNING each), at the most


class PeerHttp:
    """See the module docstring."""

    def __init__(self, broker: "Broker") -> None:
        self.broker = broker
        self.tls = bool(broker.config["http.ssl.enable"]) and broker.security.tls is not None
        self.scheme = "https" if self.tls else "http"
        self._session: aiohttp.ClientSession | None = None
        self._context: ssl.SSLContext | None = None
        self._context_reloads = -1
        self._failing: dict[str, str] = {}  # address -> the reason of its last failure, while failing
        self._closed = False

    def url(self, address: str, path: str) -> str:
        return f"{self.scheme}://{address}{path}"

    def console(self, address: str) -> str:
        return f"{self.scheme}://{address}/"

    def _ssl(self) -> ssl.SSLContext | bool:
        if not self.tls:
            return True  # aiohttp's default (no TLS on http:// anyway)
        server = self.broker.tls
        reloads = server.reloads if server is not None else 0
        if self._context is None or reloads != self._context_reloads:
            settings = self.broker.security.tls
            context = ssl.create_default_context(cafile=str(settings.truststore) if settings.truststore else None)
            context.load_cert_chain(settings.keystore, password=settings.key_password)
            self._context, self._context_reloads = context, reloads
        return self._context

    @contextlib.asynccontextmanager
    async def request(self, what: str, method: str, address: str, path: str, timeout_s: float,
                      **kwargs) -> AsyncIterator[aiohttp.ClientResponse]:
        """``async with peer_http.request(...) as response``: one request to the broker whose HTTP
        address is ``address``; ``what`` names the caller in the metric. Raises aiohttp.ClientError
        or asyncio.TimeoutError as aiohttp does (after counting and logging them)."""
        counter = self.broker.metrics.http_peer_requests
        if self._closed:  # the broker is stopping, a route still running: the unanswered path, not a 500
            counter.labels(what, "failed").inc()
            logger.debug("HTTP API of the broker at %s not asked: this broker is shutting down", address)
            raise aiohttp.ClientError("not asked: this broker is shutting down")
        if self._session is None:
            self._session = aiohttp.ClientSession()
        try:
            context = self._ssl()
        except (ssl.SSLError, OSError) as e:  # the files were readable at start: changed since
            counter.labels(what, "failed").inc()
            self._failed(address, f"cannot make the TLS client from ssl.keystore.location/ssl.truststore.location: {e}")
            raise aiohttp.ClientError(f"no TLS client: {e}") from None
        answered = False
        try:
            async with self._session.request(method, self.url(address, path), ssl=context,
                                             timeout=aiohttp.ClientTimeout(total=timeout_s), **kwargs) as response:
                answered = True
                counter.labels(what, "ok").inc()
                self._answered(address)
                yield response
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            if not answered:
                counter.labels(what, "failed").inc()
                self._failed(address, f"no answer within {timeout_s:g} s" if isinstance(e, asyncio.TimeoutError)
                             else str(e) or type(e).__name__)
            raise

    def _failed(self, address: str, why: str) -> None:
        if address in self._failing:
            logger.debug("HTTP API of the broker at %s still not answering: %s", address, why)
        else:
            logger.warning("HTTP API of the broker at %s (%s) did not answer: %s", address, self.scheme, why)
            if len(self._failing) >= MAX_FAILING:  # addresses of brokers gone for good: forget the oldest
                del self._failing[next(iter(self._failing))]
        self._failing[address] = why

    def _answered(self, address: str) -> None:
        if self._failing.pop(address, None) is not None:
            logger.info("HTTP API of the broker at %s answers again", address)

    async def close(self) -> None:
        """No request after this one: those asked later raise aiohttp.ClientError (aiohttp's
        closed session raised RuntimeError, which the callers' unanswered path does not catch)."""
        self._closed = True
        if self._session is not None:
            await self._session.close()
