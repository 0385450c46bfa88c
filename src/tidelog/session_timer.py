"""A member's session timer that, fallen due, lets the event loop read its sockets before it
expires the member: the group coordinator's classic and consumer-protocol members
(groups/timers.py ``session_timer``) and share groups' members (queues/share_group.py). Outside
the layered packages, as clock.py, so both can use it.

Why: a loop runs the timers that are due before it polls its sockets (uvloop, as libuv, in every
iteration), so after a stall (a long callback, a paused process) every session that lapsed
meanwhile would expire before the heartbeats that are waiting, unread, in the sockets, whether
they arrived in time or not; the group would rebalance for a member that is alive. The expiry is
put off for ``EXPIRY_TURNS`` loop turns instead (microseconds on an idle loop): the loop polls,
the heartbeat's handler runs its first step (which re-arms the session timer and so cancels this
one), and only a member that sent nothing expires.
Not thread-safe; the event loop that made a timer owns it.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

__all__ = ["EXPIRY_TURNS", "SessionTimer"]


# Loop turns (call_soon hops) between a session timer falling due and the expiry. After a stop
# (SIGSTOP; tests/unit/test_session_timer.py) both loops run the timer (hop 0) and hop 1 before
# the poll that reads the waiting heartbeat; hop 2 and the handler's first step (which cancels
# this timer) then run in the same turn, in that order: 3 is the least that counts the
# heartbeat (the test fails with 2). Two more for a heartbeat read a poll later (more sockets
# ready than one epoll_wait returns); a hop costs one callback, on an expiry only.
EXPIRY_TURNS = 5


class SessionTimer:
    """A ``call_later`` handle whose callback runs ``EXPIRY_TURNS`` loop turns after its
    deadline (the module docstring says why); ``cancel`` stops it at any point of the way."""

    __slots__ = ("_loop", "_handle", "_turns", "_callback", "_args")

    def __init__(self, loop: asyncio.AbstractEventLoop, delay_s: float, callback: Callable[..., None],
                 args: tuple[Any, ...]) -> None:
        self._loop = loop
        self._callback = callback
        self._args = args
        self._turns = 0
        self._handle: asyncio.Handle | None = loop.call_later(delay_s, self._turn)

    def _turn(self) -> None:
        if self._turns < EXPIRY_TURNS:
            self._turns += 1
            self._handle = self._loop.call_soon(self._turn)
            return
        self._handle = None
        self._callback(*self._args)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
