"""A follower drops its copies from the page cache once its flush has made them durable, but the
last replica.page.cache.keep.bytes of each followed partition (cluster/replica_manager.py
``_release_follower_copies``): over a real ReplicaManager, LogManager and segment file, the
file's cached pages are read with cachestat(2) (Linux 6.5+; skipped elsewhere). Pages still
cached are asserted only where nothing else would drop them (no memory pressure in a test of a
few MiB); the release itself is asserted as pages gone, which only the broker's call does. Why:
writing into pages just freed costs a fraction of writing into memory new to the process (on
the project's VM several times less: BENCHMARKS.md, Replication)."""

from __future__ import annotations

import asyncio
import ctypes
import errno
import mmap

import pytest

from tests.unit.test_follower_write_behind import CACHESTAT, _Range, _Stat, copy, follower
from tests.unit.test_partition import NODE, run
from tidelog.cluster.metadata import PartitionState
from tidelog.config import BrokerConfig
from tidelog.metrics import BrokerMetrics

MiB = 1 << 20
PAGE = mmap.PAGESIZE
FOLIO = 256 << 10  # the most a page-cache folio of these 512 KiB appends spans, seen here: 16-32 pages


def cached_pages(fd: int, offset: int, length: int) -> int:
    """The file's pages in the page cache within [offset, offset + length)."""
    libc = ctypes.CDLL(None, use_errno=True)
    stat = _Stat()
    if libc.syscall(CACHESTAT, fd, ctypes.byref(_Range(offset, length)), ctypes.byref(stat), 0) != 0:
        code = ctypes.get_errno()
        pytest.skip(f"no cachestat(2) here: {errno.errorcode.get(code, code)}")
    return stat.cache


async def flushed(manager, log) -> None:
    """The scheduled flush, run to its end (the fsync job, then on_durable)."""
    assert manager.flush_followers("interval") == 1
    await durable(log)


async def durable(log, offset: int | None = None) -> None:
    """Until the log is durable up to ``offset`` (its log end when None), then one more turn
    (on_durable's release runs in it)."""
    deadline = asyncio.get_running_loop().time() + 10
    while log.durable_offset < (log.log_end_offset if offset is None else offset):
        assert asyncio.get_running_loop().time() < deadline, "the scheduled flush did not make the copies durable"
        await asyncio.sleep(0.005)
    await asyncio.sleep(0)


def copy_at_least(manager, partition, size: int) -> None:
    while partition.log.active_segment.size_bytes < size:
        copy(manager, partition, 512 << 10)


def test_the_default_keeps_8_mib_of_each_followed_partition():
    assert BrokerConfig.load(env={}, overrides={})["replica.page.cache.keep.bytes"] == 8 * MiB


def test_a_followers_flushed_copies_leave_the_page_cache_but_the_last_keep_bytes(tmp_path):
    async def main(logs):
        metrics = BrokerMetrics()
        manager, partition, log = follower(logs, tmp_path / "broker", {"replica.page.cache.keep.bytes": MiB}, metrics)
        logs.on_durable = manager._on_durable  # as ReplicaManager.start sets it
        segment = log.active_segment
        fd = segment.fd
        copy_at_least(manager, partition, 4 * MiB)
        first_batch = bytes(log.read(0, 1, True))
        assert first_batch
        size = segment.size_bytes
        assert cached_pages(fd, 0, size) >= size // PAGE - 1  # all there before the flush
        await flushed(manager, log)
        released = (size - MiB) - (size - MiB) % PAGE
        # The page cache's last folio below the boundary may span it (ext4's large folios) and
        # stays whole: at most FOLIO bytes before it.
        assert cached_pages(fd, 0, released - FOLIO) == 0, "the flushed copies stayed in the page cache"
        kept = released + FOLIO  # past the folio that may span the boundary
        assert cached_pages(fd, kept, size - kept) >= (size - kept) // PAGE - 1, \
            "the last replica.page.cache.keep.bytes were dropped too"
        assert metrics.follower_cache_released_bytes._value.get() == released
        # Copies not yet flushed stay: the next flush drops them, from where the last one stopped.
        copy_at_least(manager, partition, size + 2 * MiB)
        size2 = segment.size_bytes
        assert cached_pages(fd, kept, size2 - kept) >= (size2 - kept) // PAGE - 1
        await flushed(manager, log)
        released2 = (size2 - MiB) - (size2 - MiB) % PAGE
        assert cached_pages(fd, 0, released2 - FOLIO) == 0
        assert metrics.follower_cache_released_bytes._value.get() == released2
        # What left the cache is read back from the disk as it was (a follower that leads).
        assert bytes(log.read(0, 1, True)) == first_batch

    run(main, tmp_path / "logs", durability="balanced")


