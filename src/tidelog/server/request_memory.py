"""The broker-wide budget for request bytes read and not yet answered (``queued.max.request.bytes``).

Kafka's setting of that name caps the bytes of requests read from all sockets whose handling has
not finished; reading pauses at the cap. Kafka's default (-1) is unlimited; Tidelog's is 128 MiB,
so that memory held for requests is bounded whatever the clients send (docs/configuration).

What is charged is memory actually allocated: a small frame's copy out of a connection's scratch
buffer, or a large frame's buffer, which grows (doubling) as the frame's bytes arrive instead of
being allocated at the size the frame announces. A request's charge is released when its
handler has finished. The rules at the cap:

- a connection with requests in flight stops reading (it waits; waiters resume oldest first);
- a connection with nothing in flight still reads frames small enough for its own scratch
  buffer (memory it holds anyway), so a client with one small request at a time (a follower's
  fetch, a heartbeat) is never stuck behind other clients' large produces;
- a large frame grows only while the total stays within the cap, except for one frame at a
  time, the finisher, which may take the cap plus ``overshoot_bytes`` (the buffer of the largest
  frame, ``socket.request.max.bytes`` rounded up to a power of two): partly read frames cannot
  wait on each other for ever. A finisher is chosen only while the total is within the cap, so
  frames finishing one after another past it do not creep further up.

So the bytes held for requests stay under the cap plus one frame, plus a 256 KiB scratch buffer
per connection. A stalled client can hold only what it has actually sent, or after a large frame
of its own, the first buffer of the next large frame it announces (1 MiB, or as large as the frame
it sent whole: connection.py).

Large frames' buffers come from ``frames`` (FramePool), which keeps those given back while they
and the buffers in use stay within the same cap: a peak of frames read and not yet appended is
served from the pool the next time, and all frame buffers, free or in use, stay within the cap
plus one frame. Buffers no request took for ``FRAME_POOL_IDLE_S`` (30 s) are freed, so the peak
is not held for ever after a burst.

Not thread-safe; the event loop owns it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

logger = logging.getLogger(__name__)


class FramePool:
    """Reusable buffers for large request frames (bigger than half a connection's scratch buffer).

    A fresh 1 MiB bytearray is zero-filled page by page: at produce rates those page faults were
    a quarter of the broker's time. A buffer comes back when its request no longer reads it: its
    handler has finished, or a Produce has appended its batches (records reach the log by
    os.write; kio copies what it decodes; the Produce response is built from decoded names and
    indexes). Capacities are powers of two. A buffer given back is kept while the pooled and the
    in-use buffers together stay within ``max_bytes`` (queued.max.request.bytes, which bounds the
    frames in use too): an RF 3 leader had up to 115 frames of 1 MiB read and not yet appended
    (a producer pipelining faster than their handlers start), and with a fixed 64 MiB pool each
    such peak allocated its buffers afresh. A fresh buffer that takes the total past
    ``max_bytes`` evicts pooled ones of other capacities first. ``reused`` and ``allocated``
    count acquisitions (tidelog_request_frame_buffers_total). Not thread-safe; the event loop
    owns it.

    Idle buffers go after ``idle_s`` (FRAME_POOL_IDLE_S): while anything is pooled, a timer on
    the event loop looks every ``idle_s`` at the fewest bytes the pool held since its last look
    (its low-water mark) and frees buffers of up to that many bytes, the largest capacities
    first, the coldest of each: buffers no request took for a whole interval. So a burst's peak (up to
    ``max_bytes``) is given back within two intervals of its end, while a steady load, which
    takes its buffers again within the interval, keeps them. ``freed`` counts the buffers freed
    so (tidelog_request_frame_buffers_idle_freed_total).
    """

    def __init__(self, max_bytes: int, idle_s: float | None = None) -> None:
        self.max_bytes = max_bytes
        self.idle_s = FRAME_POOL_IDLE_S if idle_s is None else idle_s
        self._free: dict[int, list[bytearray]] = {}
        self.pooled_bytes = 0
        self.in_use_bytes = 0
        self.reused = 0
        self.allocated = 0
        self.freed = 0
        self._low_water = 0  # the fewest bytes pooled since the last trim
        self._timer = None  # the trim's call_later handle while anything is pooled

    def acquire(self, size: int) -> bytearray:
        capacity = 1 << (size - 1).bit_length()
        free = self._free.get(capacity)
        if free:
            self.pooled_bytes -= capacity
            if self.pooled_bytes < self._low_water:
                self._low_water = self.pooled_bytes
            self.in_use_bytes += capacity
            self.reused += 1
            return free.pop()
        excess = self.pooled_bytes + self.in_use_bytes + capacity - self.max_bytes
        if excess > 0 and self.pooled_bytes:
            self._evict(excess)
        buffer = bytearray(capacity)  # MemoryError: nothing counted
        self.in_use_bytes += capacity
        self.allocated += 1
        return buffer

    def release(self, buffer: bytearray) -> None:
        size = len(buffer)
        self.in_use_bytes -= size
        if self.pooled_bytes + self.in_use_bytes + size <= self.max_bytes:
            self._free.setdefault(size, []).append(buffer)
            self.pooled_bytes += size
            if self._timer is None and self.idle_s > 0:
                self._start_timer()

    def trim(self) -> int:
        """Free pooled buffers of up to the low-water mark's bytes (unused since the last trim),
        the largest capacities first; the bytes freed. The timer calls it every ``idle_s``."""
        budget, freed = self._low_water, 0
        for capacity in sorted(self._free, reverse=True):
            free = self._free[capacity]
            while free and capacity <= budget - freed:
                del free[0]  # the coldest: acquire takes the last given back
                freed += capacity
                self.freed += 1
        self.pooled_bytes -= freed
        self._low_water = self.pooled_bytes
        if freed:
            logger.debug("frame pool: freed %d bytes of buffers unused for %gs, %d pooled", freed, self.idle_s,
                         self.pooled_bytes)
        return freed

    def _start_timer(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not on an event loop (a unit test): trim() by hand
            return
        self._low_water = self.pooled_bytes
        self._timer = loop.call_later(self.idle_s, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.trim()
        if self.pooled_bytes:
            self._start_timer()

    def _evict(self, excess: int) -> None:
        """Drop pooled buffers (the largest capacities first) until ``excess`` bytes are gone or none is left."""
        for capacity in sorted(self._free, reverse=True):
            free = self._free[capacity]
            while free and excess > 0:
                free.pop()
                self.pooled_bytes -= capacity
                excess -= capacity
            if excess <= 0:
                break
        self._low_water = min(self._low_water, self.pooled_bytes)


class _FramePoolCollector:
    """``frames``' counts, read at scrape time (nothing done a frame beyond two integers)."""

    def __init__(self, pool: FramePool) -> None:
        self.pool = pool

    def collect(self):
        buffers = CounterMetricFamily("tidelog_request_frame_buffers",
                                      "Large request frames' buffers taken, by outcome: reused (from the pool) or "
                                      "allocated (fresh, zero-filled; steady at a steady load).", labels=["outcome"])
        buffers.add_metric(["reused"], self.pool.reused)
        buffers.add_metric(["allocated"], self.pool.allocated)
        pooled = GaugeMetricFamily("tidelog_request_frame_pool_bytes",
                                   "Bytes of large-frame buffers kept for reuse (with those in use, within "
                                   "queued.max.request.bytes).")
        pooled.add_metric([], self.pool.pooled_bytes)
        freed = CounterMetricFamily("tidelog_request_frame_buffers_idle_freed",
                                    f"Pooled large-frame buffers freed after no request took them for "
                                    f"{self.pool.idle_s:g} s (a burst's peak given back).")
        freed.add_metric([], self.pool.freed)
        return [buffers, pooled, freed]

    def describe(self):
        return [CounterMetricFamily("tidelog_request_frame_buffers", "", labels=["outcome"]),
                GaugeMetricFamily("tidelog_request_frame_pool_bytes", ""),
                CounterMetricFamily("tidelog_request_frame_buffers_idle_freed", "")]

