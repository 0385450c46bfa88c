"""LogManager: every partition log under one data directory, and when their bytes are durable.

On disk: ``<data_dir>/<topic>-<partition>/`` per partition (topic names may hold '-' and '.',
so the partition is what follows the last '-'); ``<dir>.<hex>-delete`` directories are
leftovers of deletions and are removed at start; ``__tidelog*`` entries belong to other
components and are ignored. ``.clean-shutdown`` exists only between a clean close and the next
start: if it is missing at start, every log is opened with recovery.

Durability profiles, per log (``LogConfig.durability``):
- throughput: acknowledge at once; the page cache and replication carry the data.
- balanced: group commit. Waiters register; a flusher task waits ``flush_interval_ms`` after
  the first one, then fsyncs every waiting log in ONE executor job and wakes the waiters.
- durable: fsync before acknowledging; concurrent waiters of one log share an fsync.
All fsyncs run in one ThreadPoolExecutor(max_workers=2). Not thread-safe: the event loop owns
the manager and its logs.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable

from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.storage.checkpoint import remove_file, write_checkpoint_file
from tidelog.storage.errors import StorageError
from tidelog.storage.log import LogConfig, PartitionLog, PendingFlush

__all__ = ["LogManager", "CLEAN_SHUTDOWN_FILE"]

logger = logging.getLogger(__name__)

CLEAN_SHUTDOWN_FILE = ".clean-shutdown"


def parse_partition_dir(name: str) -> tuple[str, int] | None:
    topic, sep, partition = name.rpartition("-")
    if not sep or not topic or not partition.isdigit():
        return None
    return topic, int(partition)


class LogManager:
    """All partition logs of one data directory; see the module docstring."""

    def __init__(self, data_dir: Path, default_config: LogConfig, *, loop: asyncio.AbstractEventLoop | None = None,
                 retention_check_interval_ms: int = 300_000) -> None:
        self.data_dir = Path(data_dir)
        self.default_config = default_config
        self.retention_check_interval_ms = retention_check_interval_ms
        self._loop = loop
        self._logs: dict[tuple[str, int], PartitionLog] = {}
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="tidelog-fsync")
        self._balanced_waiters: dict[PartitionLog, list[tuple[int, asyncio.Future]]] = {}
        self._rolled: set[PartitionLog] = set()
        self._durable_flushes: dict[PartitionLog, asyncio.Future] = {}
        self._wakeup: asyncio.Event | None = None
        self._tasks: list[asyncio.Task] = []
        # Called with (seconds, ok) after each fsync job: the broker's fsync latency metric.
        self.fsync_observer = None

    # ---- the set of logs -----------------------------------------------------------------

    def open_all(self, topic_configs: dict[str, LogConfig]) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # The removal must survive a power loss, or the next start would skip recovery.
        clean = remove_file(self.data_dir / CLEAN_SHUTDOWN_FILE)
        if not clean:
            logger.warning("%s: no clean-shutdown marker, recovering every log", self.data_dir)
        for entry in sorted(self.data_dir.iterdir()):
            if not entry.is_dir() or entry.name.startswith("__tidelog"):
                continue
            if entry.name.endswith("-delete"):
                logger.info("removing leftover %s", entry)
                shutil.rmtree(entry, ignore_errors=True)
                continue
            parsed = parse_partition_dir(entry.name)
            if parsed is None:
                logger.warning("ignoring unexpected directory %s", entry)
                continue
            topic, partition = parsed
            config = topic_configs.get(topic, self.default_config)
            self._add(PartitionLog.open(entry, topic, partition, config, recover=not clean))

    def _add(self, log: PartitionLog) -> PartitionLog:
        log.on_roll = self._on_roll
        self._logs[(log.topic, log.partition)] = log
        return log

    def get(self, topic: str, partition: int) -> PartitionLog | None:
        return self._logs.get((topic, partition))

    def create(self, topic: str, partition: int, config: LogConfig | None = None) -> PartitionLog:
        """Create the log (or return the one already open)."""
        log = self._logs.get((topic, partition))
        if log is not None:
            return log
        dir = self.data_dir / f"{topic}-{partition}"
        return self._add(PartitionLog.open(dir, topic, partition, config or self.default_config, recover=False))

    def delete_topic(self, topic: str) -> None:
        for key in [key for key in self._logs if key[0] == topic]:
            log = self._logs.pop(key)
            # What Kafka answers a produce whose partition went away: not a storage failure.
            self._fail_waiters(log, KafkaError(ErrorCode.unknown_topic_or_partition,
                                               f"{topic}-{key[1]} was deleted while the produce waited for its flush"))
            log.delete()

    def delete_partition(self, topic: str, partition: int) -> None:
        """Remove one partition's log (a replica moved to another broker)."""
        log = self._logs.pop((topic, partition), None)
        if log is not None:
            self._fail_waiters(log, KafkaError(ErrorCode.not_leader_or_follower,
                                               f"{topic}-{partition} was deleted while the produce waited for its flush"))
            log.delete()

    def logs(self) -> Iterable[PartitionLog]:
        return list(self._logs.values())

    # ---- background tasks ----------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wakeup = asyncio.Event()
        self._tasks = [
            asyncio.create_task(self._flusher(), name="tidelog-log-flusher"),
            asyncio.create_task(self._retention_checker(), name="tidelog-retention"),
        ]

    def _on_roll(self, log: PartitionLog) -> None:
        # Flush sealed segments soon in every profile, so the recovery point moves on.
        self._rolled.add(log)
        if self._wakeup is not None:
            self._wakeup.set()

    async def _flusher(self) -> None:
        assert self._wakeup is not None
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if self._balanced_waiters:
                window_ms = min(log.config.flush_interval_ms for log in self._balanced_waiters)
                await asyncio.sleep(window_ms / 1000)
            logs = set(self._balanced_waiters) | self._rolled
            self._rolled.clear()
            try:
                await self._flush_logs(list(logs))
            except Exception:  # waiters got their error; keep flushing
                logger.exception("group commit failed")
            for log in logs:
                self._wake_waiters(log)

    def _wake_waiters(self, log: PartitionLog) -> None:
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
            self._balanced_waiters[log] = still_waiting
            self._wakeup.set()
        else:
            del self._balanced_waiters[log]

    def _fail_waiters(self, log: PartitionLog, error: BaseException) -> None:
        for _, future in self._balanced_waiters.pop(log, []):
            if not future.done():
                future.set_exception(error)

    async def _retention_checker(self) -> None:
        while True:
            await asyncio.sleep(self.retention_check_interval_ms / 1000)
            self.apply_retention()

    def apply_retention(self, now_ms: int | None = None) -> int:
        now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
        freed = 0
        for log in self.logs():
            try:
                freed += log.apply_retention(now_ms)
            except OSError:
                logger.exception("%s: retention failed", log.dir)
        return freed

    # ---- durability ----------------------------------------------------------------------

    async def _flush_logs(self, logs: list[PartitionLog]) -> None:
        """fsync the given logs in one executor job; raise StorageError if it failed."""
        pendings: list[tuple[PartitionLog, PendingFlush]] = []
        for log in logs:
            pending = log.start_flush()
            if pending is not None:
                pendings.append((log, pending))
        if not pendings:
            return
        fds = [fd for _, pending in pendings for fd in pending.fds]
        started = time.perf_counter()
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, PartitionLog.sync_fds, fds)
        except OSError as e:
            if self.fsync_observer is not None:
                self.fsync_observer(time.perf_counter() - started, False)
            for log, pending in pendings:
                log.finish_flush(pending, e)
                self._fail_waiters(log, StorageError(f"fsync of {log.topic}-{log.partition} failed: {e}"))
            raise StorageError(f"fsync failed: {e}") from e
        if self.fsync_observer is not None:
            self.fsync_observer(time.perf_counter() - started, True)
        for log, pending in pendings:
            log.finish_flush(pending)

    async def wait_durable(self, log: PartitionLog, offset: int) -> None:
        """Return once every offset below ``offset`` of ``log`` is durable under its profile."""
        durability = log.config.durability
        if durability == "throughput" or offset <= log.durable_offset:
            return
        if durability == "durable":
            while min(offset, log.log_end_offset) > log.durable_offset:
                # Join the fsync in flight, or start one. A finished one is never awaited
                # again: awaiting a done future does not yield, so that would spin forever.
                flush = self._durable_flushes.get(log)
                if flush is None or flush.done():
                    flush = asyncio.ensure_future(self._flush_logs([log]))
                    self._durable_flushes[log] = flush
                await asyncio.shield(flush)
            return
        if self._wakeup is None:
            raise RuntimeError("LogManager.start() was not called")
        future = asyncio.get_running_loop().create_future()
        self._balanced_waiters.setdefault(log, []).append((offset, future))
        self._wakeup.set()
        await future

    async def wait_durable_many(self, targets: list[tuple[PartitionLog, int]]) -> None:
        """``wait_durable`` for many partitions at once (a produce request's).

        Registers one future per partition still waiting, instead of a coroutine and a task each:
        with hundreds of partitions per request that difference showed in profiles.
        """
        futures: list[asyncio.Future] = []
        registered = False
        for log, offset in targets:
            durability = log.config.durability
            if durability == "throughput" or offset <= log.durable_offset:
                continue
            if durability == "durable":
                futures.append(asyncio.ensure_future(self.wait_durable(log, offset)))
                continue
            if self._wakeup is None:
                raise RuntimeError("LogManager.start() was not called")
            future = asyncio.get_running_loop().create_future()
            self._balanced_waiters.setdefault(log, []).append((offset, future))
            futures.append(future)
            registered = True
        if registered:
            self._wakeup.set()
        if futures:
            await asyncio.gather(*futures)

    def pending_durability_waits(self) -> int:
        """Acknowledgements waiting for a group commit (the produce purgatory)."""
        return sum(len(waiters) for waiters in self._balanced_waiters.values())

    # ---- closing -------------------------------------------------------------------------

    async def close(self) -> None:
        """Stop the tasks, flush and close every log, then mark the shutdown clean."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._tasks = []
        failed = False
        for log in self.logs():
            try:
                log.close()
            except (OSError, StorageError):
                failed = True
                logger.exception("%s: close failed", log.dir)
            self._fail_waiters(log, StorageError("log manager closed"))
        self._logs.clear()
        self._executor.shutdown(wait=True)
        if not failed:
            write_checkpoint_file(self.data_dir / CLEAN_SHUTDOWN_FILE, b"")
