"""The on-disk index of a delay topic's partition by due time (issue 14, delayed delivery for every
consumer): which records (by offset) become due when, without holding them in memory.

Entries are (due ms, offset) pairs of 16 bytes, appended to one file per ``bucket_ms`` of due time
(``<bucket>.due`` in the index's directory); a query reads only the buckets its time range
touches, so memory follows the records due in one query's range, never the number of delayed
records. Entries are written by the delay mover as it reads the partition; a bucket is deleted
once every record due in it has been moved (``drop_through``). The index is a cache of the log:
after a crash or on a new leader it is completed from the log again (duplicate entries from a
re-read are merged by offset), so it needs no fsync of its own.

Not thread-safe; one mover owns it.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Iterable

__all__ = ["DelayIndex"]

_ENTRY = struct.Struct(">qq")
SUFFIX = ".due"


class DelayIndex:
    def __init__(self, directory: Path, bucket_ms: int = 10_000) -> None:
        self.directory = Path(directory)
        self.bucket_ms = bucket_ms
        self.directory.mkdir(parents=True, exist_ok=True)
        self._counted: dict[int, tuple[int, int, int]] = {}  # bucket -> (bytes counted, entries, highest offset)

    def _path(self, bucket: int) -> Path:
        return self.directory / f"{bucket:020d}{SUFFIX}"

    def buckets(self) -> list[int]:
        return sorted(int(p.name[:-len(SUFFIX)]) for p in self.directory.glob(f"*{SUFFIX}"))

    def add(self, entries: Iterable[tuple[int, int]]) -> None:
        """Append (due ms, offset) entries, each to its due-time bucket (one write per bucket)."""
        by_bucket: dict[int, bytearray] = {}
        for due_ms, offset in entries:
            buffer = by_bucket.setdefault(max(0, due_ms) // self.bucket_ms, bytearray())
            buffer += _ENTRY.pack(due_ms, offset)
        for bucket, data in by_bucket.items():
            with open(self._path(bucket), "ab") as f:
                f.write(data)

    def between(self, after_ms: int, through_ms: int, below_offset: int) -> list[tuple[int, int]]:
        """Entries with after_ms < due <= through_ms and offset < below_offset, sorted by (due,
        offset), each offset once."""
        if through_ms <= after_ms:
            return []
        first, last = max(0, after_ms + 1) // self.bucket_ms, max(0, through_ms) // self.bucket_ms
        found: dict[int, int] = {}
        for bucket in self.buckets():
            if bucket < first or bucket > last:
                continue
            try:
                data = self._path(bucket).read_bytes()
            except FileNotFoundError:
                continue
            usable = len(data) - len(data) % _ENTRY.size  # a torn last entry (crash mid-write) is left out
            for due_ms, offset in _ENTRY.iter_unpack(memoryview(data)[:usable]):
                if after_ms < due_ms <= through_ms and offset < below_offset:
                    found[offset] = due_ms
        return sorted((due, offset) for offset, due in found.items())

    def next_due_after(self, after_ms: int, below_offset: int) -> int | None:
        """The earliest due time after ``after_ms`` among offsets below ``below_offset`` (for the
        mover's timer), reading buckets in order until one has an entry."""
        for bucket in self.buckets():
            if (bucket + 1) * self.bucket_ms <= after_ms:
                continue
            entries = self.between(after_ms, (bucket + 1) * self.bucket_ms - 1, below_offset)
            if entries:
                return entries[0][0]
        return None

    def count_after(self, after_ms: int) -> int:
        """How many offsets the index holds with a due time after ``after_ms`` (for the status: the
        mover's records waiting below where it read). The bucket holding ``after_ms`` is read whole;
        a later bucket only past what the last count read: a mover appends a bucket's entries in
        offset order from where its reading starts, so an entry at or below the highest offset
        counted in its bucket is a re-read's duplicate."""
        buckets = self.buckets()
        for gone in self._counted.keys() - set(buckets):
            del self._counted[gone]
        total = 0
        for bucket in buckets:
            if (bucket + 1) * self.bucket_ms - 1 <= after_ms:
                continue
            if bucket * self.bucket_ms <= after_ms:
                total += len(self.between(after_ms, (bucket + 1) * self.bucket_ms - 1, 1 << 62))
                continue
            counted, entries, highest = self._counted.get(bucket, (0, 0, -1))
            try:
                size = os.stat(self._path(bucket)).st_size
                if size - counted < _ENTRY.size and size >= counted:  # nothing new
                    total += entries
                    continue
                with open(self._path(bucket), "rb") as f:
                    if size < counted:  # written again from the start
                        counted, entries, highest = 0, 0, -1
                    f.seek(counted)
                    data = f.read(size - counted)
            except FileNotFoundError:
                continue
            usable = len(data) - len(data) % _ENTRY.size
            for _due_ms, offset in _ENTRY.iter_unpack(memoryview(data)[:usable]):
                if offset > highest:
                    entries, highest = entries + 1, offset
            self._counted[bucket] = (counted + usable, entries, highest)
            total += entries
        return total

    def drop_through(self, due_ms: int) -> None:
        """Delete the buckets holding only due times <= ``due_ms`` (their records are all moved)."""
        for bucket in self.buckets():
            if (bucket + 1) * self.bucket_ms - 1 <= due_ms:
                try:
                    os.unlink(self._path(bucket))
                except FileNotFoundError:
                    pass

    def clear(self) -> None:
        self._counted.clear()
        for bucket in self.buckets():
            self._path(bucket).unlink(missing_ok=True)
