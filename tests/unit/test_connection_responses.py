"""KafkaConnection's write side (server/connection.py "Writing"): the responses ready at one time
go out in request order in one ``writelines`` (one writev: a group commit answers the Produce
requests it covered together), and what was answered before a request that fails still goes out
before the connection closes. Over real sockets: tests/integration/test_request_pipeline.py,
test_request_order.py, test_fetch_sendfile.py."""

from __future__ import annotations

import asyncio
import struct

from tests.unit.test_connection_framing import _Broker
from tidelog.server.connection import KafkaConnection


class _Transport:
    def __init__(self) -> None:
        self.events: list[tuple[str, bytes]] = []

    def writelines(self, parts) -> None:
        self.events.append(("writelines", b"".join(bytes(p) for p in parts)))

    def write(self, data) -> None:
        self.events.append(("write", bytes(data)))

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        self.events.append(("close", b""))


def _response(correlation_id: int, body: bytes) -> bytes:
    """A non-flexible response frame as the connection writes a raw handler's parts."""
    header = struct.pack(">i", correlation_id)
    return struct.pack(">i", len(header) + len(body)) + header + body


def _connection(loop):
    conn = KafkaConnection(_Broker(1 << 26))
    conn.transport = transport = _Transport()
    conn.peer = "127.0.0.1:1"
    return conn, transport


def _pending(conn, loop, correlation_id: int):
    future = loop.create_future()
    conn._pending.append((correlation_id, False, future))
    return future


def test_responses_ready_together_go_out_in_one_writelines_in_order():
    loop = asyncio.new_event_loop()
    try:
        conn, transport = _connection(loop)
        first, second, third = (_pending(conn, loop, i) for i in (7, 8, 9))
        second.set_result([b"two"])  # not at the head: nothing goes out
        conn._on_response_ready(second)
        assert transport.events == []
        first.set_result([b"one", b"+"])
        conn._on_response_ready(first)
        assert transport.events == [("writelines", _response(7, b"one+") + _response(8, b"two"))]
        third.set_result(None)  # acks=0: no response
        conn._on_response_ready(third)
        assert len(transport.events) == 1 and not conn._pending
    finally:
        loop.close()


def test_answers_before_a_failed_request_go_out_before_the_close():
    loop = asyncio.new_event_loop()
    try:
        conn, transport = _connection(loop)
        first, second, third = (_pending(conn, loop, i) for i in (1, 2, 3))
        first.set_result([b"answered"])
        second.set_exception(RuntimeError("a handler's bug"))
        third.set_result([b"never"])
        conn._on_response_ready(first)
        assert transport.events == [("writelines", _response(1, b"answered")), ("close", b"")]
    finally:
        loop.close()
