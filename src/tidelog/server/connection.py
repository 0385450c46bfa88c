"""One client connection: frames in, handlers run, responses out in request order.

Reading: a 256 KiB scratch buffer takes small frames; a frame larger than half of it gets its
own pooled bytearray that the socket fills directly (``asyncio.BufferedProtocol``), so record
bytes are copied once, from the kernel, and stay writable for in-place offset assignment. That
buffer is taken once half a scratch buffer of the frame has arrived, starts at 1 MiB at most and
doubles as the bytes come: a frame's announced size reserves nothing.
Memory: the bytes of every request read and not yet answered count against the broker-wide
``queued.max.request.bytes`` (request_memory.py); at the cap a connection with requests in
flight stops reading until others are answered.
Processing: each request becomes a task started in arrival order (so produce appends happen in
order); responses are written in request order as their tasks finish. At most
``queued.max.requests`` requests are in flight per connection; beyond that reading pauses.
A frame that cannot be a request (size out of bounds, unknown API key, unsupported version,
undecodable body) closes the connection with a log line saying why, as Kafka does; so does a
request that cannot be answered (its handler failed, or its response cannot be encoded), before
anything pipelined behind it is answered.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import struct
import time
from typing import TYPE_CHECKING, Any

from tidelog.handlers.registry import REGISTRY
from tidelog.protocol import apis
from tidelog.protocol.guard import check_request, strip_unknown_tags
from tidelog.protocol.wire import MalformedFrame, parse_request_header, peek_api_key_version, response_header
from tidelog.server.request_memory import RequestMemory

if TYPE_CHECKING:
    from tidelog.server.broker import Broker

logger = logging.getLogger(__name__)

_SIZE = struct.Struct(">i")
_SCRATCH_BYTES = 256 * 1024


class FramePool:
    """Reusable buffers for large request frames (bigger than half the scratch buffer).

    A fresh 1 MiB bytearray is zero-filled page by page: at produce rates those page faults were
    a quarter of the broker's time. A buffer comes back to the pool when its request's handler
    has finished; nothing keeps a view of a frame past that (records reach the log by os.write,
    kio copies what it decodes). At most ``max_pooled_bytes`` are kept; capacities are powers
    of two. Not thread-safe; the event loop owns it.
    """

    def __init__(self, max_pooled_bytes: int = 64 << 20) -> None:
        self.max_pooled_bytes = max_pooled_bytes
        self._free: dict[int, list[bytearray]] = {}
        self._pooled_bytes = 0

    def acquire(self, size: int) -> bytearray:
        capacity = _capacity(size)
        free = self._free.get(capacity)
        if free:
            self._pooled_bytes -= capacity
            return free.pop()
        return bytearray(capacity)

    def release(self, buffer: bytearray) -> None:
        if self._pooled_bytes + len(buffer) <= self.max_pooled_bytes:
            self._free.setdefault(len(buffer), []).append(buffer)
            self._pooled_bytes += len(buffer)


FRAME_POOL = FramePool()
_FIRST_BIG_BUFFER_BYTES = 1 << 20  # a large frame's first buffer; it doubles as its bytes arrive


def _capacity(size: int) -> int:
    return 1 << (size - 1).bit_length()  # FramePool's capacities are powers of two


class KafkaConnection(asyncio.BufferedProtocol):
    def __init__(self, broker: "Broker") -> None:
        self.broker = broker
        self.max_frame_bytes: int = broker.config["socket.request.max.bytes"]
        self.max_in_flight: int = broker.config["queued.max.requests"]
        self.memory: RequestMemory = broker.request_memory
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self._scratch = bytearray(_SCRATCH_BYTES)
        self._scratch_view = memoryview(self._scratch)
        self._scratch_start = 0  # first unconsumed byte
        self._scratch_end = 0  # end of received bytes
        # A large frame being filled directly by the socket: a pooled buffer that grows as the
        # frame's bytes arrive (charged to ``memory``), never allocated at the announced size.
        self._big_buffer: bytearray | None = None
        self._big_size = 0
        self._big_filled = 0
        self._pending: collections.deque[tuple[int, bool, asyncio.Future]] = collections.deque()
        # Why reading is paused: "in-flight" (too many requests unanswered), "writing" (the
        # client is not reading its responses), "closing" (a bad frame; answer what came before),
        # "memory" (queued.max.request.bytes reached; see request_memory.py).
        self._pause_reasons: set[str] = set()
        self._closing = False
        self._closed = False

    # --- asyncio protocol -------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.broker.connections.add(self)
        self.broker.metrics.connections.inc()
        self.broker.metrics.connections_accepted.inc()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self.broker.connections.discard(self)
        self.broker.metrics.connections.dec()
        self.broker.connection_closed(self.peer)
        for _, _, task in self._pending:
            task.cancel()
        self._pending.clear()
        if self._big_buffer is not None:
            self.memory.release(len(self._big_buffer))
            FRAME_POOL.release(self._big_buffer)
            self._big_buffer = None
        self.memory.forget(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._big_buffer is not None:
            return memoryview(self._big_buffer)[self._big_filled : min(len(self._big_buffer), self._big_size)]
        if self._scratch_end == _SCRATCH_BYTES:
            self._compact_scratch()
        return self._scratch_view[self._scratch_end :]

    def buffer_updated(self, nbytes: int) -> None:
        if self._big_buffer is not None:
            self._big_filled += nbytes
            if self._big_filled == self._big_size:
                buffer, size = self._big_buffer, self._big_size
                self._big_buffer = None
                self.memory.frame_done(self)
                self._dispatch(memoryview(buffer)[:size], len(buffer), buffer)
            elif self._big_filled == len(self._big_buffer) and not self._grow_big_frame():
                self._wait_for_memory()
            return
        self._scratch_end += nbytes
        self._drain_scratch()

    def eof_received(self) -> bool | None:
        return None

    def pause_writing(self) -> None:
        self._pause("writing")

    def resume_writing(self) -> None:
        self._resume("writing")

    def memory_available(self) -> None:
        """Called by ``memory`` when bytes were released: try again what was waiting."""
        if self._closed:
            return
        if self._big_buffer is not None and self._big_filled == len(self._big_buffer) and not self._grow_big_frame():
            self._wait_for_memory()
            return
        self._resume("memory")

    def _wait_for_memory(self) -> None:
        self._pause("memory")
        self.memory.wait(self)

    def _pause(self, reason: str) -> None:
        if not self._pause_reasons and self.transport is not None:
            self.transport.pause_reading()
        self._pause_reasons.add(reason)

    def _resume(self, reason: str) -> None:
        if reason not in self._pause_reasons:
            return
        self._pause_reasons.discard(reason)
        if not self._pause_reasons and not self._closed:
            self.transport.resume_reading()
            self._drain_scratch()  # frames received before the pause

    # --- framing ----------------------------------------------------------------------
    def _compact_scratch(self) -> None:
        remaining = self._scratch_end - self._scratch_start
        self._scratch[:remaining] = self._scratch[self._scratch_start : self._scratch_end]
        self._scratch_start, self._scratch_end = 0, remaining

    def _drain_scratch(self) -> None:
        while not self._closed and not self._pause_reasons:
            available = self._scratch_end - self._scratch_start
            if available < 4:
                break
            (size,) = _SIZE.unpack_from(self._scratch, self._scratch_start)
            if size < 8 or size > self.max_frame_bytes:
                self._close(f"frame size {size} outside 8..{self.max_frame_bytes} (socket.request.max.bytes)")
                return
            start = self._scratch_start + 4
            if available - 4 >= size:
                if self._pending and self.memory.exhausted:
                    self._wait_for_memory()  # the frame stays in the scratch buffer meanwhile
                    break
                frame = self._scratch[start : start + size]
                self._scratch_start = start + size
                self.memory.charge(size)
                self._dispatch(frame, size)
                continue
            if size + 4 > _SCRATCH_BYTES // 2 and available >= _SCRATCH_BYTES // 2:
                # Large frame, and half a scratch buffer of it has arrived (announcing a size
                # costs nothing): a pooled buffer that the socket fills from here on.
                if not self._start_big_frame(size, start, available - 4):
                    self._wait_for_memory()
            break
        if self._scratch_start == self._scratch_end:
            self._scratch_start = self._scratch_end = 0

    def _start_big_frame(self, size: int, start: int, have: int) -> bool:
        capacity = min(_capacity(size), _FIRST_BIG_BUFFER_BYTES)
        if not self.memory.try_grow(self, capacity, _capacity(size)):
            return False
        buffer = self._acquire(capacity, size)
        if buffer is None:
            return True
        buffer[:have] = self._scratch_view[start : start + have]
        self._scratch_start = self._scratch_end = 0
        self._big_buffer, self._big_size, self._big_filled = buffer, size, have
        return True

    def _grow_big_frame(self) -> bool:
        """Double the large frame's buffer (full, its frame not); False if memory says wait."""
        old = self._big_buffer
        capacity = min(2 * len(old), _capacity(self._big_size))
        if not self.memory.try_grow(self, capacity, _capacity(self._big_size)):
            return False
        buffer = self._acquire(capacity, self._big_size)
        if buffer is None:
            return True
        buffer[: self._big_filled] = old[: self._big_filled]
        self._big_buffer = buffer
        FRAME_POOL.release(old)
        self.memory.release(len(old))
        return True

    def _acquire(self, capacity: int, frame_size: int) -> bytearray | None:
        """A frame buffer already charged to ``memory``; None if the process is out of memory
        (reported, and this connection closed: its request cannot be read)."""
        try:
            return FRAME_POOL.acquire(capacity)
        except MemoryError as e:
            self.memory.release(capacity)
            self._out_of_memory(e, f"reading a {frame_size}-byte request from {self.peer}")
            return None

    def _out_of_memory(self, error: MemoryError, what: str) -> None:
        self.broker.resources.report(error, what)
        self._abort(f"out of memory {what.split(' from ')[0]}")

    # --- requests ---------------------------------------------------------------------
    def _dispatch(self, frame: bytearray | memoryview, charged: int, pooled: bytearray | None = None) -> None:
        """Decode one request and start its handler. When it has finished, the ``charged``
        bytes go back to ``memory`` and ``pooled`` to FRAME_POOL."""
        started = time.perf_counter()
        task = self._start_request(memoryview(frame), started)
        if task is None:
            self._frame_finished(charged, pooled)
        else:
            task.add_done_callback(lambda _task: self._frame_finished(charged, pooled))

    def _frame_finished(self, charged: int, pooled: bytearray | None) -> None:
        if pooled is not None:
            FRAME_POOL.release(pooled)
        self.memory.release(charged)

    def _start_request(self, view: memoryview, started: float) -> asyncio.Future | None:
        try:
            api_key, api_version, correlation_id = peek_api_key_version(view)
        except MalformedFrame as e:
            self._close(str(e))
            return None
        api = REGISTRY.get(api_key)
        if api is None:
            self._close(f"unknown API key {api_key} (correlation id {correlation_id})")
            return None
        if not api.min_version <= api_version <= api.max_version and api_key != apis.API_VERSIONS_KEY:
            self._close(f"unsupported {api.name} version {api_version} (supported {api.min_version}-{api.max_version})")
            return None
        flexible = apis.is_flexible(api_key, api_version)
        try:
            header, body_offset = parse_request_header(view, flexible)
            if api.raw or api_version > api.max_version:
                request: Any = view[body_offset:]
            else:
                # kio aborts the process on absurd array counts: check the bounds first.
                edits = check_request(apis.request_type(api_key, api_version), view, body_offset)
                body = view.toreadonly() if not edits else memoryview(strip_unknown_tags(view, edits))
                request, end = apis.request_reader(api_key, api_version)(body, body_offset)
        except MemoryError as e:
            self._out_of_memory(e, f"decoding a {api.name} request from {self.peer}")
            return None
        except Exception as e:  # kio raises several types (decode errors, KeyError for unknown tags)
            self._close(f"cannot decode {api.name} v{api_version} request: {type(e).__name__}: {e}")
            return None
        self.broker.metrics.count_request(api.name)
        ctx = self.broker.request_context(header, self.peer, flexible)
        task = asyncio.ensure_future(api.handler(ctx, request))
        self._pending.append((correlation_id, flexible and api_key != apis.API_VERSIONS_KEY, task))
        task.add_done_callback(self._on_response_ready)
        task.add_done_callback(functools.partial(self.broker.metrics.observe_request, api.name, started))
        if len(self._pending) >= self.max_in_flight:
            self._pause("in-flight")
        return task

    def _on_response_ready(self, _task: asyncio.Future) -> None:
        while self._pending and self._pending[0][2].done():
            correlation_id, flexible_header, task = self._pending.popleft()
            if task.cancelled() or self._closed:
                return
            exc = task.exception()
            if isinstance(exc, MalformedFrame):
                self._abort(f"malformed request: {exc}")
                return
            if isinstance(exc, MemoryError):
                self._out_of_memory(exc, f"handling a request (correlation id {correlation_id}) from {self.peer}")
                return
            if exc is not None:
                logger.error("handler failed for %s, closing the connection", self.peer, exc_info=exc)
                self._abort("internal error")
                return
            if not self._write_response(correlation_id, flexible_header, task.result()):
                return
        if self._closing:
            if not self._pending:
                self.transport.close()
            return
        if len(self._pending) < self.max_in_flight // 2:
            self._resume("in-flight")

    def _write_response(self, correlation_id: int, flexible_header: bool, response: Any) -> bool:
        """Write one response; False (the connection is being closed) if it cannot be encoded."""
        if response is None:
            return True  # acks=0 produce: no response at all
        header = response_header(correlation_id, flexible_header)
        if isinstance(response, list):
            size = len(header) + sum(len(part) for part in response)
            self.transport.writelines([_SIZE.pack(size) + header, *response])
            return True
        try:
            body = encode_response(response)
        except Exception as e:  # a response the schema cannot carry: a bug, but the client must not hang
            logger.debug("cannot encode %s", type(response).__qualname__, exc_info=e)
            self._abort(f"cannot encode the {type(response).__qualname__} v{response.__version__} to correlation id "
                        f"{correlation_id}: {type(e).__name__}: {e}")
            return False
        self.transport.write(_SIZE.pack(len(header) + len(body)) + header + body)
        return True

    def _close(self, reason: str) -> None:
        """Stop reading, answer the requests that came before, then close (as Kafka does)."""
        if self._closing or self._closed:
            return
        logger.warning("closing connection from %s: %s", self.peer, reason)
        self.broker.metrics.connection_errors.inc()
        self._closing = True
        self._pause("closing")
        if not self._pending and self.transport is not None:
            self.transport.close()

    def _abort(self, reason: str) -> None:
        """Close now: a request got no answer, so nothing pipelined behind it may be answered.

        What was written before is still sent (``transport.close`` flushes); the requests behind
        are cancelled."""
        self._close(reason)
        for _, _, task in self._pending:
            task.cancel()
        self._pending.clear()
        if self.transport is not None:
            self.transport.close()


class _Sink:
    __slots__ = ("parts",)

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.parts.append(data)


def encode_response(response: Any) -> bytes:
    """Encode a kio response dataclass body."""
    sink = _Sink()
    apis.response_writer(response.__api_key__, response.__version__)(sink, response)
    return b"".join(sink.parts)
