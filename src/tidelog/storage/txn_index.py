"""The aborted-transaction index of one segment (Kafka's TransactionIndex, ``<base>.txnindex``).

A read_committed consumer drops the records of aborted transactions itself; the broker tells it
which ones with the aborted-transactions list of a Fetch response, read from these indexes. One
entry per aborted transaction, in the segment that holds its ABORT marker, in marker order.

On disk: a flat file of 34-byte big-endian entries, Kafka's AbortedTxn v0::

    int16 version (0) | int64 producerId | int64 firstOffset | int64 lastOffset | int64 lastStableOffset

``firstOffset`` is the transaction's first record in this partition, ``lastOffset`` the offset
of its ABORT marker, ``lastStableOffset`` the partition's last stable offset once the marker was
written (the first offset of the oldest transaction still open, or lastOffset + 1). lastOffset
increases from entry to entry, and so (the first open offset only grows) does
lastStableOffset; lookups bisect on both (an index where they do not is walked entry by entry,
as Kafka always does).

The file is created with its first entry (most segments have none). An append is one small
write into the page cache; ``sync`` fsyncs it and belongs beside the segment's own fsync, so
every entry below the recovery point is durable. On open a torn tail (a size that is not a
multiple of 34) is cut; ``sane`` says whether the entries are usable at all, and recovery
rebuilds an index from the log (storage/producer_txn.py) when they are not. The entries are
read once, on first use, and then kept in memory. Writes consult the fault hook (target
``index``). Not thread-safe; the partition's owner (the event loop) owns it.
"""

from __future__ import annotations

import logging
import os
import struct
from array import array
from bisect import bisect_left
from pathlib import Path
from typing import Iterable, NamedTuple

from tidelog.storage.faults import faults

__all__ = ["AbortedTxn", "TransactionIndex", "collect_aborted_transactions", "TXN_INDEX_SUFFIX"]

logger = logging.getLogger(__name__)

TXN_INDEX_SUFFIX = ".txnindex"
ENTRY_VERSION = 0
_ENTRY = struct.Struct(">hqqqq")
ENTRY_SIZE = _ENTRY.size  # 34


class AbortedTxn(NamedTuple):
    producer_id: int
    first_offset: int
    last_offset: int
    last_stable_offset: int

    def encode(self) -> bytes:
        return _ENTRY.pack(ENTRY_VERSION, self.producer_id, self.first_offset, self.last_offset, self.last_stable_offset)


