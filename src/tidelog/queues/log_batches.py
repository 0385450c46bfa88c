"""The log as a share-partition's acquisition sees it: the record batches of one read.

- ``LogBatch``: a batch's offsets, and whether it is a transaction marker or belongs to an aborted
  transaction (both are archived, never delivered); ``parse_log_batches`` gives them for a read.
- ``BatchBounds``: where the read's batches start and end, so an acquisition is cut at batch
  boundaries.
- ``AcquiredRecords`` (what a ShareFetch answers per range) and ``acquired_ranges``; the read's
  buffers that hold acquired records come from ``batches_holding``.

Pure functions, no I/O.
"""

from __future__ import annotations

from bisect import bisect_right
from functools import partial
from operator import itemgetter
from typing import Iterable, NamedTuple, Sequence

from tidelog.protocol.records import BATCH_HEADER_SIZE, parse_batch_header

__all__ = ["AcquiredRecords", "BatchBounds", "LogBatch", "acquired_ranges", "batches_holding", "cut_at_batches",
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
    if max(map(int.__sub__, map(_LAST, segments), map(_FIRST, segments))) < batch_size:
        return segments
    result = []
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
    """The read's batches that hold acquired records, neighbours joined into one buffer."""
    pieces: list[list[int]] = []
    i = 0
    for pos, size, batch in batches:
        while i < len(acquired) and acquired[i].last_offset < batch.base_offset:
            i += 1
        if i < len(acquired) and acquired[i].first_offset <= batch.last_offset:
            if pieces and pieces[-1][1] == pos:
                pieces[-1][1] = pos + size
            else:
                pieces.append([pos, pos + size])
    return [view[start:end] for start, end in pieces]
