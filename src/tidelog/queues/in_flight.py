"""The in-flight records of a share-partition: runs of offsets sharing one state, and the
pending transitions that change them.

A ``Run`` is offsets first..last (inclusive) with one ``RecordState``, delivery count, owner,
lock deadline and due time. ``RunList`` keeps a share-partition's runs sorted by offset and
non-overlapping; runs split only where states differ (``split``, ``isolate``) and merge back
when neighbours become alike (``coalesce``, ``merge_at``), so memory follows the number of
distinct states, not of records. A ``Transition`` is a change applied to runs but pending (its
runs cannot change again) until it is made durable: it lists the state batches to persist and
the records to dead-letter. Not thread-safe; the share-partition's owner (the event loop) owns it.
"""

from __future__ import annotations

import enum
from bisect import bisect_right
from operator import attrgetter
from dataclasses import dataclass, field
from typing import Iterable, NamedTuple

from tidelog.queues.log_batches import AcquiredRecords
from tidelog.queues.state_records import StateBatch

__all__ = ["DEAD_LETTER_REASONS", "NO_MEMBER", "TERMINAL", "ArchiveReason", "DeadLetter", "Mosaic", "RecordState",
           "Run", "RunList", "Transition", "finish", "joined"]

NO_MEMBER = ""
_FIRST = attrgetter("first")  # a C key for bisect: a lambda per comparison was a hot spot


class RecordState(enum.IntEnum):
    AVAILABLE = 0
    ACQUIRED = 1
    ACKNOWLEDGED = 2
    ARCHIVED = 4


TERMINAL = (RecordState.ACKNOWLEDGED, RecordState.ARCHIVED)


class ArchiveReason(str, enum.Enum):
    REJECTED = "rejected"  # the consumer rejected it
    DELIVERY_LIMIT = "delivery_limit"  # delivered share.delivery.count.limit times without acceptance
    GAP = "gap"  # the consumer reported no record at the offset
    LOG_START = "log_start_moved"  # deleted from the log (retention, DeleteRecords) before completion
    MISSING = "missing"  # no record at the offset in the log (compaction, transaction markers)
    ABORTED = "aborted_transaction"  # read_committed: part of an aborted transaction
    EXPIRED = "expired"  # its TTL passed before delivery (issue 14)
    FILTERED = "filtered"  # the group's filter does not match it (issue 14)


DEAD_LETTER_REASONS = frozenset({ArchiveReason.REJECTED, ArchiveReason.DELIVERY_LIMIT, ArchiveReason.EXPIRED})


class DeadLetter(NamedTuple):
    """Records archived for a reason that sends them to the group's dead-letter topic (KIP-1191)."""

    first_offset: int
    last_offset: int
    delivery_count: int
    reason: ArchiveReason


class Run:
    """Offsets first..last (inclusive) with one state. ``pending`` is the unfinished Transition that
    changed it, ``saved`` what rollback restores."""

    __slots__ = ("first", "last", "state", "delivery_count", "member_id", "lock_deadline_ms", "available_at_ms",
                 "pending", "saved")

    def __init__(self, first: int, last: int, state: RecordState, delivery_count: int, member_id: str = NO_MEMBER,
                 lock_deadline_ms: int = 0, available_at_ms: int = 0) -> None:
        self.first = first
        self.last = last
        self.state = state
        self.delivery_count = delivery_count
        self.member_id = member_id
        self.lock_deadline_ms = lock_deadline_ms
        self.available_at_ms = available_at_ms
        self.pending: Transition | None = None
        self.saved: tuple | None = None

    @property
    def size(self) -> int:
        return self.last - self.first + 1

    def fields(self) -> tuple:
        return (self.state, self.delivery_count, self.member_id, self.lock_deadline_ms, self.available_at_ms)

    def set_fields(self, values: tuple) -> None:
        self.state, self.delivery_count, self.member_id, self.lock_deadline_ms, self.available_at_ms = values

    def copy(self, first: int, last: int) -> "Run":
        run = Run(first, last, self.state, self.delivery_count, self.member_id, self.lock_deadline_ms,
                   self.available_at_ms)
        run.pending, run.saved = self.pending, self.saved
        return run

    def __repr__(self) -> str:
        extra = f" by {self.member_id!r} until {self.lock_deadline_ms}" if self.state == RecordState.ACQUIRED else ""
        return (f"<{self.first}-{self.last} {self.state.name} x{self.delivery_count}{extra}"
                f"{' pending' if self.pending else ''}>")


