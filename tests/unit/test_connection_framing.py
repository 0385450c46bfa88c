"""KafkaConnection's read side (server/connection.py "Reading"), driven the way uvloop drives an
``asyncio.BufferedProtocol``: ``get_buffer``, the socket fills some of it, ``buffer_updated``.

The "socket" here hands over each frame stream in random pieces (as TCP may), no larger than
the buffer asked for; what the connection dispatches is recorded instead of being handled. The
handlers themselves are tested over real sockets (tests/integration/test_bad_input.py,
test_request_pipeline.py, test_request_memory.py)."""

from __future__ import annotations

import logging
import random
import struct

import pytest

from tidelog.server.connection import _SCRATCH_BYTES, KafkaConnection
from tidelog.server.request_memory import RequestMemory

MIB = 1 << 20
MAX_FRAME = 8 * MIB


class _Counter:
    def __init__(self) -> None:
        self.value = 0

    def inc(self, amount: int = 1) -> None:
        self.value += amount

    def dec(self, amount: int = 1) -> None:
        self.value -= amount


class _Metrics:
    def __init__(self) -> None:
        self.connection_errors = _Counter()
        self.connections = _Counter()


class _Broker:
    def __init__(self, memory_bytes: int) -> None:
        self.config = {"socket.request.max.bytes": MAX_FRAME, "queued.max.requests": 100_000}
        self.request_memory = RequestMemory(memory_bytes, 2 * MAX_FRAME)
        self.metrics = _Metrics()
        self.connections: set = set()

    def connection_closed(self, peer: str) -> None:
        pass

    def access(self, principal, host: str) -> None:
        return None


class _Transport:
    def __init__(self) -> None:
        self.paused = False
        self.closed = False

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def close(self) -> None:
        self.closed = True


class Reader:
    """A KafkaConnection whose dispatched frames are recorded (and released at once, or when
    ``answer`` is called with ``hold=True``)."""

    def __init__(self, memory_bytes: int = 128 * MIB, hold: bool = False) -> None:
        self.broker = _Broker(memory_bytes)
        self.conn = KafkaConnection(self.broker)
        self.conn.transport = self.transport = _Transport()
        self.frames: list[bytes] = []
        self.copied: list[int] = []  # bytes copied out of the scratch buffer into each large frame's buffer
        self.held: list[tuple[int, bytearray | None]] = []
        self.hold = hold
        self.reads = 0

        def dispatch(frame, charged, pooled=None):
            self.frames.append(bytes(frame))
            if hold:
                self.held.append((charged, pooled))
            else:
                self._release(charged, pooled)

        start_big_frame = self.conn._start_big_frame

        def spy_start(size, start, have):
            self.copied.append(have)
            return start_big_frame(size, start, have)

        self.conn._dispatch = dispatch
        self.conn._start_big_frame = spy_start

    def _release(self, charged: int, pooled: bytearray | None) -> None:
        if pooled is not None:
            self.broker.request_memory.frames.release(pooled)
        self.broker.request_memory.release(charged)

    def answer_all(self) -> None:
        held, self.held = self.held, []
        for charged, pooled in held:
            self._release(charged, pooled)

    def feed(self, data: bytes, rng: random.Random | None = None, max_piece: int | None = None) -> int:
        """Hand ``data`` to the connection as a socket would while reading is not paused: each
        read fills at most what ``get_buffer`` offers, in random pieces with ``rng``. Returns
        how many bytes were taken."""
        position = 0
        while position < len(data) and not self.transport.paused and not self.transport.closed:
            view = self.conn.get_buffer(-1)
            assert len(view) > 0
            piece = min(len(view), len(data) - position)
            if rng is not None:
                piece = rng.randint(1, piece)
            if max_piece is not None:
                piece = min(piece, max_piece)
            view[:piece] = data[position : position + piece]
            position += piece
            self.reads += 1
            self.conn.buffer_updated(piece)
        return position


def frame(body: bytes) -> bytes:
    return struct.pack(">i", len(body)) + body


