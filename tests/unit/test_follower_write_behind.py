"""A follower's copies start their write-back as they come, replica.write.behind.bytes at a time
(cluster/replica_manager.py ``write_behind``), rather than all at the next scheduled flush: over a
real ReplicaManager, LogManager and segment file, the write-backs the broker starts are its
sync_file_range(2) calls (recorded, then made), and the file's dirty pages are read with
cachestat(2) (Linux 6.5+; skipped elsewhere) to see them done. Pages left dirty are asserted as
"no write-back started there", never as the pages' dirty state: the kernel's background
write-back or any process's syncfs on the same filesystem may clean them at any time (review13: a
"pages still dirty" check failed at load ~24). The setting turns it off, a metric counts the
bytes, and a failed start is counted and logged, left to the flush."""

from __future__ import annotations

import asyncio
import ctypes
import errno
import logging
import mmap
import os

import pytest

from tests.unit.test_partition import NODE, RecordingIsrWriter, run
from tidelog.cluster import replica_manager as replica_manager_module
from tidelog.cluster.metadata import EmbeddedMetadataStore, PartitionState
from tidelog.cluster.partition import Partition, PartitionConfig
from tidelog.cluster.replica_manager import WRITE_BEHIND_MAX_FACTOR, ReplicaManager
from tidelog.config import BrokerConfig
from tidelog.metrics import BrokerMetrics
from tidelog.protocol.records import build_batch

CACHESTAT = 451  # x86_64 and arm64 (asm-generic) syscall number


class _Range(ctypes.Structure):
    _fields_ = [("off", ctypes.c_uint64), ("len", ctypes.c_uint64)]


class _Stat(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in ("cache", "dirty", "writeback", "evicted", "recently_evicted")]


def dirty_pages(fd: int) -> int:
    """The file's dirty pages that are not under write-back: those no write-back has started for.
    A page the kernel's flusher was writing back when an append dirtied it again is dirty and
    under write-back at once, and a write-only sync_file_range (WB_SYNC_NONE) skips it rather
    than wait; it is written back when that write ends. Counted as dirty it failed the partial-
    page test at load ~8 ("assert 2 <= 1") while the CI's brokers kept the flusher busy."""
    libc = ctypes.CDLL(None, use_errno=True)
    stat = _Stat()
    if libc.syscall(CACHESTAT, fd, ctypes.byref(_Range(0, 0)), ctypes.byref(stat), 0) != 0:
        code = ctypes.get_errno()
        pytest.skip(f"no cachestat(2) here: {errno.errorcode.get(code, code)}")
    return max(0, stat.dirty - stat.writeback)  # a page both dirty and under write-back counts in both


