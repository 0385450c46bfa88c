"""LogManager: every partition log under one data directory, and when their bytes are durable.

On disk: ``<data_dir>/<topic>-<partition>/`` per partition (topic names may hold '-' and '.',
so the partition is what follows the last '-'); ``<dir>.<hex>-delete`` directories are
leftovers of deletions and are removed at start; ``__tidelog*`` entries, and dot-named
ones that are not partition directories (the delay topics' ``.delay-index``; a topic may be named
``.x``), belong to other components and are ignored. ``.clean-shutdown`` exists only between a clean close and the next
start: if it is missing at start, every log is opened with recovery; it holds each log's state
as the close left it (``PartitionLog.clean_state``), from which the start opens the logs without
reading them (docs/storage.md, "Recovery").

Durability profiles, per log (``LogConfig.durability``):
- throughput: acknowledge at once; the page cache and replication carry the data.
- balanced: group commit. Waiters register; a flusher task fsyncs every waiting log in ONE job
  and wakes the waiters. A job starts at once when none is running (after lingering
  ``flush_interval_ms`` for more, when a log sets it above 0); whatever is appended while it
  runs goes into the next, so the busier the broker, the more each fsync covers.
- durable: fsync before acknowledging; concurrent waiters share fsync jobs.
fsync jobs run one at a time (their files side by side in a few long-lived flush threads): a job
asked for while one runs covers every log asked for meanwhile, and starts only after the running
job's outcome is known. So a flush that succeeds can never hide the error of a concurrent flush
of the same file (Linux reports a write-back error once): the first error takes the directory
offline (log_dir.py) before another job can start, and nothing is acknowledged after it. ``on_durable`` is called
for each log whose durable offset moved (parked fetches wait for it); ``on_offline`` listeners
learn that the directory went offline. A job over many logs syncs the filesystem once
(``syncfs``) through a descriptor of the data directory held from the start, so it needs no
descriptor per file. Not thread-safe: the event loop owns the manager and its logs.

Descriptors: one per partition (its active segment), the sealed segments an ``OpenFiles``
cache keeps open (at most ``max_open_segment_files``, each closed after
``segment_idle_close_ms`` unused; a task sweeps them), and the data directory's.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import shutil
import time
from functools import partial
from pathlib import Path
from typing import Callable, Iterable
from weakref import WeakKeyDictionary

from tidelog.clock import wall_clock_ms
from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.storage import gc_policy
from tidelog.storage.checkpoint import fsync_dir, remove_file, write_checkpoint_file, write_checkpoint_files
from tidelog.storage.cleaner_manager import CleanerConfig, LogCleaner
from tidelog.storage.errors import StorageError
from tidelog.storage.faults import faults
from tidelog.storage.fsync import (SYNCFS_MIN_FILES, WORKER_SYNCFS, WORKER_SYNCFS_MIN_LOGS, FlushThreads, FsyncWorker,
                                   split_sync, sync_fds, sync_filesystem, syncfs_available)
from tidelog.storage.log import LogConfig, PartitionLog, PendingFlush
from tidelog.storage.log_dir import LogDirState
from tidelog.storage.open_files import OpenFiles
from tidelog.storage.segment_files import flush_deletions

__all__ = ["LogManager", "CLEAN_SHUTDOWN_FILE"]

logger = logging.getLogger(__name__)

CLEAN_SHUTDOWN_FILE = ".clean-shutdown"
CLEAN_STATE_VERSION = 1  # of the logs' state the marker holds (PartitionLog.clean_state)
FSYNC_THREADS = 4  # the files of one fsync job are synced side by side (fsync.split_sync)
SWEEP_INTERVAL_S = 5.0  # how often idle segment files are looked for (at most; less when the idle time is shorter)


def parse_partition_dir(name: str) -> tuple[str, int] | None:
    topic, sep, partition = name.rpartition("-")
    if not sep or not topic or not partition.isdigit():
        return None
    return topic, int(partition)


class _Shared:
    """One wait over several logs of the group commit (``durable_waiter``), registered with each
    of them in place of a future: answered by each log once (``set_result``, as a future is) and
    its future done when every one of them has, or failed at the first failure."""

    __slots__ = ("future", "remaining")

    def __init__(self, future: asyncio.Future, remaining: int) -> None:
        self.future = future
        self.remaining = remaining

    def done(self) -> bool:
        return self.future.done()

    def cancelled(self) -> bool:
        return self.future.cancelled()

    def set_result(self, _result: None) -> None:
        self.remaining -= 1
        if self.remaining == 0 and not self.future.done():
            self.future.set_result(None)

    def set_exception(self, error: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(error)


def _set_outcome(future: asyncio.Future, error: BaseException | None) -> None:
    if not future.done():
        future.set_result(error)


class LogManager:
    """All partition logs of one data directory; see the module docstring."""

    def __init__(self, data_dir: Path, default_config: LogConfig, *, loop: asyncio.AbstractEventLoop | None = None,
                 retention_check_interval_ms: int = 300_000, cleaner_config: CleanerConfig | None = None,
                 max_open_segment_files: int = 1024, segment_idle_close_ms: int = 30_000) -> None:
        self.data_dir = Path(data_dir)
        self.files = OpenFiles(max_open_segment_files, segment_idle_close_ms)
        self._fs_fd: int | None = None  # the data directory, for syncfs
        self.default_config = default_config
        self.retention_check_interval_ms = retention_check_interval_ms
        self._loop = loop
        self._logs: dict[tuple[str, int], PartitionLog] = {}
        self.log_dir = LogDirState(self.data_dir)
        self.log_dir.listeners.append(self._on_offline)
        self.on_offline: list[Callable[[str], None]] = self.log_dir.listeners  # called with the reason
        self._flush_threads = FlushThreads(FSYNC_THREADS, "tidelog-fsync")
        # One-file and syncfs jobs: the C fsync thread, which never waits for the GIL (fsync.py).
        self._worker: FsyncWorker | None = None
        self._worker_jobs: dict[int, tuple[list[PartitionLog], list[tuple[PartitionLog, PendingFlush]], float]] = {}
        self._worker_token = 0
        self._balanced_waiters: dict[PartitionLog, list[tuple[int, asyncio.Future | _Shared]]] = {}  # (offset, waiter)
        self._flush_soon: set[PartitionLog] = set()  # rolled or shrunk: flushed in every profile
        self._dirty: set[PartitionLog] = set()  # appended to since their last flush (not throughput)
        self._sync_requested: dict[PartitionLog, None] = {}  # for the next job (ordered set)
        self._next_sync: asyncio.Future | None = None  # its outcome: None or a StorageError
        self._job: asyncio.Future | None = None  # the running job's outcome (one job at a time)
        self._flushing = False  # between start() and close(): the group commit runs
        self._kick_scheduled = False
        self._window_timer: asyncio.TimerHandle | None = None  # a job lingering (flush_interval_ms)
        self._closed = False
        self._deleted: WeakKeyDictionary[PartitionLog, KafkaError] = WeakKeyDictionary()  # why a log went
        self._tasks: list[asyncio.Task] = []
        # Called with (seconds, ok) after each fsync job: the broker's fsync latency metric.
        self.fsync_observer = None
        self.on_durable: Callable[[PartitionLog], None] | None = None
        self.cleaner = LogCleaner(self, cleaner_config or CleanerConfig())  # compacts cleanup.policy=compact logs

    @property
    def offline(self) -> bool:
        """Whether an I/O error took the data directory offline (until a restart)."""
        return self.log_dir.offline

    @property
    def offline_reason(self) -> str | None:
        return self.log_dir.offline_reason

    def take_offline(self, error: BaseException, what: str) -> StorageError:
        """For other writers of files in the data directory (checkpoints): an I/O error of
        theirs takes the directory offline too. Returns the StorageError to raise."""
        return self.log_dir.fail(error, what)

    def write_checkpoints(self, files: list[tuple[Path, bytes | str]]) -> None:
        """Write many checkpoint files in the data directory (storage/checkpoint.py), with two
        syncs of the filesystem for all of them where syncfs can be trusted and they are many,
        else an fsync of each. Raises OSError (the caller takes the directory offline)."""
        if len(files) >= SYNCFS_MIN_FILES and syncfs_available():
            fs_fd = self._open_fs_fd()
            write_checkpoint_files(files, lambda targets: sync_filesystem(fs_fd, targets))
        else:
            for path, data in files:
                write_checkpoint_file(path, data)

    # ---- the set of logs -----------------------------------------------------------------

    def open_all(self, topic_configs: dict[str, LogConfig]) -> None:
        # Thousands of logs are objects that live as long as the broker, made in one go: the
        # cyclic garbage collector would walk them all again and again meanwhile (a third of the
        # time of a clean start of 10,000 logs).
        collecting = gc.isenabled()
        gc.disable()
        try:
            self._open_all(topic_configs)
        finally:
            if collecting:
                gc.enable()
        gc_policy.freeze_soon()  # nor walked again by every full collection once open

    def _open_all(self, topic_configs: dict[str, LogConfig]) -> None:
        started = time.perf_counter()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._open_fs_fd()
        states = self._read_clean_states()
        # The removal must survive a power loss, or the next start would skip recovery.
        try:
            clean = remove_file(self.data_dir / CLEAN_SHUTDOWN_FILE)
        except OSError as e:
            raise self.log_dir.fail(e, "removing the clean-shutdown marker") from e
        if not clean:
            states = {}
        with os.scandir(self.data_dir) as listing:  # the entry types come with the listing: no stat each
            dirs = [self.data_dir / name for name in sorted(entry.name for entry in listing if entry.is_dir())]
        read: list[PartitionLog] = []  # opened by reading their files (not as the clean stop described them)
        described = 0
        if not clean and any(parse_partition_dir(entry.name) for entry in dirs):
            logger.warning("%s: no clean-shutdown marker, recovering every log", self.data_dir)
        for entry in dirs:
            if entry.name.startswith("__tidelog"):
                continue
            if entry.name.endswith("-delete"):
                logger.info("removing leftover %s", entry)
                shutil.rmtree(entry, ignore_errors=True)
                continue
            parsed = parse_partition_dir(entry.name)
            if parsed is None:
                if not entry.name.startswith("."):  # dot-named: another component's (.delay-index)
                    logger.warning("ignoring unexpected directory %s", entry)
                continue
            topic, partition = parsed
            config = topic_configs.get(topic, self.default_config)
            state = states.get(entry.name)
            if state is not None:
                self._add(PartitionLog.open_from_state(entry, topic, partition, config, state, log_dir=self.log_dir,
                                                       files=self.files))
                described += 1
                continue
            read.append(self._add(PartitionLog.open(entry, topic, partition, config, recover=not clean,
                                                    log_dir=self.log_dir, files=self.files, defer_recovery_sync=True)))
        self._complete_recovery(read, clean, started, len(self._logs), described)

    def _read_clean_states(self) -> dict[str, list]:
        """The logs as the last clean stop left them (the marker's content, ``PartitionLog.
        clean_state`` by directory name), or nothing: no marker, an empty one (older versions),
        or one that does not parse (then every log is read as after any clean stop)."""
        try:
            text = (self.data_dir / CLEAN_SHUTDOWN_FILE).read_text()
        except FileNotFoundError:
            return {}
        except OSError as e:
            raise self.log_dir.fail(e, "reading the clean-shutdown marker") from e
        if not text:
            return {}
        try:
            marker = json.loads(text)
            if marker.get("version") != CLEAN_STATE_VERSION:
                raise ValueError(f"version {marker.get('version')}")
            return marker["logs"]
        except (ValueError, KeyError, AttributeError) as e:
            logger.warning("%s: unreadable %s (%s); reading every log", self.data_dir, CLEAN_SHUTDOWN_FILE, e)
            return {}

    def _complete_recovery(self, logs: list[PartitionLog], clean: bool, started: float, opened: int,
                           described: int) -> None:
        """What recovery read back becomes durable: one syncfs for every log (a start after a
        crash with thousands of partitions would otherwise fsync three files each), or an fsync
        per file where syncfs is not to be trusted."""
        synced = False
        read = time.perf_counter() - started
        if not clean and logs and syncfs_available():
            try:
                for log in logs:
                    log.recovered_indexes()
                sync_filesystem(self._open_fs_fd(), ["segment"] * len(logs))
            except OSError as e:
                raise self.log_dir.fail(e, "syncing what recovery read back") from e
            synced = True
        for log in logs:
            try:
                log.complete_recovery(synced)
            except OSError as e:
                raise log._io_error(e, "syncing what recovery read back") from e
        if opened:
            took = time.perf_counter() - started
            logger.info("%s: opened %d logs%s in %.2f s%s", self.data_dir, opened, "" if clean else " (recovered)",
                        took, f" ({described} as the clean stop described them)" if clean
                        else f" ({read:.2f} s reading them, {took - read:.2f} s making that durable)")

    def _open_fs_fd(self) -> int:
        """The data directory's descriptor for syncfs (opened before any write it must cover)."""
        if self._fs_fd is None:
            self._fs_fd = os.open(self.data_dir, os.O_RDONLY | os.O_DIRECTORY)
        return self._fs_fd

    def _add(self, log: PartitionLog) -> PartitionLog:
        log.on_roll = self._on_roll
        log.on_dirty = self._on_dirty
        self._logs[(log.topic, log.partition)] = log
        return log

    def get(self, topic: str, partition: int) -> PartitionLog | None:
        return self._logs.get((topic, partition))

    def create(self, topic: str, partition: int, config: LogConfig | None = None) -> PartitionLog:
        """Create the log (or return the one already open); StorageError while offline."""
        log = self._logs.get((topic, partition))
        if log is not None:
            return log
        dir = self.data_dir / f"{topic}-{partition}"
        log = self._add(PartitionLog.open(dir, topic, partition, config or self.default_config, recover=False,
                                          log_dir=self.log_dir, files=self.files))
        gc_policy.freeze_soon()
        return log

    def delete_topic(self, topic: str) -> None:
        # What Kafka answers a produce whose partition went away: not a storage failure.
        self._delete([key for key in self._logs if key[0] == topic], ErrorCode.unknown_topic_or_partition)

    def delete_partition(self, topic: str, partition: int) -> None:
        """Remove one partition's log (a replica moved to another broker)."""
        self._delete([(topic, partition)] if (topic, partition) in self._logs else [], ErrorCode.not_leader_or_follower)

    def _delete(self, keys: list[tuple[str, int]], error_code: ErrorCode) -> None:
        """Remove logs from disk, then make the removals durable with one directory fsync; a
        produce still waiting for a flush of one gets ``error_code``. In an offline directory
        the files are only closed (the disk is not touched)."""
        for key in keys:
            log = self._logs.pop(key)
            error = KafkaError(error_code, f"{key[0]}-{key[1]} was deleted while the produce waited for its flush")
            self._deleted[log] = error
            self._fail_waiters(log, error)
            self._flush_soon.discard(log)
            self._dirty.discard(log)
            if self.offline:
                log.close()
            else:
                log.delete()
        if keys:
            gc_policy.collect_soon()
        if keys and not self.offline:
            try:
                fsync_dir(self.data_dir)
            except OSError as e:
                raise self.log_dir.fail(e, "syncing the data directory after a delete") from e

    def logs(self) -> Iterable[PartitionLog]:
        return list(self._logs.values())

    # ---- background tasks ----------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._flushing = True
        if FsyncWorker is not None and self._worker is None:
            self._worker = FsyncWorker()
            self._loop.add_reader(self._worker.fileno(), self._worker_synced)
        elif FsyncWorker is None:
            logger.info("%s: the C fsync worker was not built: every fsync job runs in a Python thread", self.data_dir)
        self._tasks = [
            asyncio.create_task(self._retention_checker(), name="tidelog-retention"),
            asyncio.create_task(self._idle_file_closer(), name="tidelog-idle-files"),
        ]
        self.cleaner.start()
        self._kick_soon()  # anything appended before the start

    def _on_roll(self, log: PartitionLog) -> None:
        # Flush sealed segments soon in every profile, so the recovery point moves on.
        self._flush_later(log)
        if log.config.compact:
            self.cleaner.wake()

    def flush_soon(self, log: PartitionLog) -> None:
        """Put ``log`` in the next fsync job (a follower's, on the replica flush schedule or
        before it leads); ``on_durable`` tells when its durable offset moved."""
        self._flush_later(log)

    def _flush_later(self, log: PartitionLog) -> None:
        self._flush_soon.add(log)
        self._kick_soon()

    def _on_dirty(self, log: PartitionLog) -> None:
        # Unflushed records are invisible to consumers under balanced and durable (the high
        # watermark stops at the durable offset): flush them in the next group fsync even when no
        # producer waits (acks=0). A follower's log (flush_deferred) waits for the replica manager's
        # flush schedule instead: nothing waits for its fsync.
        if log.config.durability != "throughput" and not log.flush_deferred:
            self._dirty.add(log)
            self._kick_soon()

    # ---- the group commit (balanced) -------------------------------------------------------

    def _kick_soon(self) -> None:
        """``_kick`` at the loop's next turn: for callers in the middle of an append (a roll, the
        first dirty byte), which a flush must not start under."""
        if self._loop is not None and not self._kick_scheduled:
            self._kick_scheduled = True
            self._loop.call_soon(self._kicked)

    def _kicked(self) -> None:
        self._kick_scheduled = False
        self._kick()

    def _kick(self) -> None:
        """Start the group commit's next job now if something waits for one (a produce, a dirty
        log, a rolled segment) and no job runs: the running job's end calls this again. When a
        log of the group sets ``flush_interval_ms`` above 0, the job lingers that long first."""
        if not self._flushing or self._job is not None or self._window_timer is not None:
            return
        windowed = self._dirty.union(self._balanced_waiters)
        window_ms = min((log.config.flush_interval_ms for log in windowed), default=0)
        if window_ms > 0:  # a linger for more writes; 0 (the default): a natural group commit
            self._window_timer = self._loop.call_later(window_ms / 1000, self._window_elapsed)
            return
        self._start_group_commit()

    def _window_elapsed(self) -> None:
        self._window_timer = None
        if self._flushing:
            self._start_group_commit()

    def _start_group_commit(self) -> None:
        logs = self._dirty.union(self._balanced_waiters, self._flush_soon)
        self._dirty.clear()
        self._flush_soon.clear()
        if logs:
            self._sync(logs)  # its end answers the logs' waiters (_job_finished)

    def _wake_waiters(self, log: PartitionLog, error: StorageError | None = None) -> None:
        if error is not None:
            self._fail_waiters(log, error)
            return
        waiters = self._balanced_waiters.get(log)
        if not waiters:
            return
        still_waiting = []
        for offset, future in waiters:
            # Past the log end: truncated away (a leader that lost its leadership cut its
            # divergent tail). Nothing is left to sync; the replication wait answers for them.
            if offset <= log.durable_offset or offset > log.log_end_offset:
                if not future.done():
                    future.set_result(None)
            else:
                still_waiting.append((offset, future))
        if still_waiting:
            self._balanced_waiters[log] = still_waiting  # for the next job (_job_finished kicks it)
        else:
            del self._balanced_waiters[log]

    def _fail_waiters(self, log: PartitionLog, error: BaseException) -> None:
        for _, future in self._balanced_waiters.pop(log, []):
            if not future.done():
                future.set_exception(error)

    def _on_offline(self, reason: str) -> None:
        error = self.log_dir.error()
        for log in list(self._balanced_waiters):
            self._fail_waiters(log, error)

    async def _idle_file_closer(self) -> None:
        interval_s = max(0.05, min(SWEEP_INTERVAL_S, self.files.idle_ms / 2000))
        while True:
            await asyncio.sleep(interval_s)
            self.files.sweep()

    async def _retention_checker(self) -> None:
        while True:
            await asyncio.sleep(self.retention_check_interval_ms / 1000)
            self.apply_retention()

    def apply_retention(self, now_ms: int | None = None) -> int:
        now_ms = now_ms if now_ms is not None else wall_clock_ms()
        freed = 0
        for log in self.logs():
            try:
                freed_here = log.apply_retention(now_ms)
            except StorageError:  # logged when the directory went offline
                break
            if freed_here:
                freed += freed_here
                self._flush_later(log)  # the removals, in the partition directory
        return freed

    # ---- durability ----------------------------------------------------------------------

    def _sync(self, logs: Iterable[PartitionLog]) -> asyncio.Future:
        """The outcome (None, or the StorageError) of the next fsync job, which covers ``logs``:
        it starts now when no job runs, else when the running one ends."""
        if self._closed:
            future = asyncio.get_running_loop().create_future()
            future.set_result(StorageError("log manager closed"))
            return future
        self._sync_requested.update(dict.fromkeys(logs))
        if self._next_sync is None:
            self._next_sync = (self._loop or asyncio.get_running_loop()).create_future()
        future = self._next_sync
        if self._job is None:
            self._start_job()
        return future

    def _start_job(self) -> None:
        """Start the requested fsync job (none runs): ``start_flush`` of each log here, the
        syncs in the flush threads, whose last one posts ``_job_synced`` to the loop once."""
        logs = list(self._sync_requested)
        self._sync_requested.clear()
        outcome, self._next_sync = self._next_sync, None
        self._job = outcome
        # The C thread takes a job of one file (the usual one: a partition's active segment) and
        # a syncfs (two partitions or more); the fault hook (sync_fds, sync_filesystem) runs in
        # the Python threads only, which sync a few partitions' files side by side.
        worker = self._worker if not faults.armed else None
        syncfs = syncfs_available() and (len(logs) >= SYNCFS_MIN_FILES or (
            len(logs) >= WORKER_SYNCFS_MIN_LOGS and worker is not None and WORKER_SYNCFS))
        pendings: list[tuple[PartitionLog, PendingFlush]] = []
        try:
            pendings = self._start_flushes(logs, syncfs)
            if pendings:
                if syncfs:
                    if worker is not None and WORKER_SYNCFS:
                        self._submit(worker, self._open_fs_fd(), True, logs, pendings)
                        return
                    calls = [partial(sync_filesystem, self._open_fs_fd(),
                                     [target for _, pending in pendings for target in pending.targets])]
                else:
                    fds = [fd for _, pending in pendings for fd in pending.fds]
                    if len(fds) == 1 and worker is not None:
                        self._submit(worker, fds[0][0], False, logs, pendings)
                        return
                    parts = split_sync(fds, FSYNC_THREADS)
                    calls = [partial(sync_fds, part) for part in parts]
                loop = self._loop or asyncio.get_running_loop()
                self._flush_threads.run(calls, lambda error, seconds: loop.call_soon_threadsafe(
                    self._job_synced, logs, pendings, error, seconds))
                return
        except StorageError as e:
            self._job_finished(logs, e, ran=False)
            return
        except OSError as e:  # opening the data directory for syncfs
            for log, pending in pendings:
                log.finish_flush(pending, e)
            self._job_finished(logs, self.log_dir.error(), ran=False)
            return
        except Exception as e:  # a bug (or no thread could start): answer the waiters rather than leave them hanging
            logger.exception("fsync job failed")
            for log, pending in pendings:
                log.finish_flush(pending, e)  # never ran: its descriptors closed, its segments left to the next
            self._job_finished(logs, StorageError(f"fsync job failed: {e}"), ran=False)
            return
        self._job_finished(logs, None, ran=False)  # nothing to sync

    def _submit(self, worker: FsyncWorker, fd: int, whole: bool, logs: list[PartitionLog],
                pendings: list[tuple[PartitionLog, PendingFlush]]) -> None:
        """A job to the C fsync thread: an fsync of ``fd``, or with ``whole`` a syncfs through it;
        its outcome is reaped on the loop (``_worker_synced``)."""
        self._worker_token += 1
        submitted = time.perf_counter()
        if whole:
            worker.submit(self._worker_token, fd, True)
        else:
            worker.submit(self._worker_token, fd)
        self._worker_jobs[self._worker_token] = (logs, pendings, submitted)

    def _worker_synced(self) -> None:
        """The C fsync thread posted outcomes (its eventfd is readable): each job's end, as
        ``_job_synced`` after a flush thread's."""
        for token, error_number, _started_ns, ended_ns in self._worker.reap():
            logs, pendings, submitted = self._worker_jobs.pop(token)
            error = None
            if error_number:
                what = "fsync" if any(pending.fds for _, pending in pendings) else "syncfs"  # a syncfs job has none
                error = OSError(error_number, f"{what}: {os.strerror(error_number)}")
            self._job_synced(logs, pendings, error, ended_ns / 1e9 - submitted)

    def _start_flushes(self, logs: list[PartitionLog], syncfs: bool) -> list[tuple[PartitionLog, PendingFlush]]:
        """``start_flush`` of each open log (many logs: for one syncfs, no descriptor duplicated
        per file: thousands of partitions would need as many again as they hold). Raises
        StorageError, having accounted for every flush it started."""
        if self.offline:
            raise self.log_dir.error()
        pendings: list[tuple[PartitionLog, PendingFlush]] = []
        try:
            for log in logs:
                if not log.closed:
                    pending = log.start_flush(syncfs)
                    if pending is not None:
                        pendings.append((log, pending))
        except StorageError as e:
            for log, pending in pendings:
                log.finish_flush(pending, e)  # closes its descriptors
            raise
        return pendings

    def _job_synced(self, logs: list[PartitionLog], pendings: list[tuple[PartitionLog, PendingFlush]],
                    error: BaseException | None, seconds: float) -> None:
        """On the loop, once a job's syncs have returned: account for each log's flush, then
        answer its waiters (``_job_finished``)."""
        if self.fsync_observer is not None:
            self.fsync_observer(seconds, error is None)
        outcome: StorageError | None = None
        try:
            if error is not None:
                for log, pending in pendings:
                    log.finish_flush(pending, error)
                if not isinstance(error, OSError):
                    raise error
                outcome = self.log_dir.error()
            else:
                for log, pending in pendings:
                    before = log.durable_offset
                    try:
                        log.finish_flush(pending)
                    except StorageError as e:
                        outcome = e
                    if log.durable_offset > before and self.on_durable is not None:
                        self.on_durable(log)
        except Exception as e:  # a bug: answer the waiters rather than leave them hanging
            logger.exception("fsync job failed")
            outcome = StorageError(f"fsync job failed: {e}")
        self._job_finished(logs, outcome, ran=True)

    def _job_finished(self, logs: list[PartitionLog], error: StorageError | None, ran: bool) -> None:
        """A job's end: its outcome to those who asked for it, its logs' balanced waiters answered,
        then the next job at the loop's next turn: after a job that synced, behind the answers it
        woke (``_start_after_answers``: what was appended meanwhile); after one that had nothing
        to sync, so that a log that cannot be flushed does not loop here."""
        outcome, self._job = self._job, None
        if outcome is not None and not outcome.done():
            outcome.set_result(error)
        for log in logs:
            if log in self._balanced_waiters:
                self._wake_waiters(log, error)
        if not ran:
            if self._sync_requested:
                asyncio.get_running_loop().call_soon(self._start_next_job)
            self._kick_soon()
            return
        # The next job at the loop's next turn, behind the steps this end woke (the parked
        # Fetch's answer, the Produce requests'): they go out before the next fsync is handed
        # over (waking its thread, which on a busy machine takes the loop's CPU for the fsync's
        # own part), and a consumer answered first has its next Fetch parked before that fsync
        # ends (latency_trace, linger.ms=0: half as many records found no Fetch parked).
        (self._loop or asyncio.get_running_loop()).call_soon(self._start_after_answers)

    def _start_after_answers(self) -> None:
        if self._job is None:
            if self._sync_requested:
                self._start_job()
            else:
                self._kick()

    def _start_next_job(self) -> None:
        if self._job is None and self._sync_requested:
            self._start_job()

    async def wait_durable(self, log: PartitionLog, offset: int) -> None:
        """Return once every offset below ``offset`` of ``log`` is durable under its profile.

        Raises StorageError if it cannot be: the directory went offline, or the log was closed
        or deleted first."""
        durability = log.config.durability
        if durability == "throughput" or offset <= log.durable_offset:
            return
        if durability == "durable":
            while min(offset, log.log_end_offset) > log.durable_offset:
                if log.closed:
                    raise self._deleted.get(log) or StorageError(f"{log.topic}-{log.partition} was closed first")
                error = await asyncio.shield(self._sync([log]))
                if error is not None:
                    raise error
            return
        if not self._flushing:
            raise RuntimeError("LogManager.start() was not called")
        if self.offline:
            raise self.log_dir.error()
        future = self._loop.create_future()  # started: the running loop (no get_running_loop pid check)
        self._balanced_waiters.setdefault(log, []).append((offset, future))
        self._kick()
        await future

    async def wait_durable_many(self, targets: list[tuple[PartitionLog, int]]) -> None:
        """``wait_durable`` for many partitions at once (a produce request's)."""
        durable = self.durable_waiter(targets)
        if durable is not None:
            await durable

    def durable_waiter(self, targets: list[tuple[PartitionLog, int]]) -> asyncio.Future | None:
        """What ``wait_durable_many`` awaits, for a caller that awaits it itself (one coroutine
        frame fewer on a Produce's way in and out): None when every target is durable already.

        The partitions of the group commit share one future (``_Shared``: done when each of them
        is), instead of a coroutine and a task each, or a future each and a gather: with 16
        partitions a request the gather's callbacks were a good part of the wait's cost. The group
        commit's job starts here when none runs (not at a later loop turn), and one future is
        returned as it is (a gather would add a turn before the answer).
        """
        futures: list[asyncio.Future] = []
        balanced: list[tuple[PartitionLog, int]] = []
        for log, offset in targets:
            durability = log.config.durability
            if durability == "throughput" or offset <= log.durable_offset:
                continue
            if durability == "durable":
                futures.append(asyncio.ensure_future(self.wait_durable(log, offset)))
                continue
            balanced.append((log, offset))
        if balanced:
            if not self._flushing:
                raise RuntimeError("LogManager.start() was not called")
            if self.offline:
                raise self.log_dir.error()
            future = self._loop.create_future()  # started: the running loop (no get_running_loop pid check)
            waiter = future if len(balanced) == 1 else _Shared(future, len(balanced))
            waiters = self._balanced_waiters
            for log, offset in balanced:
                if log in waiters:
                    waiters[log].append((offset, waiter))
                else:
                    waiters[log] = [(offset, waiter)]
            futures.append(future)
            self._kick()
        if len(futures) == 1:
            return futures[0]
        return asyncio.gather(*futures) if futures else None

    def forget_answered(self, logs: Iterable[PartitionLog]) -> None:
        """Drop the waiters of ``logs`` already answered (timed out: cluster/waiters.py's
        FlushDeadlines; cancelled: the request's connection closed) from the group commit's
        registry. Called by a wait that ended so, never on the way of one answered in time: a
        stuck flush otherwise kept every timed-out wait registered until it ended, each retry
        of a producer adding one a partition (the produce purgatory grew with the stall)."""
        registry = self._balanced_waiters
        for log in logs:
            waiters = registry.get(log)
            if waiters is None:
                continue
            still_waiting = [w for w in waiters if not w[1].done()]
            if still_waiting:
                registry[log] = still_waiting
            else:
                del registry[log]

    def pending_durability_waits(self) -> int:
        """Acknowledgements waiting for a group commit (the produce purgatory)."""
        return sum(len(waiters) for waiters in self._balanced_waiters.values())

    # ---- closing -------------------------------------------------------------------------

    async def _sync_for_close(self, logs: list[PartitionLog]) -> bool:
        """Many logs: write what each holds only in memory, then one syncfs for all (a clean stop
        of thousands of partitions would otherwise fsync several files each). False: each log
        flushes itself as it closes (few logs, no syncfs, or something failed here)."""
        if self.offline or len(logs) < SYNCFS_MIN_FILES or not syncfs_available():
            return False
        try:
            for log in logs:
                log.prepare_close()
            loop = asyncio.get_running_loop()
            synced = loop.create_future()
            fs_fd = self._open_fs_fd()
            self._flush_threads.run([partial(sync_filesystem, fs_fd, ["segment"] * len(logs))],
                                    lambda error, seconds: loop.call_soon_threadsafe(_set_outcome, synced, error))
            error = await synced
            if error is not None:
                raise error
        except StorageError:
            return False
        except OSError as e:
            self.log_dir.fail(e, "syncing the logs at shutdown")
            return False
        return True

    async def close(self) -> None:
        """Stop the tasks, flush and close every log, then mark the shutdown clean.

        Waiters whose offsets the final flush made durable are answered with success; the
        marker is not written when the directory is offline (the next start recovers)."""
        await self.cleaner.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._tasks = []
        self._flushing = False
        if self._window_timer is not None:
            self._window_timer.cancel()
            self._window_timer = None
        while True:  # the job in flight finishes first, and those asked for meanwhile
            if self._job is None and self._sync_requested:
                self._start_job()  # asked for during the last one (its start waits a turn: _job_finished)
            if self._job is None:
                break
            await asyncio.shield(self._job)
        self._closed = True
        logs = self.logs()
        synced = await self._sync_for_close(logs)
        for log in logs:
            try:
                log.close(synced)
            except StorageError:
                pass  # logged when the directory went offline
            self._wake_waiters(log)
            self._fail_waiters(log, self.log_dir.error() if self.offline else StorageError("log manager closed"))
        self._logs.clear()
        self._flush_threads.shutdown()
        if self._worker is not None:  # no job runs (awaited above): nothing is left to reap
            self._loop.remove_reader(self._worker.fileno())
            self._worker.close()
            self._worker = None
        if self._fs_fd is not None:
            os.close(self._fs_fd)
            self._fs_fd = None
        flush_deletions()
        if not self.offline:
            states = {log.dir.name: log.clean_state() for log in logs}
            marker = {"version": CLEAN_STATE_VERSION, "logs": {name: s for name, s in states.items() if s is not None}}
            try:
                write_checkpoint_file(self.data_dir / CLEAN_SHUTDOWN_FILE, json.dumps(marker, separators=(",", ":")))
            except OSError as e:
                self.log_dir.fail(e, "writing the clean-shutdown marker")
