"""The log cleaner's work on one log: keep the latest record per key (Kafka's LogCleaner.Cleaner).

A compacted log has a clean head (below the *first dirty offset*, cleaned before) and a dirty
tail; the *first uncleanable offset* (the active segment's base, the high watermark or last
stable offset, ``min.compaction.lag.ms``) bounds what may be cleaned. A cleaning (``clean``):

1. builds an OffsetMap (offset_map.py) of key -> latest offset over the dirty section, up to
   the first uncleanable offset or until the map is full (then the dirty end is where it
   stopped); records of aborted transactions are not mapped;
2. recopies every segment below that end, grouped as Kafka groups them (consecutive segments
   whose total fits ``segment.bytes`` and ``segment.index.bytes`` and whose offsets fit one
   segment), into one ``<base>.log.cleaned`` per group with its indexes, keeping a record if
   no later record has its key. Offsets never change and order is kept: batches keep their
   base offset and last offset delta, records their offset deltas (protocol/batch_filter.py);
3. returns the groups; the LogManager swaps them in on the event loop (segment_files.py).

What survives, as in Kafka:
- A tombstone (null value) survives its first cleaning, which stamps its batch with a delete
  horizon of now + ``delete.retention.ms`` (KIP-534); cleanings after the horizon remove it.
- Records without a key are removed (produce refuses them on compacted topics).
- Records of aborted transactions are removed whatever their keys. A COMMIT/ABORT marker stays
  until every batch of its transaction is gone and then for ``delete.retention.ms`` more.
- The batch holding a producer's last sequence (or the marker with its last epoch) stays, empty
  if need be, while the producer is active, so idempotence and fencing survive the cleaning.
- The last batch of every group stays, empty if need be, so each cleaned segment ends where
  its last source segment ended (recovery of an interrupted swap relies on it).

The work runs in a worker process (see cleaner_manager.py), never on the event loop: it reads
the segment files by path (sealed segments do not change) and writes new files only; anything
that changed the log meanwhile voids the result when it is swapped in. Reads and writes are
throttled to ``log.cleaner.io.max.bytes.per.second``.
"""

from __future__ import annotations

import heapq
import logging
import os
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from tidelog.protocol.batch_filter import delete_horizon_ms, empty_batch, rebuild_batch, record_spans, records_body
from tidelog.protocol.control_records import ControlRecordType, InvalidControlRecord, decode_control_key
from tidelog.protocol.records import BATCH_HEADER_SIZE, LOG_OVERHEAD, BatchInfo, CorruptRecords, parse_batch_header
from tidelog.storage.offset_map import OffsetMap
from tidelog.storage.segment import LogSegment, segment_file_name
from tidelog.storage.segment_files import CLEANED_SUFFIX, segment_paths
from tidelog.storage.txn_index import ENTRY_SIZE, TXN_INDEX_SUFFIX, AbortedTxn, TransactionIndex

__all__ = ["CleanJob", "CleanResult", "CleanedGroup", "Cleaner", "CleanerStats", "CleaningAborted",
           "SegmentRef", "Throttler"]

logger = logging.getLogger(__name__)

_MAX_RELATIVE_OFFSET = 0x7FFFFFFF
_ABORTED_TXN = struct.Struct(">hqqqq")  # txn_index.py's entry: version, producer, first, last, last stable
_TRANSACTIONAL_BIT = 0x10
_CONTROL_BIT = 0x20


class CleaningAborted(Exception):
    """The cleaning was stopped (shutdown) or its log changed under it; nothing was swapped in."""


@dataclass(frozen=True)
class SegmentRef:
    """A segment as the event loop saw it when it made the job."""

    base_offset: int
    next_offset: int  # one past its last offset (the next segment's base for a sealed one)
    size_bytes: int
    offset_index_bytes: int
    time_index_bytes: int