def records_at(log, size: int) -> memoryview:
    """One batch of about ``size`` bytes (incompressible values) at ``log``'s end, as a leader sent it."""
    count = max(1, size // 4096)
    return memoryview(bytearray(build_batch([(None, os.urandom(4000), []) for _ in range(count)],
                                            base_offset=log.log_end_offset)))


WRITE_BEHIND_BYTES = BrokerConfig.load(env={}, overrides={})["replica.write.behind.bytes"]
WRITE_BEHIND_MAX_BYTES = WRITE_BEHIND_MAX_FACTOR * WRITE_BEHIND_BYTES
needs_sync_file_range = pytest.mark.skipif(replica_manager_module.sync_file_range is None,
                                           reason="no sync_file_range(2) here")


@pytest.fixture
def write_backs(monkeypatch):
    """The write-backs the broker starts, as (fd, offset, nbytes) of each sync_file_range call,
    each passed on to the real one."""
    real = replica_manager_module.sync_file_range
    calls = []

    def recording(fd, offset, nbytes, flags):
        calls.append((fd, offset, nbytes))
        return real(fd, offset, nbytes, flags)

    monkeypatch.setattr(replica_manager_module, "sync_file_range", recording)
    return calls


def whole_pages(size: int) -> int:
    return size - size % mmap.PAGESIZE


def follower(logs, tmp_path, overrides=None, metrics=None):
    store = EmbeddedMetadataStore(tmp_path / "meta", node_id=NODE)
    manager = ReplicaManager(NODE, store, logs, BrokerConfig.load(env={}, overrides=overrides or {}), tmp_path, metrics)
    log = logs.create("t", 0)
    partition = logs.partitions[("t", 0)] = manager.partitions[("t", 0)] = Partition("t", 0, log, logs, NODE, PartitionConfig(), RecordingIsrWriter())
    partition.make_follower(PartitionState((2, NODE), 2, 0, (2, NODE)))
    log.flush_deferred = True  # as the ReplicaManager sets it while the log follows (replica.flush.interval.ms > 0)
    return manager, partition, log


def copy(manager, partition, size: int) -> int:
    """What the fetcher does with a response's records."""
    appended = partition.append_as_follower(records_at(partition.log, size), leader_high_watermark=0)
    assert appended
    manager.follower_appended(partition, appended)
    return appended


@needs_sync_file_range
def test_a_followers_copies_are_written_back_as_they_come_not_at_the_scheduled_flush(tmp_path, write_backs):
    async def main(logs):
        metrics = BrokerMetrics()
        manager, partition, log = follower(logs, tmp_path / "broker", metrics=metrics)
        assert manager.write_behind_bytes == 64 << 10  # the documented default
        fd = log.active_segment.fd
        # Less than WRITE_BEHIND_BYTES: left dirty for the next ones (or the scheduled flush).
        assert copy(manager, partition, 8 << 10) < WRITE_BEHIND_BYTES
        await asyncio.sleep(0)
        assert not write_backs
        # Appends adding up past WRITE_BEHIND_BYTES: their write-back has started, though no fsync
        # ran (the flush schedule is a second away, and no group commit covers a followed log).
        while log.active_segment.size_bytes < 2 * WRITE_BEHIND_BYTES:
            copy(manager, partition, 16 << 10)
            await asyncio.sleep(0)  # the fetcher's next Fetch is sent; the write-back starts
        copy(manager, partition, WRITE_BEHIND_BYTES)
        await asyncio.sleep(0)
        assert dirty_pages(fd) <= 1, "a follower's copies stayed dirty until the scheduled flush"
        started = metrics.follower_write_behind_bytes._value.get()
        assert 2 * WRITE_BEHIND_BYTES <= started <= log.active_segment.size_bytes
        assert {call[0] for call in write_backs} == {fd}
        assert sum(call[2] for call in write_backs) == started
        assert write_backs[-1][1] + write_backs[-1][2] == whole_pages(log.active_segment.size_bytes)
        calls = len(write_backs)
        assert log.durable_offset == 0  # started, not waited for: the fsync on schedule makes it durable
        # A large response (a follower catching up) is left to the flush schedule: the event loop
        # does not submit megabytes of write-back itself.
        copy(manager, partition, WRITE_BEHIND_MAX_BYTES + (64 << 10))
        await asyncio.sleep(0)
        assert len(write_backs) == calls, "a large response's write-back was started on the event loop"
        assert metrics.follower_write_behind_bytes._value.get() == started
        # The scheduled flush: every followed partition into the next fsync job.
        assert manager.flush_followers("interval") == 1
        deadline = asyncio.get_running_loop().time() + 10
        while log.durable_offset < log.log_end_offset:
            assert asyncio.get_running_loop().time() < deadline, "the scheduled flush did not make the copies durable"
            await asyncio.sleep(0.005)
        assert dirty_pages(fd) == 0

    run(main, tmp_path / "logs", durability="balanced")


@needs_sync_file_range
def test_the_write_back_starts_after_the_fetchers_step_not_within_it(tmp_path, write_backs):
    """The fetcher appends a response, then sends its next Fetch (the copy's position, which the
    leader's high watermark waits for) before it yields to the loop: the write-back's start
    (~0.15-0.25 ms for 64 KiB) comes on the loop's next turn, off that path."""
    async def main(logs):
        manager, partition, log = follower(logs, tmp_path / "broker")
        fd = log.active_segment.fd
        copy(manager, partition, WRITE_BEHIND_BYTES + (8 << 10))
        assert not write_backs, "the write-back started within the fetcher's step"
        await asyncio.sleep(0)
        assert write_backs == [(fd, 0, whole_pages(log.active_segment.size_bytes))]
        assert dirty_pages(fd) <= 1

    run(main, tmp_path / "logs", durability="balanced")


@needs_sync_file_range
def test_the_partial_page_at_the_end_is_left_for_the_next_write_back(tmp_path, write_backs):
    """The page the next append writes into is not put under write-back (it would be written
    twice, and where the disk wants stable pages that append would wait for the I/O)."""
    async def main(logs):
        metrics = BrokerMetrics()
        manager, partition, log = follower(logs, tmp_path / "broker", metrics=metrics)
        fd = log.active_segment.fd
        copy(manager, partition, WRITE_BEHIND_BYTES + (8 << 10))
        await asyncio.sleep(0)
        size = log.active_segment.size_bytes
        assert size % mmap.PAGESIZE, "the test wants a segment ending inside a page"
        assert write_backs == [(fd, 0, whole_pages(size))], "the last, partial page was written back too"
        assert dirty_pages(fd) <= 1
        assert metrics.follower_write_behind_bytes._value.get() == whole_pages(size)
        # The next write-back takes it, now whole.
        copy(manager, partition, WRITE_BEHIND_BYTES + (8 << 10))
        await asyncio.sleep(0)
        end = whole_pages(log.active_segment.size_bytes)
        assert write_backs[1:] == [(fd, whole_pages(size), end - whole_pages(size))]
        assert dirty_pages(fd) <= (1 if log.active_segment.size_bytes % mmap.PAGESIZE else 0)

    run(main, tmp_path / "logs", durability="balanced")


@needs_sync_file_range
def test_replica_write_behind_bytes_0_leaves_a_followers_copies_to_the_scheduled_flush(tmp_path, write_backs):
    """No write-back started: no sync_file_range call, nothing counted (not the pages' dirty state,
    which failed at load ~24 when something else wrote them back first)."""
    async def main(logs):
        metrics = BrokerMetrics()
        manager, partition, log = follower(logs, tmp_path / "broker", {"replica.write.behind.bytes": 0}, metrics)
        assert manager.write_behind_bytes == 0
        while log.active_segment.size_bytes < 4 * (64 << 10):
            copy(manager, partition, 16 << 10)
            await asyncio.sleep(0)  # where a write-back would start
        await asyncio.sleep(0)
        assert write_backs == [], "replica.write.behind.bytes=0 still started write-backs"
        assert metrics.follower_write_behind_bytes._value.get() == 0

    run(main, tmp_path / "logs", durability="balanced")


def test_a_write_back_that_cannot_start_is_counted_logged_and_left_to_the_flush(tmp_path, monkeypatch, caplog):
    def failing(fd, offset, nbytes, flags):
        ctypes.set_errno(errno.EIO)
        return -1

    monkeypatch.setattr(replica_manager_module, "sync_file_range", failing)

    async def main(logs):
        metrics = BrokerMetrics()
        manager, partition, log = follower(logs, tmp_path / "broker", metrics=metrics)
        with caplog.at_level(logging.WARNING, logger="tidelog.cluster.replica_manager"):
            for _ in range(3):
                copy(manager, partition, WRITE_BEHIND_BYTES + (8 << 10))  # each one past the threshold
                await asyncio.sleep(0)
        assert metrics.follower_write_behind_failures._value.get() == 3
        assert metrics.follower_write_behind_bytes._value.get() == 0
        warnings = [r for r in caplog.records if "write-back" in r.getMessage()]
        assert len(warnings) == 1, "one line a minute, not one a fetch"
        assert "t-0" in warnings[0].getMessage() and os.strerror(errno.EIO) in warnings[0].getMessage()
        # The scheduled flush still makes every copy durable.
        assert manager.flush_followers("interval") == 1
        deadline = asyncio.get_running_loop().time() + 10
        while log.durable_offset < log.log_end_offset:
            assert asyncio.get_running_loop().time() < deadline, "the scheduled flush did not make the copies durable"
            await asyncio.sleep(0.005)

    run(main, tmp_path / "logs", durability="balanced")


@needs_sync_file_range
def test_the_metric_counts_every_byte_written_back_the_partial_page_too(tmp_path, write_backs):
    """review12: the partial page a write-back leaves is written back by the next one (the call
    takes its whole first page); tidelog_follower_write_behind_bytes_total counts it there too, so
    after consecutive write-backs it equals the bytes up to the last whole page, not ~3% less (a
    page's tail a write-back: failed before, the next count started at the previous end, not its page)."""
    async def main(logs):
        metrics = BrokerMetrics()
        manager, partition, log = follower(logs, tmp_path / "broker", metrics=metrics)
        for _ in range(3):
            copy(manager, partition, WRITE_BEHIND_BYTES + (8 << 10))
            await asyncio.sleep(0)
        size = log.active_segment.size_bytes
        assert size % mmap.PAGESIZE, "the test wants a segment ending inside a page"
        assert len(write_backs) == 3 and write_backs[-1][1] + write_backs[-1][2] == whole_pages(size)
        assert dirty_pages(log.active_segment.fd) <= 1
        assert metrics.follower_write_behind_bytes._value.get() == whole_pages(size)

    run(main, tmp_path / "logs", durability="balanced")


@needs_sync_file_range
def test_a_write_back_due_when_the_partition_is_deleted_or_truncated_meanwhile_is_harmless(tmp_path, caplog):
    """review12: the write-back runs a turn after the append (call_soon): a partition deleted in
    between (its file closed, its descriptor number free for another file) is not touched, and one
    truncated to empty in between (a new segment) has no whole page to write back. Nothing fails,
    nothing is counted, nothing is logged."""
    async def main(logs):
        metrics = BrokerMetrics()
        manager, partition, log = follower(logs, tmp_path / "broker", metrics=metrics)
        with caplog.at_level(logging.WARNING):
            copy(manager, partition, WRITE_BEHIND_BYTES + (8 << 10))
            partition.log.truncate_fully_and_start_at(partition.log.log_end_offset)
            await asyncio.sleep(0)
            copy(manager, partition, WRITE_BEHIND_BYTES + (8 << 10))
            logs.delete_partition("t", 0)
            other = os.open(tmp_path / "other", os.O_RDWR | os.O_CREAT)  # may take the deleted file's number
            try:
                await asyncio.sleep(0)
                await asyncio.sleep(0)
            finally:
                os.close(other)
        assert log.closed
        assert metrics.follower_write_behind_bytes._value.get() == 0
        assert metrics.follower_write_behind_failures._value.get() == 0
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING and "write-back" in r.getMessage()]

    run(main, tmp_path / "logs", durability="balanced")