class TransactionIndex:
    """The ``.txnindex`` of the segment starting at ``base_offset``; see the module docstring."""

    def __init__(self, path: Path, base_offset: int) -> None:
        self.path = Path(path)
        self.base_offset = base_offset
        self._fd: int | None = None
        self._loaded = False
        self._sane = True
        self._producer_ids = array("q")
        self._first_offsets = array("q")
        self._last_offsets = array("q")
        self._last_stable_offsets = array("q")

    # ---- reading ---------------------------------------------------------------------------

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        whole = len(data) - len(data) % ENTRY_SIZE
        if whole != len(data):
            logger.warning("%s: cutting a torn tail of %d bytes", self.path, len(data) - whole)
            os.truncate(self.path, whole)
        previous_last = previous_stable = -1
        for version, producer_id, first, last, stable in _ENTRY.iter_unpack(data[:whole]):
            if version != ENTRY_VERSION or last < self.base_offset or last <= previous_last or first > last \
                    or stable < previous_stable:
                self._sane = False
            previous_last, previous_stable = last, stable
            self._producer_ids.append(producer_id)
            self._first_offsets.append(first)
            self._last_offsets.append(last)
            self._last_stable_offsets.append(stable)

    @property
    def sane(self) -> bool:
        """False when an entry has an unknown version, ends before this segment, or is out of order."""
        self._load()
        return self._sane

    def __len__(self) -> int:
        self._load()
        return len(self._last_offsets)

    def entries(self) -> list[AbortedTxn]:
        self._load()
        return [AbortedTxn(*e) for e in zip(self._producer_ids, self._first_offsets, self._last_offsets,
                                            self._last_stable_offsets)]

    @property
    def last_offset(self) -> int | None:
        """The marker offset of the last entry."""
        self._load()
        return self._last_offsets[-1] if self._last_offsets else None

    def collect(self, fetch_offset: int, upper_bound_offset: int) -> tuple[list[AbortedTxn], bool]:
        """The aborted transactions overlapping [fetch_offset, upper_bound_offset), and whether the
        search is complete (True: no later segment can hold another one)."""
        self._load()
        if not self._sane:
            return self._scan(fetch_offset, upper_bound_offset)
        start = bisect_left(self._last_offsets, fetch_offset)  # first entry ending at or after the fetch
        stop = bisect_left(self._last_stable_offsets, upper_bound_offset)  # first entry whose LSO passes the range
        found = [
            AbortedTxn(self._producer_ids[i], self._first_offsets[i], self._last_offsets[i], self._last_stable_offsets[i])
            for i in range(start, min(stop + 1, len(self._last_offsets)))
            if self._first_offsets[i] < upper_bound_offset
        ]
        return found, stop < len(self._last_offsets)

    def _scan(self, fetch_offset: int, upper_bound_offset: int) -> tuple[list[AbortedTxn], bool]:
        found = []
        for entry in self.entries():  # Kafka's walk, entry by entry
            if entry.last_offset >= fetch_offset and entry.first_offset < upper_bound_offset:
                found.append(entry)
            if entry.last_stable_offset >= upper_bound_offset:
                return found, True
        return found, False

    # ---- writing ---------------------------------------------------------------------------

    def append(self, entry: AbortedTxn) -> None:
        """Add the entry of an ABORT marker written to this segment. Raises ValueError if its
        marker is not after the last entry's, OSError if the write fails."""
        self._load()
        if self._last_offsets and entry.last_offset <= self._last_offsets[-1]:
            raise ValueError(f"{self.path}: aborted transaction ending at {entry.last_offset} does not follow "
                             f"the last entry's {self._last_offsets[-1]}")
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        if faults.armed:
            faults.check("write", "index")
        data = entry.encode()
        if os.write(self._fd, data) != len(data):
            raise OSError(f"{self.path}: short write of an aborted transaction entry")
        self._producer_ids.append(entry.producer_id)
        self._first_offsets.append(entry.first_offset)
        self._last_offsets.append(entry.last_offset)
        if self._last_stable_offsets and entry.last_stable_offset < self._last_stable_offsets[-1]:
            self._sane = False  # cannot happen from a log; lookups fall back to a full scan
        self._last_stable_offsets.append(entry.last_stable_offset)

    def truncate_to(self, offset: int) -> None:
        """Drop the entries whose marker is at ``offset`` or later (the log is cut there)."""
        self._load()
        keep = bisect_left(self._last_offsets, offset)
        if keep == len(self._last_offsets):
            return
        for values in (self._producer_ids, self._first_offsets, self._last_offsets, self._last_stable_offsets):
            del values[keep:]
        if self.path.exists():
            os.truncate(self.path, keep * ENTRY_SIZE)

    def reset(self) -> None:
        """Drop every entry (before a rebuild from the log)."""
        self.truncate_to(-1)
        self._sane = True

    def sync(self) -> None:
        if self._fd is not None:
            if faults.armed:
                faults.check("fsync", "index")
            os.fsync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def delete(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)

    def __repr__(self) -> str:
        return f"TransactionIndex({self.path}, {len(self._last_offsets) if self._loaded else '?'} entries)"


def collect_aborted_transactions(indexes: Iterable[TransactionIndex], fetch_offset: int,
                                 upper_bound_offset: int) -> list[AbortedTxn]:
    """The aborted transactions a read_committed Fetch of [fetch_offset, upper_bound_offset) must
    list: ``indexes`` are those of the segment holding ``fetch_offset`` and every later one, in
    order (Kafka's LocalLog.collectAbortedTransactions); the walk stops at the first index whose
    search is complete."""
    found: list[AbortedTxn] = []
    for index in indexes:
        entries, complete = index.collect(fetch_offset, upper_bound_offset)
        found.extend(entries)
        if complete:
            break
    return found