class Mosaic(Run):
    """One acquisition's records taken from among never-delivered ones it archived (a filter keeping
    1 record in 4: each match alone between filtered-out records) as one run: first..last, the
    taken records ``firsts[k]..lasts[k]`` in its state, delivery count, owner and lock, the records
    between them Archived with delivery count 0. It stands for the runs it would otherwise be (a
    run object a match and one for the records after it: made, committed and dropped, most of such
    an acquisition's cost), changes state as a whole (all its taken records accepted at once:
    ``state`` ACKNOWLEDGED, finished), and is turned back into those runs (``pieces``) before
    anything else changes it. Never split, never merged with a neighbour."""

    __slots__ = ("firsts", "lasts", "taken")

    def __init__(self, first: int, last: int, state: RecordState, delivery_count: int, member_id: str,
                 lock_deadline_ms: int, firsts: list[int], lasts: list[int], taken: int) -> None:
        super().__init__(first, last, state, delivery_count, member_id, lock_deadline_ms)
        self.firsts = firsts
        self.lasts = lasts
        self.taken = taken  # records in firsts..lasts

    def pieces(self) -> list[Run]:
        """The runs it stands for, in offset order (not pending: for a mosaic not pending)."""
        out = []
        position = self.first
        fields = self.fields()
        for first, last in zip(self.firsts, self.lasts):
            if first > position:
                out.append(Run(position, first - 1, RecordState.ARCHIVED, 0))
            run = Run(first, last, RecordState.ACQUIRED, 0)
            run.set_fields(fields)
            out.append(run)
            position = last + 1
        if position <= self.last:
            out.append(Run(position, self.last, RecordState.ARCHIVED, 0))
        return out

    def __repr__(self) -> str:
        return f"<mosaic {self.first}-{self.last} {self.state.name} x{self.delivery_count} of {len(self.firsts)} ranges" \
               f"{' pending' if self.pending else ''}>"


@dataclass(eq=False)
class Transition:
    """A change waiting to be made durable: write ``dead_letters`` (if any), then ``state_batches``,
    then ``SharePartition.commit``; or ``rollback`` when a write failed."""

    # (a filter's acquisition: a TiledBatches, its batches as columns, made StateBatch where read)
    state_batches: list[StateBatch] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    acquired: list[AcquiredRecords] = field(default_factory=list)
    # Counts for metrics, by what happened: acquired, redelivered, acknowledged, released, rejected,
    # archived, lock_expired, renewed (records).
    counts: dict[str, int] = field(default_factory=dict)
    runs: list[Run] = field(default_factory=list, repr=False)  # the runs it changed
    done: bool = False
    # The start offset once it is committed, where it moves past records it finished (None: where
    # it is): written with it, so ``state_batches`` leave out what falls below it.
    start_offset: int | None = None
    # (first, last) of the never-delivered records it archived as gaps of the window (no run holds
    # them: SharePartition's "gaps"), in offset order; rollback makes them Available runs again.
    gaps: list[tuple[int, int]] = field(default_factory=list, repr=False)

    @property
    def empty(self) -> bool:
        return not self.state_batches and self.start_offset is None

    def add_count(self, name: str, n: int) -> None:
        self.counts[name] = self.counts.get(name, 0) + n


