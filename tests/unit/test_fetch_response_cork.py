"""A Fetch response's sends (header by writev, records by sendfile from the segment file, trailing
bytes by writev) go out with the TCP socket corked, so they leave as full segments, and the
socket is always uncorked afterwards: a response left corked would hold its last partial
segment back (Linux sends it after 200 ms). Real loopback TCP sockets and a real file."""

from __future__ import annotations

import os
import socket

import pytest

from tidelog.server.connection import _send_corked
from tidelog.storage.file_slice import FileSlice


class _SegmentFile:
    """What a FileSlice reads of its segment: the open file, whether it left the log, its path."""

    def __init__(self, path) -> None:
        self.log_path = path
        self.fd = os.open(path, os.O_RDONLY)
        self.released = False


@pytest.fixture
def pair():
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    listener.close()
    server.setblocking(False)
    server.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    yield server, client
    server.close()
    client.close()


def _slice(tmp_path, size: int) -> tuple[FileSlice, bytes]:
    data = os.urandom(size + 300)
    path = tmp_path / "00000000000000000000.log"
    path.write_bytes(data)
    segment = _SegmentFile(path)
    return FileSlice(segment, 100, size, 1), data[100:100 + size]


def _corked(sock: socket.socket) -> int:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_CORK)


def _read(client: socket.socket, size: int) -> bytes:
    client.settimeout(10)
    received = bytearray()
    while len(received) < size:
        chunk = client.recv(size - len(received))
        assert chunk, "the peer closed"
        received += chunk
    return bytes(received)


def test_a_response_taken_whole_leaves_the_socket_uncorked(pair, tmp_path):
    server, client = pair
    records, expected = _slice(tmp_path, 40_000)
    parts = [b"header-bytes", records, b"\x00\x00\x00"]
    assert _send_corked(server, server.fileno(), parts) == (3, 0)
    assert _corked(server) == 0
    assert _read(client, 12 + 40_000 + 3) == b"header-bytes" + expected + b"\x00\x00\x00"


def test_a_response_the_socket_cannot_take_at_once_is_uncorked_between_sends(pair, tmp_path):
    server, client = pair
    records, expected = _slice(tmp_path, 16 << 20)  # more than the socket's buffers hold
    parts = [b"head", records, b"tail"]
    index, offset = _send_corked(server, server.fileno(), parts)
    assert index < len(parts), "the socket took 16 MB at once"
    assert _corked(server) == 0
    received = bytearray()
    total = 4 + (16 << 20) + 4
    client.settimeout(10)
    rest = parts[index:]
    while rest:  # the client reads; the rest follows as the connection's writer sends it when writable
        received += client.recv(1 << 20)
        index, offset = _send_corked(server, server.fileno(), rest, offset)
        rest = rest[index:]
        assert _corked(server) == 0
    received += _read(client, total - len(received))
    assert _corked(server) == 0
    assert bytes(received) == b"head" + expected + b"tail"


def test_a_unix_socket_is_not_corked(tmp_path):
    server, client = socket.socketpair()
    try:
        server.setblocking(False)
        assert _send_corked(server, server.fileno(), [b"abc", b"def"]) == (2, 0)
        assert client.recv(6) == b"abcdef"
    finally:
        server.close()
        client.close()
