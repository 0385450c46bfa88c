"""One client connection: frames in, handlers run, responses out in request order.

Reading: a 256 KiB scratch buffer takes small frames; a frame larger than half of it gets its
own pooled bytearray that the socket fills directly (``asyncio.BufferedProtocol``), so record
bytes are copied once, from the kernel, and stay writable for in-place offset assignment. That
buffer starts at 1 MiB at most (or the previous large frame's size) and doubles as the bytes
come. It is taken once half a scratch buffer of the frame has arrived (what came so far is
copied into it), except right after a large frame: then the connection reads only the next
frame's 4-byte size, and if that frame is large too its buffer is taken at once and the socket
fills all of it (a producer's ~1 MB requests follow one another: no scratch copy of each one's
first 128-256 KiB). So an announced size reserves nothing until the client has sent a large
frame whole; after that, one first buffer, as large as that frame's if it was above 1 MiB (a
client whose requests are 1-2 MiB has each read into one buffer, not a 1 MiB one doubled and
copied).
Memory: the bytes of every request read and not yet answered count against the broker-wide
``queued.max.request.bytes`` (request_memory.py); at the cap a connection with requests in
flight stops reading until others are answered. A Produce gives its frame's buffer back to the
pool as soon as its batches are appended, before it waits for their acknowledgement (its bytes
still count until it is answered): a producer pipelining requests behind a group fsync then
pins no buffer per request waiting, and the pool serves the next frames (with a hundred in
flight it could not, and each frame was a fresh, zero-filled 1 MiB allocation).
Processing: each request becomes a task; responses are written in request order as their tasks
finish. A Fetch that may start at once and finds its data there is answered without one: its
handler's first read runs as its frame is read, and the response is written then (``_fetch_now``); one that
waits for data writes its response in the loop turn it reads the data (``_answer_parked``). Kafka reads a connection's next request only after answering the one before; Tidelog
keeps what that order means: a request starts once the requests before it on the connection
have finished (a pipelined OffsetFetch sees the OffsetCommit before it, a Metadata the
CreateTopics), except Produce requests: they start at once, appending in arrival order (a
Produce appends before its first await, or, one that must wait first for a transactional
batch's KIP-890 check, in line behind the others: ``ProduceOrder``; that first step, the append
and the group commit's job it starts, runs as the frame is read, the rest as a task:
``_started_now``), so the acknowledgement waits of an idempotent
producer's five in flight overlap, and nothing but a read of acknowledged data (Fetch,
ListOffsets) waits for them. At most ``queued.max.requests`` requests are in flight per
connection; beyond that reading pauses. In a cluster, an acks=all Produce that leaves a partition
more than ``replica.backlog.max.bytes`` above its high watermark holds the connection until the
followers catch up: nothing is read, and the Produce requests read before wait, in order,
before they append (``_hold_reading``).
A frame that cannot be a request (size out of bounds, unknown API key, unsupported version,
undecodable body) closes the connection with a log line saying why, as Kafka does; so does a
request that cannot be answered (its handler failed, or its response cannot be encoded), before
anything pipelined behind it is answered.
Authentication: on a SASL listener the connection's ``SaslServerSession`` (security/sasl.py)
admits each request first: until the client has authenticated only ApiVersions, SaslHandshake
and SaslAuthenticate are served (answered here, at once, so nothing pipelined behind them runs
as the wrong principal); anything else, or a frame above ``sasl.server.max.receive.size``,
closes the connection. A failed authentication is answered, then the connection closes after
``connection.failed.authentication.delay.ms``. On a TLS listener a client certificate names
the principal.
Writing: responses go out in request order through the transport, those ready at one time in
one ``writelines`` (a group commit answers its Produce requests together: one writev); a Fetch response's record
slices (storage/file_slice.py) go from the segment file to the socket by ``os.sendfile`` (its
header bytes written first, by ``os.writev``) when the transport has nothing queued, on a
plaintext connection; what the socket does not take at once (it holds a few MB) follows by
sendfile as it drains (a duplicate of the socket's descriptor is watched for writability, since
the transport owns the descriptor), and the responses behind it wait. Every slice on a TLS
connection is read from the file and queued in the transport.
Quotas: with client quotas defined, each answered request is measured against them
(server/throttling.py); a client over its quota gets the response with ``throttle_time_ms``
set, and the connection is not read from for that long (KIP-219).
"""

from __future__ import annotations

import asyncio
import collections
import collections.abc
import errno
import functools
import ipaddress
import logging
import os
import socket
import struct
import time
from typing import TYPE_CHECKING, Any, Callable

from tidelog.clock import monotonic_ms
from tidelog.handlers import fetch, sasl_authenticate, sasl_handshake
from tidelog.handlers.authorization import refuse_request
from tidelog.handlers.registry import REGISTRY
from tidelog.protocol import apis
from tidelog.protocol.guard import check_request, strip_unknown_tags
from tidelog.protocol.share_requests import DECODERS as HAND_DECODED
from tidelog.protocol.wire import MalformedFrame, parse_request_header, peek_api_key_version, response_header
from tidelog.security.principal import ANONYMOUS, Endpoint, KafkaPrincipal, principal_from_certificate
from tidelog.security.sasl import SASL_AUTHENTICATE_KEY, SASL_HANDSHAKE_KEY, Admission, Outcome, SaslServerSession
from tidelog.server import throttling
from tidelog.server.request_memory import RequestMemory
from tidelog.storage.file_slice import FileSlice