class RunList(list):
    """A share-partition's runs (``list[Run]``), sorted by first offset, never overlapping."""

    def index_of(self, offset: int) -> int:
        """Index of the run containing ``offset``, or of the first run after it."""
        i = bisect_right(self, offset, key=_FIRST) - 1
        if i >= 0 and self[i].last >= offset:
            return i
        return i + 1

    def find(self, offset: int) -> Run | None:
        i = self.index_of(offset)
        if i < len(self) and self[i].first <= offset <= self[i].last:
            return self[i]
        return None

    def overlapping(self, first: int, last: int) -> Iterable[Run]:
        i = self.index_of(first)
        runs = self
        while i < len(runs) and runs[i].first <= last:
            yield runs[i]
            i += 1

    def split(self, offset: int) -> None:
        """Make ``offset`` the first offset of a run (when a run spans it)."""
        i = self.index_of(offset)
        if i >= len(self):
            return
        run = self[i]
        if run.first < offset <= run.last:
            if run.pending is not None or type(run) is not Run:
                raise RuntimeError(f"cannot split pending run {run!r}")
            tail = run.copy(offset, run.last)
            run.last = offset - 1
            self.insert(i + 1, tail)

    def isolate(self, first: int, last: int) -> list[Run]:
        """The runs exactly covering first..last, splitting at both ends."""
        self.split(first)
        self.split(last + 1)
        return list(self.overlapping(first, last))

    def coalesce(self, first: int | None = None, last: int | None = None) -> None:
        """Merge neighbouring runs that are alike, so the run list stays as short as the states allow;
        only around first..last when given (one walk, however many runs a transition changed)."""
        low = 0 if first is None else max(0, self.index_of(first) - 1)
        high = len(self) if last is None else min(len(self), self.index_of(last) + 2)
        if high - low < 2:
            return
        merged = [self[low]]
        previous = merged[0]
        for run in self[low + 1:high]:
            # (the state first: a filter's window alternates states, and a call per run was its cost)
            if previous.state == run.state and previous.last + 1 == run.first and mergeable(previous, run):
                previous.last = run.last
            else:
                merged.append(run)
                previous = run
        self[low:high] = merged

    def merge_at(self, offset: int) -> None:
        """Merge the run holding ``offset`` with its neighbours where they are alike (a local coalesce)."""
        runs = self
        i = self.index_of(offset)
        if i >= len(runs) or runs[i].first > offset:
            return
        while i > 0 and mergeable(runs[i - 1], runs[i]):
            runs[i - 1].last = runs[i].last
            del runs[i]
            i -= 1
        while i + 1 < len(runs) and mergeable(runs[i], runs[i + 1]):
            runs[i].last = runs[i + 1].last
            del runs[i + 1]

    def append_run(self, run: Run) -> None:
        """Add a run after the last one; a finished run alike the last one extends it instead."""
        last = self[-1] if self else None
        if last is not None and last.pending is None and run.state in TERMINAL and last.fields() == run.fields() \
                and last.last + 1 == run.first and type(last) is Run:
            last.last = run.last
        else:
            self.append(run)


def mergeable(left: Run, right: Run) -> bool:
    return (left.pending is None and right.pending is None and left.last + 1 == right.first
            and left.state == right.state and left.delivery_count == right.delivery_count
            and left.member_id == right.member_id and left.lock_deadline_ms == right.lock_deadline_ms
            and left.available_at_ms == right.available_at_ms and type(left) is Run and type(right) is Run)


def joined(items: Iterable) -> list:
    """Sorted (first, last, *rest) tuples with neighbours that differ only in offsets joined."""
    out: list = []
    for item in items:
        if out and out[-1][1] + 1 == item[0] and out[-1][2:] == item[2:]:
            out[-1] = out[-1]._replace(last_offset=item[1])
        else:
            out.append(item)
    return out


def finish(run: Run, state: RecordState) -> None:
    """The run leaves Acquired (or a delay): no owner, no lock, no due time."""
    run.state = state
    run.member_id = NO_MEMBER
    run.lock_deadline_ms = 0
    run.available_at_ms = 0
