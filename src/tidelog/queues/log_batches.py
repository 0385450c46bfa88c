"""The log as a share-partition's acquisition sees it: the record batches of one read.

- ``LogBatch``: a batch's offsets, and whether it is a transaction marker or belongs to an aborted
  transaction (both are archived, never delivered); ``parse_log_batches`` gives them for a read.
- ``BatchBounds``: where the read's batches start and end, so an acquisition is cut at batch
  boundaries.
- ``AcquiredRecords`` (what a ShareFetch answers per range) and ``acquired_ranges``;
  ``AcquiredColumns``, a filter's hundreds of them as columns; the read's buffers that hold
  acquired records come from ``batches_holding``.

Pure functions, no I/O.
"""

from __future__ import annotations

import struct
from bisect import bisect_left, bisect_right
from functools import partial
from itertools import repeat
from operator import itemgetter, sub
from typing import Iterable, NamedTuple, Sequence

from tidelog.protocol.records import BATCH_HEADER_SIZE, parse_batch_header

__all__ = ["AcquiredColumns", "AcquiredRecords", "BatchBounds", "LogBatch", "acquired_ranges", "batches_holding", "cut_at_batches",
           "parse_log_batches"]


class LogBatch(NamedTuple):
    """A record batch read from the partition's log: its offsets and what acquisition must know of it.

    ``control`` batches (transaction markers) are never delivered. ``aborted`` marks batches of
    aborted transactions under read_committed (parse_log_batches, from the aborted
    transactions index); they are archived instead of delivered.
    """

    base_offset: int
    last_offset: int
    control: bool = False
    aborted: bool = False


class AcquiredRecords(NamedTuple):
    first_offset: int
    last_offset: int
    delivery_count: int


_new_acquired = partial(tuple.__new__, AcquiredRecords)  # AcquiredRecords(*fields) without its Python __new__
_FIRST, _LAST = itemgetter(0), itemgetter(1)


class AcquiredColumns(Sequence):
    """Acquired ranges of one delivery count, in offset order, not touching one another (a filter's
    mosaic: a range a matching record, hundreds a fetch), held as columns: their first and last
    offsets (``firsts``, ``lasts``, lists never changed once made). A sequence of AcquiredRecords
    made on demand (indexing, iterating, comparing with a list); what ShareFetch does with them
    reads the columns: the records they hold (``records``), the batches holding them
    (``batches_holding``), and their ranges on the wire (``wire``), with no object a range (an
    AcquiredRecords a match, then packed one by one, was ~8% of a filtered fetch's instructions
    at 100 B)."""

    __slots__ = ("firsts", "lasts", "delivery_count")

    def __init__(self, firsts: list[int], lasts: list[int], delivery_count: int) -> None:
        self.firsts = firsts
        self.lasts = lasts
        self.delivery_count = delivery_count

    def __len__(self) -> int:
        return len(self.firsts)

    def __iter__(self):
        return map(_new_acquired, zip(self.firsts, self.lasts, repeat(self.delivery_count)))

    def __getitem__(self, index):
        if isinstance(index, slice):
            return list(self)[index]
        return _new_acquired((self.firsts[index], self.lasts[index], self.delivery_count))  # (IndexError as a list's)

    def __eq__(self, other) -> bool:
        if type(other) is AcquiredColumns or isinstance(other, list):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"AcquiredColumns({list(self)!r})"

    @property
    def records(self) -> int:
        """How many records the ranges hold."""
        return sum(self.lasts) - sum(self.firsts) + len(self.firsts)

    def wire(self) -> bytes:
        """The ranges as ShareFetch's AcquiredRecords array elements (without the array's length):
        first and last offset (int64), delivery count (int16), no tagged fields; each column packed
        at once, its bytes laid into every range's place by slice assignment."""
        n = len(self.firsts)
        if not n:
            return b""
        size = _WIRE_RANGE.size
        out = bytearray(size * n)
        columns = ">%dq" % n
        firsts = struct.pack(columns, *self.firsts)
        lasts = firsts if self.lasts == self.firsts else struct.pack(columns, *self.lasts)  # (single records)
        for column, at in ((firsts, 0), (lasts, 8)):
            for k in range(8):
                out[at + k::size] = column[k::8]
        tail = _WIRE_TAIL.pack(self.delivery_count) * n
        for k in range(_WIRE_TAIL.size):
            out[16 + k::size] = tail[k::_WIRE_TAIL.size]
        return bytes(out)


_WIRE_RANGE = struct.Struct(">qqhx")  # (as protocol/share_fetch.py packs an AcquiredRecords)
_WIRE_TAIL = struct.Struct(">hx")


def acquired_record_count(acquired: Sequence[AcquiredRecords]) -> int:
    """How many records ``acquired`` ranges hold (a filter's hundreds: no Python step each)."""
    if type(acquired) is AcquiredColumns:
        return acquired.records
    return sum(map(sub, map(_LAST, acquired), map(_FIRST, acquired))) + len(acquired)


