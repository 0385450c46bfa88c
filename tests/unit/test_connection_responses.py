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


class _Family:
    def labels(self, *values):
        return self

    def inc(self, amount: float = 1) -> None:
        pass


class _Segment:
    def __init__(self, fd: int) -> None:
        self.fd, self.released, self.log_path = fd, False, "segment.log"


def test_a_response_behind_a_fetch_the_socket_did_not_take_waits_for_it(tmp_path):
    """A Fetch response whose file slices the socket did not take whole is finished by sendfile
    as the socket drains (_send_unsent); a response ready behind it goes out after it, not into
    the transport meanwhile (its bytes would reach the socket inside the fetch response's)."""
    import os
    import socket

    from tidelog.storage.file_slice import FileSlice

    size = 8 << 20
    path = tmp_path / "segment.log"
    path.write_bytes(b"A" * size)
    file_fd = os.open(path, os.O_RDONLY)
    sender, receiver = socket.socketpair()
    sender.setblocking(False)
    sender.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 << 10)

    async def main():
        loop = asyncio.get_running_loop()
        conn, transport = _connection(loop)
        transport.get_write_buffer_size = lambda: 0
        conn.broker.metrics.fetch_response_bytes_sendfile = conn.broker.metrics.fetch_response_bytes_copy = _Family()
        conn._socket_fd = sender.fileno()
        fetch, behind = _pending(conn, loop, 1), _pending(conn, loop, 2)
        fetch.set_result([b"head", FileSlice(_Segment(file_fd), 0, size, 1)])
        behind.set_result([b"behind"])
        conn._on_response_ready(fetch)
        assert conn._unsent is not None, "the socket took 8 MiB at once: the test needs a fuller socket"
        assert transport.events == [], "a response went into the transport while the fetch response was unsent"
        received = 0
        while received < 8 + len(b"head") + size:
            await asyncio.sleep(0)
            try:
                received += len(receiver.recv(1 << 20, socket.MSG_DONTWAIT))
            except BlockingIOError:
                pass
        for _ in range(10):  # _send_unsent's last pass and the writes behind it
            await asyncio.sleep(0)
        assert conn._unsent is None and not conn._pending
        assert transport.events == [("writelines", _response(2, b"behind"))]
        if conn._writable_fd is not None:
            os.close(conn._writable_fd)

    try:
        asyncio.run(main())
    finally:
        sender.close()
        receiver.close()
        os.close(file_fd)
