"""A connection to another broker, for the requests this broker makes of it: a small Kafka client.

``request(api_key, version, request, timeout_s)`` encodes the request with the schema-driven
codec (protocol/apis.py, request header v1, client id ``client_id``), sends it, and decodes the
response, one request at a time on one connection, opened on first use. Each response frame is
read straight into a buffer (a BufferedProtocol: no copies on the way, so a follower's fetch
response is not copied before it is appended; ``request_body`` returns a writable view of it).
A caller done with a body may give its buffer back (``recycle``): the next response is read
into it if it fits, so the follower does not allocate and zero a new buffer of several MB per
fetch (6% of a follower's CPU under perf). A response with another correlation id, or larger than
``MAX_RESPONSE_BYTES``, raises ConnectionError; a timeout, asyncio.TimeoutError; a closed
connection, ConnectionError: the caller closes the channel and opens a new one. The
replica fetcher (cluster/replica_fetcher.py) and the HTTP API's peer client use it.
With a ``ChannelSecurity`` (the inter-broker listener is SSL or SASL), the connection is TLS
(the broker's CA checks the other broker's certificate; its own certificate is shown for client
authentication) and authenticates with SASL before its first request: SaslHandshake v1, then
SaslAuthenticate v1 with PLAIN or SCRAM-SHA-256/512 (the client side by PyPI ``scramp``).
Not thread-safe; one task uses a channel at a time.
"""

from __future__ import annotations

import asyncio
import collections
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
MAX_RESPONSE_BYTES = 256 << 20  # a larger length field is a broken stream (the fetcher asks for 16 MiB at most)
MAX_SPARE_BYTES = 32 << 20  # a recycled buffer larger than this is let go
_LENGTH = struct.Struct(">i")


class _FrameReader(asyncio.BufferedProtocol):
    """Reads length-prefixed frames into one bytearray each, the socket writing into it directly."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._length = bytearray(4)
        self._frame: bytearray | None = None  # the buffer of the frame being read, once its length is known
        self._size = 0  # that frame's length (the buffer may be a larger recycled one)
        self._got = 0
        self._frames: collections.deque[memoryview] = collections.deque()
        self._spare: bytearray | None = None  # a buffer given back (recycle), for the next frame that fits
        self._waiter: asyncio.Future | None = None
        self._error: BaseException | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._frame is None:
            return memoryview(self._length)[self._got:]
        return memoryview(self._frame)[self._got:self._size]

    def recycle(self, buffer: bytearray) -> None:
        """``buffer`` (a frame's, no longer used by its reader) may take the next frame."""
        if len(buffer) <= MAX_SPARE_BYTES and (self._spare is None or len(buffer) > len(self._spare)):
            self._spare = buffer

    def buffer_updated(self, nbytes: int) -> None:
        self._got += nbytes
        if self._frame is None:
            if self._got < 4:
                return
            (size,) = _LENGTH.unpack(self._length)
            if not 0 <= size <= MAX_RESPONSE_BYTES:
                self._fail(ConnectionError(f"response frame of {size} bytes"))
                self.transport.close()
                return
            spare = self._spare
            if spare is not None and len(spare) >= size:
                self._frame, self._spare = spare, None
            else:
                self._frame = bytearray(size)
            self._size, self._got = size, 0
        if self._got == self._size:
            self._frames.append(memoryview(self._frame)[:self._size])
            self._frame, self._got = None, 0
            if self._waiter is not None and not self._waiter.done():
                self._waiter.set_result(None)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._fail(exc if isinstance(exc, ConnectionError) else ConnectionResetError(f"connection closed: {exc or 'EOF'}"))

    def eof_received(self) -> bool:
        self._fail(ConnectionResetError("connection closed by the other broker"))
        return False

    def _fail(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(self._error)

    async def next_frame(self, timeout_s: float) -> memoryview:
        """The next whole frame; asyncio.TimeoutError after ``timeout_s``. Awaited in the
        caller's task (not asyncio.wait_for, which on 3.11 runs it as a task of its own: three
        loop turns between a response's last byte and its reader instead of one)."""
        while not self._frames:
            if self._error is not None:
                raise self._error
            loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            timer = loop.call_later(timeout_s, _time_up, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None
        return self._frames.popleft()


def _time_up(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_exception(asyncio.TimeoutError())


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
        self.protocol: _FrameReader | None = None
        self.correlation_id = 0

    async def request(self, api_key: int, version: int, request, timeout_s: float):
        body = await self.request_body(api_key, version, request, timeout_s)
        response, _ = entity_reader(load_response_schema(api_key, version))(body.toreadonly(), 0)  # kio wants read-only
        return response

    async def request_body(self, api_key: int, version: int, request, timeout_s: float) -> memoryview:
        """The response body, undecoded and writable (for a caller that reads what kio cannot, as
        negative timestamps, or decodes by hand: the replica fetcher). Once done with it (no view
        of it kept), the caller may ``recycle`` it."""
        if self.protocol is None:
            await self._connect(timeout_s)
        return await self._exchange(api_key, version, request, timeout_s)

    async def request_encoded_body(self, api_key: int, version: int, body: bytes, timeout_s: float) -> memoryview:
        """``request_body`` for a request body the caller encoded (the replica fetcher's Fetch)."""
        if self.protocol is None:
            await self._connect(timeout_s)
        return await self._send(api_key, version, body, timeout_s)

    async def _connect(self, timeout_s: float) -> None:
        security = self.security
        context = security.ssl_context if security is not None else None
        _, self.protocol = await asyncio.wait_for(asyncio.get_running_loop().create_connection(
            _FrameReader, self.host, self.port, ssl=context, server_hostname=self.host if context else None), timeout_s)
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
        return entity_reader(load_response_schema(api_key, version))(body.toreadonly(), 0)[0]

    async def _exchange(self, api_key: int, version: int, request, timeout_s: float):
        out = io.BytesIO()
        entity_writer(load_request_schema(api_key, version))(out, request)
        return await self._send(api_key, version, out.getvalue(), timeout_s)

    async def _send(self, api_key: int, version: int, request_body: bytes, timeout_s: float) -> memoryview:
        self.correlation_id += 1
        header = struct.pack(">hhih", api_key, version, self.correlation_id, len(self.client_id)) + self.client_id
        flexible = is_flexible(api_key, version)
        if flexible:
            header += b"\x00"  # request header v2: no tagged fields
        body = header + request_body
        protocol = self.protocol
        if protocol.transport.is_closing():
            raise ConnectionResetError("connection closed")
        protocol.transport.write(_LENGTH.pack(len(body)) + body)
        frame = await protocol.next_frame(timeout_s)
        if len(frame) < 4:
            raise ConnectionError(f"response frame of {len(frame)} bytes")
        (correlation_id,) = struct.unpack_from(">i", frame)
        if correlation_id != self.correlation_id:
            raise ConnectionError(f"response {correlation_id} to request {self.correlation_id}")
        return memoryview(frame)[5 if flexible else 4:]

    def recycle(self, body: memoryview) -> None:
        """``body`` (from request_body) is no longer read, nor any view of it: its buffer may
        take a later response."""
        if self.protocol is not None and type(body.obj) is bytearray:
            self.protocol.recycle(body.obj)

    def close(self) -> None:
        if self.protocol is not None and self.protocol.transport is not None:
            self.protocol.transport.close()
        self.protocol = None
