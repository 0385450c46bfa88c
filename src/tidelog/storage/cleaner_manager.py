"""LogCleaner: which compacted log to clean next, cleanings in worker processes, results swapped in.

Kafka's LogCleaner and LogCleanerManager over the LogManager's logs. Every
``log.cleaner.backoff.ms`` with nothing to do (at once after a cleaning), each of the
``log.cleaner.threads`` runners takes the dirtiest log that may be cleaned:

- a log with ``cleanup.policy`` compact whose *dirty ratio* (bytes of the segments from the
  first dirty offset to the first uncleanable one, over those plus the clean bytes below) is
  above ``min.cleanable.dirty.ratio``; or one whose oldest dirty segment is older than
  ``max.compaction.lag.ms`` (then any dirty bytes will do); or one holding tombstones or
  markers whose delete horizon has passed (Tidelog's addition: they go without waiting for
  new dirt);
- the first uncleanable offset is the lowest of the active segment's base, the high watermark
  (a follower could still have to truncate above it; the hook ``high_watermark`` gives it, and
  the last stable offset once transactions are served), and the base of the first segment with
  a record younger than ``min.compaction.lag.ms``.

The cleaning itself (storage/cleaner.py) runs in a worker process, so that its per-record Python
work never holds the event loop's GIL; the loop only makes the job (a snapshot of the segment
list) and swaps the cleaned segments in (PartitionLog.replace_segments, storage/segment_files.py),
after checking the log is still the one planned for: not deleted, truncated or reconfigured,
and each replaced segment still there and unchanged. Otherwise the result is dropped. A worker
is killed with the broker (PR_SET_PDEATHSIG), so it never writes into a restarted broker's
directory.

On disk: ``<data_dir>/cleaner-offset-checkpoint``, Kafka's format (a version line ``0``, a
count line, then ``topic partition offset`` lines): each compacted log's first dirty offset,
written after each cleaning. A log an unexpected error hit is marked uncleanable until a
restart, as in Kafka (an I/O error takes the directory offline instead; a full disk only fails
the cleaning); a failed cleaning is tried again after the backoff. Not thread-safe; the event
loop owns it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import errno
import logging
import multiprocessing
import os
import signal
from bisect import bisect_right
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from tidelog.clock import wall_clock_ms
from tidelog.protocol.records import CorruptRecords
from tidelog.storage.checkpoint import write_checkpoint_file
from tidelog.storage.cleaner import (CleanedGroup, Cleaner, CleanerStats, CleaningAborted, CleanJob, CleanResult,
                                     SegmentRef, remove_cleaned)
from tidelog.storage.errors import StorageError
from tidelog.storage.segment_files import CLEANED_SUFFIX

if TYPE_CHECKING:
    from tidelog.storage.log import PartitionLog
    from tidelog.storage.manager import LogManager

__all__ = ["CHECKPOINT_FILE", "CleanerConfig", "CleaningState", "LogCleaner", "read_cleaner_checkpoint"]

logger = logging.getLogger(__name__)

CHECKPOINT_FILE = "cleaner-offset-checkpoint"
_NO_LIMIT = float("inf")


@dataclass(frozen=True)
class CleanerConfig:
    """The broker's log.cleaner.* settings, Kafka's defaults."""

    enable: bool = True
    threads: int = 1
    dedupe_buffer_bytes: int = 128 * 1024 * 1024  # all workers together
    load_factor: float = 0.9
    io_buffer_bytes: int = 512 * 1024
    io_max_bytes_per_second: float = 1.7976931348623157e308  # Java's Double.MAX_VALUE: no limit
    backoff_ms: int = 15_000


@dataclass
class CleaningState:
    """What the cleaner knows about one compacted log (for metrics and ``topics describe``)."""

    first_dirty_offset: int = 0
    dirty_ratio: float = 0.0
    last_cleaned_ms: int | None = None
    last_error: str | None = None
    uncleanable: bool = False
    cleaning: bool = False
    next_delete_horizon_ms: int | None = None
    runs: int = 0


@dataclass
class CleanerTotals:
    runs: dict[str, int] = field(default_factory=lambda: {"cleaned": 0, "aborted": 0, "failed": 0})
    bytes_read: int = 0
    bytes_written: int = 0
    records_read: int = 0
    records_written: int = 0
    seconds: float = 0.0
    last_error: str | None = None
    last_error_ms: int | None = None


@dataclass
class _Plan:
    """A job and what the loop must find unchanged to swap its result in."""

    log: PartitionLog
    job: CleanJob
    truncations: int
    segments: dict[int, tuple[object, int]]  # base offset -> (the LogSegment object, its size then)


def read_cleaner_checkpoint(path: Path) -> dict[tuple[str, int], int]:
    """The ``cleaner-offset-checkpoint`` entries; empty for a missing or unreadable file."""
    try:
        lines = Path(path).read_text().splitlines()
        if lines[0].strip() != "0":
            raise ValueError(f"unknown version {lines[0]!r}")
        count = int(lines[1])
        entries = {}
        for line in lines[2: 2 + count]:
            topic, partition, offset = line.rsplit(" ", 2)
            entries[(topic, int(partition))] = int(offset)
        return entries
    except FileNotFoundError:
        return {}
    except (ValueError, IndexError) as e:
        logger.warning("%s is unreadable (%s); every compacted log is cleaned from its start", path, e)
        return {}


class LogCleaner:
    """See the module docstring. ``manager`` gives the logs (``logs()``, ``get``) and the data directory."""

    def __init__(self, manager: LogManager, config: CleanerConfig) -> None:
        self.manager = manager
        self.config = config
        self.checkpoint_path = Path(manager.data_dir) / CHECKPOINT_FILE
        self._first_dirty = read_cleaner_checkpoint(self.checkpoint_path)
        self.states: dict[tuple[str, int], CleaningState] = {}
        self.totals = CleanerTotals()
        # Hooks: the first offset of a log that may not be cleaned yet (its high watermark; the last
        # stable offset once transactions are served), and its active producers as CleanJob wants them.
        self.high_watermark: Callable[[PartitionLog], int] | None = None
        self.active_producers: Callable[[PartitionLog], dict[int, tuple[int, int]]] | None = None
        self.observer: Callable[[str, CleanerStats | None], None] | None = None  # (result, stats) after each run
        self._executor: concurrent.futures.ProcessPoolExecutor | None = None
        self._stop = None  # a multiprocessing Event the workers poll
        self._busy = None  # a multiprocessing Value: how many workers are inside a cleaning
        self._wakeup = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._closed = False

    # ---- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        if not self.config.enable or self.config.threads <= 0:
            logger.info("log cleaner disabled (log.cleaner.enable=%s, log.cleaner.threads=%d)", self.config.enable,
                        self.config.threads)
            return
        self._tasks = [asyncio.create_task(self._runner(i), name=f"tidelog-log-cleaner-{i}")
                       for i in range(self.config.threads)]

    def wake(self) -> None:
        """Look for work now (a segment rolled, a config changed) rather than after the backoff."""
        self._wakeup.set()

    async def close(self) -> None:
        """Stop the runners: a cleaning in progress is abandoned (its files are removed)."""
        self._closed = True
        if self._stop is not None:
            self._stop.set()
        for (topic, partition), state in self.states.items():
            if state.cleaning:
                logger.info("%s-%d: cleaning abandoned: the broker is stopping", topic, partition)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._tasks = []
        if self._executor is not None:
            executor, self._executor = self._executor, None
            with self._busy.get_lock():
                idle = self._busy.value == 0
            if idle:  # no worker is inside a cleaning, and none enters one now that _stop is set: a worker
                # still starting (a spawned interpreter importing Tidelog, seconds on a loaded machine) has
                # nothing to undo, so it is not waited for
                for process in list((executor._processes or {}).values()):
                    process.kill()
            await asyncio.get_running_loop().run_in_executor(None, executor.shutdown, True)

    # ---- choosing a log ------------------------------------------------------------------------

    def cleanable_offsets(self, log: PartitionLog, now_ms: int) -> tuple[int, int]:
        """(first dirty offset, first uncleanable offset) of a compacted log (Kafka's cleanableOffsets)."""
        key = (log.topic, log.partition)
        first_dirty = self._first_dirty.get(key, log.log_start_offset)
        if not log.log_start_offset <= first_dirty <= log.log_end_offset:
            first_dirty = log.log_start_offset
        active = log.segments[-1]
        limit = active.base_offset
        if self.high_watermark is not None:
            limit = min(limit, self.high_watermark(log))
        lag_ms = log.config.min_compaction_lag_ms
        if lag_ms > 0:
            for segment in log.segments[max(bisect_right([s.base_offset for s in log.segments], first_dirty) - 1, 0): -1]:
                if segment.max_timestamp > now_ms - lag_ms:
                    limit = min(limit, segment.base_offset)
                    break
        return first_dirty, max(first_dirty, limit)

    @staticmethod
    def _cleanable_bytes(log: PartitionLog, first_dirty: int, uncleanable: int) -> tuple[int, int, int]:
        """(first uncleanable offset, clean bytes, cleanable bytes), Kafka's LogToClean: the first
        uncleanable offset is the base of the segment holding ``uncleanable``; a segment the first
        dirty offset falls inside counts as both clean and cleanable."""
        bases = [s.base_offset for s in log.segments]
        first_uncleanable = bases[max(bisect_right(bases, uncleanable) - 1, 0)]
        low = bases[max(bisect_right(bases, min(first_dirty, first_uncleanable)) - 1, 0)]
        clean = sum(s.size_bytes for s in log.segments if s.base_offset < first_dirty)
        cleanable = sum(s.size_bytes for s in log.segments if low <= s.base_offset < first_uncleanable)
        return first_uncleanable, clean, cleanable

    def dirty_ratio(self, log: PartitionLog, now_ms: int | None = None) -> float:
        now_ms = now_ms if now_ms is not None else wall_clock_ms()
        first_dirty, uncleanable = self.cleanable_offsets(log, now_ms)
        _, clean, cleanable = self._cleanable_bytes(log, first_dirty, uncleanable)
        return cleanable / (clean + cleanable) if clean + cleanable else 0.0

    def describe(self, log: PartitionLog, now_ms: int | None = None) -> dict:
        """The cleaner's state of a compacted log, as ``topics describe`` shows it: where cleaning
        got to (``last_cleaned_offset``: the checkpointed first dirty offset, None before a first
        cleaning), the dirty ratio and cleanable bytes it would choose logs by now, and its runs."""
        now_ms = now_ms if now_ms is not None else wall_clock_ms()
        key = (log.topic, log.partition)
        first_dirty, uncleanable = self.cleanable_offsets(log, now_ms)
        first_uncleanable, clean, cleanable = self._cleanable_bytes(log, first_dirty, uncleanable)
        state = self.states.get(key) or CleaningState()
        return {
            "last_cleaned_offset": self._first_dirty.get(key), "first_uncleanable_offset": first_uncleanable,
            "dirty_ratio": round(cleanable / (clean + cleanable), 4) if clean + cleanable else 0.0,
            "min_cleanable_dirty_ratio": log.config.min_cleanable_dirty_ratio,
            "clean_bytes": clean, "cleanable_bytes": cleanable, "cleaning": state.cleaning, "runs": state.runs,
            "last_cleaned_ms": state.last_cleaned_ms, "last_error": state.last_error, "uncleanable": state.uncleanable,
        }

    def _plan_filthiest(self, now_ms: int, busy: set[tuple[str, int]]) -> _Plan | None:
        best: tuple[float, PartitionLog, int, int] | None = None
        live = {(log.topic, log.partition) for log in self.manager.logs()}
        self.states = {key: state for key, state in self.states.items() if key in live or state.cleaning}
        for log in self.manager.logs():
            key = (log.topic, log.partition)
            if not log.config.compact or key in busy or log.closed or log.log_dir.offline:
                continue
            state = self.states.setdefault(key, CleaningState())
            if state.uncleanable:
                continue
            first_dirty, uncleanable = self.cleanable_offsets(log, now_ms)
            first_uncleanable, clean, cleanable = self._cleanable_bytes(log, first_dirty, uncleanable)
            state.first_dirty_offset = first_dirty
            state.dirty_ratio = cleanable / (clean + cleanable) if clean + cleanable else 0.0
            if clean + cleanable == 0:
                continue
            overdue = cleanable > 0 and self._compaction_delay_ms(log, first_dirty, now_ms) > 0
            horizon_due = state.next_delete_horizon_ms is not None and now_ms >= state.next_delete_horizon_ms
            if not (overdue or horizon_due or (cleanable > 0 and state.dirty_ratio > log.config.min_cleanable_dirty_ratio)):
                continue
            priority = 2.0 if overdue or horizon_due else state.dirty_ratio
            if best is None or priority > best[0]:
                best = (priority, log, first_dirty, first_uncleanable)
        if best is None:
            return None
        _, log, first_dirty, first_uncleanable = best
        return self._plan(log, first_dirty, first_uncleanable, now_ms)

    @staticmethod
    def _compaction_delay_ms(log: PartitionLog, first_dirty: int, now_ms: int) -> int:
        """How long past max.compaction.lag.ms the oldest dirty record is (Kafka's maxCompactionDelay)."""
        max_lag_ms = log.config.max_compaction_lag_ms
        if max_lag_ms >= (1 << 63) - 1:
            return 0
        dirty = [s for s in log.segments[:-1] if s.next_offset > first_dirty]
        if not dirty:
            return 0
        oldest_ms = min(s.created_ms for s in dirty)  # the first batch's time of a loaded segment
        return max(now_ms - oldest_ms - max_lag_ms, 0)

    def _plan(self, log: PartitionLog, first_dirty: int, first_uncleanable: int, now_ms: int) -> _Plan:
        segments = log.segments
        refs, objects = [], {}
        for i, segment in enumerate(segments[:-1]):
            if segment.base_offset >= first_uncleanable:
                break
            refs.append(SegmentRef(segment.base_offset, segments[i + 1].base_offset, segment.size_bytes,
                                   8 * len(segment.offset_index), 12 * len(segment.time_index)))
            objects[segment.base_offset] = (segment, segment.size_bytes)
        dirty_segment = segments[max(bisect_right([s.base_offset for s in segments], first_dirty) - 1, 0)]
        position = dirty_segment.offset_index.lookup(first_dirty - dirty_segment.base_offset)
        producers = self.active_producers(log) if self.active_producers is not None else {}
        config = log.config
        job = CleanJob(
            dir=str(log.dir), name=f"{log.topic}-{log.partition}", segments=tuple(refs),
            txn_index_bases=tuple(s.base_offset for s in segments), first_dirty_offset=first_dirty,
            first_uncleanable_offset=first_uncleanable, dirty_start_position=position, now_ms=now_ms,
            delete_retention_ms=config.delete_retention_ms, segment_bytes=config.segment_bytes,
            segment_index_bytes=config.segment_index_bytes, index_interval_bytes=config.index_interval_bytes,
            active_producers=producers,
        )
        return _Plan(log, job, log.truncations, objects)

    # ---- running -------------------------------------------------------------------------------

    async def _runner(self, index: int) -> None:
        while not self._closed:
            try:
                cleaned = await self.clean_once()
            except asyncio.CancelledError:
                raise
            except StorageError:  # the log directory went offline (logged there); its logs are skipped
                cleaned = False
            except Exception:  # a bug of ours: keep the runner alive, say so once per run
                logger.exception("log cleaner runner %d failed", index)
                cleaned = False
            if not cleaned:
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), self._next_wait_s())
                except asyncio.TimeoutError:
                    pass

    def _next_wait_s(self) -> float:
        """The backoff, shortened to the next delete horizon that falls within it (one already
        past waits for the backoff: its log was not cleanable when the runner last looked)."""
        wait_ms = self.config.backoff_ms
        now_ms = wall_clock_ms()
        for state in self.states.values():
            if state.next_delete_horizon_ms is not None and state.next_delete_horizon_ms > now_ms:
                wait_ms = min(wait_ms, state.next_delete_horizon_ms - now_ms + 1)
        return wait_ms / 1000

    async def clean_once(self, now_ms: int | None = None) -> bool:
        """Clean the dirtiest log that may be cleaned; False if there was none, or the cleaning
        failed (the runner then waits for the backoff rather than try again at once)."""
        busy = {key for key, state in self.states.items() if state.cleaning}
        plan = self._plan_filthiest(now_ms if now_ms is not None else wall_clock_ms(), busy)
        if plan is None:
            return False
        key = (plan.log.topic, plan.log.partition)
        state = self.states[key]
        state.cleaning = True
        try:
            return await self._run(plan, state)
        finally:
            state.cleaning = False

    def clean_now(self, log: PartitionLog, now_ms: int | None = None) -> CleanResult | None:
        """Clean ``log`` now, in this process, whatever its dirty ratio; None if it has nothing
        below its first uncleanable offset. For tests and benchmarks."""
        now_ms = now_ms if now_ms is not None else wall_clock_ms()
        first_dirty, uncleanable = self.cleanable_offsets(log, now_ms)
        first_uncleanable, clean, cleanable = self._cleanable_bytes(log, first_dirty, uncleanable)
        if clean + cleanable == 0:
            return None
        plan = self._plan(log, first_dirty, first_uncleanable, now_ms)
        map_bytes, load_factor, io_buffer_bytes, io_bytes_per_second = self._worker_settings()
        result = Cleaner(map_bytes, load_factor, io_buffer_bytes, io_bytes_per_second).clean(plan.job)
        self._commit(plan, self.states.setdefault((log.topic, log.partition), CleaningState()), result)
        return result

    async def _run(self, plan: _Plan, state: CleaningState) -> bool:
        job = plan.job
        logger.info("%s: cleaning offsets %d..%d (dirty ratio %.2f)", job.name, job.first_dirty_offset,
                    job.first_uncleanable_offset - 1, state.dirty_ratio)
        try:
            result: CleanResult = await asyncio.get_running_loop().run_in_executor(
                self._workers(), _clean_in_worker, job, self._worker_settings())
        except CleaningAborted as e:
            self._count("aborted", None)
            logger.info("%s: cleaning abandoned: %s", job.name, e)
            return True
        except BrokenProcessPool as e:
            broken, self._executor = self._executor, None  # a new pool next time
            if broken is not None:
                broken.shutdown(wait=False)
            self._fail(plan, state, f"the cleaner worker died: {e}")
            return False
        except CorruptRecords as e:
            self._fail(plan, state, f"corrupt records: {e}")
            return False
        except OSError as e:
            if e.errno == errno.ENOSPC:
                self._count("failed", None, f"{job.name}: {e}")
                logger.warning("%s: cleaning failed, no space left for the cleaned copy: %s", job.name, e)
                return False
            self._count("failed", None, f"{job.name}: {e}")
            raise self.manager.take_offline(e, f"{job.name}: cleaning") from None
        self._commit(plan, state, result)
        return True

    def _commit(self, plan: _Plan, state: CleaningState, result: CleanResult) -> None:
        log, job = plan.log, plan.job
        key = (log.topic, log.partition)
        current = self.manager.get(*key)
        if current is not log or log.closed or not log.config.compact or log.truncations != plan.truncations:
            self._discard(job, result.groups)
            self._count("aborted", result.stats)
            logger.info("%s: cleaning result dropped: the log was deleted, truncated or reconfigured meanwhile", job.name)
            return
        swapped = 0
        for i, group in enumerate(result.groups):
            old = self._unchanged(log, plan, group)
            if old is None:  # retention or DeleteRecords removed one of its segments meanwhile
                remove_cleaned(Path(job.dir), group.base_offset)
                continue
            try:
                log.replace_segments(old)
            except StorageError:
                self._count("failed", result.stats, f"{job.name}: swapping in cleaned segments failed")
                raise
            except ValueError as e:  # the segments are not where planned: nothing was renamed
                logger.warning("%s: %s", job.name, e)
                self._discard(job, result.groups[i:])
                break
            swapped += 1
        self._first_dirty[key] = result.next_dirty_offset
        self._write_checkpoint()
        state.first_dirty_offset = result.next_dirty_offset
        state.last_cleaned_ms = wall_clock_ms()
        state.next_delete_horizon_ms = result.next_delete_horizon_ms
        state.runs += 1
        self._count("cleaned", result.stats)
        stats = result.stats
        reduction = 100 * (1 - stats.bytes_written / stats.bytes_read) if stats.bytes_read else 0.0
        logger.info("%s: cleaned %d segment groups (dirty section %d..%d) in %.2f s (offset map %.2f s, %.0f%% full): "
                    "%d -> %d bytes (%.1f%% smaller), %d -> %d records", job.name, swapped, job.first_dirty_offset,
                    result.next_dirty_offset - 1, stats.seconds, stats.map_seconds, 100 * stats.map_utilization,
                    stats.bytes_read, stats.bytes_written, reduction, stats.records_read, stats.records_written)
        if stats.keyless_records_removed:
            logger.warning("%s: the cleaning removed %d records without a key", job.name, stats.keyless_records_removed)

    @staticmethod
    def _unchanged(log: PartitionLog, plan: _Plan, group: CleanedGroup) -> list | None:
        """The group's segments if each is still in the log, unchanged and sealed."""
        old = []
        for base_offset in group.replaces:
            segment, size = plan.segments[base_offset]
            if segment not in log.segments[:-1] or segment.size_bytes != size:
                return None
            old.append(segment)
        return old

    def _discard(self, job: CleanJob, groups: list[CleanedGroup]) -> None:
        for group in groups:
            remove_cleaned(Path(job.dir), group.base_offset)

    def _fail(self, plan: _Plan, state: CleaningState, reason: str) -> None:
        state.uncleanable = True
        state.last_error = reason
        self._count("failed", None, f"{plan.job.name}: {reason}")
        logger.warning("%s: cleaning failed, the partition is marked uncleanable until a restart: %s", plan.job.name, reason)
        for path in Path(plan.job.dir).glob(f"*{CLEANED_SUFFIX}"):
            path.unlink(missing_ok=True)

    def _count(self, result: str, stats: CleanerStats | None, error: str | None = None) -> None:
        totals = self.totals
        totals.runs[result] += 1
        if stats is not None and result == "cleaned":
            totals.bytes_read += stats.bytes_read
            totals.bytes_written += stats.bytes_written
            totals.records_read += stats.records_read
            totals.records_written += stats.records_written
            totals.seconds += stats.seconds
        if error is not None:
            totals.last_error, totals.last_error_ms = error, wall_clock_ms()
        if self.observer is not None:
            self.observer(result, stats if result == "cleaned" else None)

    def _write_checkpoint(self) -> None:
        live = {(log.topic, log.partition) for log in self.manager.logs()}
        self._first_dirty = {key: offset for key, offset in self._first_dirty.items() if key in live}
        lines = ["0", str(len(self._first_dirty))]
        lines += [f"{topic} {partition} {offset}" for (topic, partition), offset in sorted(self._first_dirty.items())]
        try:
            write_checkpoint_file(self.checkpoint_path, "\n".join(lines) + "\n")
        except OSError as e:
            raise self.manager.take_offline(e, "writing the cleaner offset checkpoint") from e

    # ---- the worker processes --------------------------------------------------------------

    def _worker_settings(self) -> tuple:
        config = self.config
        threads = max(config.threads, 1)
        return (config.dedupe_buffer_bytes // threads, config.load_factor, config.io_buffer_bytes,
                config.io_max_bytes_per_second / threads)

    def _workers(self) -> concurrent.futures.ProcessPoolExecutor:
        if self._executor is None:
            context = multiprocessing.get_context("spawn")  # never fork a process with an event loop and threads
            if self._stop is None:
                self._stop = context.Event()
                self._busy = context.Value("i", 0)
            self._executor = concurrent.futures.ProcessPoolExecutor(
                max_workers=max(self.config.threads, 1), mp_context=context, initializer=_init_worker,
                initargs=(self._stop, self._busy, os.getpid()))
        return self._executor