def body(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def test_frames_split_at_random_points_arrive_whole_and_in_order():
    rng = random.Random(1)
    sizes = [8, 20, 300, 70_000, 127 * 1024, 128 * 1024, 128 * 1024 + 1, 300_000, MIB - 4, MIB, 1_000_000, 3 * MIB + 17]
    for trial in range(40):
        bodies = [body(rng.choice(sizes), trial * 100 + i) for i in range(rng.randint(1, 12))]
        reader = Reader()
        assert reader.feed(b"".join(frame(b) for b in bodies), rng) == sum(len(b) + 4 for b in bodies)
        assert reader.frames == bodies
        assert reader.broker.request_memory.used == 0
        assert not reader.transport.closed


def test_many_requests_pipelined_in_one_read():
    bodies = [body(8 + i % 200, i) for i in range(2_000)]
    reader = Reader()
    reader.feed(b"".join(frame(b) for b in bodies[:1_000]))  # as much as each read offers
    assert reader.frames == bodies[:1_000]
    stream = b"".join(frame(b) for b in bodies[1_000:])
    assert len(stream) < _SCRATCH_BYTES
    view = reader.conn.get_buffer(-1)
    view[: len(stream)] = stream
    reader.conn.buffer_updated(len(stream))  # a thousand frames in one read
    assert reader.frames == bodies


def test_a_large_frame_after_a_large_frame_is_read_into_its_own_buffer_from_its_first_byte():
    """A producer's ~1 MB requests back to back: the first large frame's head passes through the
    scratch buffer (its size alone does not take a buffer); every later one reads its size alone,
    then goes straight into its own buffer, nothing copied."""
    bodies = [body(1_000_000, i) for i in range(6)]
    reader = Reader()
    reader.feed(b"".join(frame(b) for b in bodies))  # each read takes all that is offered
    assert reader.frames == bodies
    assert reader.copied[0] >= _SCRATCH_BYTES // 2 - 4
    assert reader.copied[1:] == [0] * 5


def test_a_small_frame_after_a_large_one_goes_through_the_scratch_buffer():
    bodies = [body(1_000_000, 1), body(40, 2), body(60, 3), body(1_000_000, 4), body(1_000_000, 5), body(10, 6)]
    reader = Reader()
    reader.feed(b"".join(frame(b) for b in bodies))
    assert reader.frames == bodies
    # The frame after the small ones took its buffer once half a scratch buffer of it had come;
    # the one after it, at once.
    assert len(reader.copied) == 3 and reader.copied[0] > 0 and reader.copied[1] > 0 and reader.copied[2] == 0
    assert not reader.conn._after_big


def test_announcing_a_large_frame_holds_nothing_until_a_large_frame_was_sent_whole():
    reader = Reader()
    reader.feed(frame(b"x" * 100)[:4 + 100] + struct.pack(">i", 5 * MIB) + b"y" * 1000)
    assert reader.frames == [b"x" * 100]
    assert reader.broker.request_memory.used == 0  # 1,000 bytes of a 5 MiB frame: in the scratch buffer
    reader = Reader()
    reader.feed(frame(b"z" * 500_000) + struct.pack(">i", 5 * MIB))
    assert reader.frames == [b"z" * 500_000]
    assert reader.broker.request_memory.used == MIB  # after a large frame: its first buffer, 1 MiB


def test_oversize_frame_closes_with_a_warning_after_the_frames_before_it(caplog):
    reader = Reader()
    bodies = [body(1_000_000, 1), body(30, 2)]
    with caplog.at_level(logging.WARNING, logger="tidelog.server.connection"):
        reader.feed(b"".join(frame(b) for b in bodies) + struct.pack(">i", MAX_FRAME + 1) + b"\x00" * 64,
                    random.Random(3))
    assert reader.frames == bodies
    assert reader.transport.closed
    assert f"frame size {MAX_FRAME + 1} outside 8..{MAX_FRAME}" in caplog.text


@pytest.mark.parametrize("size", [-1, 0, 7])
def test_undersize_frame_after_a_large_frame_closes(size, caplog):
    reader = Reader()
    with caplog.at_level(logging.WARNING, logger="tidelog.server.connection"):
        reader.feed(frame(body(600_000, 1)) + struct.pack(">i", size) + b"\x00" * 16)
    assert len(reader.frames) == 1
    assert reader.transport.closed
    assert f"frame size {size} outside" in caplog.text


@pytest.mark.parametrize("cut", [2, 4, 5, 200_000, 999_999])
def test_a_frame_truncated_by_the_peer_releases_its_memory(cut):
    """The peer goes away in the middle of a large frame (after a large one, so its buffer was
    taken at once): nothing of it is dispatched, its buffer and charge are given back."""
    reader = Reader()
    stream = frame(body(1_000_000, 1)) + frame(body(1_000_000, 2))
    reader.feed(stream[: 1_000_004 + cut], random.Random(cut))
    assert len(reader.frames) == 1
    reader.conn.connection_lost(None)
    assert reader.broker.request_memory.used == 0


def test_a_large_frame_after_a_large_one_waits_for_memory_and_goes_on():
    """At queued.max.request.bytes the next large frame's size is read, its buffer waits for
    memory (reading paused), and once requests are answered it is read whole."""
    reader = Reader(memory_bytes=2 * MIB, hold=True)
    reader.broker.request_memory.overshoot_bytes = 0
    bodies = [body(1_000_000, i) for i in range(4)]
    stream = b"".join(frame(b) for b in bodies)
    taken = reader.feed(stream)
    assert taken < len(stream) and reader.transport.paused
    assert 1 <= len(reader.frames) < 4
    while taken < len(stream):
        reader.answer_all()
        assert not reader.transport.paused
        taken += reader.feed(stream[taken:], random.Random(taken))
    assert reader.frames == bodies
    reader.answer_all()
    assert reader.broker.request_memory.used == 0


def test_a_peak_of_frames_in_flight_is_read_into_pooled_buffers_the_next_time():
    """A producer pipelining ~1 MB requests faster than their handlers start (librdkafka's in
    flight, and uvloop reads up to 32 times a readiness event) had 100 frames and more read and
    not yet appended at an RF 3 leader; the pool kept 64 MiB, so each such peak allocated its
    frames' buffers afresh (zero-filled: page faults). The pool keeps what
    queued.max.request.bytes allows with the frames in use: a second peak like the first
    allocates nothing, and the frames' buffers, in use and pooled, stay within the cap."""
    cap = 128 * MIB
    reader = Reader(memory_bytes=cap, hold=True)
    bodies = [body(1_000_000, i) for i in range(100)]
    stream = b"".join(frame(b) for b in bodies)
    assert reader.feed(stream) == len(stream)
    first = [pooled for _, pooled in reader.held]
    assert all(pooled is not None for pooled in first) and len(first) == 100
    reader.answer_all()
    assert reader.feed(stream) == len(stream)
    second = [pooled for _, pooled in reader.held]
    assert len(second) == 100 and {id(b) for b in second} <= {id(b) for b in first}, \
        f"{len({id(b) for b in second} - {id(b) for b in first})} of 100 frames read into fresh buffers"
    reader.answer_all()
    assert reader.frames == bodies * 2
    assert reader.broker.request_memory.used == 0
    pool = reader.broker.request_memory.frames
    assert pool.in_use_bytes == 0 and pool.pooled_bytes <= cap
    assert (pool.allocated, pool.reused) == (100, 100)


def test_a_large_frame_after_one_as_large_takes_its_whole_buffer_at_once():
    """Frames of 1-2 MiB (a client's max.request.size raised, or several partitions' batches in
    one request) started in a 1 MiB buffer and doubled as their bytes came: a second buffer and a
    1 MiB copy each. After a large frame, the next one's first buffer may be as large as that
    frame's (what the client has already sent whole): the same size is read with no doubling."""
    bodies = [body(1_500_000, i) for i in range(4)]
    reader = Reader()
    reader.feed(b"".join(frame(b) for b in bodies))
    assert reader.frames == bodies
    pool = reader.broker.request_memory.frames
    assert pool.reused + pool.allocated == 2 + 3  # the first frame 1 then 2 MiB; each later one 2 MiB
    assert reader.broker.request_memory.used == 0 and pool.in_use_bytes == 0
