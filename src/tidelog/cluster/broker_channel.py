"""A connection to another broker, for the requests this broker makes of it: a small Kafka client.

``request(api_key, version, request, timeout_s)`` encodes the request with the schema-driven
codec (protocol/apis.py, request header v1, client id ``client_id``), sends it, and decodes the
response, one request at a time on one connection, opened on first use. A response with another
correlation id raises ConnectionError; a timeout, asyncio.TimeoutError; a closed connection,
OSError or asyncio.IncompleteReadError: the caller closes the channel and opens a new one. The
replica fetcher (cluster/replica_fetcher.py) and the HTTP API's peer client use it.
Not thread-safe; one task uses a channel at a time.
"""

from __future__ import annotations

import asyncio
import io
import struct

from kio.serial import entity_reader, entity_writer

from tidelog.protocol.apis import is_flexible, load_request_schema, load_response_schema

__all__ = ["BrokerChannel"]


class BrokerChannel:
    """One connection to another broker, for requests this broker makes (fetch, epochs)."""

    def __init__(self, host: str, port: int, client_id: str) -> None:
        self.host, self.port = host, port
        self.client_id = client_id.encode()
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
            self.reader, self.writer = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), timeout_s)
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