_LOG_INTERVAL_S = 60.0
# Pooled frame buffers no request took for this long are freed (FramePool.trim).
FRAME_POOL_IDLE_S = 30.0


class Waiter(Protocol):
    def memory_available(self) -> None: ...


class RequestMemory:
    def __init__(self, max_bytes: int, overshoot_bytes: int, metrics=None) -> None:
        self.max_bytes = max_bytes
        self.overshoot_bytes = overshoot_bytes
        self.used = 0
        self._waiting: dict[Waiter, None] = {}  # insertion order: oldest first
        self._finisher: Waiter | None = None
        # A wake is running; bytes released meanwhile (a woken connection's request answered as it
        # was read) are noted, not woken from inside it (_wake).
        self._waking = False
        self._released_while_waking = False
        self._logged_at = -_LOG_INTERVAL_S
        self._waits = None
        self.frames = FramePool(max_bytes)
        if metrics is not None:
            metrics.registry.register(_FramePoolCollector(self.frames))
            metrics.queued_request_bytes.set_function(lambda: self.used)
            metrics.request_memory_waiting.set_function(lambda: len(self._waiting))
            self._waits = metrics.request_memory_waits

    @property
    def exhausted(self) -> bool:
        return self.used >= self.max_bytes

    def charge(self, size: int) -> None:
        """A small frame read whole from a connection's scratch buffer."""
        self.used += size

    def release(self, size: int) -> None:
        self.used -= size
        if self._waiting and self._may_progress():
            self._wake()

    def try_grow(self, owner: Waiter, size: int, frame_capacity: int) -> bool:
        """Charge ``size`` more bytes for ``owner``'s partly read frame, whose buffer will end at
        ``frame_capacity`` bytes, if the rules allow; else False (the caller waits)."""
        if self.used + size <= self.max_bytes or self._finisher is owner:
            self.used += size
            return True
        # Past the cap only while within it: a finisher that took the bytes past the cap is the
        # only one until answers bring them back (else frames finishing one after another each
        # became the finisher in turn, and the bytes held crept up to the cap plus the overshoot).
        if (self._finisher is None and self.used <= self.max_bytes
                and self.used + frame_capacity <= self.max_bytes + self.overshoot_bytes):
            self._finisher = owner
            self.used += size
            return True
        return False

    def frame_done(self, owner: Waiter) -> None:
        """``owner`` has no partly read frame any more (read whole, or the connection is gone)."""
        if self._finisher is owner:
            self._finisher = None
            if self._waiting and self._may_progress():
                self._wake()

    def wait(self, owner: Waiter) -> None:
        """``owner`` has paused reading until its ``memory_available`` is called."""
        if owner in self._waiting:
            return
        self._waiting[owner] = None
        if self._waits is not None:
            self._waits.inc()
        now = time.monotonic()
        if now - self._logged_at >= _LOG_INTERVAL_S:
            self._logged_at = now
            logger.warning("queued.max.request.bytes reached: %d MiB of requests read and not yet answered "
                           "(cap %d MiB); reading paused on %d connection(s) until requests are answered",
                           self.used >> 20, self.max_bytes >> 20, len(self._waiting))

    def forget(self, owner: Waiter) -> None:
        self._waiting.pop(owner, None)
        self.frame_done(owner)

    def _may_progress(self) -> bool:
        """Whether a waiter could get on now: below the cap, or a finisher could be chosen."""
        return self.used < self.max_bytes or (self._finisher is None and self.used <= self.max_bytes)

    def _wake(self) -> None:
        """Wake the waiters, oldest first, while one could get on. A woken connection reads its
        frames at once, and one answered as it is read (an acks=0 Produce, a Fetch with data)
        releases its bytes then: that release does not wake the next waiter from inside this one's
        read (hundreds of connections waiting would nest as deep: a RecursionError) but lets this
        loop go on, and a waiter that began waiting meanwhile is tried in a further pass."""
        if self._waking:
            self._released_while_waking = True
            return
        self._waking = True
        try:
            again = True
            while again:
                self._released_while_waking = False
                for owner in list(self._waiting):
                    if not self._may_progress():
                        return
                    if owner in self._waiting:
                        del self._waiting[owner]
                        owner.memory_available()
                again = self._released_while_waking and bool(self._waiting)
        finally:
            self._waking = False
