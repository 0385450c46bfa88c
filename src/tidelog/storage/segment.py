"""One log segment: a file of whole RecordBatch v2 batches plus its two sparse indexes.

On disk: ``<20-digit base offset>.log`` holds batches back to back, exactly as produced except
for the base offset (and leader epoch) the broker assigned; ``.index`` and ``.timeindex`` are
described in ``index.py``. Not thread-safe; the event loop owns it (fsyncs of duplicated file
descriptors may run in an executor, see PartitionLog.start_flush).

Descriptors: the ``.log`` file is opened when first used (``fd``) and stays open while the
segment is active; a sealed segment's file is closed again when an ``OpenFiles`` cache
(open_files.py) evicts it for being idle, never while it holds writes no fsync has taken yet
(``unsynced``). The indexes hold none (index.py).
"""

from __future__ import annotations

import errno
import logging
import os
import struct
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from tidelog.clock import wall_clock_ms
from tidelog.protocol.records import BATCH_HEADER_SIZE, BatchInfo, batch_crc_ok, parse_batch_header
from tidelog.storage.errors import CorruptSegment
from tidelog.storage.faults import faults
from tidelog.storage.index import OffsetIndex, TimeIndex

if TYPE_CHECKING:
    from tidelog.storage.open_files import OpenFiles

__all__ = ["LogSegment", "segment_file_name"]

logger = logging.getLogger(__name__)

_BASE_AND_LENGTH = struct.Struct(">qi")
_INT32 = struct.Struct(">i")
_LAST_OFFSET_DELTA_POS = 23
_MAX_TIMESTAMP_POS = 35
_INT64 = struct.Struct(">q")
_SCAN_BLOCK_BYTES = 1 << 20
_HEADER_BLOCK_BYTES = 64 << 10  # a header walk's block; after a batch this big, a header read alone
_MAX_RELATIVE_OFFSET = 0x7FFFFFFF
_MIN_BATCH_LENGTH = BATCH_HEADER_SIZE - 12  # the length field counts from after itself


def segment_file_name(base_offset: int, suffix: str) -> str:
    return f"{base_offset:020d}{suffix}"