if TYPE_CHECKING:
    from tidelog.server.broker import Broker

logger = logging.getLogger(__name__)

_SIZE = struct.Struct(">i")
# Requests that read what a Produce before them acknowledged: they wait for it (see "Processing").
_LIST_OFFSETS = 2
_READS_ACKNOWLEDGED = frozenset({throttling.FETCH, _LIST_OFFSETS})
_SCRATCH_BYTES = 256 * 1024


# A large frame's first buffer, or after a large frame the size of that frame's buffer if larger
# (what the client has sent whole); it doubles as the frame's bytes arrive.
_FIRST_BIG_BUFFER_BYTES = 1 << 20


def _capacity(size: int) -> int:
    return 1 << (size - 1).bit_length()  # FramePool's (request_memory.py) capacities are powers of two


def _started_now(loop: asyncio.AbstractEventLoop, coro) -> asyncio.Future:
    """Run ``coro`` to its first suspension now, then the rest as a task (what Python 3.12's eager
    tasks do): a future already done if it finished in that step. A task's first step runs at the
    loop's next turn, after every callback ready by then."""
    try:
        yielded = coro.send(None)
    except StopIteration as stop:
        future = loop.create_future()
        future.set_result(stop.value)
        return future
    except asyncio.CancelledError:
        future = loop.create_future()
        future.cancel()
        return future
    except Exception as e:  # as a task would hold it
        future = loop.create_future()
        future.set_exception(e)
        return future
    rest = _new_rest(_Rest)  # without a Python __init__: a call less a Produce
    rest._coro, rest._yielded = coro, yielded
    return loop.create_task(rest)


_STEPPED = object()


class _Rest(collections.abc.Coroutine):
    """``coro`` from where ``_started_now`` left it, as its task's coroutine: the task's first
    step gets ``yielded`` (the future ``coro`` awaits, or None), each later one goes on into
    ``coro``. A Coroutine (not a generator: Python 3.12+ tasks take none), whose ``throw`` reaches
    ``coro`` even before the task's first step: a task cancelled in the turn it was made (the
    connection aborted while reading the frames after it) cancels the future ``coro`` awaits and
    throws CancelledError in at its await, as a task that had run the first step itself would."""

    __slots__ = ("_coro", "_yielded")

    def __init__(self, coro, yielded) -> None:
        self._coro, self._yielded = coro, yielded

    def send(self, value):
        yielded = self._yielded
        if yielded is not _STEPPED:  # the task's first step: hand it the future awaited
            self._yielded = _STEPPED
            return yielded
        return self._coro.send(value)

    def throw(self, typ, val=None, tb=None):
        yielded = self._yielded
        if yielded is not _STEPPED:
            self._yielded = _STEPPED
            if isinstance(typ, asyncio.CancelledError) and isinstance(yielded, asyncio.Future):
                yielded.cancel()  # what the task's cancel() does to the future it waits on
        if val is None and tb is None:
            return self._coro.throw(typ)
        return self._coro.throw(typ, val, tb)

    def close(self) -> None:
        self._coro.close()

    def __next__(self):  # what the task calls for each step (PyIter_Send): send's body, not a call to it
        yielded = self._yielded
        if yielded is not _STEPPED:
            self._yielded = _STEPPED
            return yielded
        return self._coro.send(None)

    def __await__(self):  # an iterator itself, as a generator-based coroutine is
        return self


_new_rest = object.__new__


def _cancel_with(task: asyncio.Task, future: asyncio.Future) -> None:
    if future.cancelled():
        task.cancel()


def _when_done(future: asyncio.Future | None, finished: Callable[[], None]) -> asyncio.Future | None:
    if future is not None:
        future.add_done_callback(lambda _future: finished())
    return future


class ProduceOrder:
    """A connection's Produce requests append in the order they were read, as a Kafka broker,
    which serialises a connection's requests, appends them. A Produce appends in its first step
    (before any await; first steps run in arrival order), unless it must wait first: a
    transactional batch's KIP-890 check (asking the transaction coordinator, maybe on another
    broker), or an earlier request of the connection still waiting. Such a request takes a place
    in line (``line_up``) before its first await, appends once the place before it is given up
    and no hold of the connection is pending (``turn``), and gives its place up after
    (``done``). The questions of several requests (and connections) are out at once; only the
    appends wait. A Produce with nobody in line (``last`` None) appends at once, at no cost."""

    __slots__ = ("last", "_holds")

    def __init__(self, holds: list[asyncio.Future]) -> None:
        self.last: asyncio.Future | None = None  # the place of the latest request in line
        self._holds = holds  # the connection's backlog holds (cluster mode; see _hold_reading)

    def line_up(self) -> tuple[asyncio.Future | None, asyncio.Future]:
        """(the place before, this request's place)."""
        before = self.last
        self.last = place = asyncio.get_running_loop().create_future()
        return before, place

    async def turn(self, before: asyncio.Future | None) -> None:
        if before is not None and not before.done():
            # Shielded: this task cancelled (the connection closing) must not cancel the place.
            await asyncio.shield(before)
        while (hold := next((h for h in self._holds if not h.done()), None)) is not None:
            await hold

    def done(self, place: asyncio.Future) -> None:
        if not place.done():
            place.set_result(None)
        if self.last is place:
            self.last = None