def test_keep_bytes_minus_1_leaves_the_page_cache_to_the_kernel(tmp_path):
    async def main(logs):
        metrics = BrokerMetrics()
        manager, partition, log = follower(logs, tmp_path / "broker", {"replica.page.cache.keep.bytes": -1}, metrics)
        logs.on_durable = manager._on_durable
        fd = log.active_segment.fd
        copy_at_least(manager, partition, 4 * MiB)
        await flushed(manager, log)
        size = log.active_segment.size_bytes
        assert cached_pages(fd, 0, size) >= size // PAGE - 1
        assert metrics.follower_cache_released_bytes._value.get() == 0

    run(main, tmp_path / "logs", durability="balanced")


def test_a_truncation_after_the_flush_was_asked_for_voids_its_release(tmp_path):
    """A divergent tail dropped between the flush's ask and its end: the offsets the flush
    noted no longer say where the bytes are, so nothing is released for it."""
    async def main(logs):
        metrics = BrokerMetrics()
        manager, partition, log = follower(logs, tmp_path / "broker", {"replica.page.cache.keep.bytes": 0}, metrics)
        logs.on_durable = manager._on_durable
        copy_at_least(manager, partition, 2 * MiB)
        assert manager.flush_followers("interval") == 1
        partition.truncate_to(log.log_end_offset - 1)
        copy_at_least(manager, partition, 3 * MiB)
        await durable(log, 1)
        assert metrics.follower_cache_released_bytes._value.get() == 0
        copy_at_least(manager, partition, 4 * MiB)
        await flushed(manager, log)  # a flush asked for after the truncation releases again
        assert metrics.follower_cache_released_bytes._value.get() > 0

    run(main, tmp_path / "logs", durability="balanced")


def test_a_leaders_flushes_release_nothing(tmp_path):
    """Only followed partitions: a leader's consumers read what it appended."""
    async def main(logs):
        metrics = BrokerMetrics()
        manager, partition, log = follower(logs, tmp_path / "broker", {"replica.page.cache.keep.bytes": 0}, metrics)
        logs.on_durable = manager._on_durable
        copy_at_least(manager, partition, 2 * MiB)
        assert manager.flush_followers("interval") == 1
        partition.make_leader(PartitionState((NODE, 2), NODE, 1, (NODE, 2)))
        await durable(log)
        assert metrics.follower_cache_released_bytes._value.get() == 0
        assert cached_pages(log.active_segment.fd, 0, log.active_segment.size_bytes) >= \
            log.active_segment.size_bytes // PAGE - 1

    run(main, tmp_path / "logs", durability="balanced")


def test_a_segment_rolled_after_the_flush_was_asked_for_keeps_its_tail(tmp_path):
    """The flush covered a segment that is sealed by the time it ends: nothing released for it
    (a sealed segment's descriptor may have been closed, and reading it would open it again);
    the next flush releases in the new active segment."""
    async def main(logs):
        metrics = BrokerMetrics()
        manager, partition, log = follower(logs, tmp_path / "broker", {"replica.page.cache.keep.bytes": 0}, metrics)
        logs.on_durable = manager._on_durable
        copy_at_least(manager, partition, 2 * MiB)
        assert manager.flush_followers("interval") == 1
        sealed = log.active_segment
        log.roll()
        assert log.active_segment is not sealed
        copy_at_least(manager, partition, MiB)
        await durable(log)
        assert metrics.follower_cache_released_bytes._value.get() == 0
        copy_at_least(manager, partition, 3 * MiB)
        await flushed(manager, log)
        assert metrics.follower_cache_released_bytes._value.get() > 0

    run(main, tmp_path / "logs", durability="balanced")
