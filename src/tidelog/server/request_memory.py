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
  wait on each other for ever.

So the bytes held for requests stay under the cap plus one frame, plus a 256 KiB scratch buffer
per connection. A stalled client can hold only what it has actually sent, or after a large frame
of its own, the first buffer (1 MiB at most) of the next large frame it announces (connection.py).

Not thread-safe; the event loop owns it.
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

logger = logging.getLogger(__name__)

_LOG_INTERVAL_S = 60.0


class Waiter(Protocol):
    def memory_available(self) -> None: ...


class RequestMemory:
    def __init__(self, max_bytes: int, overshoot_bytes: int, metrics=None) -> None:
        self.max_bytes = max_bytes
        self.overshoot_bytes = overshoot_bytes
        self.used = 0
        self._waiting: dict[Waiter, None] = {}  # insertion order: oldest first
        self._finisher: Waiter | None = None
        self._logged_at = -_LOG_INTERVAL_S
        self._waits = None
        if metrics is not None:
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
        if self._finisher is None and self.used + frame_capacity <= self.max_bytes + self.overshoot_bytes:
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
        for owner in list(self._waiting):
            if not self._may_progress():
                return
            if owner in self._waiting:
                del self._waiting[owner]
                owner.memory_available()
