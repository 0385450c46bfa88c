"""A connection to another broker, for the requests this broker makes of it: a small Kafka client.

``request(api_key, version, request, timeout_s)`` encodes the request with the schema-driven
codec (protocol/apis.py, request header v1, client id ``client_id``), sends it, and decodes the
response, one request at a time on one connection, opened on first use. A response with another
correlation id raises ConnectionError; a timeout, asyncio.TimeoutError; a closed connection,
OSError or asyncio.IncompleteReadError: the caller closes the channel and opens a new one. The
replica fetcher (cluster/replica_fetcher.py) and the HTTP API's peer client use it.
With a ``ChannelSecurity`` (the inter-broker listener is SSL or SASL), the connection is TLS
(the broker's CA checks the other broker's certificate; its own certificate is shown for client
authentication) and authenticates with SASL before its first request: SaslHandshake v1, then
SaslAuthenticate v1 with PLAIN or SCRAM-SHA-256/512 (the client side by PyPI ``scramp``).
Not thread-safe; one task uses a channel at a time.
"""

from __future__ import annotations

import asyncio
import io
import ssl
import struct
from dataclasses import dataclass

import scramp
from kio.schema.sasl_authenticate.v1.request import SaslAuthenticateRequest
from kio.schema.sasl_handshake.v1.request import SaslHandshakeRequest
from kio.serial import entity_reader, entity_writer

from tidelog.protocol.apis import is_flexible, load_request_schema, load_response_schema

__all__ = ["BrokerChannel", "ChannelSecurity"]

_SASL_HANDSHAKE, _SASL_AUTHENTICATE = 17, 36


@dataclass(frozen=True)
class ChannelSecurity:
    """How this broker reaches others on the inter-broker listener: TLS (``ssl_context``) and/or
    SASL (``mechanism``, ``username``, ``password``)."""

    ssl_context: ssl.SSLContext | None = None
    mechanism: str | None = None
    username: str = ""
    password: str = ""


class BrokerChannel:
    """One connection to another broker, for requests this broker makes (fetch, epochs)."""

    def __init__(self, host: str, port: int, client_id: str, security: ChannelSecurity | None = None) -> None:
        self.host, self.port = host, port
        self.client_id = client_id.encode()
        self.security = security
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.correlation_id = 0

    async def request(self, api_key: int, version: int, request, timeout_s: float):
        body = await self.request_body(api_key, version, request, timeout_s)
        response, _ = entity_reader(load_response_schema(api_key, version))(body, 0)
        return response

    async def request_body(self, api_key: int, version: int, request, timeout_s: float) -> memoryview:
        """The response body, undecoded (for a caller that reads what kio cannot, as negative timestamps)."""
        if self.writer is None:
            await self._connect(timeout_s)
        return await self._exchange(api_key, version, request, timeout_s)

    async def _connect(self, timeout_s: float) -> None:
        security = self.security
        context = security.ssl_context if security is not None else None
        self.reader, self.writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port, ssl=context, server_hostname=self.host if context else None),
            timeout_s)
        if security is not None and security.mechanism:
            try:
                await self._authenticate(security, timeout_s)
            except BaseException:
                self.close()
                raise

    async def _authenticate(self, security: ChannelSecurity, timeout_s: float) -> None:
        """SASL as a Kafka client does it; a refusal is a ConnectionError naming the reason."""
        answer = await self._ask(_SASL_HANDSHAKE, 1, SaslHandshakeRequest(mechanism=security.mechanism), timeout_s)
        if answer.error_code:
            raise ConnectionError(f"broker {self.host}:{self.port} refused SASL mechanism {security.mechanism} "
                                  f"({answer.error_code.name}; it offers {', '.join(answer.mechanisms)})")
        if security.mechanism == "PLAIN":
            await self._sasl_step(f"\0{security.username}\0{security.password}".encode(), security, timeout_s)
            return
        client = scramp.ScramClient([security.mechanism], security.username, security.password)
        try:
            server_first = await self._sasl_step(client.get_client_first().encode(), security, timeout_s)
            client.set_server_first(server_first.decode())
            server_final = await self._sasl_step(client.get_client_final().encode(), security, timeout_s)
            client.set_server_final(server_final.decode())  # the other broker proves it knows the credential
        except scramp.ScramException as e:
            raise ConnectionError(f"SCRAM with {self.host}:{self.port} failed: {e}") from None

    async def _sasl_step(self, token: bytes, security: ChannelSecurity, timeout_s: float) -> bytes:
        reply = await self._ask(_SASL_AUTHENTICATE, 1, SaslAuthenticateRequest(auth_bytes=token), timeout_s)
        if reply.error_code:
            raise ConnectionError(f"SASL authentication to {self.host}:{self.port} as {security.username} failed: "
                                  f"{reply.error_message or reply.error_code.name}")
        return reply.auth_bytes

    async def _ask(self, api_key: int, version: int, request, timeout_s: float):
        """One request of the SASL exchange, its response decoded."""
        body = await self._exchange(api_key, version, request, timeout_s)
        return entity_reader(load_response_schema(api_key, version))(body, 0)[0]

    async def _exchange(self, api_key: int, version: int, request, timeout_s: float):
        self.correlation_id += 1
        out = io.BytesIO()
        entity_writer(load_request_schema(api_key, version))(out, request)
        header = struct.pack(">hhih", api_key, version, self.correlation_id, len(self.client_id)) + self.client_id
        flexible = is_flexible(api_key, version)
        if flexible:
            header += b"\x00"  # request header v2: no tagged fields
        body = header + out.getvalue()
        self.writer.write(struct.pack(">i", len(body)) + body)
        size = struct.unpack(">i", await asyncio.wait_for(self.reader.readexactly(4), timeout_s))[0]
        frame = await asyncio.wait_for(self.reader.readexactly(size), timeout_s)
        (correlation_id,) = struct.unpack_from(">i", frame)
        if correlation_id != self.correlation_id:
            raise ConnectionError(f"response {correlation_id} to request {self.correlation_id}")
        return memoryview(frame)[5 if flexible else 4:]

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None
