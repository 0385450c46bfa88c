"""Sparse indexes of one segment: offset -> file position, and timestamp -> offset.

On disk each is a flat file of fixed-size big-endian entries, appended as the segment grows
(written in bulk before each flush, seal and close, not per entry: after a crash, recovery
rebuilds the indexes of every segment it rescans, replacing their files). Every open checks a
whole index (each entry inside the segment, the order below) and rebuilds one that fails:

- ``<base>.index``: int32 relative offset, int32 file position. The relative offset is the base
  offset of the batch that starts at that position. One entry every ``index_interval_bytes``.
- ``<base>.timeindex``: int64 timestamp T, int32 relative offset o, meaning "every record below
  offset o has a timestamp <= T". Written beside an offset-index entry when the segment's
  max timestamp has grown, and once more when the segment is sealed. T is nondecreasing.

The entries are also kept in memory (arrays) and looked up by bisection, so the files are only
open while they are read (at open), written or synced: an index holds no descriptor (Kafka maps
its indexes and closes them when idle, for the same reason: a broker with thousands of
partitions). ``open_for_sync`` writes the pending entries through the descriptor it returns,
so the write and its fsync share one open file and a write-back error cannot slip between
them. Not thread-safe; the event loop owns them.

An index rebuilt in memory (recovery, or a file that failed its checks) does not know what its
file holds: ``rebuilt`` marks it so, and its next write first compares the file with the
entries, keeps the prefix they share and writes the rest over it, cutting the file only where it
is longer. A start after a crash thus touches no index file of an active segment (they are
rebuilt at every crash anyway), and an index file is never emptied to be rewritten: freeing its
block costs ~2.4 ms on ext4 with ``discard`` (two per partition made a start after a SIGKILL of
10,000 partitions take half a minute).
"""

from __future__ import annotations

import errno
import operator
import os
import struct
import sys
from array import array
from bisect import bisect_left, bisect_right
from itertools import islice
from pathlib import Path
from typing import Callable

from tidelog.storage.faults import faults

__all__ = ["OffsetIndex", "TimeIndex"]


def _increasing(values: array, order) -> bool:
    """Whether ``order(a, b)`` holds for each neighbouring pair (a C-speed pass, no list built)."""
    return all(map(order, values, islice(values, 1, None)))


