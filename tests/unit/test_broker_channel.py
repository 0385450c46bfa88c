"""BrokerChannel's frame reader: length-prefixed frames read straight into their own buffers,
whatever the socket's chunking, over a real loopback connection."""

from __future__ import annotations

import asyncio
import struct

import pytest

from tidelog.cluster import broker_channel
from tidelog.cluster.broker_channel import BrokerChannel
from tidelog.protocol.errors import ErrorCode


def serve(handler):
    """A loopback server calling ``handler(reader, writer)`` per connection; returns (server, port)."""
    async def start():
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        return server, server.sockets[0].getsockname()[1]
    return start()


def test_responses_arrive_whole_and_writable_however_the_socket_cuts_them():
    async def main():
        payloads = [b"x" * 10, bytes(range(256)) * 5000, b""]

        async def answer(reader, writer):
            for payload in payloads:
                size = struct.unpack(">i", await reader.readexactly(4))[0]
                request = await reader.readexactly(size)
                correlation_id = request[4:8]
                frame = struct.pack(">i", 4 + len(payload)) + correlation_id + payload
                for start in range(0, len(frame), 7777):  # in pieces, with pauses
                    writer.write(frame[start:start + 7777])
                    await writer.drain()
                    await asyncio.sleep(0)
            writer.close()

        server, port = await serve(answer)
        channel = BrokerChannel("127.0.0.1", port, "test")
        try:
            for payload in payloads:
                body = await channel.request_body(18, 0, _api_versions_request(), 5)
                assert bytes(body) == payload and not body.readonly
            with pytest.raises(ConnectionError):  # the server closed the connection
                await channel.request_body(18, 0, _api_versions_request(), 5)
        finally:
            channel.close()
            server.close()
            await server.wait_closed()

    asyncio.run(main())


def test_a_recycled_buffer_takes_the_next_response_that_fits():
    async def main():
        payloads = [b"a" * 100_000, b"b" * 1000, b"c" * 50_000, b"d" * 200_000, b"e" * 10]

        async def answer(reader, writer):
            for payload in payloads:
                size = struct.unpack(">i", await reader.readexactly(4))[0]
                request = await reader.readexactly(size)
                writer.write(struct.pack(">i", 4 + len(payload)) + request[4:8] + payload)
                await writer.drain()
            writer.close()

        server, port = await serve(answer)
        channel = BrokerChannel("127.0.0.1", port, "test")
        try:
            buffers = []
            for payload in payloads:
                body = await channel.request_body(18, 0, _api_versions_request(), 5)
                assert bytes(body) == payload and len(body) == len(payload) and not body.readonly
                buffers.append(body.obj)
                channel.recycle(body)
            # The first buffer takes the two smaller responses after it; the larger one gets its
            # own, which is then kept (the larger of the two) for the last.
            assert buffers[1] is buffers[0] and buffers[2] is buffers[0]
            assert buffers[3] is not buffers[0] and buffers[4] is buffers[3]
        finally:
            channel.close()
            server.close()
            await server.wait_closed()

    asyncio.run(main())


def test_an_impossible_frame_length_is_a_connection_error(monkeypatch):
    monkeypatch.setattr(broker_channel, "MAX_RESPONSE_BYTES", 1000)

    async def main():
        async def answer(reader, writer):
            await reader.readexactly(4)
            writer.write(struct.pack(">i", 5000) + b"\0" * 100)
            await writer.drain()
            await asyncio.sleep(5)

        server, port = await serve(answer)
        channel = BrokerChannel("127.0.0.1", port, "test")
        try:
            with pytest.raises(ConnectionError, match="5000 bytes"):
                await channel.request_body(18, 0, _api_versions_request(), 5)
        finally:
            channel.close()
            server.close()

    asyncio.run(main())


def _api_versions_request():
    from kio.schema.api_versions.v0.request import ApiVersionsRequest

    return ApiVersionsRequest()


def test_a_decoded_request_reads_the_writable_frame():
    """request() decodes the frame with kio, which takes read-only buffers only."""
    from kio.schema.api_versions.v0.response import ApiVersion, ApiVersionsResponse
    from kio.serial import entity_writer
    import io

    async def main():
        out = io.BytesIO()
        entity_writer(ApiVersionsResponse)(out, ApiVersionsResponse(error_code=ErrorCode.none, api_keys=(
            ApiVersion(api_key=1, min_version=4, max_version=17),)))

        async def answer(reader, writer):
            size = struct.unpack(">i", await reader.readexactly(4))[0]
            request = await reader.readexactly(size)
            writer.write(struct.pack(">i", 4 + len(out.getvalue())) + request[4:8] + out.getvalue())
            await writer.drain()

        server, port = await serve(answer)
        channel = BrokerChannel("127.0.0.1", port, "test")
        try:
            response = await channel.request(18, 0, _api_versions_request(), 5)
            assert [(k.api_key, k.max_version) for k in response.api_keys] == [(1, 17)]
        finally:
            channel.close()
            server.close()

    asyncio.run(main())


def test_a_response_reaches_the_caller_on_the_loop_turn_after_its_last_byte_and_a_silent_peer_times_out():
    """The follower's fetch loop resumes as soon as the response is whole (one wake-up, not a
    task of its own around the read: three loop turns of the follower per fetch before); a peer
    that never answers is asyncio.TimeoutError after ``timeout_s``, and the channel is then closed
    by its user and opened anew."""
    async def main():
        requests = asyncio.Queue()

        async def answer(reader, writer):
            while True:
                size = struct.unpack(">i", await reader.readexactly(4))[0]
                await requests.put((await reader.readexactly(size))[4:8])

        server, port = await serve(answer)
        channel = BrokerChannel("127.0.0.1", port, "test")
        try:
            pending = asyncio.ensure_future(channel.request_body(18, 0, _api_versions_request(), 5))
            correlation_id = await requests.get()
            protocol = channel.protocol
            frame = struct.pack(">i", 7) + correlation_id + b"abc"
            while frame:  # as the socket delivers it: into the reader's buffer, a few bytes at a time
                buffer = protocol.get_buffer(-1)
                count = min(len(buffer), len(frame), 5)
                buffer[:count] = frame[:count]
                protocol.buffer_updated(count)
                frame = frame[count:]
            await asyncio.sleep(0)
            assert pending.done() and bytes(pending.result()) == b"abc"

            with pytest.raises(asyncio.TimeoutError):  # nothing answers this one
                await channel.request_body(18, 0, _api_versions_request(), 0.05)
            assert protocol._waiter is None
        finally:
            channel.close()
            server.close()

    asyncio.run(main())
