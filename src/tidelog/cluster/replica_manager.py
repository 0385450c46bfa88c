"""ReplicaManager: this broker's replicas, one ``Partition`` each (cluster/partition.py), as
leader or follower. A single node is a cluster of one: its embedded metadata store names it the
only replica and leader of every partition, and the same code serves it.

Roles follow the partition states in the metadata store: every change notification marks the
partition, and ``_apply`` makes the local role match (at start and after this broker writes a
topic, at once; otherwise from a task). When the log directory goes offline (an I/O error)
every local replica is given up and the controller is told (``announce_offline``).

Leader side: the Partition keeps each follower's position and the high watermark; this
manager writes the ISR changes it wants (a follower caught up joins, one that has not caught up
with the log end for ``replica.lag.time.max.ms`` leaves) by compare-and-swap in the store, so a
stale leader's write fails. Follower side: one ``Fetcher`` task per leader broker
(cluster/replica_fetcher.py), fetching all the partitions followed from it in one long-polling
Fetch; each Partition appends its leader's batches with their offsets as they are and
truncates a divergent tail where the fetcher found one. A follower's appends start no fsync of
their own (nothing waits for one): this manager flushes the followed partitions it copied into
every ``replica.flush.interval.ms``, or sooner once they hold ``replica.flush.interval.bytes``
no flush covers, and a follower that becomes leader flushes everything first
(``Partition.make_leader``; docs/storage.md says what must be durable when). Meanwhile a
followed partition's appends are handed to the disk every ``replica.write.behind.bytes`` (write-behind:
``sync_file_range`` starts their write-back without waiting for it), so the scheduled fsync finds
little left to write and the leaders' fsyncs on the same disk do not queue behind a second's
copies written back at once. Once a flush has made a followed partition's copies durable,
they leave the page cache but the last ``replica.page.cache.keep.bytes`` of it
(``posix_fadvise(DONTNEED)`` of clean pages): a follower reads its copies only once it leads, and
the pages freed take its (and the leader's) next writes. Pages new to the process cost far more
to write into than pages just freed: on this project's VM, whose free memory goes back to the
host, the page-cache copy of RF 3's three writes of each byte was half of every broker's CPU on
an idle machine (BENCHMARKS.md, Replication). High watermarks: every ``replica.high.watermark.checkpoint.interval.ms``
and at shutdown into ``<data dir>/replication-offset-checkpoint`` (Kafka's file,
storage/offset_checkpoint.py), read back at start. Idempotent
producers idle for ``producer.id.expiration.ms`` are forgotten every
``producer.id.expiration.check.interval.ms``.
Not thread-safe; the event loop owns it.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import mmap
import os
from collections import Counter, deque
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Protocol

from tidelog.clock import monotonic_ms, wall_clock_ms
from tidelog.cluster.broker_channel import ChannelSecurity
from tidelog.cluster.partition import Partition, PartitionConfig, log_config_for, wait_for_acks
from tidelog.cluster.replica_fetcher import Fetcher
from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.storage.offset_checkpoint import read_offset_checkpoint, render_offset_checkpoint, write_offset_checkpoint

if TYPE_CHECKING:
    from tidelog.cluster.metadata import MetadataStore
    from tidelog.config import BrokerConfig
    from tidelog.storage.log import PartitionLog
    from tidelog.storage.manager import LogManager

logger = logging.getLogger(__name__)

HW_CHECKPOINT_FILE = "replication-offset-checkpoint"
BULK_TAKE_UP = 20  # applying more replicas at once than this logs one summary line, each replica's at DEBUG
INELIGIBLE_LOG_INTERVAL_MS = 10_000  # a broker refused an ISR for its eligibility: one INFO line this often
# A followed partition's appends start their write-back once they add up to
# replica.write.behind.bytes (write_behind): a leader's fsync on the same disk then finds at most
# that much of a follower's copies in flight, not a second's. Up to WRITE_BEHIND_MAX_FACTOR times
# that: more at once (a follower catching up, full-rate copying, whose fetches bring megabytes) is
# left to the flush schedule, whose fsync runs in a thread, so the event loop never submits much
# write-back itself.
WRITE_BEHIND_MAX_FACTOR = 4
FLUSH_MARKS = 8  # flushes asked for and not yet ended remembered a partition (one runs, one waits)
WRITE_BEHIND_LOG_INTERVAL_MS = 60_000  # a failed write-back start: one WARNING this often
SYNC_FILE_RANGE_WRITE = 2  # linux/fs.h: start write-back of the range's dirty pages, do not wait
PAGE_BYTES = mmap.PAGESIZE
MAX_FOLIO_BYTES = 2 << 20  # the largest page-cache folio (a PMD's worth on x86_64 and arm64 with 4 KiB pages)


def _sync_file_range():
    """libc's sync_file_range(2) (Linux; not in the os module), or None where there is none."""
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (AttributeError, OSError):
        return None
    function.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    function.restype = ctypes.c_int
    return function