class _Index:
    _entry = struct.Struct(">ii")
    _key_type = "i"

    def __init__(self, path: Path | None, dir: Path | None = None, name: str = "") -> None:
        """``path``, or ``dir`` and ``name`` (the path is made at its first use: a start of
        thousands of logs makes none)."""
        self._path = path
        self._dir, self._name = dir, name
        self._keys = array(self._key_type)
        self._values = array("i")
        self.persisted_entries = 0  # entries beyond this exist only in memory until written
        self.file_unknown = False  # rebuilt: the file may differ from the entries (see the module docstring)
        # Not read yet (a segment opened from a clean stop's account, LogSegment.from_state): called
        # at the first use of the entries to read and check the file (Kafka's lazy index).
        self.loader: Callable[[], None] | None = None

    @property
    def path(self) -> Path:
        if self._path is None:
            self._path = self._dir / self._name
        return self._path

    @property
    def keys(self) -> array:
        if self.loader is not None:
            self._load_now()
        return self._keys

    @keys.setter
    def keys(self, keys: array) -> None:
        self._keys = keys

    @property
    def values(self) -> array:
        if self.loader is not None:
            self._load_now()
        return self._values

    @values.setter
    def values(self, values: array) -> None:
        self._values = values

    def _load_now(self) -> None:
        loader, self.loader = self.loader, None
        loader()

    def _read_file(self) -> bytes:
        """The file's bytes (empty if it does not exist)."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return b""
        try:
            return os.pread(fd, os.fstat(fd).st_size, 0)
        finally:
            os.close(fd)

    def load(self) -> bool:
        """Read the entries from disk; False if the file is torn (size not a multiple of an entry)."""
        self.loader = None
        data = self._read_file()
        self.keys = array(self._key_type)
        self.values = array("i")
        if len(data) % self._entry.size:
            return False
        for key, value in self._entry.iter_unpack(data):
            self.keys.append(key)
            self.values.append(value)
        self.persisted_entries = len(self.keys)
        return True

    def __len__(self) -> int:
        return len(self.keys)

    def append(self, key: int, value: int) -> None:
        """Add an entry in memory; the file catches up in write_pending (no syscall here)."""
        if self.loader is not None:
            self._load_now()
        self._keys.append(key)  # not the properties: this runs for every indexed batch produced
        self._values.append(value)

    @property
    def pending(self) -> bool:
        """Whether the file lacks entries (or may hold others: ``rebuilt``); never for an index
        not read yet (its file is all it has)."""
        return self.loader is None and (self.file_unknown or len(self._keys) > self.persisted_entries)

    def _open(self) -> int:
        return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)

    def _packed(self, start: int, end: int) -> bytes:
        """Entries ``start`` to ``end`` as the file holds them."""
        pack = self._entry.pack
        return b"".join(pack(self.keys[i], self.values[i]) for i in range(start, end))

    def _shared_prefix(self, data: bytes) -> int:
        """How many whole entries at the start of ``data`` (the file) equal the entries in memory."""
        size = self._entry.size
        count = min(len(data) // size, len(self.keys))
        if data[: count * size] == self._packed(0, count):
            return count
        low, high = 0, count  # entries [0, low) match, [0, high) do not: bisect on prefixes
        while high - low > 1:
            middle = (low + high) // 2
            if data[: middle * size] == self._packed(0, middle):
                low = middle
            else:
                high = middle
        return low

    def _write_pending_to(self, fd: int) -> None:
        size = self._entry.size
        file_bytes = None
        if self.file_unknown:
            file_bytes = os.fstat(fd).st_size
            self.persisted_entries = self._shared_prefix(os.pread(fd, file_bytes, 0))
        count = len(self.keys)
        start = self.persisted_entries * size
        if count > self.persisted_entries:
            data = self._packed(self.persisted_entries, count)
            if faults.armed:
                faults.check("write", "index")
            written = os.pwrite(fd, data, start)
            if written != len(data):  # a short write leaves a torn entry; undo it
                os.ftruncate(fd, start)
                raise OSError(errno.EIO, f"short write to {self.path.name} ({written} of {len(data)} bytes)")
            self.persisted_entries = count
        if file_bytes is not None:
            if file_bytes > count * size:  # stale entries after the ones written
                os.ftruncate(fd, count * size)
            self.file_unknown = False

    def write_pending(self) -> None:
        """Append the entries not yet in the file (creating it), with no fsync."""
        fd = self._open()
        try:
            self._write_pending_to(fd)
        finally:
            os.close(fd)

    def open_for_sync(self) -> int:
        """A descriptor of the file with every entry written through it, for the caller to fsync
        and close."""
        fd = self._open()
        try:
            self._write_pending_to(fd)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def clear(self) -> None:
        """Drop every entry in memory: a rebuild follows, and the file is compared with it at
        its next write (``file_unknown``)."""
        self.loader = None
        self.keys = array(self._key_type)
        self.values = array("i")
        self.persisted_entries = 0
        self.file_unknown = True

    def truncate_entries(self, count: int) -> None:
        """Keep only the first ``count`` entries, in memory and in the file (created if missing).

        The file is measured, not trusted to hold ``persisted_entries``: an index that was never
        loaded (recovery rebuilds it) or failed to load (torn) holds stale bytes to replace.
        """
        del self.keys[count:]
        del self.values[count:]
        fd = self._open()
        try:
            if count < self.persisted_entries or os.fstat(fd).st_size > count * self._entry.size:
                os.ftruncate(fd, count * self._entry.size)
        finally:
            os.close(fd)
        self.persisted_entries = min(self.persisted_entries, count)

    def sync(self) -> None:
        """Write the pending entries and fsync the file."""
        fd = self.open_for_sync()
        try:
            if faults.armed:
                faults.check("fsync", "index")
            os.fsync(fd)
        finally:
            os.close(fd)


class OffsetIndex(_Index):
    """Relative offset -> file position (see the module docstring)."""

    _entry = struct.Struct(">ii")
    _key_type = "i"

    def load(self) -> bool:  # the fast path: one frombytes, no per-entry Python work
        self.loader = None
        data = self._read_file()
        if len(data) % 8:
            self.keys, self.values = array("i"), array("i")
            return False
        flat = array("i")
        flat.frombytes(data)
        if sys.byteorder == "little":
            flat.byteswap()
        self.keys, self.values = flat[0::2], flat[1::2]
        self.persisted_entries = len(self.keys)
        return True

    def lookup(self, relative_offset: int) -> int:
        """File position of the last indexed batch starting at or below ``relative_offset``."""
        slot = bisect_right(self.keys, relative_offset) - 1
        return self.values[slot] if slot >= 0 else 0

    def position_at_or_below(self, position: int) -> int:
        """The last indexed batch position at or below ``position`` (0: the segment's start)."""
        slot = bisect_right(self.values, position) - 1
        return self.values[slot] if slot >= 0 else 0

    def sane(self, log_size_bytes: int, max_relative_offset: int) -> bool:
        """Every entry inside the segment, offsets and positions strictly increasing (one pass)."""
        if not self.keys:
            return True
        return (0 <= self.keys[0] and self.keys[-1] <= max_relative_offset
                and 0 <= self.values[0] and self.values[-1] < log_size_bytes
                and _increasing(self.keys, operator.lt) and _increasing(self.values, operator.lt))

    def truncate_to_position(self, position: int) -> None:
        self.truncate_entries(bisect_left(self.values, position))


class TimeIndex(_Index):
    """Timestamp -> relative offset (see the module docstring)."""

    _entry = struct.Struct(">qi")
    _key_type = "q"

    @property
    def last_timestamp(self) -> int:
        return self.keys[-1] if self.keys else -1

    def maybe_append(self, timestamp: int, relative_offset: int) -> None:
        if self.loader is not None:
            self._load_now()
        keys = self._keys
        if timestamp > (keys[-1] if keys else -1):
            keys.append(timestamp)
            self._values.append(relative_offset)

    def lookup(self, timestamp: int) -> int:
        """A relative offset below which every record is older than ``timestamp`` (0 if none known)."""
        slot = bisect_left(self.keys, timestamp) - 1
        return self.values[slot] if slot >= 0 else 0

    def sane(self, max_relative_offset: int) -> bool:
        """Every offset inside the segment, timestamps and offsets nondecreasing (one pass)."""
        if not self.keys:
            return True
        return (0 <= self.values[0] and self.values[-1] <= max_relative_offset
                and _increasing(self.keys, operator.le) and _increasing(self.values, operator.le))

    def truncate_to_offset(self, relative_offset: int) -> None:
        """Drop entries that speak about offsets at or above ``relative_offset``'s successor."""
        self.truncate_entries(bisect_right(self.values, relative_offset))
