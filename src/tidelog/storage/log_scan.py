"""Walking a log's batches from an offset to its end, a chunk of whole batches at a time, or
their headers alone.

The internal topics' loaders (``__consumer_offsets``, ``__transaction_state``) replay their
partition this way: ``log_batches(log, start)`` yields (batch, BatchInfo) for every batch ending
at or after ``start``, reading ``chunk_bytes`` at a time (at least one whole batch), until the
log end as it was when the walk began. ``batch_headers(log, start)`` yields (segment, position,
BatchInfo) the same way but reads only the headers (the segments' own walk, which hops over
big batches' records): the producer-state and transaction-state rebuilds need the headers, and a marker's
few bytes, not the records. Reads only; the caller owns the log (the event loop).
"""

from __future__ import annotations

from typing import Iterator

from tidelog.protocol.records import BATCH_HEADER_SIZE, BatchInfo, parse_batch_header

__all__ = ["batch_headers", "log_batches"]


def log_batches(log, start: int, chunk_bytes: int = 1 << 20) -> Iterator[tuple[memoryview, BatchInfo]]:
    """(batch, info) of every batch of ``log`` (a PartitionLog) ending at or after ``start``."""
    offset, end = max(start, log.log_start_offset), log.log_end_offset
    while offset < end:
        data = log.read(offset, chunk_bytes, True)
        if not data:
            return
        view = memoryview(data)
        pos, last = 0, offset - 1
        while len(view) - pos >= BATCH_HEADER_SIZE:
            info = parse_batch_header(view, pos)
            if pos + info.size > len(view):
                break
            if info.last_offset >= offset:
                yield view[pos:pos + info.size], info
            last = info.last_offset
            pos += info.size
        if last < offset:
            return
        offset = last + 1


def batch_headers(log, start: int) -> Iterator[tuple[object, int, BatchInfo]]:
    """(segment, position, info) of every batch of ``log`` ending at or after ``start``, up to
    the log end as it was when the walk began, reading headers only (``LogSegment.batches``,
    from the offset index's entry at or before ``start``); stops at a torn tail."""
    offset, end = max(start, log.log_start_offset), log.log_end_offset
    for index, segment in enumerate(log.segments):
        following = log.segments[index + 1].base_offset if index + 1 < len(log.segments) else None
        if following is not None and following <= offset:
            continue
        position = segment.offset_index.lookup(offset - segment.base_offset) if offset > segment.base_offset else 0
        for position, info in segment.batches(position):
            if offset >= end:
                return
            if info.last_offset >= offset:
                yield segment, position, info
                offset = info.last_offset + 1
