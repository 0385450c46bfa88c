"""PartitionLog: one partition's log, a list of segments ordered by base offset.

On disk, ``<data_dir>/<topic>-<partition>/`` holds the segments (see segment.py and index.py)
and two checkpoint files, each one decimal number (written by storage/checkpoint.py):
``log-start-offset`` (moved by DeleteRecords) and ``recovery-point`` (every segment wholly
below it was fsynced, so recovery after a crash rescans only from its segment on).

Every I/O error takes the log directory offline (log_dir.py): from then on the log refuses
appends, reads and flushes with KAFKA_STORAGE_ERROR, and ``durable_offset`` never moves again.

Its configuration is a ``LogConfig`` (log_config.py: sizes, retention, cleanup, durability profile).
How appends become durable (flushes, the recovery point, ``write_before_next_append``) is the
``LogFlushing`` half of the class, in log_flush.py.

Not thread-safe; the event loop owns it. The only work done elsewhere is fsync of the file
descriptors ``start_flush`` hands out (fsync.py; a segment closed or deleted meanwhile keeps its
descriptor open until the job ends), or of the whole filesystem (``syncfs``) for a job over many logs.

Descriptors: the active segment's ``.log`` stays open; sealed segments' files are opened when
read and closed when idle by the shared ``OpenFiles`` (open_files.py); indexes hold none.
"""

from __future__ import annotations

import logging
import os
import shutil
from bisect import bisect_right
from pathlib import Path
from typing import Callable, NamedTuple

from tidelog.clock import wall_clock_ms
from tidelog.protocol.records import BatchInfo, iter_records, set_base_offset
from tidelog.storage.checkpoint import read_checkpoint, write_checkpoint
from tidelog.storage.errors import OffsetOutOfRange, StorageError
from tidelog.storage.file_slice import FileSlice
from tidelog.storage.log_config import LogConfig
from tidelog.storage.log_dir import LogDirState
from tidelog.storage.log_flush import RECOVERY_POINT_FILE, LogFlushing, PendingFlush
from tidelog.storage.open_files import OpenFiles
from tidelog.storage.segment import LogSegment, segment_file_name
from tidelog.storage.segment_files import recover_segment_files, retire_files, segment_paths, swap_in

__all__ = ["LogConfig", "PartitionLog", "PendingFlush", "SegmentSummary"]

logger = logging.getLogger(__name__)

LOG_START_OFFSET_FILE = "log-start-offset"


class SegmentSummary(NamedTuple):
    base_offset: int
    next_offset: int
    size_bytes: int
    max_timestamp: int


