"""The group coordinator's timers and background writes, one owner for both group protocols.

Session timeouts, the join and sync phases of classic groups, the rebalance timeouts of
consumer-protocol members and the offset expiry check are ``loop.call_later`` handles made
here; nothing polls. Writes nobody waits for (a group's metadata after a static member's
rejoin or an empty generation, a member removed by a timer, the tombstone of a group that
changes type) are tasks spawned here, so ``stop`` cancels every one the coordinator started.
A timer handle belongs to the group or member it times, which cancels it.

Every timer here is a ``SessionTimer`` (tidelog/session_timer.py): fallen due, it lets the loop
read its sockets before it acts, so after a stall the requests that would have prevented its
action and were sent in time count (a heartbeat, a JoinGroup of a pending member or of a member
the join phase waits for, a SyncGroup, a KIP-848 member's revocation).
Not thread-safe; the broker's event loop owns it.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Coroutine

from tidelog.session_timer import SessionTimer


class GroupTimers:
    """``call_later`` in milliseconds and fire-and-forget tasks, all cancelled by ``stop``."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task] = set()

    def call_later(self, delay_ms: int, callback: Callable[..., None], *args: Any) -> SessionTimer:
        """``callback(*args)`` once the loop has read its sockets after ``delay_ms``: the join and
        sync phases, pending members, KIP-848 rebalance timeouts, the offset expiry check."""
        return SessionTimer(asyncio.get_running_loop(), max(delay_ms, 0) / 1000, callback, args)

    def session_timer(self, delay_ms: int, callback: Callable[..., None], *args: Any) -> SessionTimer:
        """A member's session timeout: ``callback(*args)`` once the loop has read its sockets
        after ``delay_ms`` (see the module docstring)."""
        return SessionTimer(asyncio.get_running_loop(), max(delay_ms, 0) / 1000, callback, args)

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
