"""A share-partition: one share group's delivery state of one topic-partition (KIP-932's SharePartition).

Records between the **start offset** and the **next offset** (the in-flight window) are held as
*runs*: contiguous offsets sharing a state, a delivery count, an owner and timers. Records below
the start offset are done (acknowledged or archived); records at and above the next offset have
never been acquired. Memory is bounded by the window (``max_in_flight_records``,
``group.share.partition.max.record.locks``), never by the log: runs split only where states differ
and merge back when neighbours become equal.

Offsets of the window that no run holds are **gaps**: records archived before they were ever
delivered (a filter's, issue 14), delivery count 0. An acquisition makes a gap of the records it
archives right after a run it makes (a filter keeping 1 record in 4 would otherwise make a run
object a match and another for the records after it, made, committed and dropped); the gap is
finished with that run: pending while the transition that made them is (``_gapped``), passed by
the start offset once the run before it is, made Available runs again by a rollback. Describing
(``runs``, ``state_batches``, ``counts_by_state``) shows a gap as an Archived run.

States (Kafka's RecordState and their persisted ids): Available (0), Acquired (1, persisted as
Available with its delivery count), Acknowledged (2), Archived (4).

- ``acquire``: Available records become Acquired by a member, delivery count + 1, locked until
  now + ``record_lock_duration_ms``. Which Available records are taken is the job of a
  ``SelectionPolicy`` (default ``OffsetOrder``) over the records the caller read from the log;
  ``batch_optimized`` mode cuts at log-batch boundaries (MaxRecords may be exceeded to finish a
  batch), ``record_limit`` mode acquires at most MaxRecords. New records enter the window in whole
  log batches. A record near the delivery limit is delivered in smaller groups, alone on its last
  attempt (Kafka 4.2's throttling), so one poison record does not take its batch to the archive.
- ``acknowledge``: ACCEPT -> Acknowledged, RELEASE -> Available (after an optional delay) or
  Archived at the delivery limit, REJECT -> Archived, GAP -> Archived, RENEW -> a fresh lock.
  Every offset must be Acquired by the acknowledging member, else INVALID_RECORD_STATE and nothing
  changes; malformed batches are INVALID_REQUEST.
- ``expire_locks``: Acquired records past their lock become Available, or Archived at the limit.
- ``release_member``: a member's Acquired records become Available (a clean close does not count
  the delivery, as Kafka 4.2; a failed member's does).
- ``move_log_start``: records deleted from the log are archived and the start offset follows.

Every change except RENEW is a ``Transition``: applied at once but *pending* (its records cannot be
acquired or acknowledged) until the caller has made it durable and calls ``commit``, or
``rollback`` if that failed. A transition lists the state batches to persist and the records to
dead-letter, which must be written before the transition is made durable. After a commit the
start offset advances past the leading Acknowledged/Archived records.

The runs and transitions are in_flight.py's, the log batches of a read log_batches.py's, the
selection policies selection.py's, the acknowledgement types and the requests' shape checks
acks.py's; this module is the state machine over them.

Not thread-safe: the event loop owns it; it does no I/O and reads no clock (times are passed in).
"""

from __future__ import annotations

import functools
import gc
import math
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from itertools import accumulate, islice, repeat, takewhile
from operator import attrgetter, eq, is_, itemgetter, sub
from typing import Callable, Iterable, Sequence

from tidelog.protocol.errors import ErrorCode, KafkaError
# AckBatch, AcknowledgeType and AcquireMode are acks.py's; importers may keep using this module.
from tidelog.queues.acks import AckBatch, AckBatches, AcknowledgeType, AcquireMode, ack_ranges, check_ack_batches
from tidelog.queues.in_flight import (
    DEAD_LETTER_REASONS,
    NO_MEMBER,
    TERMINAL,
    ArchiveReason,
    DeadLetter,
    Mosaic,
    RecordState,
    Run,
    RunList,
    Transition,
    finish,
    joined,
)
from tidelog.queues.log_batches import AcquiredColumns, AcquiredRecords, BatchBounds, LogBatch, cut_at_batches
from tidelog.queues.selection import OFFSET_ORDER, Candidate, OffsetOrder, SelectionPolicy
from tidelog.queues.state_records import StateBatch, TiledBatches, tiled


@dataclass(frozen=True)
class SharePartitionConfig:
    """The share group's settings a share-partition needs (group configs over broker defaults)."""

    delivery_count_limit: int = 5
    record_lock_duration_ms: int = 30000
    max_in_flight_records: int = 2000
    # Delay before a released or lock-expired record is Available again, by its delivery count
    # (issue 14's retry back-off). None: at once, as Kafka.
    redelivery_delay_ms: Callable[[int], int] | None = None

    @property
    def throttle_delivery_count(self) -> int:
        """Records delivered this often are acquired in shrinking groups (Kafka: half the limit, at least 2)."""
        return max(2, math.ceil(self.delivery_count_limit / 2))


def _persisted_state(state: RecordState) -> int:
    return 0 if state == RecordState.ACQUIRED else int(state)


def _persisted_available_at(run: Run) -> int:
    """An Available run's retry back-off deadline (kept across restarts); 0 for the rest. A record
    not yet due by its headers (tidelog-delay-ms) is Available with a due time too: persisting it
    changes nothing, the headers say it again."""
    return run.available_at_ms if run.state == RecordState.AVAILABLE else 0


def _collector_waits(method):
    """The cyclic garbage collector does not run in the middle of ``method`` (a step of the state
    machine: bounded by the window, no I/O, no await): a filter's step makes thousands of run and
    state-batch objects, and the collections they triggered inside it walked them while they were
    still being made (about a fifth of such a fetch's CPU). Whatever it made is collected as usual
    right after; the collector's thresholds are untouched."""
    @functools.wraps(method)
    def waiting(*args, **kwargs):
        if not gc.isenabled():
            return method(*args, **kwargs)
        gc.disable()
        try:
            return method(*args, **kwargs)
        finally:
            gc.enable()
    return waiting


_PERSISTED_STATES = {state: _persisted_state(state) for state in RecordState}
_ACQUIRE = None  # the tag of a range acquire() takes (the ranges it archives are tagged with their reason)
_FRESH = (RecordState.AVAILABLE, 0, NO_MEMBER, 0, 0)  # Run.fields() of a record never delivered
_FIRST = attrgetter("first")
_LAST = attrgetter("last")
_START = itemgetter(0)
_END = itemgetter(1)
_TAG = itemgetter(2)
_ACCEPTED = (AcknowledgeType.ACCEPT,)
_ANY = bool  # (a run is true: every one)
_new_batch = functools.partial(tuple.__new__, StateBatch)  # StateBatch(*fields) without its Python __new__
_new_acquired = functools.partial(tuple.__new__, AcquiredRecords)