class KafkaConnection(asyncio.BufferedProtocol):
    _loop: asyncio.AbstractEventLoop | None = None  # the running loop, from connection_made on

    def __init__(self, broker: "Broker", listener: Endpoint | None = None) -> None:
        self.broker = broker
        # The listener the client came in on: its name picks the advertised addresses Metadata
        # answers with; its protocol what is asked of the client (TLS, SASL).
        self.listener_name = listener.listener_name if listener is not None else ""
        self.listener = listener
        self.principal: KafkaPrincipal = ANONYMOUS
        self.access = broker.access(ANONYMOUS, "")
        self.sasl: SaslServerSession | None = None  # on a SASL listener
        self._frame_limit_setting = "socket.request.max.bytes"
        self._close_delay_s = 0.0  # a failed authentication is held this long before it closes
        # Requests measured against client quotas: task -> (api key, version, flexible, client id,
        # request bytes, start ns); empty while no quota is defined.
        self._measured: dict[asyncio.Future, tuple] = {}
        self._muted_until = 0.0  # loop time until which a throttled client is not read from
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
        # The last frame was large: read the next one's size alone and, if it is large too, give
        # the socket its own buffer from its first byte (see "Reading" above).
        self._after_big = False
        self._last_big_capacity = 0  # the buffer of the last large frame read whole
        self._pending: collections.deque[tuple[int, bool, asyncio.Future]] = collections.deque()
        # Requests waiting for those before them (see "Processing" above), in arrival order:
        # (gate, how many Produce requests before it it waits for, task); a gate's result
        # starts its task's handler. Running handlers: the Produce requests by number (the
        # n-th started on this connection), and how many others.
        self._waiting: collections.deque[tuple[asyncio.Future, int, asyncio.Future]] = collections.deque()
        self._produces_started = 0
        self._running_produces: set[int] = set()
        self._running_other = 0
        # Why reading is paused: "in-flight" (too many requests unanswered), "writing" (the
        # client is not reading its responses), "closing" (a bad frame; answer what came before),
        # "memory" (queued.max.request.bytes reached; see request_memory.py), "replication" (see
        # _hold_reading).
        self._pause_reasons: set[str] = set()
        # Cluster mode: while an acks=all Produce holds the connection for its followers
        # (replica.backlog.max.bytes), nothing is read and the Produce requests read before wait
        # for it to append ("replication"; _hold_reading).
        self._backlog_bounded = (getattr(broker, "controller", None) is not None
                                 and broker.config["replica.backlog.max.bytes"] > 0)
        self._holds: list[asyncio.Future] = []
        # Produce requests append in arrival order, held or not: each takes a ticket as it is read,
        # and only the one whose turn it is may append (_held_by); the others wait for their turn.
        self._tickets = 0  # the last ticket taken
        self._turn = 1  # the ticket that appends next
        self._turn_waiters: dict[int, asyncio.Future] = {}
        self._append_order = ProduceOrder(self._holds)  # a Produce waiting before it appends
        self._closing = False
        self._closed = False
        self._socket_fd: int | None = None  # for os.sendfile/writev; None on TLS
        # The rest of a response the socket did not take at once, (parts, bytes of the first
        # sent), sent by sendfile/writev as it becomes writable; responses behind it wait. The
        # transport owns the socket's descriptor, so a duplicate of it is watched meanwhile.
        self._unsent: tuple[list, int] | None = None
        self._writable_fd: int | None = None

    # --- asyncio protocol -------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._loop = asyncio.get_running_loop()  # which checks the pid (a getpid in 3.11): once, not a request
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.peer_host = peer[0] if peer else ""
        if self.listener is not None and self.listener.security_protocol.uses_tls:
            # The handshake is done: a verified client certificate names the principal.
            self.principal = principal_from_certificate(transport.get_extra_info("peercert"))
        self.access = self.broker.access(self.principal, self.peer_host)
        sock = transport.get_extra_info("socket")
        if sock is not None and transport.get_extra_info("ssl_object") is None and not (
                self.listener is not None and self.listener.security_protocol.uses_tls):
            self._socket_fd = sock.fileno()
        if sock is not None and _is_loopback(self.peer_host):  # TLS too: the same TCP underneath
            _loopback_congestion_control(sock)
        if self.listener is not None and self.listener.security_protocol.uses_sasl:
            security = self.broker.security
            self.sasl = SaslServerSession(self.broker.sasl_mechanisms, self.peer, self.listener_name,
                                          security.max_reauth_ms)
            self.max_frame_bytes = min(self.max_frame_bytes, security.sasl_max_receive_bytes)
            self._frame_limit_setting = "sasl.server.max.receive.size, before authentication"
        self.broker.connections.add(self)
        if throttling.enabled(self.broker.quotas):
            throttling.expire_idle(self.broker.quotas, monotonic_ms())
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
        self._waiting.clear()
        self._measured.clear()
        self._unsent = None
        if self._writable_fd is not None:
            asyncio.get_running_loop().remove_writer(self._writable_fd)
            os.close(self._writable_fd)
            self._writable_fd = None
        if self._big_buffer is not None:
            self.memory.release(len(self._big_buffer))
            self.memory.frames.release(self._big_buffer)
            self._big_buffer = None
        self.memory.forget(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._big_buffer is not None:
            return memoryview(self._big_buffer)[self._big_filled : min(len(self._big_buffer), self._big_size)]
        if self._scratch_end == _SCRATCH_BYTES:
            self._compact_scratch()
        if self._after_big and self._scratch_end - self._scratch_start < 4:
            if self._scratch_start + 4 > _SCRATCH_BYTES:
                self._compact_scratch()
            return self._scratch_view[self._scratch_end : self._scratch_start + 4]  # the next frame's size
        return self._scratch_view[self._scratch_end :]

    def buffer_updated(self, nbytes: int) -> None:
        if self._big_buffer is not None:
            self._big_filled += nbytes
            if self._big_filled == self._big_size:
                buffer, size = self._big_buffer, self._big_size
                self._big_buffer = None
                self._after_big = True
                self._last_big_capacity = len(buffer)
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
                self._close(f"frame size {size} outside 8..{self.max_frame_bytes} ({self._frame_limit_setting})")
                return
            start = self._scratch_start + 4
            big = size + 4 > _SCRATCH_BYTES // 2
            if not big:
                self._after_big = False
            if available - 4 >= size:
                if self._pending and self.memory.exhausted:
                    self._wait_for_memory()  # the frame stays in the scratch buffer meanwhile
                    break
                frame = self._scratch[start : start + size]
                self._scratch_start = start + size
                self.memory.charge(size)
                self._dispatch(frame, size)
                continue
            if big and (available >= _SCRATCH_BYTES // 2 or self._after_big):
                # Large frame, and half a scratch buffer of it has arrived (announcing a size
                # costs nothing), or it follows a large frame (see "Reading" above): a pooled
                # buffer that the socket fills from here on.
                if not self._start_big_frame(size, start, available - 4):
                    self._wait_for_memory()
            break
        if self._scratch_start == self._scratch_end:
            self._scratch_start = self._scratch_end = 0

    def _start_big_frame(self, size: int, start: int, have: int) -> bool:
        whole = _capacity(size)
        capacity = min(whole, max(_FIRST_BIG_BUFFER_BYTES, self._last_big_capacity))
        if not self.memory.try_grow(self, capacity, whole):
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
        self.memory.frames.release(old)
        self.memory.release(len(old))
        return True

    def _acquire(self, capacity: int, frame_size: int) -> bytearray | None:
        """A frame buffer already charged to ``memory``; None if the process is out of memory
        (reported, and this connection closed: its request cannot be read)."""
        try:
            return self.memory.frames.acquire(capacity)
        except MemoryError as e:
            self.memory.release(capacity)
            self._out_of_memory(e, f"reading a {frame_size}-byte request from {self.peer}")
            return None

    def _out_of_memory(self, error: MemoryError, what: str) -> None:
        self.broker.resources.report(error, what)
        self._abort(f"out of memory {what.split(' from ')[0]}")

    # --- requests ---------------------------------------------------------------------
    def _dispatch(self, frame: bytearray | memoryview, charged: int, pooled: bytearray | None = None) -> None:
        """Decode one request and start its handler. ``pooled`` goes back to the pool when the
        handler has finished or, for a raw handler, once it calls ``ctx.release_frame`` (a
        Produce, after its appends); the ``charged`` bytes go back to ``memory`` when it has finished."""
        started = time.perf_counter()
        buffer = pooled

        def release_buffer() -> None:
            nonlocal buffer
            if buffer is not None:
                self.memory.frames.release(buffer)
                buffer = None

        def finished() -> None:
            nonlocal buffer
            if buffer is not None:  # release_buffer's body: a call less a request
                self.memory.frames.release(buffer)
                buffer = None
            self.memory.release(charged)

        if self._start_request(memoryview(frame), started, finished, release_buffer) is None:
            finished()

    def _start_request(self, view: memoryview, started: float, finished: Callable[[], None],
                       release_frame=None) -> asyncio.Future | None:
        """Start the request in ``view``: its task or a future already answered (SASL, a refused
        request), ``finished`` called once it is done; or None (the connection is closing)."""
        sasl = self.sasl
        if sasl is not None and sasl.expects_raw_token:
            return _when_done(self._raw_token(view), finished)
        try:
            api_key, api_version, correlation_id = peek_api_key_version(view)
        except MalformedFrame as e:
            self._close(str(e))
            return None
        admission = Admission.SERVE if sasl is None else sasl.admit(api_key, api_version, monotonic_ms())
        if admission is Admission.CLOSE or admission is Admission.REFUSE:
            self._abort(sasl.close_reason or "SASL authentication failed")
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
            elif api_key in HAND_DECODED:  # ShareFetch, ShareAcknowledge: thousands of acknowledgement batches
                request = HAND_DECODED[api_key](view, body_offset, api_version)
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
        self.broker.metrics.requests.inc((api.name,))  # metrics.count_request inline (two calls less a request)
        if admission is not Admission.SERVE:
            return _when_done(self._sasl_exchange(admission, api_version, correlation_id, flexible, request), finished)
        if self.access.authorizer is not None and not api.raw:
            denied = refuse_request(self.access, api_key, api_version, request)
            if denied is not None:  # the whole request is refused before its handler runs
                return _when_done(self._answered(denied, correlation_id, flexible), finished)
        ctx = self.broker.request_context(header, self.peer, flexible, self.listener_name, self.access)
        if api.raw:
            ctx.release_frame = release_frame
        if api_key == throttling.PRODUCE:
            ctx.append_order = self._append_order
            if self._backlog_bounded:
                self._tickets += 1
                ctx.hold_reading, ctx.held_by = self._hold_reading, functools.partial(self._held_by, self._tickets)
        # One done-callback a request (each is a call_soon on the loop): the response, the
        # latency, then the frame's buffer and memory (in the order they were separate callbacks).
        # A handler started now takes it into its own (``_started``: the bookkeeping, then
        # this), so a request's end is one callback; a Fetch answered at once (_fetch_now) is
        # written now, not a loop turn later.
        done = functools.partial(self._request_done, api.name, started, finished)
        if api_key == throttling.PRODUCE:  # _run_in_order's Produce case, inline (a call less a Produce)
            task = _started_now(self._loop or asyncio.get_running_loop(), api.handler(ctx, request))
            done_taken = self._started(task, produce=True, then=done)
        else:
            task, done_taken = self._run_in_order(api_key, api.handler, ctx, request, done)
        self._pending.append((correlation_id, flexible and api_key != apis.API_VERSIONS_KEY, task))
        quotas = self.broker.quotas
        if throttling.enabled(quotas):
            decided_ms = 0
            if api_key == throttling.PRODUCE:
                decided_ms = throttling.produce_throttle_ms(quotas, self.principal.name, header.client_id or "",
                                                            len(view), monotonic_ms())
                if decided_ms:
                    self._mute(decided_ms)  # pipelined requests behind it wait too
            self._measured[task] = (api_key, api_version, flexible, header.client_id or "", len(view),
                                    time.perf_counter_ns(), decided_ms)
        if not done_taken:
            if task.done():
                done(task)
            else:
                task.add_done_callback(done)
        if len(self._pending) >= self.max_in_flight:
            self._pause("in-flight")
        return task

    def _request_done(self, api_name: str, started: float, finished: Callable[[], None], task: asyncio.Future) -> None:
        try:
            self._on_response_ready(task)
        finally:
            # metrics.observe_request inline (two calls less a request)
            self.broker.metrics.request_latency.observe((api_name,), time.perf_counter() - started)
            finished()

    def _run_in_order(self, api_key: int, handler, ctx, request, done: Callable[[asyncio.Future], None]
                      ) -> tuple[asyncio.Future, bool]:
        """The handler's task, started now if the requests before it allow (see "Processing"
        above), else once they have finished; and whether ``done`` will be called when it
        finishes (else the caller sees to it)."""
        if api_key == throttling.PRODUCE:
            # Its first step (the append, and the group commit's job started) now, as the frame
            # is read, not at the loop's next turn; the rest (the acknowledgement wait) a task.
            task = _started_now(self._loop or asyncio.get_running_loop(), handler(ctx, request))
            return task, self._started(task, produce=True, then=done)
        # A read of acknowledged data waits for the Produce requests started so far.
        produces_before = self._produces_started if api_key in _READS_ACKNOWLEDGED else 0
        if not self._waiting and self._may_start(produces_before):
            if handler is fetch.handle:
                return self._fetch_now(ctx, request, done)
            task = asyncio.get_running_loop().create_task(handler(ctx, request))
            return task, self._started(task, produce=False, then=done)
        gate = asyncio.get_running_loop().create_future()
        task = asyncio.ensure_future(self._after(gate, handler, ctx, request))
        self._waiting.append((gate, produces_before, task))
        return task, False

    def _fetch_now(self, ctx, request, done: Callable[[asyncio.Future], None]) -> tuple[asyncio.Future, bool]:
        """A Fetch that may start now reads now (handlers/fetch.py ``answer_now``): with data
        there it is answered by a future already done, without a task and its loop turns (about
        a quarter of a 1 MB fetch's Python); a Fetch that waits for data becomes a task
        (``_answer_parked``), and the future its answer, ``done`` called as the task ends (the
        answer is written before: the future is set, or cancelled with the task)."""
        loop = self._loop or asyncio.get_running_loop()  # the former a getpid in 3.11, a system call a Fetch
        future = loop.create_future()
        try:
            answer = fetch.answer_now(ctx, request)
        except Exception as e:  # as a task would hold it: _on_response_ready closes the connection
            future.set_exception(e)
            return future, False
        if type(answer) is fetch.Parked:
            task = loop.create_task(self._answer_parked(answer, future))
            taken = self._started(task, produce=False, then=done)
            future.add_done_callback(functools.partial(_cancel_with, task))  # the connection closing cancels it
            return future, taken
        future.set_result(answer)
        return future, False

    async def _answer_parked(self, parked: fetch.Parked, answered: asyncio.Future) -> None:
        """A parked Fetch: wait for data, then its answer into ``answered`` (the request's place
        in line) and out with whatever is ready, in the turn the data is read; a done-callback
        would write it a loop turn later (a busy loop's turn: every callback ready by then)."""
        try:
            response = await parked.response()
        except asyncio.CancelledError:
            answered.cancel()  # as the task itself was before
            raise
        except Exception as e:  # as a task would hold it: _on_response_ready closes the connection
            if answered.done():
                return
            answered.set_exception(e)
        else:
            if answered.done():  # cancelled: the connection closed
                return
            answered.set_result(response)
        self._on_response_ready(answered)

    @staticmethod
    async def _after(gate: asyncio.Future, handler, ctx, request):
        await gate
        return await handler(ctx, request)

    def _may_start(self, produces_before: int) -> bool:
        """Whether nothing before it is unfinished: no other request, and none of the first
        ``produces_before`` Produce requests."""
        if self._running_other:
            return False
        return not produces_before or not self._running_produces or min(self._running_produces) > produces_before

    def _started(self, task: asyncio.Future, produce: bool, then: Callable[[asyncio.Future], None] | None = None
                 ) -> bool:
        """Count ``task`` as running until it finishes; ``then`` called after, in the same
        callback, if the task is still running (True), else not (False: the caller calls it)."""
        if produce:
            self._produces_started += 1
            number = self._produces_started
            self._running_produces.add(number)
        else:
            number = 0
            self._running_other += 1
        if then is not None and task.done():
            then = None
        task.add_done_callback(functools.partial(self._handler_finished, number, then))
        return then is not None

    def _handler_finished(self, produce_number: int, then: Callable[[asyncio.Future], None] | None,
                          task: asyncio.Future) -> None:
        if produce_number:
            self._running_produces.discard(produce_number)
        else:
            self._running_other -= 1
        while self._waiting and self._may_start(self._waiting[0][1]):
            gate, _, waiting = self._waiting.popleft()
            if gate.done():  # cancelled with its task (the connection is closing)
                continue
            gate.set_result(None)
            self._started(waiting, produce=False)
        if then is not None:
            then(task)

    def _hold_reading(self, until: asyncio.Future) -> None:
        """Read nothing more until ``until`` is done: an acks=all Produce left a partition more
        than ``replica.backlog.max.bytes`` above its high watermark (cluster/partition.py). The
        Produce requests already read wait for it before they append (``_held_by``)."""
        self._holds.append(until)
        self._pause("replication")
        until.add_done_callback(self._hold_released)

    def _hold_released(self, until: asyncio.Future) -> None:
        self._holds.remove(until)
        if not self._holds:
            self._resume("replication")

    @property
    def held_for_replication(self) -> bool:
        """Reading is held by a partition's backlog (the tidelog_replica_backlog_held_connections gauge)."""
        return bool(self._holds)

    def _held_by(self, ticket: int) -> asyncio.Future | None:
        """What the Produce holding ``ticket`` waits for before it appends: its turn, then any
        hold not yet done; None once it may append (it does before its next await, so the turn
        passes on now). A request waits for its turn even when nothing holds the connection: a
        hold can end (done, its waiters not yet woken) before a later request's first step,
        which would otherwise append ahead of them. A hold done and not yet removed is no hold
        (awaiting it would not yield to the loop, and a Produce looping on it would spin)."""
        if ticket != self._turn:
            waiter = self._turn_waiters.get(ticket)
            if waiter is None:
                waiter = self._turn_waiters[ticket] = asyncio.get_running_loop().create_future()
            return waiter
        for hold in self._holds:
            if not hold.done():
                return hold
        self._turn += 1
        waiter = self._turn_waiters.pop(self._turn, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        return None

    # --- quotas -------------------------------------------------------------------------
    def _throttle(self, measured: tuple, response: Any) -> tuple[Any, int]:
        api_key, api_version, flexible, client_id, request_bytes, started_ns, decided_ms = measured
        # Produce and Fetch wait (for acknowledgements, for data): their byte rates govern them,
        # not the time they took.
        request_time_ns = 0 if api_key in (throttling.PRODUCE, throttling.FETCH) else time.perf_counter_ns() - started_ns
        response, throttle_ms = throttling.throttle(self.broker.quotas, api_key, api_version, flexible,
                                                    self.principal.name, client_id, request_bytes, request_time_ns,
                                                    response, monotonic_ms(), decided_ms)
        if throttle_ms:
            self.broker.metrics.throttle_time.labels(throttling.quota_type(api_key)).inc(throttle_ms / 1000)
        return response, throttle_ms

    def _mute(self, throttle_ms: int) -> None:
        """Read nothing more from a throttled client until its throttle time has passed."""
        loop = asyncio.get_running_loop()
        until = loop.time() + throttle_ms / 1000
        if until <= self._muted_until:
            return
        self._muted_until = until
        self._pause("throttled")
        loop.call_at(until, self._unmute, until)

    def _unmute(self, until: float) -> None:
        if until == self._muted_until:
            self._resume("throttled")

    # --- SASL ---------------------------------------------------------------------------
    def _sasl_exchange(self, admission: Admission, api_version: int, correlation_id: int, flexible: bool,
                       request: Any) -> asyncio.Future:
        """Answer a SaslHandshake or SaslAuthenticate now (see the module docstring)."""
        sasl, now = self.sasl, monotonic_ms()
        close = False
        if admission is Admission.HANDSHAKE:
            reply = sasl.handshake(request.mechanism, api_version, now)
            response: Any = sasl_handshake.response(api_version, reply.error_code, reply.mechanisms)
            close = reply.close
        else:
            reply = sasl.authenticate(request.auth_bytes, api_version, now)
            self._observe_authentication(reply.outcome)
            if not reply.respond:
                self._abort(sasl.close_reason or "SASL authentication failed")
                return self._answered(None, None, False)
            response = sasl_authenticate.response(api_version, reply.error_code, reply.error_message, reply.auth_bytes,
                                                  reply.session_lifetime_ms)
            close = reply.close
        future = self._answered(response, correlation_id, flexible)
        if close:
            self._close_after_failed_authentication(sasl.close_reason or "SASL authentication failed")
        return future

    def _raw_token(self, view: memoryview) -> asyncio.Future | None:
        """After a v0 SaslHandshake: each frame is a bare SASL token, answered size-prefixed."""
        reply = self.sasl.raw_token(bytes(view), monotonic_ms())
        self._observe_authentication(reply.outcome)
        if reply.token is None:
            self._abort(self.sasl.close_reason or "SASL authentication failed")
            return None
        return self._answered(reply.token, None, False)

    def _answered(self, response: Any, correlation_id: int | None, flexible: bool) -> asyncio.Future:
        """A response ready now, queued behind the ones not yet written (correlation id None: a
        raw SASL token, written without a header)."""
        future = asyncio.get_running_loop().create_future()
        future.set_result(response)
        self._pending.append((correlation_id, flexible, future))
        self._on_response_ready(future)
        return future

    def _observe_authentication(self, outcome: Outcome | None) -> None:
        if outcome is None:
            return
        sasl = self.sasl
        self.broker.metrics.sasl_authentications.labels(self.listener_name, sasl.mechanism or "", outcome.value).inc()
        if outcome is not Outcome.FAILED and sasl.principal != self.principal:
            self.principal = sasl.principal
            self.access = self.broker.access(self.principal, self.peer_host)
        if outcome is not Outcome.FAILED:
            self.max_frame_bytes = self.broker.config["socket.request.max.bytes"]
            self._frame_limit_setting = "socket.request.max.bytes"

    def _close_after_failed_authentication(self, reason: str) -> None:
        self._close_delay_s = self.broker.security.failed_authentication_delay_ms / 1000
        self._close(reason)

    def _on_response_ready(self, _task: asyncio.Future | None) -> None:
        if self._unsent is not None:
            return  # a response is still going out: _send_unsent comes back here when it is
        # The bytes of every response ready now go out in one writelines (one writev): a group
        # commit answers the Produce requests it covered together.
        out: list = []
        while self._pending and self._pending[0][2].done():
            correlation_id, flexible_header, task = self._pending.popleft()
            if task.cancelled() or self._closed:
                self._write_out(out)
                return
            exc = task.exception()
            if exc is not None:
                self._write_out(out)  # what was answered before still goes out
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
            response = task.result()
            measured = self._measured.pop(task, None) if self._measured else None
            throttle_ms = 0
            if measured is not None:
                response, throttle_ms = self._throttle(measured, response)
            if not self._write_response(correlation_id, flexible_header, response, out):
                return
            if throttle_ms and measured[0] != throttling.PRODUCE:  # a Produce is muted as it is read
                self._mute(throttle_ms)
            if self._unsent is not None:
                return  # the socket did not take a fetch response whole: _send_unsent comes back here
        self._write_out(out)
        if self._closing:
            if not self._pending:
                self._close_transport()
            return
        if len(self._pending) < self.max_in_flight // 2:
            self._resume("in-flight")

    def _write_out(self, out: list) -> None:
        if out and not self._closed:
            self.transport.writelines(out)
        out.clear()

    def _write_response(self, correlation_id: int, flexible_header: bool, response: Any, out: list) -> bool:
        """Add one response's bytes to ``out`` (a response with file slices: ``out`` written, then
        the response); False (the connection is being closed) if it cannot be encoded."""
        if response is None:
            return True  # acks=0 produce: no response at all
        if correlation_id is None:  # a raw SASL token (after a v0 SaslHandshake)
            out.append(_SIZE.pack(len(response)) + response)
            return True
        header = response_header(correlation_id, flexible_header)
        if isinstance(response, list):
            size = len(header) + sum(map(len, response))
            if FileSlice in map(type, response):
                self._write_out(out)
                return self._write_slices([_SIZE.pack(size) + header, *response])
            out.append(_SIZE.pack(size) + header)
            out.extend(response)
            return True
        try:
            body = encode_response(response)
        except Exception as e:  # a response the schema cannot carry: a bug, but the client must not hang
            logger.debug("cannot encode %s", type(response).__qualname__, exc_info=e)
            self._write_out(out)
            self._abort(f"cannot encode the {type(response).__qualname__} v{response.__version__} to correlation id "
                        f"{correlation_id}: {type(e).__name__}: {e}")
            return False
        out.append(_SIZE.pack(len(header) + len(body)) + header + body)
        return True

    def _write_slices(self, parts: list) -> bool:
        """Write a response holding FileSlices (see the module docstring); False if it cannot
        be completed (the connection is being closed)."""
        transport = self.transport
        index, offset = 0, 0
        try:
            if self._socket_fd is not None and transport.get_write_buffer_size() == 0:
                index, offset = _send_direct(self._socket_fd, parts)
                if index < len(parts):  # the socket is full: the rest follows as it drains
                    self._unsent = (parts[index:], offset)
                    self._watch_writable()
                    index = len(parts)
            if index < len(parts):
                rest = [_bytes_of(part) for part in parts[index:]]
                rest[0] = memoryview(rest[0])[offset:]
                transport.writelines(rest)
        except OSError as e:  # the peer went away, or a segment file shrank or went under the response
            self._abort(f"cannot send a fetch response: {e}")
            return False
        copied = 0
        if index < len(parts):  # read into the transport: TLS, or the transport had bytes queued
            copied = sum(len(part) for part in parts[index:] if type(part) is FileSlice) - (
                offset if type(parts[index]) is FileSlice else 0)
        total = sum(len(part) for part in parts if type(part) is FileSlice)
        metrics = self.broker.metrics
        if copied:
            metrics.fetch_response_bytes_copy.inc(copied)
        if total > copied:
            metrics.fetch_response_bytes_sendfile.inc(total - copied)
        return True

    def _watch_writable(self) -> None:
        if self._writable_fd is None:
            self._writable_fd = os.dup(self._socket_fd)
        asyncio.get_running_loop().add_writer(self._writable_fd, self._send_unsent)

    def _send_unsent(self) -> None:
        """The socket takes more: send what is left of the response; once all of it is out,
        remove the watch and write the responses behind it."""
        if self._unsent is None or self._closed:
            return
        parts, offset = self._unsent
        try:
            index, offset = _send_direct(self._socket_fd, parts, offset)
        except OSError as e:  # the peer went away, or a segment file shrank or went under the response
            self._unsent = None
            asyncio.get_running_loop().remove_writer(self._writable_fd)
            self._abort(f"cannot send a fetch response: {e}")
            return
        if index < len(parts):
            self._unsent = (parts[index:], offset)
            return
        self._unsent = None
        asyncio.get_running_loop().remove_writer(self._writable_fd)
        self._on_response_ready(None)

    def _close(self, reason: str) -> None:
        """Stop reading, answer the requests that came before, then close (as Kafka does)."""
        if self._closing or self._closed:
            return
        logger.warning("closing connection from %s: %s", self.peer, reason)
        self.broker.metrics.connection_errors.inc()
        self._closing = True
        self._pause("closing")
        if not self._pending and self._unsent is None and self.transport is not None:
            self._close_transport()

    def _close_transport(self) -> None:
        if self._close_delay_s > 0:  # a failed authentication: answered, then held a while (as Kafka does)
            asyncio.get_running_loop().call_later(self._close_delay_s, self.transport.close)
            self._close_delay_s = 0.0
        else:
            self.transport.close()

    def _abort(self, reason: str) -> None:
        """Close now: a request got no answer, so nothing pipelined behind it may be answered.

        What was written before is still sent (``transport.close`` flushes); the requests behind
        are cancelled."""
        self._close(reason)
        for _, _, task in self._pending:
            task.cancel()
        self._pending.clear()
        self._waiting.clear()
        if self.transport is not None:
            self.transport.close()


def _send_direct(socket_fd: int, parts: list, offset: int = 0) -> tuple[int, int]:
    """Send ``parts`` on the non-blocking socket until it would block, the first from its byte
    ``offset`` (already sent): runs of bytes by writev, FileSlices by sendfile. Returns (index
    of the first part not sent whole, bytes of it sent)."""
    count = len(parts)
    index = 0
    if offset and type(parts[0]) is not FileSlice:
        parts = [memoryview(parts[0])[offset:], *parts[1:]]
        index, sent = _send_direct(socket_fd, parts)
        return index, sent + offset if index == 0 else sent
    while index < count:
        part = parts[index]
        if type(part) is FileSlice:
            sent = part.send(socket_fd, offset) + offset
            offset = 0
            if sent < len(part):
                return index, sent
            index += 1
            continue
        end = index + 1
        while end < count and type(parts[end]) is not FileSlice:
            end += 1
        try:
            sent = os.writev(socket_fd, parts[index:end])
        except BlockingIOError:
            sent = 0
        while index < end:
            length = len(parts[index])
            if sent < length:
                return index, sent
            sent -= length
            index += 1
    return count, 0


# Congestion control of a connection from this host (a follower broker on the same host, a local
# client): a loss-based one, not the host's default if that is BBR. Over loopback BBR measures a
# round trip of microseconds and keeps its window at a few segments' worth of that; a reader that
# acknowledges late (its loop busy, delayed ACKs) then holds a multi-MB Fetch response for tens to
# hundreds of ms. Three brokers on one host, RF 3 at full rate (replication_trace, load 5-7): the
# leader's read -> the follower having the response, p50 140-196 ms with BBR, 3.2 ms with cubic.
# cubic first; reno where cubic is not allowed (net.ipv4.tcp_allowed_congestion_control). None
# left when neither is: the connection keeps the host's default.
_LOOPBACK_CONGESTION_CONTROL = [b"cubic", b"reno"]
_LOOPBACK_CONGESTION_LOGGED: set[bytes] = set()  # names logged (INFO) as set on loopback connections


def _is_loopback(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def _loopback_congestion_control(sock) -> None:
    """Set the first of _LOOPBACK_CONGESTION_CONTROL this process may use on ``sock``; one it
    may not is not tried again (one failed system call, not one a connection). Logged once: the
    one set (INFO), or a WARNING when none may be."""
    while _LOOPBACK_CONGESTION_CONTROL:
        name = _LOOPBACK_CONGESTION_CONTROL[0]
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, name)
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.ENOENT, errno.EACCES):
                return  # this socket's trouble (closed meanwhile), not the name's
            logger.debug("TCP congestion control %s for loopback connections: %s", name.decode(), e)
            del _LOOPBACK_CONGESTION_CONTROL[0]
            if not _LOOPBACK_CONGESTION_CONTROL:
                logger.warning("loopback connections keep the host's TCP congestion control (%s): neither cubic nor "
                               "reno is allowed to this process (net.ipv4.tcp_allowed_congestion_control)",
                               _host_congestion_control())
            continue
        if name not in _LOOPBACK_CONGESTION_LOGGED:
            _LOOPBACK_CONGESTION_LOGGED.add(name)
            logger.info("loopback connections use TCP congestion control %s (the host's default: %s)", name.decode(),
                        _host_congestion_control())
        return


def _host_congestion_control() -> str:
    try:
        with open("/proc/sys/net/ipv4/tcp_congestion_control") as f:
            return f.read().strip()
    except OSError:
        return "unknown"


def _bytes_of(part) -> bytes | memoryview:
    if type(part) is not FileSlice:
        return part
    data = part.read()
    if len(data) != len(part):
        raise OSError(f"{part.segment.log_path} ends before position {part.position + len(part)}")
    return data


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