sync_file_range = _sync_file_range()


def write_behind(log: "PartitionLog", appended: int, max_bytes: int) -> int:
    """Start the write-back of the last ``appended`` bytes of ``log``'s active segment, without
    waiting for it (the data reaches the disk in small steps instead of all at the next scheduled
    fsync, which still makes it durable). Whole pages only: the partial page at the end, which
    the next append writes into, stays dirty for the next write-back (written once, not twice, and
    never under write-back when an append copies into it: where the disk wants stable pages that
    append would wait for the I/O). The bytes whose write-back started; 0 if not tried (no
    sync_file_range here, more than ``max_bytes``, no whole page, the log closed). Raises OSError
    when the call fails; the data is then left to that fsync, which reports write-back errors (a
    write-only sync_file_range consumes none). A segment rolled within the append has its earlier
    part written back by that fsync too."""
    if sync_file_range is None or not 0 < appended <= max_bytes or log.closed:
        return 0
    segment = log.active_segment
    try:
        fd = segment.fd
    except OSError:
        return 0
    end = segment.size_bytes - segment.size_bytes % PAGE_BYTES
    # From its page's start: the kernel writes whole pages, so that page's head (the partial page
    # the last write-back left) is written back now, and counted with the rest.
    start = max(0, segment.size_bytes - appended)
    start -= start % PAGE_BYTES
    if end <= start:
        return 0
    if sync_file_range(fd, start, end - start, SYNC_FILE_RANGE_WRITE) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return end - start


def release_flushed(segment, start: int, end: int) -> int:
    """Drop ``segment``'s pages from ``start`` to ``end`` (whole pages: the one ``end`` falls in
    stays, and so does a large folio that spans ``end``) from the page cache; the bytes asked
    for (0 if none, the file closed, or no posix_fadvise here). Only for bytes an fsync has made durable: their pages are clean, so
    POSIX_FADV_DONTNEED frees them at once (on dirty pages it would start their write-back and
    keep them; it never loses data). ~0.05 ms a MiB here, on the event loop."""
    start -= start % PAGE_BYTES
    end -= end % PAGE_BYTES
    if end <= start or _fadvise is None:
        return 0
    try:
        _fadvise(segment.fd, start, end - start, _DONTNEED)
    except OSError:  # closed (deleted, truncated away) meanwhile: nothing of it to keep
        return 0
    return end - start


_fadvise = getattr(os, "posix_fadvise", None)
_DONTNEED = getattr(os, "POSIX_FADV_DONTNEED", 4)


class IsrMetrics(Protocol):
    isr_shrinks: object  # prometheus Counters
    isr_expands: object
    follower_flushes: object  # by reason: interval, bytes, leader
    backlog_holds: object  # connections held by a partition's backlog (replica.backlog.max.bytes)
    isr_join_refusals: object  # caught-up followers kept out of an ISR: their broker not eligible yet
    follower_write_behind_bytes: object  # copies whose write-back started before their flush
    follower_write_behind_failures: object  # write-backs that could not be started
    follower_cache_released_bytes: object  # flushed copies dropped from the page cache