@dataclass(frozen=True)
class CleanJob:
    """What a cleaning needs to know about one log; picklable (it goes to a worker process)."""

    dir: str
    name: str  # topic-partition, for log lines
    segments: tuple[SegmentRef, ...]  # the first segment to the last below first_uncleanable_offset
    txn_index_bases: tuple[int, ...]  # every segment's base offset, the active one too
    first_dirty_offset: int
    first_uncleanable_offset: int
    dirty_start_position: int  # the first dirty offset's position in its segment (from the index)
    now_ms: int
    delete_retention_ms: int
    segment_bytes: int
    segment_index_bytes: int
    index_interval_bytes: int
    # producer id -> (offset of its last data batch's last record or -1, its epoch), active producers only
    active_producers: dict[int, tuple[int, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class CleanedGroup:
    base_offset: int  # the cleaned segment's, also its first source segment's
    replaces: tuple[int, ...]  # base offsets of the segments it replaces, in order
    next_offset: int  # one past the last offset of the last segment replaced
    size_bytes: int


@dataclass
class CleanerStats:
    bytes_read: int = 0
    bytes_written: int = 0
    records_read: int = 0
    records_written: int = 0
    map_bytes_read: int = 0
    map_records_read: int = 0
    keyless_records_removed: int = 0
    map_utilization: float = 0.0
    map_seconds: float = 0.0
    seconds: float = 0.0


@dataclass
class CleanResult:
    groups: list[CleanedGroup]
    next_dirty_offset: int
    stats: CleanerStats
    # the earliest delete horizon among tombstones and markers kept (a cleaning after it removes them)
    next_delete_horizon_ms: int | None


class Throttler:
    """Keeps the bytes passed to ``throttle`` under ``bytes_per_second`` (Kafka's Throttler):
    sleeps whenever the bytes so far are ahead of the rate."""

    def __init__(self, bytes_per_second: float, check: Callable[[], None] = lambda: None) -> None:
        self.bytes_per_second = bytes_per_second
        self.check = check
        self._started = time.monotonic()
        self._bytes = 0

    def throttle(self, size: int) -> None:
        self._bytes += size
        if self.bytes_per_second >= 1e300:  # Kafka's default: Double.MAX_VALUE, no limit
            return
        while True:
            ahead_s = self._bytes / self.bytes_per_second - (time.monotonic() - self._started)
            if ahead_s <= 0.001:
                return
            time.sleep(min(ahead_s, 0.1))
            self.check()


class _EarliestHorizon:
    """The earliest delete horizon of a tombstone or marker a cleaning kept (when to come back)."""

    ms: int | None = None


class _Transactions:
    """Kafka's CleanedTransactionMetadata: which transactional batches belong to aborted
    transactions, and when a transaction's marker may go, as a cleaning walks the log forward."""

    def __init__(self, aborted: list[AbortedTxn]) -> None:
        self._aborted = [(txn.first_offset, txn.last_offset, txn) for txn in aborted]  # a heap by first offset
        heapq.heapify(self._aborted)
        self._ongoing_committed: set[int] = set()
        # producer id -> [the aborted transaction, whether a batch of it was kept so far]
        self._ongoing_aborted: dict[int, list] = {}
        self.cleaned_index: TransactionIndex | None = None  # receives the aborted transactions still needed

    def _consume_up_to(self, offset: int) -> None:
        while self._aborted and self._aborted[0][0] <= offset:
            txn = heapq.heappop(self._aborted)[2]
            self._ongoing_aborted.setdefault(txn.producer_id, [txn, False])

    def on_control_batch(self, info: BatchInfo, control_type: ControlRecordType | None) -> bool:
        """A marker batch was read; True if it may be discarded (all its transaction's data is gone).
        ``control_type`` None: a control batch already emptied by an earlier cleaning."""
        self._consume_up_to(info.last_offset)
        if control_type is None:
            return True
        if control_type is ControlRecordType.ABORT:
            ongoing = self._ongoing_aborted.pop(info.producer_id, None)
            if ongoing is not None and ongoing[1]:
                if self.cleaned_index is not None:
                    self.cleaned_index.append(ongoing[0])
                return False
            return True
        if control_type is ControlRecordType.COMMIT:
            had_data = info.producer_id in self._ongoing_committed  # a batch of it was read
            self._ongoing_committed.discard(info.producer_id)
            return not had_data
        return False

    def on_data_batch(self, info: BatchInfo) -> bool:
        """A data batch was read; True if it belongs to an aborted transaction (discard it)."""
        if self._aborted:
            self._consume_up_to(info.last_offset)
        if not info.attributes & _TRANSACTIONAL_BIT:
            return False
        ongoing = self._ongoing_aborted.get(info.producer_id)
        if ongoing is not None:
            ongoing[1] = True
            return True
        self._ongoing_committed.add(info.producer_id)
        return False


def _control_type(batch, info: BatchInfo) -> ControlRecordType | None:
    """The type of a control batch's record; None for an emptied one."""
    if info.record_count == 0:
        return None
    body = records_body(batch, info)
    span = record_spans(body, info.record_count)[0]
    try:
        return decode_control_key(bytes(body[span[4]:span[5]]) if span[4] >= 0 else None)
    except InvalidControlRecord:
        return ControlRecordType.UNKNOWN


class _SegmentReader:
    """Whole batches of one segment file, read in blocks of ``block_bytes`` (grown for a larger batch)."""

    def __init__(self, path: Path, size_bytes: int, block_bytes: int, throttler: Throttler,
                 check: Callable[[], None]) -> None:
        try:
            self.fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise CleaningAborted(f"{path} is gone (retention or a truncation removed it)") from None
        self.size_bytes = size_bytes
        self.block_bytes = block_bytes
        self.throttler = throttler
        self.check = check

    def close(self) -> None:
        os.close(self.fd)

    def batches(self, position: int = 0) -> Iterator[tuple[int, memoryview, BatchInfo]]:
        """(position, the whole batch, its header) of each batch from ``position`` on."""
        end = self.size_bytes
        while position < end:
            self.check()
            block = os.pread(self.fd, min(self.block_bytes, end - position), position)
            if len(block) < BATCH_HEADER_SIZE:
                raise CorruptRecords(f"segment ends {len(block)} bytes into a batch header at position {position}")
            view = memoryview(block)
            pos = 0
            length = len(view)
            while pos + BATCH_HEADER_SIZE <= length:
                info = parse_batch_header(view, pos)
                size = info.batch_length + LOG_OVERHEAD
                if size < BATCH_HEADER_SIZE or info.magic != 2:
                    raise CorruptRecords(f"batch at position {position + pos} has length {info.batch_length} "
                                         f"and magic {info.magic}")
                if pos + size > length:
                    break
                yield position + pos, view[pos: pos + size], info
                pos += size
            if pos == 0:  # a batch larger than the block: read it whole
                info = parse_batch_header(view, 0)
                if position + info.size > end:
                    raise CorruptRecords(f"batch at position {position} runs past the segment's end")
                block = os.pread(self.fd, info.size, position)
                yield position, memoryview(block), info
                pos = info.size
            self.throttler.throttle(pos)
            position += pos


class Cleaner:
    """Cleans one log at a time with one OffsetMap; see the module docstring."""

    def __init__(self, map_memory_bytes: int, load_factor: float = 0.9, io_buffer_bytes: int = 512 * 1024,
                 io_bytes_per_second: float = float("inf"), should_stop: Callable[[], bool] = lambda: False) -> None:
        self.offset_map = OffsetMap(map_memory_bytes, load_factor)
        self.io_buffer_bytes = max(io_buffer_bytes, 64 * 1024)
        self.io_bytes_per_second = io_bytes_per_second
        self.should_stop = should_stop

    def _check(self) -> None:
        if self.should_stop():
            raise CleaningAborted("the cleaner is stopping")

    def clean(self, job: CleanJob) -> CleanResult:
        """Clean ``job``'s log into ``.cleaned`` segments; raises CleaningAborted or OSError.

        On any error the ``.cleaned`` files written so far are removed. The offset map, grown to the
        dirty section's keys (up to its share of log.cleaner.dedupe.buffer.size), is released at the
        end: a worker process lives on between cleanings.
        """
        try:
            return self._clean(job)
        finally:
            self.offset_map.clear()

    def _clean(self, job: CleanJob) -> CleanResult:
        started = time.monotonic()
        stats = CleanerStats()
        throttler = Throttler(self.io_bytes_per_second, self._check)
        dir = Path(job.dir)
        aborted = _aborted_transactions(dir, job.txn_index_bases, job.segments[0].base_offset if job.segments else 0)
        self._build_offset_map(job, dir, aborted, throttler, stats)
        if self.offset_map.latest_offset < job.first_dirty_offset - 1:  # no dirty section: the clean one is recopied
            self.offset_map.update_latest_offset(job.first_dirty_offset - 1)  # (tombstones past their horizon go)
        end_offset = self.offset_map.latest_offset + 1
        stats.map_seconds = time.monotonic() - started
        stats.map_utilization = self.offset_map.utilization
        segments = [s for s in job.segments if s.base_offset < end_offset]
        groups: list[CleanedGroup] = []
        horizon = _EarliestHorizon()
        transactions = _Transactions(aborted)
        written: list[int] = []  # base offsets of the groups with .cleaned files
        try:
            for group in group_segments(segments, job.segment_bytes, job.segment_index_bytes, job.first_uncleanable_offset):
                written.append(group[0].base_offset)
                groups.append(self._clean_group(job, dir, group, transactions, throttler, stats, horizon))
        except BaseException:
            for base_offset in written:
                remove_cleaned(dir, base_offset)
            raise
        stats.seconds = time.monotonic() - started
        return CleanResult(groups, end_offset, stats, horizon.ms)

    # ---- 1. the offset map -----------------------------------------------------------------

    def _build_offset_map(self, job: CleanJob, dir: Path, aborted: list[AbortedTxn], throttler: Throttler,
                          stats: CleanerStats) -> None:
        offset_map = self.offset_map
        start = job.first_dirty_offset
        transactions = _Transactions(aborted)
        dirty = [s for s in job.segments if s.next_offset > start and s.base_offset < job.first_uncleanable_offset]
        for segment in dirty:
            reader = _SegmentReader(dir / segment_file_name(segment.base_offset, ".log"), segment.size_bytes,
                                    self.io_buffer_bytes, throttler, self._check)
            try:
                position = job.dirty_start_position if segment.base_offset <= start else 0
                put = offset_map.put
                for _, batch, info in reader.batches(position):
                    stats.map_bytes_read += len(batch)
                    if info.attributes & _CONTROL_BIT:
                        transactions.on_control_batch(info, _control_type(batch, info))
                    elif not transactions.on_data_batch(info) and info.record_count:
                        base_offset = info.base_offset
                        body = records_body(batch, info)
                        for span in record_spans(body, info.record_count):
                            if span[4] >= 0 and base_offset + span[3] >= start:
                                if not put(body[span[4]:span[5]], base_offset + span[3]):
                                    logger.info("%s: the offset map is full (%d keys); the dirty section ends at %d",
                                                job.name, offset_map.size, offset_map.latest_offset + 1)
                                    return
                    stats.map_records_read += info.record_count
                    last_offset = info.base_offset + info.last_offset_delta
                    if last_offset >= start:
                        offset_map.latest_offset = last_offset
            finally:
                reader.close()
            offset_map.update_latest_offset(min(segment.next_offset, job.first_uncleanable_offset) - 1)

    # ---- 2. recopying ------------------------------------------------------------------------

    def _clean_group(self, job: CleanJob, dir: Path, group: list[SegmentRef], transactions: _Transactions,
                     throttler: Throttler, stats: CleanerStats, horizon: _EarliestHorizon) -> CleanedGroup:
        base_offset = group[0].base_offset
        remove_cleaned(dir, base_offset)
        log_path = dir / (segment_file_name(base_offset, ".log") + CLEANED_SUFFIX)
        txn_index = TransactionIndex(dir / (segment_file_name(base_offset, TXN_INDEX_SUFFIX) + CLEANED_SUFFIX), base_offset)
        transactions.cleaned_index = txn_index
        out_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            pending = bytearray()
            for i, segment in enumerate(group):
                last_segment = i == len(group) - 1
                reader = _SegmentReader(dir / segment_file_name(segment.base_offset, ".log"), segment.size_bytes,
                                        self.io_buffer_bytes, throttler, self._check)
                try:
                    for position, batch, info in reader.batches():
                        last_of_group = last_segment and position + len(batch) == segment.size_bytes
                        kept = self._filter(job, batch, info, transactions, stats, horizon, last_of_group)
                        if kept is not None:
                            pending += kept
                            stats.bytes_written += len(kept)
                            if len(pending) >= self.io_buffer_bytes:
                                _write_all(out_fd, pending)
                                throttler.throttle(len(pending))
                                pending.clear()
                finally:
                    reader.close()
            _write_all(out_fd, pending)
            os.fsync(out_fd)
        finally:
            os.close(out_fd)
            transactions.cleaned_index = None
            txn_index.sync()
            txn_index.close()
        last = group[-1]
        os.utime(log_path, ns=_mtime_ns(dir / segment_file_name(last.base_offset, ".log")))
        cleaned = LogSegment(dir, base_offset, suffix=CLEANED_SUFFIX)
        try:
            cleaned.recover(job.index_interval_bytes, verify=False)  # builds both indexes from the batches
            cleaned.seal()
            cleaned.sync(include_indexes=True)
            size_bytes = cleaned.size_bytes
        finally:
            cleaned.close()
        logger.debug("%s: cleaned segments %s into %s (%d bytes)", job.name, [s.base_offset for s in group],
                     log_path.name, size_bytes)
        return CleanedGroup(base_offset, tuple(s.base_offset for s in group), last.next_offset, size_bytes)

    def _filter(self, job: CleanJob, batch: memoryview, info: BatchInfo, transactions: _Transactions,
                stats: CleanerStats, horizon: _EarliestHorizon, last_of_group: bool) -> bytes | memoryview | None:
        """The batch as it is to be written (maybe rewritten), or None to drop it (Kafka's
        LogCleaner.cleanInto filter with MemoryRecords.filterTo)."""
        now_ms = job.now_ms
        batch_horizon = delete_horizon_ms(info)
        is_control = info.attributes & _CONTROL_BIT
        stats.bytes_read += len(batch)
        stats.records_read += info.record_count
        if is_control:
            can_discard = transactions.on_control_batch(info, _control_type(batch, info))
            discard_records = can_discard and batch_horizon is not None and batch_horizon <= now_ms
        else:
            can_discard = discard_records = transactions.on_data_batch(info)
        retain_empty = last_of_group or (info.producer_id >= 0 and self._last_of_active_producer(job, info))
        marker_for_empty_txn = can_discard and is_control
        if discard_records and not retain_empty:
            return None
        body = None
        kept: list[tuple] = []
        spans: list[tuple] = []
        if not discard_records and info.record_count:
            body = records_body(batch, info)
            spans = record_spans(body, info.record_count)
            if is_control:
                kept = spans
            else:
                kept = self._kept_records(info, body, spans, batch_horizon, now_ms, stats)
        if not kept:
            return empty_batch(info) if retain_empty else None
        stats.records_written += len(kept)
        has_tombstone = not is_control and any(not span[6] for span in kept)
        needs_horizon = (has_tombstone or marker_for_empty_txn) and batch_horizon is None
        if needs_horizon:
            batch_horizon = now_ms + job.delete_retention_ms
        if batch_horizon is not None and (has_tombstone or is_control):
            horizon.ms = batch_horizon if horizon.ms is None else min(horizon.ms, batch_horizon)
        if len(kept) == len(spans) and not needs_horizon:
            return batch
        return rebuild_batch(batch, info, body, kept, batch_horizon if needs_horizon else None)

    def _kept_records(self, info: BatchInfo, body, spans: list[tuple], batch_horizon: int | None, now_ms: int,
                      stats: CleanerStats) -> list[tuple]:
        offset_map = self.offset_map
        latest = offset_map.latest_offset
        base_offset = info.base_offset
        retain_tombstones = batch_horizon is None or now_ms < batch_horizon
        kept = []
        for span in spans:
            offset = base_offset + span[3]
            if offset > latest:
                kept.append(span)
            elif span[4] < 0:
                stats.keyless_records_removed += 1
            elif offset >= offset_map.get(body[span[4]:span[5]]) and (span[6] or retain_tombstones):
                kept.append(span)
        return kept

    @staticmethod
    def _last_of_active_producer(job: CleanJob, info: BatchInfo) -> bool:
        """The batch that carries an active producer's last sequence, or its last marker's epoch."""
        if info.producer_id < 0:
            return False
        last = job.active_producers.get(info.producer_id)
        if last is None:
            return False
        last_data_offset, epoch = last
        if last_data_offset >= 0:
            return info.last_offset == last_data_offset
        return info.is_control and info.producer_epoch == epoch


def group_segments(segments: list[SegmentRef], max_bytes: int, max_index_bytes: int,
                   first_uncleanable_offset: int) -> list[list[SegmentRef]]:
    """Consecutive segments whose log, offset index and time index sizes each fit the maxima and
    whose offsets fit in one segment (Kafka's groupSegmentsBySize)."""
    groups: list[list[SegmentRef]] = []
    i = 0
    while i < len(segments):
        group = [segments[i]]
        log_bytes, index_bytes, time_bytes = segments[i].size_bytes, segments[i].offset_index_bytes, segments[i].time_index_bytes
        i += 1
        while i < len(segments):
            candidate = segments[i]
            last_offset = segments[i + 1].base_offset - 1 if i + 1 < len(segments) else first_uncleanable_offset - 1
            if (log_bytes + candidate.size_bytes > max_bytes or index_bytes + candidate.offset_index_bytes > max_index_bytes
                    or time_bytes + candidate.time_index_bytes > max_index_bytes
                    or (candidate.size_bytes and last_offset - group[0].base_offset > _MAX_RELATIVE_OFFSET)):
                break
            group.append(candidate)
            log_bytes += candidate.size_bytes
            index_bytes += candidate.offset_index_bytes
            time_bytes += candidate.time_index_bytes
            i += 1
        groups.append(group)
    return groups


def remove_cleaned(dir: Path, base_offset: int) -> None:
    """Remove the ``.cleaned`` files of the group starting at ``base_offset``."""
    for path in segment_paths(dir, base_offset, CLEANED_SUFFIX):
        path.unlink(missing_ok=True)


def _aborted_transactions(dir: Path, bases: tuple[int, ...], from_offset: int) -> list[AbortedTxn]:
    """Every aborted transaction recorded in the ``.txnindex`` files (read only, whole entries)."""
    found: set[AbortedTxn] = set()
    for base in bases:
        try:
            data = (dir / segment_file_name(base, TXN_INDEX_SUFFIX)).read_bytes()
        except FileNotFoundError:
            continue
        for _, producer_id, first, last, stable in _ABORTED_TXN.iter_unpack(data[: len(data) - len(data) % ENTRY_SIZE]):
            if last >= from_offset:
                found.add(AbortedTxn(producer_id, first, last, stable))
    return sorted(found, key=lambda txn: txn.last_offset)


def _write_all(fd: int, data: bytearray) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _mtime_ns(path: Path) -> tuple[int, int]:
    try:
        mtime = os.stat(path).st_mtime_ns
    except FileNotFoundError:
        mtime = time.time_ns()
    return mtime, mtime
