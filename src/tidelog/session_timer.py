"""A timer that, fallen due, lets the event loop read its sockets before it acts: for every timer
whose action a request waiting unread in a socket would have prevented. Members' session
timeouts (groups/timers.py ``session_timer``: classic and consumer-protocol members;
queues/share_group.py: share groups' members), the classic join and sync phases and KIP-394's
pending members, KIP-848's rebalance timeout (groups/timers.py ``call_later``) and share groups'
record acquisition locks (queues/manager.py). Outside the layered packages, as clock.py, so
groups and queues can both use it.

Why: a loop runs the timers that are due before it polls its sockets (uvloop, as libuv, in every
iteration), so after a stall (a long callback, a paused process) every timer that lapsed
meanwhile would act before the requests that are waiting, unread, in the sockets, whether they
arrived in time or not: a member alive would expire and the group rebalance, a JoinGroup or
SyncGroup sent in time would find its member removed, an acknowledgement sent in time would find
its records' locks released (INVALID_RECORD_STATE, the record delivered again). The action is
put off for ``EXPIRY_TURNS`` loop turns instead (microseconds on an idle loop): the loop polls,
the request's handler runs its first step (which re-arms or cancels this timer, or changes what
the action finds), and only what no request saved is acted on.

Kafka runs these timers on a thread of their own (SystemTimer), so after a pause its request
handlers and its timer thread race; the requests that came in time winning is what this gives.
The cost where nothing falls due: an object and a Python call beside the ``call_at`` handle (an
arming and cancelling ~12.7k instructions against ~7.0k for a bare uvloop handle, callgrind); the
lock timer, armed again after most ShareFetch rounds, arms a bare handle and becomes a
SessionTimer only once due (``fallen_due``).
Not thread-safe; the event loop that made a timer owns it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

__all__ = ["EXPIRY_TURNS", "SessionTimer"]

logger = logging.getLogger(__name__)


# Loop turns (call_soon hops) between a session timer falling due and the expiry. After a stop
# (SIGSTOP; tests/unit/test_session_timer.py) both loops run the timer (hop 0) and hop 1 before
# the poll that reads the waiting heartbeat; hop 2 and the handler's first step (which cancels
# this timer) then run in the same turn, in that order: 3 is the least that counts the
# heartbeat (the test fails with 2). Two more for a heartbeat read a poll later (more sockets
# ready than one epoll_wait returns) or a handler one hop further (ShareFetch applies its
# acknowledgements in a task of their own); a hop costs one callback, on an expiry only.
EXPIRY_TURNS = 5

# A timer that acts this late after its deadline acted after a stall: logged (DEBUG from
# LATE_DEBUG_S; from LATE_INFO_S one INFO a stall, naming how many timers fell due in it: ``_late``),
# so a member removed or a lock released then can be told from one that ran out with the loop
# running (the loop monitor logs the stall itself from 1 s).
LATE_DEBUG_S = 0.1
LATE_INFO_S = 0.5


class SessionTimer:
    """A ``call_later`` handle whose callback runs ``EXPIRY_TURNS`` loop turns after its
    deadline (the module docstring says why); ``cancel`` stops it at any point of the way."""

    __slots__ = ("_loop", "_handle", "_turns", "_callback", "_args", "_due")

    def __init__(self, loop: asyncio.AbstractEventLoop, delay_s: float, callback: Callable[..., None],
                 args: tuple[Any, ...]) -> None:
        self._loop = loop
        self._callback = callback
        self._args = args
        self._turns = 0
        self._due = due = loop.time() + delay_s
        self._handle: asyncio.Handle | None = loop.call_at(due, self._turn)

    @classmethod
    def fallen_due(cls, loop: asyncio.AbstractEventLoop, due: float, callback: Callable[..., None],
                   args: tuple[Any, ...]) -> "SessionTimer":
        """The rest of a SessionTimer whose deadline ``due`` (the loop's time) a bare
        ``call_later`` handle met (this is called from its callback, the first turn): for a timer
        armed far more often than it falls due, the queues' lock timer, whose arming then costs
        nothing more than before."""
        timer = cls.__new__(cls)
        timer._loop, timer._callback, timer._args, timer._due = loop, callback, args, due
        timer._turns = 1
        timer._handle = loop.call_soon(timer._turn)
        return timer

    def _turn(self) -> None:
        if self._turns < EXPIRY_TURNS:
            self._turns += 1
            self._handle = self._loop.call_soon(self._turn)
            return
        self._handle = None
        late_s = self._loop.time() - self._due
        if late_s >= LATE_DEBUG_S:
            _late(self._loop, self._due, late_s, self._callback)
        self._callback(*self._args)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class _Stall:
    """The timers that fell due during one stall and acted late: its INFO line, logged at the
    end of the loop turn its first late timer acted in (the others of the stall act in that same
    turn: they all ran their first hop when the loop came back), names how many."""

    __slots__ = ("loop", "seen_at", "first", "late_s", "count", "reported")

    def __init__(self, loop: asyncio.AbstractEventLoop, seen_at: float, first: str, late_s: float) -> None:
        self.loop, self.seen_at, self.first, self.late_s = loop, seen_at, first, late_s
        self.count = 1
        self.reported = False

    def report(self) -> None:
        self.reported = True
        logger.info("%s runs %.0f ms after its deadline (the loop was held up), the first of %d timer%s that fell "
                    "due during the stall (the others logged at DEBUG); the requests that were waiting in the "
                    "sockets read first", self.first, self.late_s * 1000, self.count, "" if self.count == 1 else "s")


_stall: _Stall | None = None  # the last stall's late timers (a broker has one loop)


def _late(loop: asyncio.AbstractEventLoop, due: float, late_s: float, callback: Callable[..., None]) -> None:
    """A timer acting ``late_s`` after its deadline ``due`` (>= LATE_DEBUG_S): one INFO a stall
    (the first timer acting LATE_INFO_S late or more opens it), every other late timer DEBUG: a
    stall with hundreds of share-partitions' lock timers due was as many INFO lines for one event
    (the loop monitor WARNs about the stall itself)."""
    global _stall
    name = getattr(callback, "__qualname__", callback)
    stall = _stall
    if stall is not None and stall.loop is loop and due <= stall.seen_at:  # fell due in that stall too
        if not stall.reported:
            stall.count += 1
    elif late_s >= LATE_INFO_S:
        _stall = _Stall(loop, loop.time(), name, late_s)
        loop.call_soon(_stall.report)
        return
    logger.debug("%s runs %.0f ms after its deadline (the loop was held up), the requests that were waiting in "
                 "the sockets read first", name, late_s * 1000)