class ReplicaManager:
    """This broker's replicas (``Partition`` objects); see the module docstring."""

    def __init__(self, node_id: int, store: "MetadataStore", logs: "LogManager", config: "BrokerConfig",
                 data_dir: Path, isr_metrics: IsrMetrics | None = None) -> None:
        self.node_id = node_id
        self.channel_security: ChannelSecurity | None = None  # the broker sets it: TLS/SASL to other brokers
        self.store = store
        self.logs = logs
        self.config = config
        self.data_dir = Path(data_dir)
        self.isr_metrics = isr_metrics
        self.partitions: dict[tuple[str, int], Partition] = {}
        self.fetchers: dict[int, Fetcher] = {}
        self.lag_max_ms = config["replica.lag.time.max.ms"]
        self.flush_interval_ms = config["replica.flush.interval.ms"]  # 0: a follower fsyncs after each fetch
        self.flush_interval_bytes = config["replica.flush.interval.bytes"]
        self._unflushed: set[tuple[str, int]] = set()  # followed partitions appended to since their last flush
        self.follower_unflushed_bytes = 0  # what they appended meanwhile
        self._behind: dict[tuple[str, int], int] = {}  # bytes appended since their last write-behind, by partition
        self.write_behind_bytes = config["replica.write.behind.bytes"]  # 0: off
        self._write_behind_logged_ms = -WRITE_BEHIND_LOG_INTERVAL_MS
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop write-behinds are scheduled on
        self._flush_due = asyncio.Event()  # set once follower_unflushed_bytes reaches the bytes bound
        # Followed partitions' flushes asked for: (log end offset, segment, its size, the log's
        # truncations) at the ask; and (segment, position) below which its pages were released.
        self._flush_marks: dict[tuple[str, int], deque] = {}
        self._released: dict[tuple[str, int], tuple[object, int]] = {}
        self.cache_keep_bytes = config["replica.page.cache.keep.bytes"]  # -1: never dropped
        self._checkpointed_high_watermarks: dict[tuple[str, int], int] = {}
        self._dirty: set[tuple[str, int]] = set()
        self._applied_configs: dict[str, dict] = {}
        # A topic's PartitionConfig, resolved once for all its partitions; the entry holds the
        # configs dict it was made from (replaced on a change, never mutated): a stale one is not used.
        self._partition_configs: dict[str, tuple[dict, PartitionConfig]] = {}
        self._took_up: Counter[str] | None = None  # during a bulk take-up: replicas led / followed
        self._applied_broker_epoch = 0
        self._awaiting_election: set[tuple[str, int]] = set()
        self._ineligible_logged_ms: dict[int, int] = {}  # broker id -> when a refusal was last logged
        self.log_dir_offline = False  # after an I/O error: every replica here is offline
        self._announcing: asyncio.Task | None = None
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self.on_leadership: list[Callable[[str, int, bool], None]] = []  # (topic, partition, leading)

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Take up this broker's replicas as the store has them (at once: a partition is led
        when this returns), then follow the store's changes."""
        self._load_high_watermarks()
        if self.write_behind_bytes and sync_file_range is None:
            logger.info("no sync_file_range(2) here: followers' copies are written back by their flushes alone "
                        "(replica.write.behind.bytes has no effect)")
        self._applied_broker_epoch = self.store.broker_epoch
        self.store.add_listener(self._on_change)
        self.logs.on_offline.append(self._on_log_dir_offline)
        self.logs.on_durable = self._on_durable
        self._dirty.update(self.store.partitions)
        self._apply_dirty()
        self._tasks = [asyncio.create_task(self._apply_loop(), name="replica-apply"),
                       asyncio.create_task(self._isr_shrink_loop(), name="isr-shrink"),
                       asyncio.create_task(self._checkpoint_loop(), name="hw-checkpoint"),
                       asyncio.create_task(self._follower_flush_loop(), name="follower-flush"),
                       asyncio.create_task(self._expire_producers(), name="producer-expiry")]

    async def stop(self) -> None:
        for fetcher in self.fetchers.values():
            fetcher.stop()
        for task in self._tasks:
            task.cancel()
        # Bounded: Python 3.11's wait_for can swallow a cancellation that lands as its inner
        # read completes, and a task that missed it must not hold the shutdown up.
        tasks = [*self._tasks, *(f.task for f in self.fetchers.values() if f.task)]
        if tasks:
            await asyncio.wait(tasks, timeout=2)
        if self._announcing is not None:
            self._announcing.cancel()
        for partition in self.partitions.values():
            partition.fail_ack_waiters(ErrorCode.not_leader_or_follower)

    def close(self) -> None:
        """Before the logs close: each partition's producer state and the high watermarks, so
        the next start replays little (not when the log directory is offline: it recovers)."""
        if self.log_dir_offline or self.logs.offline:
            return
        snapshots = [snapshot for partition in self.partitions.values()
                     for snapshot in (partition.producer_state_snapshot(), partition.transactions.snapshot())
                     if snapshot is not None]
        try:
            self.logs.write_checkpoints(snapshots)  # thousands of partitions: two syncs, not two each
        except OSError as e:
            self.logs.take_offline(e, "saving producer states")
            return
        try:
            self._write_high_watermarks(self._high_watermark_text())
        except OSError as e:
            self.logs.take_offline(e, f"writing {HW_CHECKPOINT_FILE}")

    # ---- what others ask ---------------------------------------------------------------------
    def get(self, topic: str, partition: int) -> Partition | None:
        """The replica of ``topic``-``partition`` hosted here, leader or not."""
        return self.partitions.get((topic, partition))

    def leader(self, topic: str, partition: int) -> Partition:
        """The partition, if this broker leads it; else KafkaError (NOT_LEADER_OR_FOLLOWER,
        KAFKA_STORAGE_ERROR while the log directory is offline, or UNKNOWN_TOPIC_OR_PARTITION
        when it is no replica here)."""
        found = self.partitions.get((topic, partition))
        if found is None:
            raise KafkaError(ErrorCode.unknown_topic_or_partition, f"{topic}-{partition} is not hosted here")
        if found.log.log_dir.offline:
            raise found.log.log_dir.error()
        if not found.leading:
            raise KafkaError(ErrorCode.not_leader_or_follower, f"broker {self.node_id} does not lead {topic}-{partition}")
        return found

    @property
    def leading(self) -> dict[tuple[str, int], Partition]:
        return {key: p for key, p in self.partitions.items() if p.leading}

    def high_watermark(self, topic: str, partition: int) -> int:
        found = self.partitions.get((topic, partition))
        return found.high_watermark if found is not None else 0

    def pending_changes(self) -> int:
        """Partition states changed in the store and not yet applied here (broker readiness)."""
        return len(self._dirty)

    def refresh(self, topic: str) -> None:
        """Apply the topic's partition states now (after this broker wrote them)."""
        self._on_change("topic", topic)
        self._apply_dirty()

    async def wait_for_acks(self, appended: list[tuple[Partition, int]], required_acks: int,
                            timeout_s: float) -> list[ErrorCode]:
        """See partition.wait_for_acks."""
        return await wait_for_acks(appended, required_acks, timeout_s, self.logs)

    def backlog_holds(self, partitions: Iterable[Partition]) -> list[asyncio.Future]:
        """After an acks=all Produce appended to ``partitions``: a future for each of them more
        than ``replica.backlog.max.bytes`` above its high watermark, done once it is within
        again (Partition.backlog_hold); the Produce's connection reads nothing until then."""
        holds = [hold for partition in partitions if (hold := partition.backlog_hold()) is not None]
        if holds and self.isr_metrics is not None:
            self.isr_metrics.backlog_holds.inc(len(holds))
        return holds

    def cleaner_high_watermark(self, log: "PartitionLog") -> int:
        """For the log cleaner (storage/cleaner_manager.py): the offset it may not clean from (the
        last stable offset: a follower may still truncate above the high watermark, and an
        undecided transaction may still be aborted); 0 for a log no longer a replica."""
        partition = self.partitions.get((log.topic, log.partition))
        return partition.last_stable_offset if partition is not None and partition.log is log else 0

    def cleaner_active_producers(self, log: "PartitionLog") -> dict[int, tuple[int, int]]:
        """For the log cleaner: see Partition.active_producers."""
        partition = self.partitions.get((log.topic, log.partition))
        return partition.active_producers() if partition is not None and partition.log is log else {}

    def replica_lags(self):
        """(topic, partition, follower, records behind the log end offset) for partitions led here."""
        for partition in list(self.partitions.values()):
            for replica, lag in partition.replica_lags():
                yield partition.topic, partition.index, replica, lag

    def backlogs(self):
        """(topic, partition, bytes above the high watermark, Produce requests held) of each
        partition led here with followers (replica.backlog.max.bytes)."""
        for partition in list(self.partitions.values()):
            if partition.leading and len(partition.state.replicas) > 1:
                yield partition.topic, partition.index, partition.backlog_bytes, partition.backlog_held

    def producer_count(self) -> int:
        return sum(p.producer_count for p in self.partitions.values())

    # ---- high watermark checkpoint ---------------------------------------------------------
    @property
    def _checkpoint_path(self) -> Path:
        return self.data_dir / HW_CHECKPOINT_FILE

    def _load_high_watermarks(self) -> None:
        """Read ``replication-offset-checkpoint`` (storage/offset_checkpoint.py), so that a broker
        leading again after a restart serves what was committed before it, not nothing until its
        followers fetch again."""
        self._checkpointed_high_watermarks = read_offset_checkpoint(self._checkpoint_path)

    def _high_watermark_text(self) -> str:
        return render_offset_checkpoint({p.key: min(p.high_watermark, p.log.log_end_offset)
                                         for p in self.partitions.values() if not p.log.closed})

    def _write_high_watermarks(self, text: str) -> None:
        write_offset_checkpoint(self._checkpoint_path, text)

    async def _checkpoint_loop(self) -> None:
        interval_s = self.config["replica.high.watermark.checkpoint.interval.ms"] / 1000
        written = None
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval_s)
            text = self._high_watermark_text()
            if text != written and not self.log_dir_offline:
                try:
                    await loop.run_in_executor(None, self._write_high_watermarks, text)
                    written = text
                except OSError as e:
                    logger.error("cannot write %s: %s", self._checkpoint_path, e)

    # ---- follower flushes --------------------------------------------------------------------
    def follower_appended(self, partition: Partition, appended: int) -> None:
        """The fetcher appended ``appended`` bytes to a followed partition: flush it on schedule
        (sooner once the followers hold ``replica.flush.interval.bytes`` unflushed)."""
        log = partition.log
        if not log.flush_deferred or log.config.durability == "throughput":
            return  # interval 0: its own group fsync covers it; throughput: never fsynced
        self._unflushed.add(partition.key)
        self.follower_unflushed_bytes += appended
        if self.follower_unflushed_bytes >= self.flush_interval_bytes:
            self._flush_due.set()
            return
        if not self.write_behind_bytes:
            return
        key = partition.key
        pending = self._behind.get(key, 0) + appended
        if pending < self.write_behind_bytes:
            self._behind[key] = pending
            return
        self._behind.pop(key, None)
        # Not now: the fetcher sends its next Fetch (which carries this copy's position to the
        # leader) before it yields to the loop, and the call takes ~0.15-0.25 ms for 64 KiB
        # (block allocation, submitting the I/O): on the next turn it runs while that Fetch waits.
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        loop.call_soon(self._write_behind, partition, pending)

    def _write_behind(self, partition: Partition, pending: int) -> None:
        """``write_behind`` of a followed partition's last ``pending`` bytes, counted; a failure
        counted and logged (at most once every WRITE_BEHIND_LOG_INTERVAL_MS)."""
        try:
            started = write_behind(partition.log, pending, WRITE_BEHIND_MAX_FACTOR * self.write_behind_bytes)
        except OSError as e:
            if self.isr_metrics is not None:
                self.isr_metrics.follower_write_behind_failures.inc()
            now = monotonic_ms()
            if now - self._write_behind_logged_ms >= WRITE_BEHIND_LOG_INTERVAL_MS:
                self._write_behind_logged_ms = now
                logger.warning("%s-%d: starting the write-back of %d copied bytes failed (%s); the scheduled flush "
                               "writes them back and reports a write-back error", partition.topic, partition.index,
                               pending, e)
            return
        if started and self.isr_metrics is not None:
            self.isr_metrics.follower_write_behind_bytes.inc(started)

    async def _follower_flush_loop(self) -> None:
        interval_s = self.flush_interval_ms / 1000
        if interval_s <= 0:
            return
        while True:
            reason = "bytes"
            try:
                await asyncio.wait_for(self._flush_due.wait(), interval_s)
            except asyncio.TimeoutError:
                reason = "interval"
            self._flush_due.clear()
            self.flush_followers(reason)

    def flush_followers(self, reason: str) -> int:
        """Put every followed partition appended to since its last flush into the log manager's
        next fsync job; how many. The job runs as the group commit's do, one at a time."""
        keys, self._unflushed = self._unflushed, set()
        self.follower_unflushed_bytes = 0
        self._behind.clear()  # the fsync writes it back
        flushed = 0
        for key in keys:
            partition = self.partitions.get(key)
            if partition is not None and partition.log.flush_deferred and not partition.log.closed:
                log = partition.log
                if self.cache_keep_bytes >= 0:  # what this flush covers, for _release_follower_copies
                    segment = log.active_segment
                    marks = self._flush_marks.get(key)
                    if marks is None:
                        marks = self._flush_marks[key] = deque(maxlen=FLUSH_MARKS)
                    marks.append((log.log_end_offset, segment, segment.size_bytes, log.truncations))
                self.logs.flush_soon(log)
                flushed += 1
        if flushed and self.isr_metrics is not None:
            self.isr_metrics.follower_flushes.labels(reason).inc()
        return flushed

    # ---- producers -------------------------------------------------------------------------
    async def _expire_producers(self) -> None:
        """Forget idempotent producers idle for ``producer.id.expiration.ms`` (Kafka's check)."""
        while True:
            await asyncio.sleep(self.config["producer.id.expiration.check.interval.ms"] / 1000)
            expiration_ms = self.config["producer.id.expiration.ms"]
            now_ms = wall_clock_ms()
            expired = sum(p.remove_expired_producers(now_ms, expiration_ms) for p in list(self.partitions.values()))
            if expired:
                logger.info("forgot %d idempotent producer states idle for %d ms", expired, expiration_ms)

    # ---- following the store ---------------------------------------------------------------
    def _on_change(self, kind: str, key: object) -> None:
        if kind == "partition":
            self._dirty.add(key)
        elif kind == "topic":
            record = self.store.topics.get(key)
            self._dirty.update(k for k in list(self.store.partitions) if k[0] == key)
            self._dirty.update(k for k in list(self.partitions) if k[0] == key)
            if record is None:
                self._drop_topic(key)
            else:
                self._apply_topic_configs(record)
        elif kind == "broker":
            if key != self.node_id or self.store.broker_epoch == self._applied_broker_epoch:
                return
            self._applied_broker_epoch = self.store.broker_epoch  # registered again: look at every partition
            self._dirty.update(self.store.partitions)
            if self.log_dir_offline:  # the announcement went with the old lease
                self._announce_offline()
        self._wake.set()

    def _apply_topic_configs(self, record) -> None:
        """A topic's config change (AlterConfigs served by any broker) reaches this broker's
        replicas of it; configs dicts are replaced on change, never mutated."""
        if self._applied_configs.get(record.name) is record.configs:
            return
        self._applied_configs[record.name] = record.configs
        log_config = log_config_for(self.config, record.configs)
        partition_config = self._partition_config(record)
        for index in range(record.partitions):
            partition = self.partitions.get((record.name, index))
            if partition is None:
                continue
            partition.set_config(partition_config)
            if partition.log.config != log_config:
                partition.log.set_config(log_config)
                logger.info("%s-%d: log config updated", record.name, index)
        if log_config.compact:
            self.logs.cleaner.wake()

    def _drop_topic(self, name: str) -> None:
        dropped = [key for key in self.partitions if key[0] == name]
        for key in dropped:
            self._remove(key)
        if any(log.topic == name for log in self.logs.logs()):
            self.logs.delete_topic(name)
            logger.info("topic %s deleted: removed its local replicas", name)

    def _remove(self, key: tuple[str, int], error: ErrorCode = ErrorCode.not_leader_or_follower) -> Partition | None:
        """This broker no longer has the replica (deleted, moved away): stop it; its log stays
        for the caller to delete."""
        self._stop_following(key)
        partition = self.partitions.pop(key, None)
        if partition is not None:
            if partition.leading:
                self._notify_leadership(key, False)
            partition.stop(error)
        self._applied_configs.pop(key[0], None)
        self._partition_configs.pop(key[0], None)
        return partition

    async def _apply_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            self._apply_dirty()

    def _apply_dirty(self) -> None:
        """Apply the store's state to each changed replica. Many at once (a start, a topic of
        many partitions): each replica's "leader"/"following" line at DEBUG, one summary at INFO."""
        dirty, self._dirty = self._dirty, set()
        self._took_up = Counter() if len(dirty) > BULK_TAKE_UP else None
        try:
            for key in sorted(dirty):
                try:
                    self._apply(key)
                except Exception:
                    logger.exception("applying the state of %s-%d failed", *key)
        finally:
            took_up, self._took_up = self._took_up, None
        if took_up:
            logger.info("took up %d replicas: leading %d, following %d", sum(took_up.values()), took_up["leader"],
                        took_up["follower"])

    def _partition_config(self, record) -> PartitionConfig:
        cached = self._partition_configs.get(record.name)
        if cached is not None and cached[0] is record.configs:
            return cached[1]
        partition_config = PartitionConfig.from_topic(self.config, record.configs)
        self._partition_configs[record.name] = (record.configs, partition_config)
        return partition_config

    # ---- roles -----------------------------------------------------------------------------
    def _partition(self, key: tuple[str, int], record) -> Partition:
        """The Partition of a replica this broker keeps, made (and its log created) on first use."""
        partition = self.partitions.get(key)
        if partition is not None:
            return partition
        log = self.logs.get(*key) or self.logs.create(key[0], key[1], log_config_for(self.config, record.configs))
        partition = Partition(key[0], key[1], log, self.logs, self.node_id, self._partition_config(record),
                              self, self._checkpointed_high_watermarks.pop(key, 0))
        partition.producer_id_expiration_ms = self.config["producer.id.expiration.ms"]
        partition.backlog_max_bytes = self.config["replica.backlog.max.bytes"]
        self.partitions[key] = partition
        self._applied_configs.setdefault(record.name, record.configs)
        return partition

    def _apply(self, key: tuple[str, int]) -> None:
        if self.log_dir_offline:
            self._stop_leading(key, ErrorCode.kafka_storage_error)
            self._stop_following(key)
            return
        state = self.store.partitions.get(key)
        record = self.store.topics.get(key[0])
        if state is None or record is None or self.node_id not in state.replicas:
            self._stop_leading(key)
            self._stop_following(key)
            if state is not None and record is not None and (key in self.partitions or self.logs.get(*key) is not None):
                # Reassigned away: the replica is no longer ours.
                self._remove(key)
                self.logs.delete_partition(*key)
                logger.info("%s-%d: replica moved to other brokers; deleted here", *key)
            return
        partition = self._partition(key, record)
        if state.leader == self.node_id and state.version < self.store.broker_epoch:
            # Elected before this broker registered (it restarted, or its lease lapsed): its log
            # may lack what it had then. The controller elects again (controller.py); till then
            # this broker neither leads nor follows the partition.
            if partition.state is not None or key not in self._awaiting_election:
                logger.info("%s-%d: led by this broker before it registered (epoch %d); waiting for the controller "
                            "to elect a leader", key[0], key[1], self.store.broker_epoch)
            self._awaiting_election.add(key)
            self._stop_leading(key)
            self._stop_following(key)
            partition.state = None
            return
        self._awaiting_election.discard(key)
        if state.leader == self.node_id:
            self._stop_following(key)
            if not partition.leading or partition.state.leader_epoch != state.leader_epoch:
                was_leading = partition.leading
                if partition.log.flush_deferred and self.isr_metrics is not None:
                    self.isr_metrics.follower_flushes.labels("leader").inc()  # make_leader flushes it
                partition.make_leader(state, log_level=logging.INFO if self._took_up is None else logging.DEBUG)
                if self._took_up is not None:
                    self._took_up["leader"] += 1
                if not was_leading:
                    self._notify_leadership(key, True)
            elif state.version >= partition.state.version:
                self._count_isr_change(partition.state.isr, state.isr)
                partition.update_state(state)
            return
        self._stop_leading(key)
        current = partition.state
        if current is not None and current.leader == state.leader and current.leader_epoch == state.leader_epoch:
            partition.state = state
            return
        self._stop_following(key)
        partition.make_follower(state)
        # Its appends wait for the flush schedule (with interval 0 each starts a group fsync).
        partition.log.flush_deferred = self.flush_interval_ms > 0
        if state.leader >= 0:
            fetcher = self.fetchers.get(state.leader)
            if fetcher is None:
                fetcher = self.fetchers[state.leader] = Fetcher(self, state.leader, self.config["replica.fetch.backoff.ms"],
                                                                   self.config["replica.fetch.wait.max.ms"])
                fetcher.start()
            fetcher.add(key, state.leader_epoch)
            if self._took_up is not None:
                self._took_up["follower"] += 1
            logger.log(logging.INFO if self._took_up is None else logging.DEBUG, "%s-%d: following leader %d (epoch %d)",
                       key[0], key[1], state.leader, state.leader_epoch)

    def _notify_leadership(self, key: tuple[str, int], leading: bool) -> None:
        for callback in self.on_leadership:
            callback(key[0], key[1], leading)

    def _stop_leading(self, key, error: ErrorCode = ErrorCode.not_leader_or_follower) -> None:
        partition = self.partitions.get(key)
        if partition is not None and partition.stop_leading(error):
            self._notify_leadership(key, False)

    def _stop_following(self, key) -> None:
        partition = self.partitions.get(key)
        if partition is None or partition.leading or partition.state is None:
            return
        fetcher = self.fetchers.get(partition.state.leader)
        if fetcher is not None:
            fetcher.remove(key)
        partition.state = None
        self._flush_marks.pop(key, None)
        self._released.pop(key, None)

    def _on_log_dir_offline(self, reason: str) -> None:
        """The log directory went offline (an I/O error, storage/log_dir.py): every replica
        here is offline until a restart. Leaderships are given up (acknowledgements waiting
        here answer KAFKA_STORAGE_ERROR), fetchers stop, and the controller is told, so that it
        elects leaders among the other in-sync replicas and takes this broker out of every ISR
        (Kafka's offline replicas)."""
        if self.log_dir_offline:
            return
        self.log_dir_offline = True
        logger.error("log directory offline (%s): giving up %d leaderships and %d followed partitions", reason,
                     sum(p.leading for p in self.partitions.values()),
                     sum(p.state is not None and not p.leading for p in self.partitions.values()))
        for key in list(self.partitions):
            self._stop_leading(key, ErrorCode.kafka_storage_error)
            self._stop_following(key)
        self._announce_offline()

    def _announce_offline(self) -> None:
        async def announce() -> None:
            delay_s = 0.1
            while True:  # until the store has it: the controller must hear of it
                try:
                    await self.store.announce_offline(self.node_id)
                    logger.info("broker %d announced its offline log directory to the controller", self.node_id)
                    return
                except Exception as e:
                    logger.warning("cannot announce the offline log directory yet (%s); retrying", e)
                    await asyncio.sleep(delay_s)
                    delay_s = min(delay_s * 2, 2.0)

        if self._announcing is not None:
            self._announcing.cancel()
        self._announcing = asyncio.get_running_loop().create_task(announce(), name="announce-offline")

    def _on_durable(self, log: "PartitionLog") -> None:
        """A flush moved a log's durable offset: its partition's high watermark may follow."""
        partition = self.partitions.get((log.topic, log.partition))
        if partition is not None and partition.log is log:
            if partition.leading:
                partition.on_local_flush()
            else:
                self._release_follower_copies(partition)

    def _release_follower_copies(self, partition: Partition) -> None:
        """A followed partition's flush moved its durable offset: drop the copies it made
        durable from the page cache, but the last ``replica.page.cache.keep.bytes`` (the
        module docstring says why). A flush asked for by flush_followers noted the log end, its
        segment and that segment's size (``_flush_marks``); the latest mark at or below the
        durable offset says how far the pages are clean. A segment rolled since the ask keeps
        its tail (what that flush covered above the last release: a few MiB a rolled segment). A truncation since a mark (a
        divergent tail dropped, its offsets written again at other positions) voids it."""
        key = partition.key
        marks = self._flush_marks.get(key)
        if not marks:
            return
        log = partition.log
        durable = log.durable_offset
        mark = None
        while marks and marks[0][0] <= durable:
            mark = marks.popleft()
        if mark is None:
            return
        _, segment, size, truncations = mark
        if truncations != log.truncations:  # offsets and positions parted since: only later marks count
            return
        if log.closed or segment is not log.active_segment:
            return  # rolled since the ask: its tail stays (reading its descriptor could open it again)
        released = self._released.get(key)
        start = released[1] if released is not None and released[0] is segment else 0
        end = size - self.cache_keep_bytes
        end -= end % PAGE_BYTES
        if end <= start:
            return
        # From a folio back: the page cache's folio that spanned the last release's end stayed
        # whole (ext4's large folios; up to 2 MiB), and is dropped now that it is all below.
        if release_flushed(segment, max(0, start - MAX_FOLIO_BYTES), end):
            self._released[key] = (segment, end)
            if self.isr_metrics is not None:
                self.isr_metrics.follower_cache_released_bytes.inc(end - start)

    # ---- the ISR (the Partition's IsrWriter) --------------------------------------------------
    def may_join_isr(self, replica_id: int, broker_epoch: int = -1) -> bool:
        """Whether a caught-up follower on broker ``replica_id`` may join an ISR now: its broker
        is registered, not in controlled shutdown, its log directory online (the controller
        counts it dead otherwise), the fetch came from its current registration (``broker_epoch``,
        Fetch v15+'s ReplicaState; -1, an older follower's Fetch: not checked), so a fetch from an
        earlier process of the broker, which may have had what the new one lost, does not count,
        and the controller has fenced and let back
        its current registration (``store.unfenced``). Kafka's controller answers an
        AlterPartition naming any other INELIGIBLE_REPLICA (KIP-903); here the leader does not
        write it, which spares the ISR a join the controller's fencing pass would undo (one
        more fall below min.insync.replicas). Refusals are counted and logged at INFO, at most
        once every ``INELIGIBLE_LOG_INTERVAL_MS`` a broker."""
        info = self.store.brokers.get(replica_id)
        if info is None:
            why = "it is not registered"
        elif replica_id in self.store.shutting_down:
            why = "it is in controlled shutdown"
        elif replica_id in self.store.offline:
            why = "its log directory is offline"
        elif broker_epoch >= 0 and broker_epoch != info.epoch:
            why = f"its fetch came from another registration (broker epoch {broker_epoch}; registered as {info.epoch})"
        elif self.store.unfenced.get(replica_id) != info.epoch:
            why = f"the controller has not yet fenced and let back its registration (broker epoch {info.epoch})"
        else:
            return True
        if self.isr_metrics is not None:
            self.isr_metrics.isr_join_refusals.inc()
        now = monotonic_ms()
        if now - self._ineligible_logged_ms.get(replica_id, -INELIGIBLE_LOG_INTERVAL_MS) >= INELIGIBLE_LOG_INTERVAL_MS:
            self._ineligible_logged_ms[replica_id] = now
            logger.info("broker %d is caught up but may not join ISRs yet: %s", replica_id, why)
        return False

    def change_isr(self, partition: Partition, isr: tuple[int, ...]) -> None:
        """Write ``isr`` for a partition led here by compare-and-swap (a stale leader's write
        fails, as its version is old); the partition counts it as pending meanwhile."""
        partition.pending_isr = isr
        state = partition.state

        async def write() -> None:
            stored = None
            try:
                stored = await self.store.compare_and_set_partition(partition.topic, partition.index, state.changed(isr=isr))
                if stored is None:
                    logger.info("%s-%d: ISR change to %s lost a compare-and-swap", partition.topic, partition.index, list(isr))
                else:
                    logger.info("%s-%d: ISR %s -> %s", partition.topic, partition.index, list(state.isr), list(isr))
                    if self.partitions.get(partition.key) is partition and partition.leading:
                        self._count_isr_change(partition.state.isr, stored.isr)
            except Exception:
                logger.exception("%s-%d: ISR change failed", partition.topic, partition.index)
            finally:
                if self.partitions.get(partition.key) is partition:
                    partition.isr_written(stored)

        asyncio.create_task(write())

    def _count_isr_change(self, old: tuple[int, ...], new: tuple[int, ...]) -> None:
        if self.isr_metrics is None:
            return
        if set(new) < set(old):
            self.isr_metrics.isr_shrinks.inc()
        elif set(new) > set(old):
            self.isr_metrics.isr_expands.inc()

    async def _isr_shrink_loop(self) -> None:
        while True:
            await asyncio.sleep(max(self.lag_max_ms / 4, 50) / 1000)
            now = monotonic_ms()
            for partition in list(self.partitions.values()):
                lagging = partition.lagging_replicas(now, self.lag_max_ms)
                if lagging:
                    logger.info("%s-%d: replicas %s lag more than %d ms", partition.topic, partition.index, lagging,
                                self.lag_max_ms)
                    self.change_isr(partition, tuple(r for r in partition.state.isr if r not in lagging))
                if partition.backlog_held_since_ms is not None:
                    partition.backlog_overdue(now, self.lag_max_ms)