class BatchBounds:
    """Where the log batches of a read end, to cut acquisitions at batch boundaries."""

    def __init__(self, batches: Sequence[LogBatch]) -> None:
        self.firsts = [b.base_offset for b in batches]
        self.lasts = [b.last_offset for b in batches]

    def batch_size_at(self, offset: int) -> int:
        i = bisect_right(self.firsts, offset) - 1
        if i >= 0 and self.lasts[i] >= offset:
            return self.lasts[i] - self.firsts[i] + 1
        return 1

    def end_of_batch(self, offset: int) -> int:
        i = bisect_right(self.firsts, offset) - 1
        if i >= 0 and self.lasts[i] >= offset:
            return self.lasts[i]
        return offset


def acquired_ranges(runs: Iterable[tuple[int, int, int]], bounds: BatchBounds,
                    batch_size: int | None) -> list[AcquiredRecords]:
    """AcquiredRecords for the acquired runs, (first, last, delivery count) in offset order:
    neighbours with equal delivery counts join; with a batch size, a range is cut at the end of
    the log batch where it reaches that size."""
    segments: list[AcquiredRecords] = []  # (a tuple each, replaced when a neighbour joins: rare with a filter)
    previous_last = previous_count = None
    for first, last, delivery_count in runs:
        if previous_last is not None and previous_last + 1 == first and previous_count == delivery_count:
            segments[-1] = _new_acquired((segments[-1][0], last, delivery_count))
        else:
            segments.append(_new_acquired((first, last, delivery_count)))
        previous_last, previous_count = last, delivery_count
    return cut_at_batches(segments, bounds, batch_size)


def cut_at_batches(segments: list[AcquiredRecords], bounds: BatchBounds,
                   batch_size: int | None) -> list[AcquiredRecords]:
    """``acquired_ranges``' cut: with a batch size, each range longer than it is cut at the end of
    the log batch where it reaches that size (the others are kept as they are)."""
    if batch_size is None or not segments:
        return segments
    # Usually no range reaches the batch size (a filter makes one a record): checked without a Python step each.
    if type(segments) is AcquiredColumns:
        longest = max(map(sub, segments.lasts, segments.firsts))
    else:
        longest = max(map(sub, map(_LAST, segments), map(_FIRST, segments)))
    if longest < batch_size:
        return segments
    result = []  # (AcquiredColumns iterates as AcquiredRecords)
    for segment in segments:
        first, last, count = segment
        if last - first < batch_size:
            result.append(segment)
            continue
        while last - first + 1 > batch_size:
            cut = bounds.end_of_batch(first + batch_size - 1)
            if cut >= last:
                break
            result.append(_new_acquired((first, cut, count)))
            first = cut + 1
        result.append(_new_acquired((first, last, count)))
    return result


def parse_log_batches(data, aborted: Iterable[tuple[int, int]] = ()) -> list[tuple[int, int, LogBatch]]:
    """(position, size, LogBatch) of each whole batch in ``data``. ``aborted`` lists the aborted
    transactions as (producer id, first offset): their records are marked ``aborted`` the way Kafka
    filters them (SharePartition.fetchAbortedTransactionRecordBatches): a transaction counts as
    aborted from its first offset until its producer's next control batch, its ABORT marker."""
    view = memoryview(data)
    pending = sorted(aborted, key=lambda a: a[1])
    aborted_producers: set[int] = set()
    out = []
    pos = 0
    while len(view) - pos >= BATCH_HEADER_SIZE:
        info = parse_batch_header(view, pos)
        if info.size < BATCH_HEADER_SIZE or pos + info.size > len(view):
            break
        while pending and pending[0][1] <= info.last_offset:
            aborted_producers.add(pending.pop(0)[0])
        is_aborted = False
        if info.is_control:
            aborted_producers.discard(info.producer_id)
        elif info.is_transactional and info.producer_id in aborted_producers:
            is_aborted = True
        out.append((pos, info.size, LogBatch(info.base_offset, info.last_offset, control=info.is_control,
                                             aborted=is_aborted)))
        pos += info.size
    return out


def batches_holding(view: memoryview, batches: list[tuple[int, int, LogBatch]],
                         acquired: Sequence[AcquiredRecords]) -> list[memoryview]:
    """The read's batches that hold acquired records (in offset order, not overlapping), neighbours
    joined into one buffer."""
    pieces: list[list[int]] = []
    if type(acquired) is AcquiredColumns:
        firsts, lasts = acquired.firsts, acquired.lasts
    else:
        firsts, lasts = list(map(_FIRST, acquired)), list(map(_LAST, acquired))
    n = len(lasts)
    for pos, size, batch in batches:
        i = bisect_left(lasts, batch.base_offset)  # (the first range not ending before the batch)
        if i < n and firsts[i] <= batch.last_offset:
            if pieces and pieces[-1][1] == pos:
                pieces[-1][1] = pos + size
            else:
                pieces.append([pos, pos + size])
    return [view[start:end] for start, end in pieces]