class PartitionLog(LogFlushing):
    """One partition's log; see the module docstring for its files and ownership."""

    def __init__(self, dir: Path, topic: str, partition: int, config: LogConfig,
                 log_dir: LogDirState | None = None, files: OpenFiles | None = None) -> None:
        self.dir = dir
        self.topic = topic
        self.partition = partition
        self.config = config
        self.log_dir = log_dir if log_dir is not None else LogDirState(dir.parent)
        self.files = files
        self.closed = False
        self.segments: list[LogSegment] = []
        self._base_offsets: list[int] = []
        self.log_start_offset = 0
        self.log_end_offset = 0
        self.durable_offset = 0
        self._recovery_point = 0
        self._unflushed: list[LogSegment] = []
        self._syncing: dict[LogSegment, int] = {}  # segment -> flushes in flight covering it
        # Files created or removed in ``dir`` (counted; the first flush syncs the directory once,
        # as the files opened at start may be new) and whether ``dir`` itself is new.
        self._dir_changes = 1
        self._dir_synced = 0
        self._new_dir = False
        self._truncations = 0
        self._recovered: list[LogSegment] = []  # read back by recovery, not yet synced (complete_recovery)
        # Small files of the partition (write_before_next_append): to write, and written but not yet synced.
        self._deferred_files: dict[Path, tuple[str, Callable[[str], None] | None]] = {}
        self._unsynced_files: set[Path] = set()
        self._roll_jitter_ms = config.random_segment_jitter_ms()
        self.on_roll: Callable[[PartitionLog], None] | None = None  # set by the LogManager
        self.on_dirty: Callable[[PartitionLog], None] | None = None  # likewise
        # A follower's log (set by the replica manager): its appends start no group fsync; it is
        # flushed on the replica flush schedule and before it leads (docs/storage.md).
        self.flush_deferred = False
        # What small files of the partition hold (file name -> text), as far as this log wrote or
        # was told (the leader-epoch cache's read): kept over a clean stop, so a start reads none.
        self.file_texts: dict[str, str] = {}
        self._closed_state: list | None = None

    # ---- opening -------------------------------------------------------------------------

    @classmethod
    def open(cls, dir: Path, topic: str, partition: int, config: LogConfig, recover: bool,
             log_dir: LogDirState | None = None, files: OpenFiles | None = None,
             defer_recovery_sync: bool = False) -> PartitionLog:
        """Open (or create) the log in ``dir``; ``recover`` after an unclean shutdown.

        What recovery read back is fsynced before this returns, unless ``defer_recovery_sync``:
        then the caller writes ``recovered_indexes``, syncs the filesystem once for many logs
        and calls ``complete_recovery(synced=True)`` before the log is used."""
        log = cls(Path(dir), topic, partition, config, log_dir, files)
        if log.log_dir.offline:
            raise log.log_dir.error()
        try:
            log._load(recover)
            if not defer_recovery_sync:
                log.complete_recovery(synced=False)
        except OSError as e:
            for segment in log.segments:
                segment.close_file()
            raise log._io_error(e, "opening the log") from e
        return log

    def clean_state(self) -> list | None:
        """This log as a clean close leaves it, for ``open_from_state`` at the next start: log
        start offset, recovery point and each segment's ``LogSegment.state()``, and what the small
        files this log wrote or read hold (``file_texts``). None unless it closed cleanly."""
        return self._closed_state

    @classmethod
    def open_from_state(cls, dir: Path, topic: str, partition: int, config: LogConfig, state: list,
                        log_dir: LogDirState | None = None, files: OpenFiles | None = None) -> PartitionLog:
        """The log a clean stop described (``clean_state``), opened without reading anything:
        segments and indexes are read at their first use (segment.py ``from_state``)."""
        log_start_offset, recovery_point, segments, file_texts = state
        log = cls(dir, topic, partition, config, log_dir, files)
        if log.log_dir.offline:
            raise log.log_dir.error()
        interval = config.index_interval_bytes
        log.segments = [LogSegment.from_state(log.dir, segment, files, interval, active=i == len(segments) - 1)
                        for i, segment in enumerate(segments)]
        log._base_offsets = [s.base_offset for s in log.segments]
        log.log_end_offset = log.segments[-1].next_offset
        log.log_start_offset = log_start_offset
        log._recovery_point = recovery_point
        log.durable_offset = log.log_end_offset
        log.file_texts = dict(file_texts)
        return log

    def _io_error(self, error: OSError, what: str) -> StorageError:
        """The StorageError for an I/O error; it takes the log directory offline."""
        return self.log_dir.fail(error, f"{self.topic}-{self.partition}: {what}")

    def _check_online(self) -> None:
        if self.log_dir.offline_reason is not None or self.closed:
            raise self.log_dir.error() if not self.closed else StorageError(f"{self.topic}-{self.partition} is closed")

    def _load(self, recover: bool) -> None:
        try:
            names = set(os.listdir(self.dir))  # one listing: a broker may open thousands of logs
        except FileNotFoundError:
            self._new_dir = True
            self.dir.mkdir(parents=True, exist_ok=True)
            names = set()
        for name in [n for n in names if n.endswith(".tmp")]:
            (self.dir / name).unlink()
            names.discard(name)
        # a swap or deletion a crash interrupted
        if recover_segment_files(self.dir, self.config.index_interval_bytes, names):
            names = set(os.listdir(self.dir))
        base_offsets = sorted(int(n[:-4]) for n in names if n.endswith(".log") and n[:-4].isdigit())
        checkpointed_start = read_checkpoint(self.dir / LOG_START_OFFSET_FILE) if LOG_START_OFFSET_FILE in names else None
        recovery_point = (read_checkpoint(self.dir / RECOVERY_POINT_FILE) or 0) if RECOVERY_POINT_FILE in names else 0
        create = not base_offsets
        if create:
            base_offsets = [checkpointed_start or 0]
        interval = self.config.index_interval_bytes
        recovered: list[LogSegment] = []
        for i, base_offset in enumerate(base_offsets):
            indexes = (segment_file_name(base_offset, ".index") in names
                       and segment_file_name(base_offset, ".timeindex") in names)
            segment = LogSegment(self.dir, base_offset, files=self.files, create=create, indexes_existed=indexes)
            self.segments.append(segment)
            next_base = base_offsets[i + 1] if i + 1 < len(base_offsets) else None
            if recover and (next_base is None or next_base > recovery_point):
                recovered.append(segment)
                cut = segment.recover(interval)
                segment.sealed = next_base is not None and not cut
                if cut and next_base is not None:
                    self._drop_segments_after(segment, base_offsets[i + 1 :])
                    break
            else:
                segment.load(next_base, interval)
        self._base_offsets = [s.base_offset for s in self.segments]
        self.log_end_offset = self.segments[-1].next_offset
        self.log_start_offset = min(max(checkpointed_start or 0, self.segments[0].base_offset), self.log_end_offset)
        self._recovered = recovered  # what we read back may still sit only in the page cache
        self._recovery_point = recovery_point
        logger.debug("%s: opened %d segments, log_start_offset=%d log_end_offset=%d%s", self.dir,
                     len(self.segments), self.log_start_offset, self.log_end_offset, " (recovered)" if recovered else "")

    def recovered_indexes(self) -> None:
        """Write the indexes recovery rebuilt for sealed segments, with no fsync (the caller
        syncs the filesystem): a clean start trusts them, and a crash rescans only from the
        recovery point on. The active segment's stay in memory until it rolls or the log
        closes, as its new entries always do (a crash rebuilds them anyway)."""
        for segment in self._recovered:
            if segment is not self.segments[-1]:
                segment.write_indexes()

    def complete_recovery(self, synced: bool) -> None:
        """Make what recovery read back durable (fsync each of its segments, unless ``synced``:
        the caller synced the filesystem after ``recovered_indexes``), then count the whole
        log as durable and move the recovery point to its end."""
        if not synced:
            for segment in self._recovered:
                segment.sync(include_indexes=True)
        self._recovered = []
        self.durable_offset = self.log_end_offset
        self._checkpoint_recovery_point(self.log_end_offset)

    def _drop_segments_after(self, torn: LogSegment, base_offsets: list[int]) -> None:
        logger.warning("%s: segment %d was torn; deleting the %d segments after it", self.dir,
                       torn.base_offset, len(base_offsets))
        for base_offset in base_offsets:
            LogSegment(self.dir, base_offset, create=False).delete()
        self._dir_changes += 1

    def set_config(self, config: LogConfig) -> None:
        """Applies to future rolls, retention and flushes."""
        self.config = config

    # ---- appending -----------------------------------------------------------------------

    @property
    def active_segment(self) -> LogSegment:
        return self.segments[-1]

    def append(self, batch: memoryview, info: BatchInfo, now_ms: int | None = None, base_offset: int | None = None) -> int:
        """Append one validated batch, assigning its base offset in place; return that offset.

        ``base_offset`` (a follower's append of its leader's batch) keeps the batch's own offset,
        which may lie past the log end: a compacted leader's batches leave gaps."""
        if self.log_dir.offline_reason is not None or self.closed:
            self._check_online()
        if self._deferred_files:
            self._write_deferred_files()
        if base_offset is None or base_offset < self.log_end_offset:
            base_offset = self.log_end_offset
        segment = self.segments[-1]
        if segment.size_bytes and (
            segment.size_bytes + info.batch_length + 12 > self.config.segment_bytes
            or (now_ms if now_ms is not None else wall_clock_ms()) - segment.created_ms
                >= self.config.max_segment_ms - self._roll_jitter_ms
            or not segment.fits(info, base_offset)
        ):
            segment = self.roll()
        set_base_offset(batch, base_offset)
        try:
            segment.append(batch, info, base_offset, self.config.index_interval_bytes)
        except OSError as e:
            raise self._io_error(e, f"append at offset {base_offset}") from e
        self.log_end_offset = base_offset + info.last_offset_delta + 1
        if not self._unflushed or self._unflushed[-1] is not segment:
            self._unflushed.append(segment)
            if self.on_dirty is not None:  # the first append since a flush (or in a new segment)
                self.on_dirty(self)
        return base_offset

    def append_many(self, batches: list[tuple[memoryview, BatchInfo]], now_ms: int | None = None) -> int:
        """Append several batches in order; return the base offset of the first."""
        first = self.log_end_offset
        for batch, info in batches:
            self.append(batch, info, now_ms)
        return first

    def roll(self) -> LogSegment:
        """Seal the active segment and start a new one at log_end_offset."""
        old = self.segments[-1]
        try:
            old.seal()
            segment = LogSegment(self.dir, self.log_end_offset, files=self.files)
        except OSError as e:
            raise self._io_error(e, "rolling a new segment") from e
        self._dir_changes += 1
        self._roll_jitter_ms = self.config.random_segment_jitter_ms()
        self.segments.append(segment)
        self._base_offsets.append(segment.base_offset)
        if old not in self._unflushed:  # its sealed indexes must reach the disk too
            self._unflushed.append(old)
        logger.info("%s: rolled segment %d (%d bytes) -> %d", self.dir, old.base_offset, old.size_bytes,
                    segment.base_offset)
        if self.on_roll is not None:
            self.on_roll(self)
        return segment

    # ---- reading -------------------------------------------------------------------------

    def read(self, fetch_offset: int, max_bytes: int, min_one_batch: bool, max_offset: int | None = None,
             as_slice: bool = False):
        """Whole batches from the one containing ``fetch_offset``, at most one segment's worth;
        ``as_slice``: as a FileSlice of the segment file (read from batch headers only).

        Up to ``max_bytes`` without cutting a batch, except that with ``min_one_batch`` the
        first batch comes whole whatever its size (KIP-74). ``max_offset`` (exclusive, e.g. the
        high watermark) bounds the batches returned. Empty at the end of the log.
        """
        if self.log_dir.offline_reason is not None or self.closed:
            self._check_online()
        if fetch_offset < self.log_start_offset or fetch_offset > self.log_end_offset:
            raise OffsetOutOfRange(
                f"offset {fetch_offset} is outside [{self.log_start_offset}, {self.log_end_offset}] "
                f"of {self.topic}-{self.partition}"
            )
        if fetch_offset == self.log_end_offset or (max_offset is not None and fetch_offset >= max_offset):
            return b""
        interval = self.config.index_interval_bytes
        try:
            for segment in self.segments[max(bisect_right(self._base_offsets, fetch_offset) - 1, 0) :]:
                if as_slice:
                    found = segment.read_range(max(fetch_offset, segment.base_offset), max_bytes, min_one_batch,
                                               max_offset)
                    if found is not None:
                        start, end, first_offset, end_offset = found
                        return FileSlice(segment, start, end - start, end_offset - first_offset) if end > start else b""
                    continue
                data = segment.read(max(fetch_offset, segment.base_offset), max_bytes, min_one_batch, max_offset,
                                    interval)
                if data is not None:
                    return data
        except OSError as e:
            raise self._io_error(e, f"read at offset {fetch_offset}") from e
        return b""

    def offset_for_timestamp(self, timestamp_ms: int) -> tuple[int, int] | None:
        """(offset, timestamp) of the first record at or after log_start_offset with timestamp >= ts."""
        self._check_online()
        for segment in self.segments:
            if segment.max_timestamp >= timestamp_ms and segment.next_offset > self.log_start_offset:
                found = self._first_record_at_or_after(segment, timestamp_ms)
                if found is not None:
                    return found
        return None

    def max_timestamp_offset(self) -> tuple[int, int] | None:
        """(offset, timestamp) of the earliest record with the largest timestamp (ListOffsets -3)."""
        self._check_online()
        best = None
        for segment in self.segments:
            if segment.next_offset > self.log_start_offset and (best is None or segment.max_timestamp > best.max_timestamp):
                best = segment
        if best is None or best.max_timestamp < 0:
            return None
        return self._first_record_at_or_after(best, best.max_timestamp)

    def _first_record_at_or_after(self, segment: LogSegment, timestamp_ms: int) -> tuple[int, int] | None:
        relative_offset = segment.time_index.lookup(timestamp_ms)
        start = segment.offset_index.lookup(relative_offset)
        try:
            for position, info in segment.batches(start):
                if info.max_timestamp >= timestamp_ms and info.base_offset + info.last_offset_delta >= self.log_start_offset:
                    for record in iter_records(segment.read_batch_at(position, info)):
                        if record.timestamp >= timestamp_ms and record.offset >= self.log_start_offset:
                            return record.offset, record.timestamp
        except OSError as e:
            raise self._io_error(e, f"reading segment {segment.base_offset} by timestamp") from e
        return None

    # ---- deleting ------------------------------------------------------------------------

    def delete_records_before(self, offset: int) -> int:
        """DeleteRecords: move log_start_offset up to ``offset``; drop segments wholly below it."""
        self._check_online()
        if offset > self.log_end_offset or offset < 0:
            raise OffsetOutOfRange(f"offset {offset} is beyond log_end_offset {self.log_end_offset}")
        if offset <= self.log_start_offset:
            return self.log_start_offset
        if offset == self.log_end_offset and self.active_segment.size_bytes and self.active_segment.base_offset < offset:
            self.roll()
        self.log_start_offset = offset
        deletable = [s for i, s in enumerate(self.segments[:-1]) if self.segments[i + 1].base_offset <= offset]
        try:
            self._delete_segments(deletable, "delete records")
            write_checkpoint(self.dir / LOG_START_OFFSET_FILE, self.log_start_offset)
        except OSError as e:
            raise self._io_error(e, f"deleting records below {offset}") from e
        return self.log_start_offset

    def apply_retention(self, now_ms: int) -> int:
        """Delete the oldest whole segments past retention_ms or retention_bytes; return bytes freed."""
        if self.log_dir.offline or self.closed or not self.config.delete:
            return 0
        deletable: list[LogSegment] = []
        retention_ms, retention_bytes = self.config.retention_ms, self.config.retention_bytes
        if retention_ms >= 0:
            for segment in self.segments[:-1]:
                if now_ms - segment.largest_timestamp_ms() <= retention_ms:
                    break
                deletable.append(segment)
        if retention_bytes >= 0:
            remaining = self.size_bytes - sum(s.size_bytes for s in deletable)
            for segment in self.segments[len(deletable) : -1]:
                if remaining - segment.size_bytes < retention_bytes:
                    break
                deletable.append(segment)
                remaining -= segment.size_bytes
        freed = sum(s.size_bytes for s in deletable)
        try:
            self._delete_segments(deletable, "retention")
        except OSError as e:
            raise self._io_error(e, "deleting segments past retention") from e
        return freed

    def _delete_segments(self, deletable: list[LogSegment], reason: str) -> None:
        if not deletable:
            return
        self._dir_changes += 1
        for segment in deletable:
            logger.info("%s: %s deletes segment %d (offsets %d..%d, %d bytes)", self.dir, reason,
                        segment.base_offset, segment.base_offset, segment.next_offset - 1, segment.size_bytes)
            segment.release()
            retire_files(segment_paths(self.dir, segment.base_offset), self.config.file_delete_delay_ms)
        gone = set(map(id, deletable))
        self.segments = [s for s in self.segments if id(s) not in gone]
        self._unflushed = [s for s in self._unflushed if id(s) not in gone]
        for segment in deletable:
            self._syncing.pop(segment, None)
        self._base_offsets = [s.base_offset for s in self.segments]
        self.log_start_offset = max(self.log_start_offset, self.segments[0].base_offset)

    @property
    def truncations(self) -> int:
        """How many times the log was truncated since it was opened (a cleaning planned before
        one is void: the records it kept or dropped keys for may be gone)."""
        return self._truncations

    def replace_segments(self, old: list[LogSegment]) -> LogSegment:
        """Swap in the cleaned segment written for ``old``, consecutive sealed segments of this
        log (storage/cleaner.py names it by the first one's base offset); see segment_files.py."""
        self._check_online()
        first = next((i for i, s in enumerate(self.segments) if s is old[0]), len(self.segments))
        end = first + len(old)
        if end >= len(self.segments) or any(a is not b for a, b in zip(self.segments[first:end], old)):
            raise ValueError(f"{self.dir}: segments {[s.base_offset for s in old]} are not consecutive sealed ones")
        base_offset = old[0].base_offset
        try:
            swap_in(self.dir, base_offset, [s.base_offset for s in old], self.config.file_delete_delay_ms)
            segment = LogSegment(self.dir, base_offset, files=self.files, create=False)
            segment.load(self.segments[end].base_offset, self.config.index_interval_bytes)
        except OSError as e:
            raise self._io_error(e, f"swapping in cleaned segment {base_offset}") from e
        self.segments[first:end] = [segment]
        self._base_offsets = [s.base_offset for s in self.segments]
        gone = set(map(id, old))
        self._unflushed = [s for s in self._unflushed if id(s) not in gone]
        for s in old:
            self._syncing.pop(s, None)
            s.release()
        return segment

    def truncate_fully_and_start_at(self, offset: int) -> None:
        """Drop every segment and go on empty at ``offset`` (a follower whose log ends below
        its leader's log start offset: what it has can never be fetched onto)."""
        self._check_online()
        logger.warning("%s: dropping offsets %d..%d, starting again at %d", self.dir, self.log_start_offset,
                       self.log_end_offset, offset)
        try:
            self._truncate_all(offset)
        except OSError as e:
            raise self._io_error(e, f"starting again at {offset}") from e

    def truncate_to(self, offset: int) -> None:
        """Drop everything at or above ``offset``, whole batches (a batch containing it goes)."""
        self._check_online()
        if offset >= self.log_end_offset:
            return
        try:
            self._truncate_all(offset) if offset <= self.segments[0].base_offset else self._truncate_tail(offset)
        except OSError as e:
            raise self._io_error(e, f"truncating to {offset}") from e
        logger.info("%s: truncated to offset %d, log_end_offset=%d", self.dir, offset, self.log_end_offset)

    def _truncate_all(self, offset: int) -> None:
        for segment in self.segments:
            segment.delete()
        self.segments = [LogSegment(self.dir, offset, files=self.files)]
        self.log_start_offset = offset
        write_checkpoint(self.dir / LOG_START_OFFSET_FILE, offset)
        self.durable_offset = offset  # nothing left to be durable below it
        self._after_truncation()

    def _truncate_tail(self, offset: int) -> None:
        keep = bisect_right(self._base_offsets, offset - 1)  # segments holding offsets below `offset`
        for segment in self.segments[keep:]:
            segment.delete()
        self.segments = self.segments[:keep]
        self.segments[-1].truncate_to(offset)
        self._after_truncation()

    def _after_truncation(self) -> None:
        self._truncations += 1  # an fsync in flight no longer speaks for the offsets it aimed at
        self._dir_changes += 1
        self._base_offsets = [s.base_offset for s in self.segments]
        self._unflushed = [self.segments[-1]]
        if self.on_dirty is not None:
            self.on_dirty(self)
        self._syncing = {s: n for s, n in self._syncing.items() if s in self.segments}
        self.log_end_offset = self.segments[-1].next_offset
        self.log_start_offset = min(self.log_start_offset, self.log_end_offset)
        self.durable_offset = min(self.durable_offset, self.log_end_offset)
        self._recovery_point = min(self._recovery_point, self.log_end_offset)
        write_checkpoint(self.dir / RECOVERY_POINT_FILE, self._recovery_point)

    # ---- describing and closing ----------------------------------------------------------

    @property
    def size_bytes(self) -> int:
        return sum(s.size_bytes for s in self.segments)

    def segment_summaries(self) -> list[SegmentSummary]:
        return [SegmentSummary(s.base_offset, s.next_offset, s.size_bytes, s.max_timestamp) for s in self.segments]

    def prepare_close(self) -> None:
        """For a close of many logs behind one filesystem sync: seal the active segment and write
        every pending index entry, with no fsync; ``close(synced=True)`` follows the sync."""
        if self.log_dir.offline or self.closed:
            return
        try:
            if self._deferred_files:
                self._write_deferred_files()
            self.segments[-1].seal()
            for segment in self.segments:
                if segment.offset_index.pending or segment.time_index.pending:
                    segment.write_indexes()
        except OSError as e:
            raise self._io_error(e, "closing") from e

    def close(self, synced: bool = False) -> None:
        """Flush the log and all indexes, then close every file; ``synced``: the caller did that
        (``prepare_close``, then a sync of the filesystem). In an offline directory nothing is
        flushed (pending index entries are written, not synced): the next start recovers.
        A clean close leaves ``clean_state()``."""
        segments = self.segments
        try:
            if not self.log_dir.offline and not self.closed:
                try:
                    if synced:
                        self._unflushed = []
                        self._unsynced_files.clear()
                        self._dir_synced, self._new_dir = self._dir_changes, False
                        self._checkpoint_recovery_point(self.log_end_offset)
                        self.durable_offset = self.log_end_offset
                    else:
                        self.segments[-1].seal()
                        self.flush()
                        self.segments[-1].sync(include_indexes=True)
                except OSError as e:
                    raise self._io_error(e, "closing") from e
        finally:
            self._close_files()
        if segments and not self.log_dir.offline:
            self._closed_state = [self.log_start_offset, self._recovery_point, [s.state() for s in segments],
                                  self.file_texts]

    def _close_files(self, keep_indexes: bool = True) -> None:
        for segment in self.segments:
            try:
                segment.close() if keep_indexes else segment.release()
            except OSError as e:  # a close can report a write-back error too
                self._io_error(e, f"closing segment {segment.base_offset}")
        self.segments = []
        self.closed = True

    def delete(self) -> None:
        """Remove the partition from disk (renamed first, so a crash midway leaves a `-delete` dir).

        The caller makes the rename durable (an fsync of the data directory, once for many)."""
        self._close_files(keep_indexes=False)
        doomed = self.dir.with_name(f"{self.dir.name}.{os.urandom(8).hex()}-delete")
        try:
            os.rename(self.dir, doomed)
        except OSError as e:
            raise self._io_error(e, "deleting the partition") from e
        shutil.rmtree(doomed, ignore_errors=True)
        logger.info("%s: deleted", self.dir)

    def __repr__(self) -> str:
        return (f"PartitionLog({self.topic}-{self.partition}, log_start_offset={self.log_start_offset}, "
                f"log_end_offset={self.log_end_offset}, segments={len(self.segments)})")