class SharePartition:
    def __init__(self, config: SharePartitionConfig, start_offset: int, state_epoch: int = 0) -> None:
        self.config = config
        self.start_offset = start_offset
        self.next_offset = start_offset
        self.state_epoch = state_epoch
        self._runs = RunList()
        self._gapped: list[Transition] = []  # the pending transitions that made gaps (their ``gaps``)

    # --- loading ------------------------------------------------------------------------------
    @classmethod
    def from_state(cls, config: SharePartitionConfig, start_offset: int, batches: Iterable[StateBatch],
                   state_epoch: int, now_ms: int) -> "SharePartition":
        """The share-partition as its durable state describes it. Records persisted Available that
        have used up their deliveries were acquired when the broker stopped: they come back Acquired
        with an expired lock, so the next ``expire_locks`` archives (and dead-letters) them."""
        sp = cls(config, start_offset, state_epoch)
        position = start_offset
        for b in sorted(batches):
            first = max(b.first_offset, position)
            if b.last_offset < first:
                continue
            if first > position:
                sp._runs.append(Run(position, first - 1, RecordState.AVAILABLE, 0))
            state = RecordState(b.delivery_state) if b.delivery_state in (0, 2, 4) else RecordState.AVAILABLE
            if state == RecordState.AVAILABLE and b.delivery_count >= config.delivery_count_limit:
                sp._runs.append(Run(first, b.last_offset, RecordState.ACQUIRED, b.delivery_count, NO_MEMBER, now_ms))
            elif state == RecordState.AVAILABLE and b.available_at_ms > now_ms:  # a retry back-off still running
                sp._runs.append(Run(first, b.last_offset, state, max(0, b.delivery_count),
                                    available_at_ms=b.available_at_ms))
            else:
                sp._runs.append(Run(first, b.last_offset, state, max(0, b.delivery_count)))
            position = b.last_offset + 1
        sp.next_offset = position
        sp._advance_start()
        sp._runs.coalesce()
        return sp

    # --- queries ------------------------------------------------------------------------------
    @property
    def in_flight_records(self) -> int:
        return max(0, self.next_offset - self.start_offset)

    def runs(self) -> list[tuple[int, int, RecordState, int, str]]:
        """(first, last, state, delivery count, member) of every run, and of every gap of the window
        as an Archived run, in offset order, for describing and tests."""
        out = []
        start, end = self.start_offset, self.next_offset
        after = None  # the offset after the previous run
        for r in self._expanded():
            if after is not None and after < r.first and r.first > start:
                out.append((after, r.first - 1, RecordState.ARCHIVED, 0, NO_MEMBER))
            out.append((r.first, r.last, r.state, r.delivery_count, r.member_id))
            after = r.last + 1
        if after is not None and after < end and end > start:
            out.append((after, end - 1, RecordState.ARCHIVED, 0, NO_MEMBER))
        return out

    def _expanded(self) -> Iterable[Run]:
        """The runs, a mosaic as the runs it stands for."""
        for run in self._runs:
            if type(run) is Mosaic:
                yield from run.pieces()
            else:
                yield run

    def state_of(self, offset: int) -> tuple[RecordState, int, str] | None:
        run = self._runs.find(offset)
        if type(run) is Mosaic:
            run = next(piece for piece in run.pieces() if piece.first <= offset <= piece.last)
        if run is None:
            return (RecordState.ARCHIVED, 0, NO_MEMBER) if self.start_offset <= offset < self.next_offset else None
        return (run.state, run.delivery_count, run.member_id)

    def fetch_offset(self, now_ms: int) -> int | None:
        """Where a log read for an acquisition should start now: the first Available record that is
        due, else the next offset while the window has room; None when nothing can be acquired."""
        for run in self._runs:
            if run.last < self.start_offset:
                continue
            if run.state == RecordState.AVAILABLE and run.pending is None and run.available_at_ms <= now_ms:
                return max(run.first, self.start_offset)
        if self.in_flight_records < self.config.max_in_flight_records:
            return self.next_offset
        return None

    def next_deadline_ms(self) -> int | None:
        """The earliest future moment something changes by itself: a lock expiring or a delayed record
        becoming available. The owner arms one timer for it."""
        deadline = None
        acquired, available = RecordState.ACQUIRED, RecordState.AVAILABLE
        for run in self._runs:  # (a filter's window has hundreds of runs: the cheap tests first)
            state = run.state
            if state == acquired:
                moment = run.lock_deadline_ms
            elif state == available and run.available_at_ms:
                moment = run.available_at_ms
            else:
                continue
            if run.pending is None and (deadline is None or moment < deadline):
                deadline = moment
        return deadline

    def available(self, now_ms: int) -> tuple[list[tuple[int, int]], int]:
        """For describing: the ranges of Available records due now, and how many Available records
        wait for their time (a delay, a retry back-off)."""
        due: list[tuple[int, int]] = []
        waiting = 0
        for run in self._runs:
            if run.state != RecordState.AVAILABLE or run.last < self.start_offset:
                continue
            first = max(run.first, self.start_offset)
            if run.available_at_ms > now_ms:
                waiting += run.last - first + 1
            else:
                due.append((first, run.last))
        return due, waiting

    def delivery_complete_count(self, start_offset: int | None = None) -> int:
        """Acknowledged or Archived records at or after the start offset (``start_offset`` when
        given: a transition's, ``Transition.start_offset``), KIP-1226's lag input."""
        start = self.start_offset if start_offset is None else max(start_offset, self.start_offset)
        runs = self._runs
        i = runs.index_of(start)  # (what is below it is not walked: an acknowledgement's write moves it past hundreds)
        if i < len(runs) and runs[i].first < start:
            run = runs[i]
            i += 1
            if type(run) is Mosaic and run.state not in TERMINAL:
                total = sum(piece.last - max(piece.first, start) + 1 for piece in run.pieces()
                            if piece.state in TERMINAL and piece.last >= start)
            else:
                total = run.last - start + 1 if run.state in TERMINAL else 0
            position = run.last + 1
        else:
            total = 0
            position = start
        terminal = TERMINAL
        for run in runs[i:]:
            first = run.first
            if first > position:  # a gap
                total += first - position
            if run.state in terminal:
                total += run.last - first + 1
            elif type(run) is Mosaic:  # (its Archived records between the taken ones)
                total += run.last - first + 1 - run.taken
            position = run.last + 1
        if position < self.next_offset:  # a gap at the end
            total += self.next_offset - position
        return total

    def counts_by_state(self) -> dict[str, int]:
        counts = {state.name.lower(): 0 for state in RecordState}
        for first, last, state, _count, _member in self.runs():
            if last >= self.start_offset:
                counts[state.name.lower()] += last - max(first, self.start_offset) + 1
        return counts

    def state_batches(self) -> list[StateBatch]:
        """The whole window as it would be persisted (pending changes included; a gap Archived)."""
        start = self.start_offset
        batches = []
        position = start
        for r in self._expanded():
            if r.last < start:
                continue
            if r.first > position:
                batches.append(StateBatch(position, r.first - 1, int(RecordState.ARCHIVED), 0))
            batches.append(StateBatch(max(r.first, start), r.last, _persisted_state(r.state), r.delivery_count,
                                      _persisted_available_at(r)))
            position = r.last + 1
        if position < self.next_offset:
            batches.append(StateBatch(position, self.next_offset - 1, int(RecordState.ARCHIVED), 0))
        return batches

    def acquired_by(self, member_id: str) -> list[tuple[int, int]]:
        return [(r.first, r.last) for r in self._expanded() if r.state == RecordState.ACQUIRED and r.member_id == member_id]

    # --- acquisition --------------------------------------------------------------------------
    @_collector_waits
    def acquire(self, member_id: str, batches: Sequence[LogBatch], max_records: int, now_ms: int, *,
                batch_size: int | None = None, mode: AcquireMode = AcquireMode.BATCH_OPTIMIZED,
                policy: SelectionPolicy = OFFSET_ORDER) -> Transition:
        """Acquire up to ``max_records`` Available records among ``batches`` (read from the log at
        ``fetch_offset``) for ``member_id``. ``transition.acquired`` lists the ranges to return."""
        t = Transition()
        if not batches or max_records <= 0:
            return t
        read_first = max(batches[0].base_offset, self.start_offset)
        read_last = batches[-1].last_offset
        if read_last < read_first:
            return t
        if read_last >= self.next_offset:
            due = self._due_available(read_first, min(read_last, self.next_offset - 1), now_ms)
            wanted = max(0, max_records - due) + max(0, policy.lookahead_records)
            room = self.config.max_in_flight_records - self.in_flight_records
            if min(wanted, room) > 0:
                self._enter_window(batches, min(wanted, room))
        candidates = self._candidates(read_first, read_last, now_ms,
                                      max_records if isinstance(policy, OffsetOrder) else None)
        if not candidates:
            return t
        bounds = BatchBounds(batches)
        deadline = now_ms + self.config.record_lock_duration_ms
        # First choose (nothing changes meanwhile: the ranges a policy yields do not overlap), then
        # split the runs for all the chosen pieces in one walk: a filter or priorities may choose
        # hundreds of single records, and a search and split of the run list per piece was most
        # of such an acquisition's cost.
        runs = self._runs
        pieces: list[tuple[int, int, object]] = []
        acquired_count = 0
        config = self.config
        # Below this delivery count no record is throttled (_throttled_limit is None): most are.
        throttled_from = min(config.throttle_delivery_count,
                             config.delivery_count_limit - 1 if config.delivery_count_limit > 2 else 1 << 62)
        n = len(runs)
        available = RecordState.AVAILABLE
        columns = getattr(policy, "columns", None)
        if columns is not None:  # (a filter alone: the policy's ranges as columns, one mosaic made of them)
            columns = columns(candidates, now_ms)
            if columns is not None and self._take_columns(t, columns, member_id, max_records, mode, bounds, deadline):
                self._record(t, built=True)
                t.acquired = cut_at_batches(t.acquired, bounds,
                                            batch_size if mode == AcquireMode.BATCH_OPTIMIZED else None)
                return t
        order = policy.order(candidates, now_ms)
        if isinstance(order, list) and len(order) > 1 \
                and self._in_one_run(order, read_first, read_last, now_ms, throttled_from):
            # (a filter's matches in the window's Available tail, the usual case: no walk per match)
            acquired_count = self._take_in_order(order, pieces, max_records, mode, bounds)
            order = ()
        for first, last in order:
            if acquired_count >= max_records:
                break
            stop = False
            low = first if first > read_first else read_first
            high = last if last < read_last else read_last
            i = bisect_right(runs, low, key=_FIRST) - 1  # (no list of the window's firsts per acquisition)
            if i < 0:
                i = 0
            while i < n and runs[i].first <= high:
                run = runs[i]
                i += 1
                if run.last < low or run.state != available or run.pending is not None \
                        or run.available_at_ms > now_ms:
                    continue
                if acquired_count >= max_records:
                    break
                seg_first = run.first if run.first > low else low
                seg_last = run.last if run.last < high else high
                remaining = max_records - acquired_count
                limit = None if run.delivery_count < throttled_from else \
                    self._throttled_limit(run.delivery_count, bounds.batch_size_at(seg_first))
                if limit is not None and acquired_count > 0:
                    stop = True  # a much-redelivered record waits for a fetch of its own
                    break
                take = seg_last - seg_first + 1
                if limit is not None:
                    take = min(take, limit)
                if take > remaining:
                    if mode == AcquireMode.RECORD_LIMIT or limit is not None:
                        take = remaining
                    else:
                        take = min(take, bounds.end_of_batch(seg_first + remaining - 1) - seg_first + 1)
                pieces.append((seg_first, seg_first + take - 1, _ACQUIRE))
                acquired_count += take
                if limit is not None:
                    stop = True
                    break
            if stop:
                break
        self._defer(policy)
        # What the policy set aside to archive (expired, filtered out) and the records chosen, split
        # out of the runs in one walk (they do not overlap): a filter leaves them interleaved.
        discarded = getattr(policy, "discarded", ())
        if discarded and pieces:
            # Set aside up to the records taken and right after them only: what the look-ahead met
            # further on stays Available until an acquisition gets there (judged again then, from
            # the policy's cache), so that acquisition starts at a record it takes and a filter's
            # matches alternate with the records set aside between them (one mosaic a fetch).
            end = max(map(_END, pieces)) + 1
            discarded = discarded[:bisect_right(discarded, end, key=_START)]
        if discarded:
            pieces.extend(discarded)
        if not pieces:
            return t
        pieces.sort(key=_START)
        taken, redelivered, archived = self._carve(t, pieces, member_id, deadline)
        if not taken and not archived:
            return t
        if redelivered:
            t.add_count("redelivered", redelivered)
        if taken:
            t.add_count("acquired", acquired_count)
        for reason, n in archived.items():
            t.add_count(reason.value, n)
            t.add_count("archived", n)
        self._record(t, built=True)
        t.acquired = cut_at_batches(t.acquired, bounds, batch_size if mode == AcquireMode.BATCH_OPTIMIZED else None)
        return t

    def _in_one_run(self, order: list[tuple[int, int]], read_first: int, read_last: int, now_ms: int,
                    throttled_from: int) -> bool:
        """Whether every range of ``order`` lies inside the read and inside one Available run that
        ``acquire`` takes from as it is (nothing pending, due, not throttled): then each range is one
        piece and ``_take_in_order`` makes them."""
        low, high = min(map(_START, order)), max(map(_END, order))
        if low < read_first or high > read_last:
            return False
        runs = self._runs
        i = bisect_right(runs, low, key=_FIRST) - 1
        if i < 0:
            return False
        run = runs[i]
        return run.last >= high and run.state == RecordState.AVAILABLE and run.pending is None \
            and run.available_at_ms <= now_ms and run.delivery_count < throttled_from

    @staticmethod
    def _take_in_order(order: list[tuple[int, int]], pieces: list[tuple[int, int, object]], max_records: int,
                       mode: AcquireMode, bounds: BatchBounds) -> int:
        """``acquire``'s walk over ``order`` where ``_in_one_run`` holds: the ranges in order while
        fewer than ``max_records`` records are taken, the last one cut as the walk cuts it (at
        ``max_records``, or at the end of its batch in BATCH_OPTIMIZED mode), appended to ``pieces``
        tagged ``_ACQUIRE``, without a Python step per range; returns how many records they hold."""
        firsts, lasts = list(map(_START, order)), list(map(_END, order))
        taken = list(accumulate(map(sub, map((1).__add__, lasts), firsts)))  # records taken up to each range
        k = bisect_left(taken, max_records)  # the range reaching max_records (len(order): none does)
        pieces.extend(zip(firsts[:k], lasts[:k], repeat(_ACQUIRE)))
        count = taken[k - 1] if k else 0
        if k < len(order):
            first, last = firsts[k], lasts[k]
            remaining = max_records - count
            take = last - first + 1
            if take > remaining:
                take = remaining if mode == AcquireMode.RECORD_LIMIT else \
                    min(take, bounds.end_of_batch(first + remaining - 1) - first + 1)
            pieces.append((first, first + take - 1, _ACQUIRE))
            count += take
        return count

    def _carve(self, t: Transition, pieces: list[tuple[int, int, object]], member_id: str,
               deadline: int) -> tuple[list[Run], int, dict[ArchiveReason, int]]:
        """``acquire``'s pieces, (first, last, tag) in offset order, each inside one Available run:
        tagged ``_ACQUIRE`` they become Acquired by ``member_id`` until ``deadline``, else Archived
        for the tag's reason; each a new run pending in ``t``, made with its final fields in one walk
        of the run list (a filter's acquisition has hundreds: a copy, then a change, then a record
        of each, was most of its cost). Never-delivered records archived right after what this walk
        made become a gap of the window instead (``t.gaps``, no run). The Available rest of a run
        stays as it was. Sets
        ``t.state_batches`` to what ``_record`` would make of the pieces (``_record(t, built=True)``
        takes the start offset into account) and ``t.acquired`` to the acquired ranges joined as
        ``acquired_ranges`` joins them (``cut_at_batches`` is left to do); returns the acquired
        runs, how many records were redelivered and the archived counts by reason."""
        taken: list[Run] = []
        archived: dict[ArchiveReason, int] = {}
        batches: list[StateBatch] = []  # as _record would write them (joined), built on the way
        batch_last = batch_state = batch_count = None
        ranges: list[AcquiredRecords] = []  # t.acquired before the cut at batch size
        acquired_last = acquired_count = None
        made_last = None  # the last offset of the previous piece: a gap follows a piece of this walk
        done = self._carve_mosaic(t, pieces, member_id, deadline)
        if done:  # the pieces from the first one on: a mosaic; the rest (set aside further on) as follows
            mosaic = t.runs[-1]
            taken.append(mosaic)
            archived[ArchiveReason.FILTERED] = mosaic.last - mosaic.first + 1 - mosaic.taken
            if len(t.runs) > 1:  # (filtered-out records before it: a run)
                archived[ArchiveReason.FILTERED] += t.runs[0].last - t.runs[0].first + 1
            batches, ranges = t.state_batches, t.acquired
            made_last = batch_last = batches[-1].last_offset
            batch_state, batch_count = batches[-1].delivery_state, batches[-1].delivery_count
            acquired_last, acquired_count = ranges[-1].last_offset, 1
            pieces = pieces[done:]
            if not pieces:
                return taken, 0, archived
            batches = list(batches)  # (the walk goes on joining and adding to them: StateBatch)
            ranges = list(ranges)  # (AcquiredRecords)
        runs = self._runs
        redelivered = 0
        changed = t.runs
        gaps = t.gaps
        available, acquired_state, archived_state = RecordState.AVAILABLE, RecordState.ACQUIRED, RecordState.ARCHIVED
        begin = i = runs.index_of(pieces[0][0])
        n = len(runs)
        rebuilt: list[Run] = []
        current = saved = None
        try:
            for first, last, tag in pieces:
                while current is None or current.last < first:
                    if current is not None:
                        rebuilt.append(current)
                    if i >= n:
                        raise RuntimeError(f"no run holds the records {first}-{last} to acquire or archive")
                    current = runs[i]
                    i += 1
                    saved = None
                if current.first > first or current.last < last or current.state != available \
                        or current.pending is not None:
                    raise RuntimeError(f"the records {first}-{last} are not in one Available run: {current!r}")
                count = current.delivery_count
                if saved is None:
                    saved = _FRESH if count == 0 and not current.available_at_ms else current.fields()
                if current.first < first:  # the records before the piece stay as they are
                    rebuilt.append(current.copy(current.first, first - 1))
                if tag is _ACQUIRE:
                    count += 1
                    part = Run(first, last, acquired_state, count, member_id, deadline)
                    taken.append(part)
                    if count > 1:
                        redelivered += last - first + 1
                    # (what the response lists: neighbours with one delivery count joined, as acquired_ranges)
                    if acquired_last is not None and acquired_last + 1 == first and acquired_count == count:
                        ranges[-1] = _new_acquired((ranges[-1][0], last, count))
                    else:
                        ranges.append(_new_acquired((first, last, count)))
                    acquired_last, acquired_count = last, count
                    state = 0  # (persisted as Available with its delivery count)
                else:
                    # (never delivered, after a piece of this walk: a gap, finished with that piece)
                    part = None if saved is _FRESH and made_last == first - 1 else \
                        Run(first, last, archived_state, count)
                    archived[tag] = archived.get(tag, 0) + last - first + 1
                    if tag in DEAD_LETTER_REASONS:
                        t.dead_letters.append(DeadLetter(first, last, count, tag))
                    state = 4
                if batch_last == first - 1 and batch_state == state and batch_count == count:
                    batches[-1] = _new_batch((batches[-1][0], last, state, count, 0))
                else:
                    batches.append(_new_batch((first, last, state, count, 0)))
                batch_last, batch_state, batch_count = last, state, count
                made_last = last
                if part is None:
                    if gaps and gaps[-1][1] == first - 1:
                        gaps[-1] = (gaps[-1][0], last)
                    else:
                        gaps.append((first, last))
                else:
                    part.pending = t
                    part.saved = saved
                    rebuilt.append(part)
                    changed.append(part)
                if current.last == last:
                    current = None  # every record of it is in a piece: the run itself goes
                else:
                    current.first = last + 1
        finally:  # (also when an invariant failed: the list stays whole)
            if current is not None:
                rebuilt.append(current)
            runs[begin:i] = rebuilt
            if gaps:
                self._gapped.append(t)
        t.state_batches = batches
        t.acquired = ranges
        return taken, redelivered, archived

    def _carve_mosaic(self, t: Transition, pieces: list[tuple[int, int, object]], member_id: str,
                      deadline: int) -> int:
        """``_carve`` for a filter's usual acquisition, in bulk (no Python step a piece): the pieces
        from the first on that tile never-delivered Available runs (one a log batch), taken and
        filtered out in turn, with every piece taken among them, become one ``Mosaic`` pending in
        ``t`` (filtered-out records before the first taken one: a run), with ``t.state_batches``
        and ``t.acquired`` as ``_carve`` makes them. How many pieces it took: 0 (nothing done)
        where that is not so, else the rest are pieces set aside further on (the policy's
        look-ahead), left to ``_carve``."""
        if len(pieces) < 3:
            return 0
        firsts = list(map(_START, pieces))
        lasts = list(map(_END, pieces))
        # (the tiling ends where a record between two pieces stays Available: one not taken)
        steps = list(map(sub, firsts[1:], lasts[:-1]))
        count = len(pieces) if steps.count(1) == len(steps) else 1 + len(list(takewhile((1).__eq__, steps)))
        if count < len(pieces):
            if _ACQUIRE in map(_TAG, pieces[count:]):
                return 0
            del firsts[count:], lasts[count:]
        if count < 3:
            return 0
        first, last = firsts[0], lasts[-1]
        covered = self._fresh_runs(first, last)
        if covered is None:
            return 0
        tags = list(map(_TAG, pieces[:count]))
        # Neighbours with one tag are one piece (the policy cuts its ranges where the runs end: one a
        # log batch): joined, from the last, as _carve joins their batches and acquired ranges.
        if any(map(is_, tags[1:], tags[:-1])):
            for x in [x for x, same in enumerate(map(is_, tags[1:], tags[:-1])) if same][::-1]:
                lasts[x] = lasts[x + 1]
                del firsts[x + 1], lasts[x + 1], tags[x + 1]
        if len(tags) < 3:
            return 0
        k = 0 if tags[0] is _ACQUIRE else 1  # where the taken pieces are: every other one from k
        if set(tags[k::2]) != {_ACQUIRE} or set(tags[1 - k::2]) != {ArchiveReason.FILTERED}:
            return 0
        taken_firsts, taken_lasts = firsts[k::2], lasts[k::2]
        taken = sum(taken_lasts) - sum(taken_firsts) + len(taken_firsts)
        self._lay_mosaic(t, covered, firsts, lasts, k, taken_firsts, taken_lasts, taken, member_id, deadline)
        return count

    def _fresh_runs(self, first: int, last: int) -> tuple[int, int] | None:
        """(i, j): the runs ``i`` to ``j`` hold first..last without a gap, each a Run of records
        never delivered, Available at once, not pending (what a mosaic may be laid over); else None."""
        runs = self._runs
        i = j = runs.index_of(first)
        n = len(runs)
        position = first
        available = RecordState.AVAILABLE
        while True:  # (the runs it covers: a few, one a log batch)
            if j >= n:
                return None
            run = runs[j]
            if type(run) is not Run or run.state != available or run.pending is not None or run.delivery_count \
                    or run.available_at_ms or run.first > position:
                return None
            if run.last >= last:
                return i, j
            position = run.last + 1
            j += 1

    def _lay_mosaic(self, t: Transition, covered: tuple[int, int], firsts: list[int], lasts: list[int], lead: int,
                    taken_firsts: list[int], taken_lasts: list[int], taken: int, member_id: str, deadline: int) -> None:
        """One acquisition's pieces (``firsts``, ``lasts``: taken and filtered out in turn, the taken
        ones from ``lead``, 0 or 1) laid over the runs ``covered`` (``_fresh_runs``) as one Mosaic
        acquired by ``member_id`` (filtered-out records first: an Archived run before it), pending
        in ``t``, with ``t.state_batches`` and ``t.acquired`` as ``_carve`` makes them."""
        runs = self._runs
        i, j = covered
        head, tail = runs[i], runs[j]
        first, last = firsts[0], lasts[-1]
        # (filtered-out records first are a run of their own: the start offset may pass them at once)
        mosaic = Mosaic(firsts[lead], last, RecordState.ACQUIRED, 1, member_id, deadline, taken_firsts, taken_lasts,
                        taken)
        replacement = [mosaic]
        if lead:
            replacement.insert(0, Run(first, lasts[0], RecordState.ARCHIVED, 0))
        for run in replacement:
            run.pending = t
            run.saved = _FRESH
            t.runs.append(run)
        if head.first < first:  # the records before it and after it stay as they are
            replacement.insert(0, head.copy(head.first, first - 1))
        if tail.last > last:
            tail.first = last + 1
            replacement.append(tail)
        runs[i:j + 1] = replacement
        states, counts = ((0, 4), (1, 0)) if lead == 0 else ((4, 0), (0, 1))
        t.state_batches = tiled(firsts, lasts, states, counts)
        t.acquired = AcquiredColumns(taken_firsts, taken_lasts, 1)

    def _take_columns(self, t: Transition, columns: tuple[list[int], list[int], int, int, list[int]],
                      member_id: str, max_records: int, mode: AcquireMode, bounds: BatchBounds, deadline: int) -> bool:
        """``acquire`` from a policy's columns (``QueuePolicy.columns``: the ranges to take between
        its first and last offsets, every other record there filtered out, and where its ``order``
        would end a range besides) where they lie in never-delivered Available runs: taken in order
        up to ``max_records`` (the range reaching it cut as ``acquire``'s walk over ``order`` cuts
        it), the filtered-out records up to the last one taken and the range right after it
        archived (as ``acquire`` sets them aside), all of it one ``Mosaic`` pending in ``t``
        (filtered-out records before the first taken one: a run), its state batches and acquired
        ranges made from the columns by ``map``, as ``_carve_mosaic`` makes them from pieces: no
        Python object or step per range but the batches and ranges themselves. False (nothing
        done) where that is not so: ``acquire`` then asks the policy for its ``order``."""
        taken_firsts, taken_lasts, first, last, breaks = columns
        if not taken_firsts:
            return False
        if taken_firsts == taken_lasts:  # (every range one record, a filter's usual: 1, 2, 3... up to each)
            taken: Sequence[int] = range(1, len(taken_firsts) + 1)
        else:  # records up to each range
            taken = list(accumulate(map(sub, map((1).__add__, taken_lasts), taken_firsts)))
        k = bisect_left(taken, max_records)  # the range reaching max_records (len: none does)
        following = taken_firsts[k + 1] if k + 1 < len(taken_firsts) else last + 1  # the first taken after it
        if k < len(taken_firsts):
            before = taken[k - 1] if k else 0
            low, high = taken_firsts[k], taken_lasts[k]
            take = high - low + 1
            remaining = max_records - before
            if take > remaining:
                # (order's range holding the record reaching max_records ends at the next break)
                reaching = low + remaining - 1
                take = remaining if mode == AcquireMode.RECORD_LIMIT else \
                    min(high, breaks[bisect_left(breaks, reaching)], bounds.end_of_batch(reaching)) - low + 1
            taken_firsts, taken_lasts = taken_firsts[:k + 1], taken_lasts[:k + 1]
            if take < high - low + 1:
                taken_lasts[k] = low + take - 1
                following = None  # (the rest of that range stays Available: nothing set aside after it)
            count = before + take
        else:
            count = taken[-1]
        # The filtered-out ranges: before the first taken one, between two, and right after the last
        # one (to the next taken one, or where order's range ends).
        lead = 1 if taken_firsts[0] > first else 0
        out_firsts = list(map((1).__add__, taken_lasts))
        out_lasts = list(map((-1).__add__, islice(taken_firsts, 1, None)))
        end = out_firsts[-1]
        if following is not None and end <= last:
            out_lasts.append(min(following - 1, breaks[bisect_left(breaks, end)]))
        else:
            del out_firsts[-1]
        if lead:
            out_firsts.insert(0, first)
            out_lasts.insert(0, taken_firsts[0] - 1)
        kinds = len(taken_firsts) + len(out_firsts)
        if kinds < 3:
            return False
        firsts, lasts = [0] * kinds, [0] * kinds
        firsts[lead::2], firsts[1 - lead::2] = taken_firsts, out_firsts
        lasts[lead::2], lasts[1 - lead::2] = taken_lasts, out_lasts
        covered = self._fresh_runs(firsts[0], lasts[-1])
        if covered is None:
            return False
        self._lay_mosaic(t, covered, firsts, lasts, lead, taken_firsts, taken_lasts, count, member_id, deadline)
        archived = lasts[-1] - firsts[0] + 1 - count
        t.add_count("acquired", count)
        t.add_count(ArchiveReason.FILTERED.value, archived)
        t.add_count("archived", archived)
        return True

    def _explode(self, which: Callable[[Run], bool], first: int | None = None, last: int | None = None) -> None:
        """The mosaics that are not pending and ``which`` picks (among those overlapping first..last
        when given) become the runs they stand for, before something changes part of them."""
        runs = self._runs
        low = 0 if first is None else runs.index_of(first)
        high = len(runs) if last is None else bisect_right(runs, last, key=_FIRST)
        picked = [run for run in runs[low:high] if type(run) is Mosaic and run.pending is None and which(run)]
        if not picked:
            return
        out: list[Run] = []
        for run in runs[low:high]:
            if type(run) is Mosaic and run.pending is None and which(run):
                out.extend(run.pieces())
            else:
                out.append(run)
        runs[low:high] = out  # (not coalesced: described the same before and after, as ``runs`` shows a mosaic)

    def _split_mosaic_at(self, offset: int) -> None:
        """The mosaic holding ``offset`` past its first record, pending or not, becomes the runs it
        stands for (the start offset is moving there: the records below it finish differently).
        Pending, its runs are pending in its transition as ``_carve`` would have made them (an
        acquisition's) or as an acceptance changes them (its taken records only)."""
        runs = self._runs
        i = runs.index_of(offset)
        if i >= len(runs) or type(runs[i]) is not Mosaic or runs[i].first >= offset:
            return
        mosaic = runs[i]
        pieces = mosaic.pieces()
        t = mosaic.pending
        if t is not None:
            changed = t.runs
            del changed[next(k for k, run in enumerate(changed) if run is mosaic)]
            for piece in pieces:
                if mosaic.saved is _FRESH or piece.state == mosaic.state:
                    piece.pending, piece.saved = t, mosaic.saved
                    changed.append(piece)
        runs[i:i + 1] = pieces

    def _defer(self, policy: SelectionPolicy) -> None:
        """What the policy left for later (issue 14, queues/priority.py): records not yet due stay
        Available until their time (in memory: after a restart their headers say it again). Expired
        and filtered-out records (its ``discarded``) are archived by ``acquire`` in the same
        transition as the records it takes."""
        for run, due_ms in self._isolate_sorted(getattr(policy, "deferred", ())):
            if run.state == RecordState.AVAILABLE and run.pending is None and run.available_at_ms < due_ms:
                run.available_at_ms = due_ms

    def _isolate_sorted(self, ranges: Sequence[tuple[int, int, object]]) -> list[tuple[Run, object]]:
        """(run, tag) for the runs exactly covering each (first, last, tag) of ``ranges`` (in offset
        order, not overlapping), split in one walk of the runs: a filter may set aside every other
        record, and a search of the run list per range was most of such an acquisition's cost."""
        runs = self._runs
        out: list[tuple[Run, object]] = []
        if not ranges:
            return out
        # The runs from ``begin`` on are taken one by one (``current``; ``i``: the next one) and
        # put back split, all at once at the end: no list insert per split.
        begin = i = runs.index_of(ranges[0][0])
        n = len(runs)
        rebuilt: list[Run] = []
        current = None
        if i < n:
            current = runs[i]
            i += 1
        try:
            for first, last, tag in ranges:
                while current is not None and current.last < first:
                    rebuilt.append(current)
                    if i < n:
                        current = runs[i]
                        i += 1
                    else:
                        current = None
                while current is not None and current.first <= last:
                    if current.first < first or current.last > last:
                        if current.pending is not None:
                            raise RuntimeError(f"cannot split pending run {current!r}")
                        if current.first < first:  # the part before the range stays as it is
                            tail = current.copy(first, current.last)
                            current.last = first - 1
                            rebuilt.append(current)
                            current = tail
                            continue
                        tail = current.copy(last + 1, current.last)  # the part after it comes next
                        current.last = last
                        rebuilt.append(current)
                        out.append((current, tag))
                        current = tail
                        break
                    rebuilt.append(current)
                    out.append((current, tag))
                    if i < n:
                        current = runs[i]
                        i += 1
                    else:
                        current = None
        finally:  # (also when a pending run was met: the list stays whole)
            if current is not None:
                rebuilt.append(current)
            runs[begin:i] = rebuilt
        return out

    def _candidates(self, first: int, last: int, now_ms: int, enough: int | None) -> list[Candidate]:
        """Due Available records within first..last; in offset order only as many as ``enough``
        records need (MaxRecords may be met without the rest), when given."""
        candidates = []
        total = 0
        for run in self._runs.overlapping(first, last):
            if run.state == RecordState.AVAILABLE and run.pending is None and run.available_at_ms <= now_ms:
                candidate = Candidate(max(run.first, first), min(run.last, last), run.delivery_count)
                candidates.append(candidate)
                total += candidate.last_offset - candidate.first_offset + 1
                if enough is not None and total >= enough:
                    break
        return candidates

    def _throttled_limit(self, delivery_count: int, batch_size: int) -> int | None:
        """How many records delivered ``delivery_count`` times, in a log batch of ``batch_size``, one
        acquisition may take (halved per delivery past the throttle count); None: not throttled."""
        limit = self.config.delivery_count_limit
        if limit > 2 and delivery_count >= limit - 1:
            return 1  # the last attempt: alone
        throttle = self.config.throttle_delivery_count
        if delivery_count < throttle:
            return None
        return max(1, batch_size >> (delivery_count - throttle + 1))

    def _due_available(self, first: int, last: int, now_ms: int) -> int:
        total = 0
        for run in self._runs.overlapping(first, last):
            if run.state == RecordState.AVAILABLE and run.pending is None and run.available_at_ms <= now_ms:
                total += min(run.last, last) - max(run.first, first) + 1
        return total

    def _enter_window(self, batches: Sequence[LogBatch], wanted: int) -> None:
        """New records enter the window in whole log batches until ``wanted`` can be acquired. Offsets
        the log does not have (a gap before or between batches), transaction markers and aborted
        records enter Archived, as the broker knows they will never be delivered."""
        added = 0
        for batch in batches:
            if batch.last_offset < self.next_offset:
                continue
            first = max(batch.base_offset, self.next_offset)
            if first > self.next_offset:
                self._runs.append_run(Run(self.next_offset, first - 1, RecordState.ARCHIVED, 0))
            if batch.control or batch.aborted:
                self._runs.append_run(Run(first, batch.last_offset, RecordState.ARCHIVED, 0))
            else:
                self._runs.append_run(Run(first, batch.last_offset, RecordState.AVAILABLE, 0))
                added += batch.last_offset - first + 1
            self.next_offset = batch.last_offset + 1
            if added >= wanted:
                break
        self._advance_start()

    # --- acknowledgement ----------------------------------------------------------------------
    @_collector_waits
    def acknowledge(self, member_id: str, acks: Sequence[AckBatch], now_ms: int, *,
                    release_delay_ms: int = 0, renew_allowed: bool = True) -> Transition:
        """Apply a member's acknowledgements; all or nothing. Raises KafkaError INVALID_REQUEST for a
        malformed batch (or RENEW where ``renew_allowed`` is False: v1, or v2 without IsRenewAck),
        INVALID_RECORD_STATE when a record is not Acquired by this member."""
        check_ack_batches(acks, self.start_offset, self.next_offset, renew_allowed)  # INVALID_REQUEST
        t = self._accept_whole_runs(member_id, acks)
        if t is not None:
            return t
        if acks:
            self._explode(_ANY, acks[0].first_offset, acks[-1].last_offset)
        self._check_acquired(member_id, acks)
        t = Transition()
        renewed: list[Run] = []
        start = self.start_offset
        ranges = []
        for ack in acks:  # (one type a batch is the usual case: no generator for it)
            if ack.last_offset < start:
                continue
            if len(ack.acknowledge_types) == 1:
                ranges.append((max(ack.first_offset, start), ack.last_offset, ack.acknowledge_types[0]))
            else:
                ranges.extend((max(sub_first, start), sub_last, ack_type)
                              for sub_first, sub_last, ack_type in ack_ranges(ack) if sub_last >= start)
        accepted = 0
        for run, ack_type in self._isolate_sorted(ranges):  # acks are in offset order (validated)
            if ack_type == AcknowledgeType.ACCEPT:  # the usual one first, counted once at the end
                run.saved = run.fields()
                run.pending = t
                t.runs.append(run)
                finish(run, RecordState.ACKNOWLEDGED)
                accepted += run.last - run.first + 1
                continue
            if ack_type == AcknowledgeType.RENEW:
                run.lock_deadline_ms = now_ms + self.config.record_lock_duration_ms
                t.add_count("renewed", run.size)
                renewed.append(run)
                continue
            self._begin(t, run)
            if ack_type == AcknowledgeType.RELEASE:
                t.add_count("released", run.size)
                self._make_available(t, run, now_ms, delay_ms=release_delay_ms)
            elif ack_type == AcknowledgeType.REJECT:
                t.add_count("rejected", run.size)
                self._archive(t, run, ArchiveReason.REJECTED)
            else:
                self._archive(t, run, ArchiveReason.GAP)
        if accepted:
            t.add_count("acknowledged", accepted)
        self._record(t)
        for first in sorted({run.first for run in renewed}):
            self._runs.merge_at(first)
        return t

    def _accept_whole_runs(self, member_id: str, acks: Sequence[AckBatch]) -> Transition | None:
        """``acknowledge`` when every batch accepts whole runs Acquired by ``member_id`` (what a
        consumer sends for the ranges it got: with a filter, hundreds of single records): checked
        and applied in one walk of the runs, no split. None (nothing changed: what it had changed
        is put back) for anything else, which ``acknowledge`` takes the general way (and its
        errors). ``acks`` passed check_ack_batches."""
        runs = self._runs
        n = len(runs)
        start = self.start_offset
        acquired, acknowledged, accept = RecordState.ACQUIRED, RecordState.ACKNOWLEDGED, AcknowledgeType.ACCEPT
        t = Transition()
        accepted = t.runs
        total = 0
        i = None
        firsts = lasts = None  # the acknowledgements' columns, once a mosaic is met
        k = 0
        count = len(acks)
        while k < count:
            first, last, types = acks[k]
            k += 1
            if last < start:
                continue
            if len(types) != 1 or types[0] != accept:
                return self._put_back(t)
            if first < start:
                first = start
            if i is None:
                i = runs.index_of(first)
            while i < n and runs[i].last < first:  # (the filtered-out records between two acquired ones)
                i += 1
            if i < n and type(runs[i]) is Mosaic:  # accepted as a whole, by these batches and the next ones
                run = runs[i]
                m = len(run.firsts)
                if firsts is None:
                    if type(acks) is AckBatches:
                        firsts, lasts = acks.firsts, acks.lasts
                    else:
                        firsts, lasts = list(map(_START, acks)), list(map(_END, acks))
                if type(acks) is AckBatches:
                    every = acks.types[k - 1:k - 1 + m].count(accept) == m
                else:
                    every = all(map(eq, repeat(_ACCEPTED), map(_TAG, acks[k - 1:k - 1 + m])))
                if run.pending is not None or run.state != acquired or run.member_id != member_id or not every \
                        or firsts[k - 1:k - 1 + m] != run.firsts or lasts[k - 1:k - 1 + m] != run.lasts:
                    return self._put_back(t)
                run.saved = (acquired, run.delivery_count, member_id, run.lock_deadline_ms, run.available_at_ms)
                run.pending = t
                run.state = acknowledged
                run.member_id = NO_MEMBER
                run.lock_deadline_ms = 0
                accepted.append(run)
                total += run.taken
                i += 1
                k += m - 1
                continue
            if i >= n or runs[i].first != first:
                return self._put_back(t)  # (offsets before it, or a run straddling the start offset)
            while True:
                run = runs[i]
                if run.pending is not None or run.state != acquired or run.member_id != member_id \
                        or run.last > last or type(run) is not Run:
                    return self._put_back(t)
                run.saved = (acquired, run.delivery_count, member_id, run.lock_deadline_ms, run.available_at_ms)
                run.pending = t
                run.state = acknowledged
                run.member_id = NO_MEMBER
                run.lock_deadline_ms = run.available_at_ms = 0
                accepted.append(run)
                total += run.last - run.first + 1
                i += 1
                if run.last == last:
                    break
                if i >= n or runs[i].first != run.last + 1:
                    return self._put_back(t)
        if total:
            t.add_count("acknowledged", total)
        self._record(t)
        return t

    @staticmethod
    def _put_back(t: Transition) -> None:
        for run in t.runs:
            run.set_fields(run.saved)
            run.pending = run.saved = None

    def _check_acquired(self, member_id: str, acks: Sequence[AckBatch]) -> None:
        """Every record ``acks`` (which passed check_ack_batches) names is Acquired by ``member_id``
        and not pending, else KafkaError INVALID_RECORD_STATE."""
        runs = self._runs
        n = len(runs)
        start = self.start_offset
        acquired = RecordState.ACQUIRED
        i = None
        for ack in acks:  # then the records' states (INVALID_RECORD_STATE), in one walk of the runs
            last = ack.last_offset
            if last < start:
                continue  # already archived
            first = ack.first_offset if ack.first_offset > start else start
            if i is None:
                i = runs.index_of(first)
            while i > 0 and runs[i - 1].last >= first:  # (the previous batch ended inside a run)
                i -= 1
            while i < n and runs[i].last < first:
                i += 1
            position = first  # what no run checked yet holds: a gap (archived) when a run starts after it
            while True:
                if i >= n or runs[i].first > last:
                    if position <= last:
                        raise KafkaError(ErrorCode.invalid_record_state,
                                         f"The records {position}-{last} are not acquired.")
                    break
                run = runs[i]
                i += 1
                if run.first > position:
                    raise KafkaError(ErrorCode.invalid_record_state,
                                     f"The records {position}-{run.first - 1} are not acquired.")
                position = run.last + 1
                if run.pending is None and run.state == acquired and run.member_id == member_id:
                    continue  # the usual case, checked at once
                if run.pending is not None:
                    raise KafkaError(ErrorCode.invalid_record_state,
                                     "The record state is invalid. The acknowledgement of delivery could not be "
                                     "completed.")
                if run.state != RecordState.ACQUIRED:
                    raise KafkaError(ErrorCode.invalid_record_state,
                                     f"The records {max(run.first, first)}-{min(run.last, ack.last_offset)} are not "
                                     "acquired.")
                if run.member_id != member_id:
                    raise KafkaError(ErrorCode.invalid_record_state, "Member is not the owner of the records.")

    # --- records coming back ------------------------------------------------------------------
    def expire_locks(self, now_ms: int) -> Transition:
        """Acquired records whose lock has run out become Available again, or Archived at the limit."""
        t = Transition()
        acquired = RecordState.ACQUIRED
        self._explode(lambda run: run.state == acquired and run.lock_deadline_ms <= now_ms)
        for run in list(self._runs):
            if run.state != RecordState.ACQUIRED or run.pending is not None or run.lock_deadline_ms > now_ms:
                continue
            for part in self._split_at_start(run):
                self._begin(t, part)
                t.add_count("lock_expired", part.size)
                self._return(t, part, now_ms)
        self._record(t)
        return t

    def release_member(self, member_id: str, now_ms: int, *, count_delivery: bool) -> Transition:
        """A member's Acquired records become Available: its share session closed or it left the group.
        ``count_delivery`` False (a clean close, Kafka 4.2) takes back the delivery count of the
        unfinished delivery; True (the member failed) keeps it, so a record that crashes its
        consumers still reaches the delivery limit."""
        t = Transition()
        acquired = RecordState.ACQUIRED
        self._explode(lambda run: run.state == acquired and run.member_id == member_id)
        for run in list(self._runs):
            if run.state != RecordState.ACQUIRED or run.member_id != member_id or run.pending is not None:
                continue
            for part in self._split_at_start(run):
                self._begin(t, part)
                t.add_count("released", part.size)
                if count_delivery or part.last < self.start_offset:
                    self._return(t, part, now_ms)
                else:
                    part.delivery_count = max(0, part.delivery_count - 1)
                    finish(part, RecordState.AVAILABLE)
        self._record(t)
        return t

    def move_log_start(self, log_start_offset: int) -> None:
        """The log lost its records below ``log_start_offset``: Available ones there are archived (no
        write now: the next one carries the new start offset); Acquired ones finish as Archived."""
        if log_start_offset <= self.start_offset:
            return
        self._split_mosaic_at(log_start_offset)
        self.start_offset = log_start_offset
        self.next_offset = max(self.next_offset, log_start_offset)
        self._advance_start()
        self._runs.coalesce()

    def _return(self, t: Transition, run: Run, now_ms: int) -> None:
        if run.last < self.start_offset:
            self._archive(t, run, ArchiveReason.LOG_START)
        else:
            self._make_available(t, run, now_ms)

    def _make_available(self, t: Transition, run: Run, now_ms: int, delay_ms: int = 0) -> None:
        if run.delivery_count >= self.config.delivery_count_limit:
            self._archive(t, run, ArchiveReason.DELIVERY_LIMIT)
            return
        backoff = self.config.redelivery_delay_ms
        delay_ms = max(delay_ms, backoff(run.delivery_count) if backoff is not None else 0)
        finish(run, RecordState.AVAILABLE)
        run.available_at_ms = now_ms + delay_ms if delay_ms > 0 else 0

    def _archive(self, t: Transition, run: Run, reason: ArchiveReason, count: bool = True) -> None:
        finish(run, RecordState.ARCHIVED)
        if count:
            t.add_count("archived", run.size)
        if reason in DEAD_LETTER_REASONS:
            t.dead_letters.append(DeadLetter(run.first, run.last, run.delivery_count, reason))

    # --- durability ---------------------------------------------------------------------------
    @_collector_waits
    def commit(self, t: Transition) -> None:
        """The transition is durable: its records are free for the next change; the start offset advances."""
        self._end(t, restore=False)

    def rollback(self, t: Transition) -> None:
        """The transition could not be made durable: its records go back to where they were."""
        self._end(t, restore=True)

    def _end(self, t: Transition, restore: bool) -> None:
        if t.done:
            raise RuntimeError("transition already committed or rolled back")
        t.done = True
        changed = t.runs
        gaps = t.gaps
        if gaps:
            self._gapped.remove(t)
        if restore:
            for run in changed:
                if run.saved is not None:
                    run.set_fields(run.saved)
                run.pending = run.saved = None
                if type(run) is Mosaic and run.state == RecordState.AVAILABLE:  # acquired by it: no mosaic now
                    runs = self._runs
                    runs[runs.index_of(run.first)] = Run(run.first, run.last, RecordState.AVAILABLE, 0)
            if gaps:  # never-delivered records: Available again, as they were
                runs = self._runs
                refilled = [Run(first, last, RecordState.AVAILABLE, 0) for first, last in gaps]
                runs[:] = sorted([*runs, *refilled], key=_FIRST)
                changed = [*changed, *refilled]
        else:
            for run in changed:
                run.pending = run.saved = None
        self._advance_start()
        if changed:
            self._runs.coalesce(min(map(_FIRST, changed)), max(map(_LAST, changed)))

    def _begin(self, t: Transition, run: Run) -> None:
        # (records never delivered share one saved state: not a tuple each of a filter's hundreds)
        run.saved = _FRESH if run.delivery_count == 0 and run.state == RecordState.AVAILABLE \
            and not run.available_at_ms else run.fields()
        run.pending = t
        t.runs.append(run)

    def _record(self, t: Transition, built: bool = False) -> None:
        """The state batches to write for ``t``, and the start offset it leaves (``t.start_offset``)
        when it finishes the records at the start: those are left out of the batches (the start
        offset says they are done), so acknowledging a filter's hundreds of single records writes
        one start offset, not a batch each. ``built``: ``t.state_batches`` are its runs' batches
        already (``_carve``), only the start offset is to be taken into account."""
        first = last = state = count = available_at = None
        available = RecordState.AVAILABLE
        start = self._start_after(t)
        if start > self.start_offset:
            t.start_offset = start
        else:
            start = -1  # (records below the start offset, archived when the log start moved, are written as before)
        t.dead_letters = joined(sorted(t.dead_letters))
        if built:
            if start > -1:
                kept = t.state_batches
                if type(kept) is TiledBatches:
                    t.state_batches = kept.from_offset(start)  # (what is left of them: tiled still)
                else:
                    done = 0  # (what the start offset passes leads them)
                    while done < len(kept) and kept[done].last_offset < start:
                        done += 1
                    kept = kept[done:]
                    if kept and kept[0].first_offset < start:
                        kept[0] = kept[0]._replace(first_offset=start)
                    t.state_batches = kept
            return
        batches: list[StateBatch] = []
        changed = t.runs
        if changed and max(map(_LAST, changed)) < start:  # (all finished at the start: the start offset says it)
            changed = ()
        elif any(type(run) is Mosaic for run in changed):  # its taken records changed, the rest did not
            changed = [piece for run in changed for piece in (run.pieces() if type(run) is Mosaic else (run,))
                       if piece.state == run.state]
        for run in sorted(changed, key=_FIRST):  # joined by hand: a filter's transitions have hundreds of runs
            if run.last < start:
                continue
            run_state = _PERSISTED_STATES[run.state]
            run_available_at = run.available_at_ms if run.state == available else 0  # _persisted_available_at
            if last is not None and run.first == last + 1 and run_state == state and run.delivery_count == count \
                    and run_available_at == available_at:
                last = run.last
                continue
            if first is not None:
                batches.append(StateBatch(first, last, state, count, available_at))
            first, last, state, count, available_at = (run.first, run.last, run_state, run.delivery_count,
                                                       run_available_at)
        if first is not None:
            batches.append(StateBatch(first, last, state, count, available_at))
        if batches and batches[0].first_offset < start:
            batches[0] = batches[0]._replace(first_offset=start)
        t.state_batches = batches

    # --- the start offset ----------------------------------------------------------------------
    def _start_after(self, t: Transition) -> int:
        """Where ``_advance_start`` will put the start offset once ``t`` commits (its runs taken as
        committed, any other pending run stops it)."""
        return self._finished_from_start(t)[0]

    def _finished_from_start(self, t: Transition | None) -> tuple[int, int]:
        """The offset after the finished records from the start offset on (runs of ``t`` taken as
        committed, any other pending run stops it; a gap passed with the run before it, or at the
        start unless the transition that made it is pending) and the index of the run there."""
        position = self.start_offset
        runs = self._runs
        end = self.next_offset
        i = runs.index_of(position)
        n = len(runs)
        if position < end and (i == n or runs[i].first > position):  # in a gap
            if self._gapped and self._gap_owner(position) not in (None, t):
                return position, i
            position = runs[i].first if i < n else end
        while i < n:
            run = runs[i]
            if run.state not in TERMINAL or (run.pending is not None and run.pending is not t):
                break
            position = run.last + 1
            i += 1
            if i < n:  # (a gap after it is finished with it)
                if runs[i].first > position:
                    position = runs[i].first
            elif position < end:
                position = end
        return position, i

    def _gap_owner(self, offset: int) -> Transition | None:
        """The pending transition that made the gap holding ``offset``, if any (a gap the start
        offset reaches with no run before it: moved there by retention)."""
        for t in self._gapped:
            gaps = t.gaps
            k = bisect_right(gaps, offset, key=_START) - 1
            if k >= 0 and gaps[k][1] >= offset:
                return t
        return None

    def _split_at_start(self, run: Run) -> list[Run]:
        """A run straddling the start offset splits there (the part below it is finished differently)."""
        first, last = run.first, run.last
        if first < self.start_offset <= last:
            return self._runs.isolate(first, self.start_offset - 1) + self._runs.isolate(self.start_offset, last)
        return [run]

    def _advance_start(self) -> None:
        """Move the start offset past leading finished records; archive Available records left below it
        (deleted from the log); drop finished runs below it."""
        runs = self._runs
        begin = runs.index_of(self.start_offset)
        start, i = self._finished_from_start(None)
        n = len(runs)
        self.start_offset = start
        if begin == 0 and (i == n or runs[i].first >= start):
            # (the usual case: no run below the old start offset; those it passed are all finished)
            del runs[:i]
            if not runs:
                self.start_offset = self.next_offset = max(self.start_offset, self.next_offset)
            elif self.next_offset < self.start_offset:
                self.next_offset = self.start_offset
            return
        k = 0
        while k < len(runs) and runs[k].first < start:
            run = runs[k]
            if run.state == RecordState.AVAILABLE and run.pending is None:
                for part in runs.isolate(run.first, min(run.last, start - 1)):
                    finish(part, RecordState.ARCHIVED)
                continue  # runs[k] is the archived part now
            k += 1
        done = 0  # dropped in one slice: a filter leaves hundreds of finished runs, pop(0) each was quadratic
        for head in runs:
            if head.last >= start or head.state not in TERMINAL or head.pending is not None:
                break
            done += 1
        del runs[:done]
        if not self._runs:
            self.start_offset = self.next_offset = max(self.start_offset, self.next_offset)
        elif self.next_offset < self.start_offset:
            self.next_offset = self.start_offset

    def __repr__(self) -> str:
        return f"SharePartition(start={self.start_offset}, next={self.next_offset}, runs={self._runs})"