# ---- in the worker process -------------------------------------------------------------------

_worker_cleaner: Cleaner | None = None
_worker_map_settings: tuple | None = None
_worker_stop = None
_worker_busy = None


def _init_worker(stop, busy, parent_pid: int) -> None:
    global _worker_stop, _worker_busy
    _worker_stop, _worker_busy = stop, busy
    for signum in (signal.SIGINT, signal.SIGTERM):  # the broker decides when cleaning stops (its process
        signal.signal(signum, signal.SIG_IGN)       # group gets Ctrl-C and service managers' SIGTERM too)
    try:  # die with the broker, so a restarted one never meets a worker writing in its directory
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent_pid:
        os._exit(0)


def _stopping() -> bool:
    return _worker_stop is not None and _worker_stop.is_set()


def _clean_in_worker(job: CleanJob, settings: tuple) -> CleanResult:
    """One cleaning in a worker process; the Cleaner is kept for the next one (its offset map is
    released after each cleaning)."""
    global _worker_cleaner, _worker_map_settings
    map_bytes, load_factor, io_buffer_bytes, io_bytes_per_second = settings
    if _worker_cleaner is None or _worker_map_settings != (map_bytes, load_factor):
        _worker_cleaner = Cleaner(map_bytes, load_factor, should_stop=_stopping)
        _worker_map_settings = (map_bytes, load_factor)
    _worker_cleaner.io_buffer_bytes = max(io_buffer_bytes, 64 * 1024)
    _worker_cleaner.io_bytes_per_second = io_bytes_per_second
    if _worker_busy is None:
        return _worker_cleaner.clean(job)
    with _worker_busy.get_lock():  # the broker's close() reads it under the lock after setting _stop
        if _stopping():
            raise CleaningAborted("the cleaner is stopping")
        _worker_busy.value += 1
    try:
        return _worker_cleaner.clean(job)
    finally:
        with _worker_busy.get_lock():
            _worker_busy.value -= 1