class LogSegment:
    """A segment file and its indexes; see the module docstring for format and ownership."""

    def __init__(self, dir: Path, base_offset: int, suffix: str = "", files: OpenFiles | None = None,
                 create: bool = True, indexes_existed: bool | None = None) -> None:
        """``suffix`` names the files of a segment being built or swapped in (``.cleaned``, ``.swap``).
        ``create``: a new segment (its file is created and opened now); else an existing one,
        whose file is opened when first used. ``files``: the cache that closes it when idle.
        ``indexes_existed``: whether both index files exist, if the caller knows (else looked up)."""
        self.dir = dir
        self.base_offset = base_offset
        self._log_path: Path | None = dir / (segment_file_name(base_offset, ".log") + suffix)
        self.files = files
        self.sealed = False  # no more appends: its descriptor may be closed when idle
        self.unsynced = False  # written since its last fsync began: its descriptor stays open
        self._fd: int | None = None
        # Closed for good (left the log, or the log closed): its path may name other bytes now,
        # so a FileSlice read before must not reopen it (storage/file_slice.py).
        self.released = False
        if create:
            self._fd = os.open(self.log_path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
            self.size_bytes = os.fstat(self._fd).st_size
        else:
            self.size_bytes = os.stat(self.log_path).st_size
        self.offset_index = OffsetIndex(dir / (segment_file_name(base_offset, ".index") + suffix))
        self.time_index = TimeIndex(dir / (segment_file_name(base_offset, ".timeindex") + suffix))
        self.indexes_existed = (indexes_existed if indexes_existed is not None
                                else self.offset_index.path.exists() and self.time_index.path.exists())
        self.next_offset = base_offset  # one past the last offset held
        self.max_timestamp = -1
        self.bytes_since_last_index_entry = 0
        self.created_ms = wall_clock_ms()  # for segment.ms; the first batch's time once loaded
        self._unchecked_size = False  # opened from a clean stop's account: the file's size is checked at first open
        # Where the last read_range ended: (the offset of the batch there, its position). A
        # consumer reading on asks for that offset next. Forgotten when the file is cut.
        self._read_hint: tuple[int, int] | None = None
        self._stated_max_timestamp = -1  # likewise: the max timestamp it gave

    # ---- a clean stop's account ------------------------------------------------------------

    STATE_FIELDS = 5

    def state(self) -> list[int]:
        """What ``from_state`` needs to open this segment again without reading it (written
        by a clean stop, when every byte and index entry is on disk)."""
        return [self.base_offset, self.size_bytes, self.next_offset, self.max_timestamp, self.created_ms]

    @classmethod
    def from_state(cls, dir: Path, state: list[int], files: OpenFiles | None, index_interval_bytes: int,
                   active: bool) -> LogSegment:
        """The segment a clean stop described (``state()``), opened with no system call: its file is
        opened (and its size checked) at first use, its indexes read and checked at first use."""
        base_offset, size_bytes, next_offset, max_timestamp, created_ms = state
        segment = cls.__new__(cls)
        segment.dir = dir
        segment.base_offset = base_offset
        segment._log_path = None
        segment.files = files
        segment.sealed = not active
        segment.unsynced = False
        segment._fd = None
        segment.released = False
        segment.size_bytes = size_bytes
        name = segment_file_name(base_offset, "")
        segment.offset_index = OffsetIndex(None, dir, name + ".index")
        segment.time_index = TimeIndex(None, dir, name + ".timeindex")
        segment.indexes_existed = True
        segment.next_offset = next_offset
        segment.max_timestamp = max_timestamp
        segment.created_ms = created_ms
        segment._unchecked_size = True
        segment._read_hint = None
        segment._stated_max_timestamp = max_timestamp
        ref = weakref.ref(segment)  # no reference cycle: a segment dropped unread is freed at once
        loader = lambda: ref()._load_indexes(index_interval_bytes, active)  # noqa: E731
        segment.offset_index.loader = segment.time_index.loader = loader
        segment.bytes_since_last_index_entry = 0
        if active:  # where the next entry is due: from the last entry (known once read) to the end
            segment.bytes_since_last_index_entry = -1
        return segment

    def _load_indexes(self, index_interval_bytes: int, active: bool) -> None:
        """Read and check both index files (as ``load`` does at a start), at their first use; one
        that fails is rebuilt from the segment, which keeps its size and offsets."""
        self.offset_index.loader = self.time_index.loader = None
        max_relative = (self.next_offset if not active else 1 << 62) - self.base_offset
        if (self.offset_index.load() and self.time_index.load()
                and self.offset_index.sane(max(self.size_bytes, 1), max_relative) and self.time_index.sane(max_relative)):
            if active and self.bytes_since_last_index_entry < 0:
                last = self.offset_index.values[-1] if len(self.offset_index) else 0
                self.bytes_since_last_index_entry = self.size_bytes - last
            return
        logger.warning("%s: index files missing or inconsistent, rebuilding them", self.log_path)
        kept = self.next_offset, self.max_timestamp, self.created_ms
        self.offset_index.clear()
        self.time_index.clear()
        self.bytes_since_last_index_entry = 0
        for position, info in self.batches(0):
            self._index(info, info.base_offset, position, index_interval_bytes)
        self.next_offset, self.max_timestamp, self.created_ms = kept

    @property
    def log_path(self) -> Path:
        if self._log_path is None:  # from_state: made at its first use
            self._log_path = self.dir / segment_file_name(self.base_offset, ".log")
        return self._log_path

    @property
    def fd(self) -> int:
        """The ``.log`` file's descriptor, opened if it was closed (a sealed segment read again)."""
        fd = self._fd
        if fd is None:
            fd = os.open(self.log_path, os.O_RDWR | os.O_APPEND)
            if self._unchecked_size:
                self._check_size(fd)
            self._fd = fd
        if self.sealed and self.files is not None:
            self.files.touch(self)
        return fd

    def _check_size(self, fd: int) -> None:
        """The file a clean stop described must not have changed while the broker was stopped."""
        size = os.fstat(fd).st_size
        if size != self.size_bytes:
            os.close(fd)
            raise OSError(errno.EIO, f"{self.log_path} holds {size} bytes, but the clean stop left {self.size_bytes}: "
                                     "changed while the broker was stopped")
        self._unchecked_size = False

    @property
    def file_open(self) -> bool:
        return self._fd is not None

    # The descriptor an fsync job is syncing, and how many jobs: ``close_file`` leaves it open, and
    # the last job's end closes it (LogFlushing.start_flush / finish_flush), so a descriptor is
    # never closed, nor its number reused, while an fsync thread holds it.
    sync_fd: int | None = None
    sync_jobs = 0

    def close_file(self) -> None:
        """Close the ``.log`` descriptor (reopened at the next use); an OpenFiles eviction."""
        fd, self._fd = self._fd, None
        if fd is not None and fd != self.sync_fd:
            os.close(fd)

    def hold_for_sync(self) -> int:
        """The ``.log`` descriptor for an fsync job in a thread, kept open until ``end_sync`` even if
        the segment is closed, released or deleted meanwhile. Raises OSError (reopening it)."""
        if self.sync_jobs == 0:
            self.sync_fd = self.fd
        self.sync_jobs += 1
        return self.sync_fd

    def end_sync(self) -> None:
        """A job holding the descriptor has ended: the last one closes it if ``close_file`` left it
        open for them. Raises OSError (a close can report a write-back error)."""
        self.sync_jobs -= 1
        if self.sync_jobs == 0:
            fd, self.sync_fd = self.sync_fd, None
            if fd != self._fd:
                os.close(fd)

    # ---- writing -------------------------------------------------------------------------

    def append(self, batch: memoryview, info: BatchInfo, base_offset: int, index_interval_bytes: int) -> None:
        """Write one batch (``base_offset`` already assigned in it) and index it. Raises OSError."""
        if self.bytes_since_last_index_entry < 0:  # opened from a clean stop's account: read the indexes first
            self.offset_index.keys  # noqa: B018 (the loader)
        position = self.size_bytes
        self.unsynced = True
        self._write(batch, position)
        if position == 0:
            self.created_ms = wall_clock_ms()
        self.size_bytes = position + len(batch)
        self._index(info, base_offset, position, index_interval_bytes)

    def _write(self, batch: memoryview, position: int) -> None:
        length = len(batch)
        written = 0
        try:
            fd = self._fd  # the active segment's file is open: not the property (a call a batch)
            if fd is None:
                fd = self.fd
            while written < length:
                if faults.armed:
                    faults.check("write")
                    chunk = batch[written : written + faults.take_short_write(length - written)]
                else:
                    chunk = batch[written:] if written else batch
                written += os.write(fd, chunk)
        except OSError:
            if written:  # undo a partial batch so the file stays a sequence of whole batches
                os.ftruncate(self.fd, position)
            raise

    def _index(self, info: BatchInfo, base_offset: int, position: int, index_interval_bytes: int) -> None:
        relative_offset = base_offset - self.base_offset
        if self.bytes_since_last_index_entry > index_interval_bytes:
            self.offset_index.append(relative_offset, position)
            self.time_index.maybe_append(self.max_timestamp, relative_offset)
            self.bytes_since_last_index_entry = 0
        self.bytes_since_last_index_entry += info.batch_length + 12
        if info.max_timestamp > self.max_timestamp:
            self.max_timestamp = info.max_timestamp
        self.next_offset = base_offset + info.last_offset_delta + 1

    def fits(self, info: BatchInfo, next_offset: int) -> bool:
        """Whether the batch's offsets are still addressable relative to this segment's base."""
        return next_offset + info.last_offset_delta - self.base_offset < _MAX_RELATIVE_OFFSET

    def seal(self) -> None:
        """No more appends. Records the final max timestamp, so a clean open knows it without
        scanning; the indexes reach the file with the segment's next fsync (``index_sync_fds``)."""
        # (A segment whose indexes were never read since a clean stop sealed it got no newer
        # record: its time index holds this entry already.)
        if self.time_index.loader is None or self.max_timestamp > self._stated_max_timestamp:
            self.time_index.maybe_append(self.max_timestamp, self.next_offset - self.base_offset)
        self.sealed = True
        if self._fd is not None and self.files is not None:
            self.files.touch(self)  # its file is closed once idle (and synced), read or not

    def index_sync_fds(self) -> list[int]:
        """Descriptors of both index files with their pending entries written, for an fsync job
        (which closes them). Raises OSError."""
        fds = [self.offset_index.open_for_sync()]
        try:
            fds.append(self.time_index.open_for_sync())
        except BaseException:
            os.close(fds[0])
            raise
        return fds

    def write_indexes(self) -> None:
        """Write the pending index entries, with no fsync."""
        self.offset_index.write_pending()
        self.time_index.write_pending()

    # ---- reading -------------------------------------------------------------------------

    def read(
        self, fetch_offset: int, max_bytes: int, min_one_batch: bool, max_offset: int | None,
        index_interval_bytes: int,
    ) -> memoryview | bytes | None:
        """Whole batches from the one containing ``fetch_offset``; None if no batch here holds it.

        One pread in the common case: the block from the index position covers the scan to the
        first batch and the batches returned; the headers are walked in memory.
        """
        end = self.size_bytes
        position = self.offset_index.lookup(fetch_offset - self.base_offset)
        block_start = position
        block = os.pread(self.fd, min(end - position, index_interval_bytes + max_bytes + BATCH_HEADER_SIZE), position)
        while True:  # find the batch that contains fetch_offset
            if position + BATCH_HEADER_SIZE > end:
                return None
            if position + BATCH_HEADER_SIZE > block_start + len(block):
                block_start = position
                block = os.pread(self.fd, min(end - position, max_bytes + BATCH_HEADER_SIZE), position)
            rel = position - block_start
            base_offset, batch_length = _BASE_AND_LENGTH.unpack_from(block, rel)
            if not _MIN_BATCH_LENGTH <= batch_length <= end - position - 12:
                raise self._corrupt(position, batch_length)
            if base_offset + _INT32.unpack_from(block, rel + _LAST_OFFSET_DELTA_POS)[0] >= fetch_offset:
                break
            position += batch_length + 12
        start = position
        limit = min(start + max_bytes, end)  # so a length running past the file also stops the walk
        min_batch_length = _MIN_BATCH_LENGTH
        while position + BATCH_HEADER_SIZE <= end:  # take whole batches up to max_bytes
            rel = position - block_start
            if rel + BATCH_HEADER_SIZE <= len(block):
                base_offset, batch_length = _BASE_AND_LENGTH.unpack_from(block, rel)
            else:
                base_offset, batch_length = _BASE_AND_LENGTH.unpack(os.pread(self.fd, 12, position))
            if max_offset is not None and base_offset >= max_offset:
                break
            next_position = position + batch_length + 12
            if next_position > limit:
                if position != start or not min_one_batch:
                    break
                if next_position > end:  # KIP-74's whole first batch, but it runs past the file
                    raise self._corrupt(position, batch_length)
            if batch_length < min_batch_length:  # would not move on (a length of -12 looped forever)
                if position == start:
                    raise self._corrupt(position, batch_length)
                break  # serve the good batches before it; the next read reports it
            position = next_position
        if position == start:
            return b""
        if position - block_start > len(block):
            return os.pread(self.fd, position - start, start)
        return memoryview(block)[start - block_start : position - block_start]

    def read_range(self, fetch_offset: int, max_bytes: int, min_one_batch: bool, max_offset: int | None
                   ) -> tuple[int, int, int, int] | None:
        """What ``read`` would return, as (start position, end position, first offset, end offset)
        of the file, without reading the records: only batch headers are read (the index jumps
        to the last batch boundary below the limit), so the bytes can go to a socket with
        sendfile. None if no batch here holds ``fetch_offset``; start == end if nothing is due.

        A read from where the last one ended (a consumer reading on: ``_read_hint``) starts
        there, not at the index entry below it; and when everything from there to the end of
        the file is due (within ``max_bytes``, below ``max_offset``) it reads no header at all:
        the file is whole batches, the last ending at ``next_offset``."""
        end = self.size_bytes
        header = self._header_at
        hint = self._read_hint
        if hint is not None and hint[0] == fetch_offset:
            position = hint[1]
            next_offset = self.next_offset
            if (position < end and fetch_offset < next_offset and end - position <= max_bytes
                    and (max_offset is None or max_offset >= next_offset)):
                self._read_hint = (next_offset, end)
                return position, end, fetch_offset, next_offset
        else:
            position = self.offset_index.lookup(fetch_offset - self.base_offset)
        while True:  # the batch that contains fetch_offset
            if position + BATCH_HEADER_SIZE > end:
                return None
            base_offset, batch_length, last_offset_delta = header(position, end)
            if base_offset + last_offset_delta >= fetch_offset:
                break
            position += batch_length + 12
        start, first_offset = position, base_offset
        limit = min(start + max_bytes, end)
        jump = self.offset_index.position_at_or_below(limit)
        if max_offset is not None:
            jump = min(jump, self.offset_index.lookup(max_offset - self.base_offset))
        if jump > start:  # every batch between start and jump ends below the limit and max_offset
            position = jump
            base_offset, batch_length, _ = header(position, end)
        while True:  # whole batches up to the limit, below max_offset
            if max_offset is not None and base_offset >= max_offset:
                break
            next_position = position + batch_length + 12
            if next_position > limit and (position != start or not min_one_batch):
                break  # KIP-74: the first batch comes whole whatever its size
            position = next_position
            if position + BATCH_HEADER_SIZE > end:
                base_offset = self.next_offset
                break
            try:
                base_offset, batch_length, _ = header(position, end)
            except CorruptSegment:  # serve the good batches before it; the next read reports it
                return start, position, first_offset, self.next_offset
        self._read_hint = (base_offset, position)
        return start, position, first_offset, base_offset

    def _header_at(self, position: int, end: int) -> tuple[int, int, int]:
        """(base offset, batch length, last offset delta) of the batch at ``position``."""
        data = os.pread(self.fd, _LAST_OFFSET_DELTA_POS + 4, position)
        base_offset, batch_length = _BASE_AND_LENGTH.unpack_from(data)
        if not _MIN_BATCH_LENGTH <= batch_length <= end - position - 12:
            raise self._corrupt(position, batch_length)
        return base_offset, batch_length, _INT32.unpack_from(data, _LAST_OFFSET_DELTA_POS)[0]

    def _corrupt(self, position: int, batch_length: int) -> CorruptSegment:
        return CorruptSegment(f"{self.log_path}: batch at position {position} has an impossible length "
                              f"{batch_length} (file size {self.size_bytes})")

    def read_batch_at(self, position: int, info: BatchInfo) -> bytes:
        return os.pread(self.fd, info.size, position)

    def batches(self, position: int = 0, verify: bool = False) -> Iterator[tuple[int, BatchInfo]]:
        """(position, header) of each batch from ``position``; stops at the first bad one.

        ``verify`` also checks each CRC (recovery). Offsets must not go backwards.
        """
        end = self.size_bytes
        block_start, block, size = position, b"", 0
        min_base_offset = self.base_offset
        while position + BATCH_HEADER_SIZE <= end:
            rel = position - block_start
            if rel + BATCH_HEADER_SIZE > len(block):
                # Without CRCs to check only headers are read: a smaller block, and after a big batch
                # (the next is likely big too) its header alone.
                if verify:
                    want = _SCAN_BLOCK_BYTES
                else:
                    want = BATCH_HEADER_SIZE if size >= _HEADER_BLOCK_BYTES else _HEADER_BLOCK_BYTES
                block_start, rel = position, 0
                block = os.pread(self.fd, min(end - position, want), position)
                if len(block) < BATCH_HEADER_SIZE:
                    return
            info = parse_batch_header(block, rel)
            size = info.batch_length + 12
            if (
                info.batch_length < _MIN_BATCH_LENGTH or info.magic != 2 or position + size > end
                or info.base_offset < min_base_offset or info.last_offset_delta < 0
            ):
                return
            if verify:
                if rel + size > len(block):
                    block_start, rel = position, 0
                    block = os.pread(self.fd, min(end - position, max(size, _SCAN_BLOCK_BYTES)), position)
                    if len(block) < size:
                        return
                if not batch_crc_ok(block, info, rel):
                    return
            yield position, info
            min_base_offset = info.base_offset + info.last_offset_delta + 1
            position += size

    # ---- loading and recovery -------------------------------------------------------------

    def load(self, next_segment_base: int | None, index_interval_bytes: int) -> None:
        """Open a cleanly closed segment: trust sane indexes, rebuild insane ones.

        A sealed segment (``next_segment_base`` given) ends at the next base; the last one is
        scanned from its last index entry, and a garbage tail is cut.
        """
        self.sealed = next_segment_base is not None
        loaded = (self.indexes_existed or self.size_bytes == 0) and self.offset_index.load() and self.time_index.load()
        max_relative = (next_segment_base if next_segment_base is not None else 1 << 62) - self.base_offset
        if not (loaded and self.offset_index.sane(max(self.size_bytes, 1), max_relative)
                and self.time_index.sane(max_relative)):
            logger.warning("%s: index files missing or inconsistent, rebuilding them", self.log_path)
            self.recover(index_interval_bytes, verify=False)
            return
        self.max_timestamp = self.time_index.last_timestamp
        if next_segment_base is not None:
            self.next_offset = next_segment_base
            return
        self._scan_tail()

    def _scan_tail(self) -> None:
        position, self.next_offset = 0, self.base_offset
        if len(self.offset_index):
            position = self.offset_index.values[-1]
            self.next_offset = self.base_offset + self.offset_index.keys[-1]
        self.max_timestamp = self.time_index.last_timestamp
        end = position
        for end, info in self.batches(position):
            self.next_offset = info.base_offset + info.last_offset_delta + 1
            self.max_timestamp = max(self.max_timestamp, info.max_timestamp)
            end += info.batch_length + 12
        self.bytes_since_last_index_entry = end - position
        self._cut_tail(end)
        self._load_created_ms()

    def recover(self, index_interval_bytes: int, verify: bool = True) -> int:
        """Rebuild both indexes by scanning every batch; cut the file at the first bad batch.

        Returns how many bytes were cut.
        """
        self.offset_index.clear()
        self.time_index.clear()
        self.next_offset, self.max_timestamp, self.bytes_since_last_index_entry = self.base_offset, -1, 0
        end = 0
        first_timestamp = -1
        for position, info in self.batches(0, verify=verify):
            if not position:
                first_timestamp = info.max_timestamp
            self._index(info, info.base_offset, position, index_interval_bytes)
            end = position + info.batch_length + 12
        # The index files are not read here: their next write keeps what they share with the
        # rebuilt entries and replaces the rest (index.py), so recovering an active segment
        # touches neither.
        cut = self._cut_tail(end)
        if first_timestamp > 0:  # as _load_created_ms, without reading the first batch again
            self.created_ms = min(first_timestamp, wall_clock_ms())
        return cut

    def _cut_tail(self, end: int) -> int:
        cut = self.size_bytes - end
        if cut:
            logger.warning("%s: cutting %d bytes of torn or invalid data at position %d", self.log_path, cut, end)
            os.ftruncate(self.fd, end)
            self.size_bytes = end
            self._read_hint = None
        return cut

    def _load_created_ms(self) -> None:
        """For segment.ms after a restart: the first batch's max timestamp, if plausible."""
        if self.size_bytes >= BATCH_HEADER_SIZE:
            first = parse_batch_header(os.pread(self.fd, BATCH_HEADER_SIZE, 0))
            if first.max_timestamp > 0:
                self.created_ms = min(first.max_timestamp, wall_clock_ms())

    def truncate_to(self, offset: int) -> None:
        """Drop every batch that ends at or above ``offset``'s containing batch (whole batches)."""
        for position, info in self.batches(self.offset_index.lookup(offset - self.base_offset)):
            if info.base_offset + info.last_offset_delta >= offset:
                break
        else:
            return
        os.ftruncate(self.fd, position)
        self.size_bytes = position
        self._read_hint = None
        self.offset_index.truncate_to_position(position)
        self.time_index.truncate_to_offset(info.base_offset - self.base_offset)
        self._scan_tail()

    # ---- lifecycle -----------------------------------------------------------------------

    def largest_timestamp_ms(self) -> int:
        """For retention: the largest record timestamp, or the file's mtime if none."""
        if self.max_timestamp >= 0:
            return self.max_timestamp
        return int(os.fstat(self.fd).st_mtime * 1000)

    def sync(self, include_indexes: bool) -> None:
        if faults.armed:
            faults.check("fsync", "segment")
        self.unsynced = False
        os.fsync(self.fd)
        if include_indexes:
            self.offset_index.sync()
            self.time_index.sync()

    def close(self) -> None:
        """Close the file and write the pending index entries (no fsync; see PartitionLog.close)."""
        self.released = True
        if self.files is not None:
            self.files.forget(self)
        try:
            self.close_file()
        finally:
            if self.offset_index.pending or self.time_index.pending:
                self.write_indexes()

    def release(self) -> None:
        """Close the file, leaving the index files as they are (the segment leaves the log)."""
        self.released = True
        if self.files is not None:
            self.files.forget(self)
        self.close_file()

    def delete(self) -> None:
        self.release()
        txn_index = self.log_path.with_name(self.log_path.name[:-len(".log")] + ".txnindex")
        for path in (self.log_path, self.offset_index.path, self.time_index.path, txn_index):
            path.unlink(missing_ok=True)

    def __repr__(self) -> str:
        return f"LogSegment({self.log_path.name}, size_bytes={self.size_bytes}, next_offset={self.next_offset})"
