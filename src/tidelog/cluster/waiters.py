"""The waits on partitions: acknowledgements waiting for a leader's high watermark to pass their
end offsets, and fetches parked until a partition has something new to read (a long poll).

A Partition owns one ``AckWaiters`` and two ``ParkedReads``; it releases the first as its high
watermark moves (or fails them when it stops leading). Consumers' fetches (and every other
reader below the high watermark) park in ``parked_reads``, woken when the high watermark moves;
followers' fetches, which read up to the log end, in ``parked_replica_reads``, woken by each
append. A leadership change or a transaction marker wakes both. ``wait_for_acks`` and ``wait_for_data`` are
the waits callers use, over any number of partitions at once: one future per partition still
waiting, never a task each. Not thread-safe; the event loop owns them.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import math
from typing import TYPE_CHECKING, Iterable, Protocol

from tidelog.protocol.errors import ErrorCode

if TYPE_CHECKING:
    from tidelog.storage.log import PartitionLog
    from tidelog.storage.manager import LogManager

__all__ = ["AckWaiters", "ParkedReads", "Waitable", "parked_fetch_count", "wait_for_acks", "wait_for_data"]

logger = logging.getLogger(__name__)

PRUNE_AT = 64  # waiters kept before those already answered (timed out) are forgotten


class AckWaiters:
    """acks=all appends waiting for the high watermark: (end offset, future of an ErrorCode),
    in end offset order (appends come in that order; a late one is inserted in place), so a
    high watermark move answers a prefix and looks at nothing else: with a producer's hundreds
    of pipelined requests waiting, each move once walked and rebuilt the whole list, and each
    new waiter beyond PRUNE_AT did too."""

    __slots__ = ("_waiters", "_prune_at")

    def __init__(self) -> None:
        self._waiters: list[tuple[int, asyncio.Future]] = []
        self._prune_at = PRUNE_AT

    def __len__(self) -> int:
        return len(self._waiters)

    def add(self, end_offset: int) -> asyncio.Future:
        """A future answered once the high watermark reaches ``end_offset`` (or the leadership goes)."""
        future = asyncio.get_running_loop().create_future()
        waiters = self._waiters
        if len(waiters) >= self._prune_at:  # timed-out waiters of a stuck high watermark: amortised
            waiters[:] = [w for w in waiters if not w[1].done()]
            self._prune_at = max(PRUNE_AT, 2 * len(waiters))
        if waiters and waiters[-1][0] > end_offset:
            waiters.insert(bisect.bisect_right(waiters, end_offset, key=_end_offset), (end_offset, future))
        else:
            waiters.append((end_offset, future))
        return future

    def release(self, high_watermark: int) -> None:
        """Answer ErrorCode.none to every waiter whose end offset is at or below ``high_watermark``."""
        waiters = self._waiters
        if not waiters or waiters[0][0] > high_watermark:
            return
        count = len(waiters) if waiters[-1][0] <= high_watermark else bisect.bisect_right(
            waiters, high_watermark, key=_end_offset)
        for _, future in waiters[:count]:
            if not future.done():
                future.set_result(ErrorCode.none)
        del waiters[:count]

    def fail(self, error: ErrorCode) -> None:
        """Answer every waiter with ``error``."""
        waiters, self._waiters = self._waiters, []
        for _, future in waiters:
            if not future.done():
                future.set_result(error)


def _end_offset(waiter: tuple[int, asyncio.Future]) -> int:
    return waiter[0]


class ParkedReads:
    """Fetches parked on a partition until it has data (each a future that may wait on several partitions)."""

    __slots__ = ("_futures",)

    def __init__(self) -> None:
        self._futures: set[asyncio.Future] = set()

    def __len__(self) -> int:
        return len(self._futures)

    def __iter__(self):
        return iter(self._futures)

    def add(self, future: asyncio.Future) -> None:
        self._futures.add(future)

    def discard(self, future: asyncio.Future) -> None:
        self._futures.discard(future)

    def wake(self) -> None:
        """Wake every parked fetch (it reads again)."""
        if self._futures:
            futures, self._futures = self._futures, set()
            for future in futures:
                if not future.done():
                    future.set_result(None)


class Waitable(Protocol):
    """What the waits use of a partition (cluster/partition.py's Partition)."""

    log: "PartitionLog"
    ack_waiters: AckWaiters
    isr_shortfalls: int  # times the ISR fell below min.insync.replicas while leading
    parked_reads: ParkedReads
    parked_replica_reads: ParkedReads

    def acks_all_outcome(self, end_offset: int, shortfalls: int | None = None) -> ErrorCode | None:
        """acks=all's answer for ``end_offset`` now, or None while the high watermark is below it
        (NOT_ENOUGH_REPLICAS_AFTER_APPEND if the ISR fell short since ``isr_shortfalls`` was
        ``shortfalls``)."""


async def wait_for_acks(appended: list[tuple[Waitable, int]], required_acks: int, timeout_s: float,
                        logs: "LogManager", *, durability_in_timeout: bool = False) -> list[ErrorCode]:
    """Wait until each (partition, end offset) is acknowledged as ``required_acks`` asks; one
    error code per entry (REQUEST_TIMED_OUT, NOT_LEADER_OR_FOLLOWER,
    NOT_ENOUGH_REPLICAS_AFTER_APPEND, ...).

    Every log is first durable under its topic's profile (one group-commit wait for all of
    them; raises KafkaError when that fails: KAFKA_STORAGE_ERROR, or UNKNOWN_TOPIC_OR_PARTITION
    for a partition deleted meanwhile). acks=all then waits for the high watermarks, with one
    future per partition still below its end offset rather than a task each.

    ``timeout_s`` bounds the whole wait, the flush included (a Produce's timeout_ms, as Kafka's
    purgatory bounds it; a coordinator's own write: ``offsets.commit.timeout.ms``): a flush that
    has not ended by then (a stuck disk) answers every entry REQUEST_TIMED_OUT, the records
    appended all the same (the client's retry, an idempotent producer's, is answered as a
    duplicate). Every wait is bounded so (ptimeout15; before, a Produce's wait for the flush had
    no timeout at all); ``durability_in_timeout`` now only says the caller is an internal writer,
    which logs its own timeouts: its waits are left out of the stuck-flush WARNING here."""
    if required_acks == 0 or not appended:
        return [ErrorCode.none] * len(appended)
    # acks=all: how often each partition's ISR had fallen short of min.insync.replicas when the
    # wait began (right after the append): a wait that outlasts a shortfall is not acknowledged.
    shortfalls = [partition.isr_shortfalls for partition, _ in appended] if required_acks == -1 else None
    durable = logs.durable_waiter([(partition.log, end_offset) for partition, end_offset in appended])
    deadline = None
    if durable is not None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        if durable.__class__ is asyncio.Future:  # the balanced group commit's future, this wait's own
            # No timer of its own: the loop's FlushDeadlines answers it if its deadline passes
            # first (one timer for all waits, usually armed once a timeout) and it is awaited
            # directly, the group commit's answer waking this request itself.
            deadlines = _flush_deadlines
            if deadlines is None or deadlines.loop is not loop:
                deadlines = flush_deadlines(loop)
            if deadline < deadlines.timer_at or len(deadlines.waits) >= deadlines.prune_at:
                deadlines.add(deadline, durable, not durability_in_timeout)
            else:  # add's common case, inline (a call less on every Produce)
                deadlines.waits.append((deadline, durable, not durability_in_timeout))
            try:
                await durable
            except _FlushTimedOut:
                logs.forget_answered([partition.log for partition, _ in appended])
                return [ErrorCode.request_timed_out] * len(appended)
            except BaseException:  # cancelled (its connection closed): nobody waits any more either
                logs.forget_answered([partition.log for partition, _ in appended])
                raise
        else:  # the durable profile's tasks (a fsync each), with any balanced part gathered
            try:
                in_time = await _done_within(durable, timeout_s)
            except asyncio.CancelledError:
                logs.forget_answered([partition.log for partition, _ in appended])
                raise
            if not in_time:
                logs.forget_answered([partition.log for partition, _ in appended])
                flush_deadlines(loop).note(1, 0 if durability_in_timeout else 1)
                return [ErrorCode.request_timed_out] * len(appended)
            if _flush_deadlines is not None and _flush_deadlines.stuck:  # on time: the episode's end
                _flush_deadlines.note(0, 0)
    if required_acks != -1:
        return [ErrorCode.none] * len(appended)
    outcomes: list[ErrorCode | asyncio.Future] = []
    pending = []
    for (partition, end_offset), since in zip(appended, shortfalls):
        outcome = partition.acks_all_outcome(end_offset, since)
        if outcome is None:
            outcome = partition.ack_waiters.add(end_offset)
            pending.append(outcome)
        outcomes.append(outcome)
    if pending:
        # Each future awaited in turn, not asyncio.wait: the high watermark's move then wakes
        # this request itself, where asyncio.wait's own callback would wake it a loop turn
        # later (a busy leader's turn, on every acks=all Produce). The timeout answers what is
        # still waiting REQUEST_TIMED_OUT (done futures are pruned from the AckWaiters).
        loop = asyncio.get_running_loop()
        timer = (loop.call_later(timeout_s, _timed_out, pending) if deadline is None
                 else loop.call_at(deadline, _timed_out, pending))
        try:
            for future in pending:
                await future
        finally:
            timer.cancel()
    errors = []
    for (partition, end_offset), outcome, since in zip(appended, outcomes, shortfalls):
        if isinstance(outcome, asyncio.Future):
            outcome = outcome.result()
            if outcome == ErrorCode.none:
                outcome = partition.acks_all_outcome(end_offset, since) or ErrorCode.none
        errors.append(outcome)
    return errors


class _FlushTimedOut(Exception):
    """Set on a group commit's future whose wait's deadline passed first (FlushDeadlines)."""


class FlushDeadlines:
    """The deadlines of one loop's waits on group-commit flushes: (deadline, future), answered
    _FlushTimedOut by one timer at the earliest deadline, rather than a timer (and a future and
    a callback) for each wait: a Produce's flush is nearly always on time, and a timer a Produce
    was a measurable part of the produce path. The timer is armed when a wait's deadline comes
    before it (the first wait after an idle spell; a shorter timeout than those waiting), so
    under steady load about once a timeout; the waits already answered are forgotten when it
    fires and as the list grows (amortised, as AckWaiters prunes). The group commit skips a
    future that is done, so its late answer is dropped. One WARNING a stuck episode (waits timing
    out; an internal writer's waits are left out, it logs its own), one INFO when the flushes are
    on time again."""

    __slots__ = ("loop", "waits", "_timer", "timer_at", "prune_at", "stuck", "timeouts")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.waits: list[tuple[float, asyncio.Future, bool]] = []  # (deadline, future, warn)
        self._timer: asyncio.TimerHandle | None = None
        self.timer_at = math.inf
        self.prune_at = PRUNE_AT
        self.stuck = False
        self.timeouts = 0  # waits answered REQUEST_TIMED_OUT, ever

    def __len__(self) -> int:
        return len(self.waits)

    def add(self, deadline: float, future: asyncio.Future, warn: bool = True) -> None:
        waits = self.waits
        if len(waits) >= self.prune_at:
            waits[:] = [w for w in waits if not w[1].done()]
            self.prune_at = max(PRUNE_AT, 2 * len(waits))
        waits.append((deadline, future, warn))
        if deadline < self.timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self.loop.call_at(deadline, self._expire)
            self.timer_at = deadline

    def _expire(self) -> None:
        self._timer, self.timer_at = None, math.inf
        now = self.loop.time() + 0.001  # call_at runs a timer up to the clock's resolution early
        kept = []
        next_at = math.inf
        expired = warned = 0
        for wait in self.waits:
            deadline, future, warn = wait
            if future.done():
                continue
            if deadline <= now:
                future.set_exception(_FlushTimedOut())
                expired += 1
                warned += warn
            else:
                kept.append(wait)
                next_at = min(next_at, deadline)
        self.waits = kept
        self.prune_at = max(PRUNE_AT, 2 * len(kept))
        if kept:
            self._timer = self.loop.call_at(next_at, self._expire)
            self.timer_at = next_at
        self.note(expired, warned)

    def note(self, expired: int, warned: int) -> None:
        """``expired`` waits just answered REQUEST_TIMED_OUT, ``warned`` of them not an internal
        writer's: the episode's WARNING, or its end's INFO (none expired)."""
        self.timeouts += expired
        if warned:
            if not self.stuck:
                self.stuck = True
                logger.warning("%d acknowledgement waits answered REQUEST_TIMED_OUT: the log flush (fsync) did not end "
                               "within their timeouts (a stuck or very slow disk?); their records stay appended, "
                               "retries are answered as duplicates (logged once until the flushes are on time again)",
                               warned)
        elif self.stuck and not expired:
            self.stuck = False
            logger.info("log flushes end within the acknowledgement waits' timeouts again")


_flush_deadlines: FlushDeadlines | None = None


def flush_deadlines(loop: asyncio.AbstractEventLoop) -> FlushDeadlines:
    """The FlushDeadlines of ``loop`` (a broker has one loop; a test may run several in turn)."""
    global _flush_deadlines
    deadlines = _flush_deadlines
    if deadlines is None or deadlines.loop is not loop:
        deadlines = _flush_deadlines = FlushDeadlines(loop)
    return deadlines


async def _done_within(future: asyncio.Future, timeout_s: float) -> bool:
    """Whether ``future`` ended within ``timeout_s`` (its exception raised here if it failed).
    Past it (or the waiter cancelled) ``future`` is cancelled: nobody reads its outcome, and a
    balanced part's future, cancelled, is forgotten by the group commit's registry
    (LogManager.forget_answered) rather than kept until the flush ends. The flushes themselves go
    on: the durable profile's tasks wait on their fsync shielded, the group commit skips a
    future that is done."""
    if not future.done():
        loop = asyncio.get_running_loop()
        ended = loop.create_future()

        def on_done(_: asyncio.Future) -> None:
            if not ended.done():
                ended.set_result(True)

        future.add_done_callback(on_done)
        timer = loop.call_later(timeout_s, _time_up_false, ended)
        try:
            in_time = await ended
        except BaseException:  # the waiter is cancelled: nobody reads the outcome either
            future.remove_done_callback(on_done)
            _abandon(future)
            raise
        finally:
            timer.cancel()
        if not in_time:
            future.remove_done_callback(on_done)
            _abandon(future)
            return False
    future.result()
    return True


def _time_up_false(ended: asyncio.Future) -> None:
    if not ended.done():
        ended.set_result(False)


def _abandon(future: asyncio.Future) -> None:
    """A wait nobody reads any more: cancelled, or (done meanwhile) its outcome retrieved."""
    if not future.cancel():
        _drop_outcome(future)


def _drop_outcome(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()  # retrieved: the wait it was for has been answered already


def _timed_out(futures: list[asyncio.Future]) -> None:
    for future in futures:
        if not future.done():
            future.set_result(ErrorCode.request_timed_out)


async def wait_for_data(partitions: Iterable[Waitable], timeout_s: float, replica: bool = False) -> None:
    """Return when one of ``partitions`` gets data to read (for a consumer: a high watermark
    move; for a follower, ``replica``: an append), a leadership change, or after ``timeout_s``."""
    loop = asyncio.get_running_loop()
    waiter = loop.create_future()
    parked = [partition.parked_replica_reads if replica else partition.parked_reads for partition in partitions]
    for reads in parked:
        reads.add(waiter)
    # Not asyncio.wait_for: on 3.11 it waits on a second future that a callback of this one
    # sets, one more loop turn between the wake-up and the read.
    timer = loop.call_later(timeout_s, _time_up, waiter)
    try:
        await waiter
    finally:
        timer.cancel()
        for reads in parked:
            reads.discard(waiter)


def _time_up(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_result(None)


def parked_fetch_count(partitions: Iterable[Waitable]) -> int:
    """Fetches parked on any of ``partitions`` (one that waits on several counts once): the fetch purgatory's size."""
    return len({future for partition in partitions for reads in (partition.parked_reads, partition.parked_replica_reads)
                for future in reads})
