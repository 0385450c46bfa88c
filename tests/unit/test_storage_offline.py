"""An I/O error takes the log directory offline (fsyncgate): nothing is acknowledged past a failed
write or fsync, until a restart runs recovery. Concurrent flushes, syncfs, truncation during a
flush, shutdown with waiting producers."""

from __future__ import annotations

import asyncio
import errno
import os
import threading

import pytest

from tidelog.storage import manager as manager_module
from tidelog.storage.errors import CorruptSegment, StorageError
from tidelog.storage.faults import faults
from tidelog.storage.fsync import sync_fds
from tidelog.storage.log import LogConfig
from tidelog.storage.manager import CLEAN_SHUTDOWN_FILE, LogManager

from .storage_helpers import all_offsets, append, open_log, spy_fsyncs


@pytest.fixture(autouse=True)
def reset_faults():
    faults.reset()
    yield
    faults.reset()


async def started_manager(dir, **config) -> LogManager:
    manager = LogManager(dir, LogConfig(**config))
    manager.open_all({})
    await manager.start()
    return manager


def test_a_failed_fsync_takes_the_log_dir_offline_and_a_retry_is_not_trusted(tmp_path):
    """Linux drops the pages of a failed fsync and the next fsync succeeds: it must not count."""
    offline_calls = []

    async def run():
        manager = await started_manager(tmp_path, durability="durable")
        manager.on_offline.append(offline_calls.append)
        log = manager.create("t", 0)
        append(log)
        await manager.wait_durable(log, 3)
        append(log)
        faults.fail_next_fsync(errno.EIO)
        with pytest.raises(StorageError) as e:
            await manager.wait_durable(log, 6)
        assert e.value.error_code.name == "kafka_storage_error"
        assert manager.offline and "EIO" in manager.offline_reason or "Input/output" in manager.offline_reason
        with pytest.raises(StorageError):  # the retry would succeed on Linux: it is not tried
            await manager.wait_durable(log, 6)
        assert log.durable_offset == 3
        with pytest.raises(StorageError):
            append(log)
        with pytest.raises(StorageError):
            log.read(0, 1 << 20, True)
        with pytest.raises(StorageError):
            manager.create("t", 1)
        await manager.close()

    asyncio.run(run())
    assert len(offline_calls) == 1
    assert not (tmp_path / CLEAN_SHUTDOWN_FILE).exists()  # the next start runs recovery


def test_restart_after_offline_recovers_and_serves_again(tmp_path):
    async def crash():
        manager = await started_manager(tmp_path, durability="durable")
        log = manager.create("t", 0)
        append(log)
        await manager.wait_durable(log, 3)
        append(log)
        faults.fail_next_fsync(errno.EIO)
        with pytest.raises(StorageError):
            await manager.wait_durable(log, 6)
        await manager.close()

    asyncio.run(crash())

    async def restart():
        manager = await started_manager(tmp_path, durability="durable")
        assert not manager.offline
        log = manager.get("t", 0)
        assert all_offsets(log)[:3] == [0, 1, 2]
        end = append(log) + 3
        await manager.wait_durable(log, end)
        assert log.durable_offset == end
        await manager.close()

    asyncio.run(restart())
    assert (tmp_path / CLEAN_SHUTDOWN_FILE).exists()


def test_a_failed_write_takes_the_log_dir_offline(tmp_path):
    async def run():
        manager = await started_manager(tmp_path, durability="balanced")
        log, other = manager.create("t", 0), manager.create("t", 1)
        append(log)
        faults.fail_next_write(errno.ENOSPC)
        with pytest.raises(StorageError):
            append(log)
        assert manager.offline and log.log_end_offset == 3
        with pytest.raises(StorageError):
            append(other)  # the whole directory, not one partition
        with pytest.raises(StorageError):
            await manager.wait_durable(log, 3)
        await manager.close()

    asyncio.run(run())


@pytest.mark.parametrize("target", ["index", "checkpoint", "dir"])
def test_a_failed_index_checkpoint_or_directory_sync_takes_the_log_dir_offline(tmp_path, target):
    async def run():
        manager = await started_manager(tmp_path, durability="durable", segment_bytes=300)
        log = manager.create("t", 0)
        for i in range(6):  # rolls: sealed indexes, a new recovery point, new files in the directory
            append(log, tag=i)
        faults.fail_next_fsync(errno.EIO, target=target)
        with pytest.raises(StorageError):
            await manager.wait_durable(log, log.log_end_offset)
        assert manager.offline
        assert log.durable_offset < log.log_end_offset
        await manager.close()

    asyncio.run(run())


def test_balanced_waiters_of_every_log_fail_when_the_group_commit_fails(tmp_path):
    async def run():
        manager = await started_manager(tmp_path, durability="balanced", flush_interval_ms=1)
        logs = [manager.create("t", p) for p in range(3)]
        for log in logs:
            append(log)
        faults.fail_next_fsync(errno.EIO)
        results = await asyncio.gather(*(manager.wait_durable(log, 3) for log in logs), return_exceptions=True)
        assert all(isinstance(r, StorageError) for r in results)
        assert all(log.durable_offset == 0 for log in logs)
        await manager.close()

    asyncio.run(run())


def test_two_concurrent_flushes_do_not_hide_an_error_from_each_other(tmp_path, monkeypatch):
    """Linux reports a writeback error once per open file: a second fsync of the same file that
    finishes first succeeds, though the first one is about to fail. Neither may acknowledge."""
    real_fsync = os.fsync
    calls = []
    second_returned = threading.Event()
    lock = threading.Lock()

    def fsync(fd):
        with lock:
            calls.append(fd)
            mine = len(calls)
        if mine == 1:
            second_returned.wait(1.0)  # the second fsync, if one runs concurrently, finishes first
            raise OSError(errno.EIO, "writeback failed")
        real_fsync(fd)
        if mine == 2:
            second_returned.set()

    async def run():
        manager = await started_manager(tmp_path, durability="durable", segment_bytes=250)
        log = manager.create("t", 0)
        monkeypatch.setattr(os, "fsync", fsync)
        append(log)
        first = asyncio.ensure_future(manager.wait_durable(log, 3))
        await asyncio.sleep(0)
        append(log)
        append(log)  # rolls: the log flusher syncs the sealed segment and the active one
        second = asyncio.ensure_future(manager.wait_durable(log, 9))
        results = await asyncio.gather(first, second, return_exceptions=True)
        assert all(isinstance(r, StorageError) for r in results), results
        deadline = asyncio.get_running_loop().time() + 5
        while log._syncing:  # every fsync job that started has finished
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.01)
        assert log.durable_offset == 0
        assert manager.offline
        monkeypatch.setattr(os, "fsync", real_fsync)
        await manager.close()

    asyncio.run(run())


def test_syncfs_fails_every_log_it_covered(tmp_path, monkeypatch):
    import tidelog.storage.fsync as fsync_module

    if fsync_module._syncfs is None:
        pytest.skip("no syncfs that reports errors here (Linux 5.8+)")

    def failing_syncfs(fd):
        import ctypes

        ctypes.set_errno(errno.EIO)
        return -1

    monkeypatch.setattr(fsync_module, "_syncfs", failing_syncfs)
    # the Python threads' syncfs (the C thread's: test_fsync_worker's syncfs error test)
    monkeypatch.setattr(manager_module, "FsyncWorker", None)

    async def run():
        manager = await started_manager(tmp_path, durability="balanced", flush_interval_ms=1)
        logs = [manager.create("wide", p) for p in range(16)]
        for log in logs:
            append(log, count=1)
        results = await asyncio.gather(*(manager.wait_durable(log, 1) for log in logs), return_exceptions=True)
        assert all(isinstance(r, StorageError) for r in results)
        assert manager.offline and all(log.durable_offset == 0 for log in logs)
        await manager.close()

    asyncio.run(run())


def test_the_fault_hook_reaches_every_file_a_syncfs_covers(tmp_path):
    async def run():
        manager = await started_manager(tmp_path, durability="balanced", flush_interval_ms=1, segment_bytes=300)
        logs = [manager.create("wide", p) for p in range(8)]
        for log in logs:
            for i in range(4):
                append(log, tag=i)  # rolled: sealed index files are in the job too
        faults.fail_next_fsync(errno.EIO, target="index")
        results = await asyncio.gather(*(manager.wait_durable(log, log.log_end_offset) for log in logs),
                                       return_exceptions=True)
        assert all(isinstance(r, StorageError) for r in results)
        await manager.close()

    asyncio.run(run())


def test_truncation_during_a_flush_does_not_count_unsynced_bytes_as_durable(tmp_path):
    log = open_log(tmp_path)
    for i in range(3):
        append(log, tag=i)
    pending = log.start_flush()  # an fsync of offsets 0..8 starts
    log.truncate_to(3)  # a follower cuts a divergent tail meanwhile
    for i in range(3):
        append(log, tag=10 + i)  # and appends the leader's records, not yet synced
    sync_fds(pending.fds)
    log.finish_flush(pending)
    assert log.durable_offset <= 3
    log.flush()
    assert log.durable_offset == log.log_end_offset == 12


def test_producers_waiting_at_shutdown_are_answered_by_the_final_flush(tmp_path):
    async def run():
        manager = await started_manager(tmp_path, durability="balanced", flush_interval_ms=60_000)
        log = manager.create("t", 0)
        append(log)
        waiter = asyncio.ensure_future(manager.wait_durable(log, 3))
        await asyncio.sleep(0)
        await manager.close()
        await waiter  # flushed by close: a success, not KAFKA_STORAGE_ERROR

    asyncio.run(run())


def test_new_segments_and_partitions_are_made_durable_in_their_directories(tmp_path, monkeypatch):
    async def run():
        manager = await started_manager(tmp_path, durability="durable", segment_bytes=300)
        synced = spy_fsyncs(monkeypatch)
        log = manager.create("t", 0)
        append(log)
        await manager.wait_durable(log, 3)
        assert f"{tmp_path}/" in synced and f"{log.dir}/" in synced  # the new partition's entry, its first segment
        synced.clear()
        for i in range(3):
            append(log, tag=i)
        assert len(log.segments) > 1
        await manager.wait_durable(log, log.log_end_offset)
        assert f"{log.dir}/" in synced  # the rolled segment's files
        synced.clear()
        log.config.retention_bytes = 0
        manager.apply_retention()
        append(log)
        await manager.wait_durable(log, log.log_end_offset)
        assert f"{log.dir}/" in synced  # the deleted segments
        synced.clear()
        manager.delete_topic("t")
        assert f"{tmp_path}/" in synced
        await manager.close()

    asyncio.run(run())


@pytest.mark.timeout(20)
def test_reads_never_trust_a_batch_length_on_disk(tmp_path):
    """A batch length of -12 made segment.read loop forever."""
    log = open_log(tmp_path, index_interval_bytes=1 << 20)
    for i in range(5):
        append(log, tag=i)
    log.flush()
    second = log.active_segment.offset_index  # no entries: a read scans from position 0
    assert len(second) == 0
    path = log.active_segment.log_path
    data = bytearray(path.read_bytes())
    first_size = int.from_bytes(data[8:12], "big") + 12
    for bad_length in (-12, -1, 0, 1 << 30):
        corrupt = bytearray(data)
        corrupt[first_size + 8 : first_size + 12] = bad_length.to_bytes(4, "big", signed=True)
        with open(path, "r+b") as f:
            f.write(corrupt)
        with pytest.raises(CorruptSegment) as e:
            log.read(4, 1 << 20, True)  # in the second batch, whose length is bad
        assert e.value.error_code.name == "corrupt_message"
        assert batch_count(log.read(0, 1, True)) == 1  # the good first batch is still served


def batch_count(data) -> int:
    from .storage_helpers import batch_spans

    return len(batch_spans(data))


def test_a_job_shares_its_files_out_without_syncing_one_twice(monkeypatch):
    import tidelog.storage.fsync as fsync_module

    fds = [(fd, "segment") for fd in range(100, 105)]
    monkeypatch.setattr(fsync_module, "_syncfs", None)  # per-file fsyncs, spread over the threads
    parts = fsync_module.split_sync(fds, 4)
    assert len(parts) == 4 and sorted(fd for part in parts for fd in part) == fds
    assert fsync_module.split_sync(fds[:1], 4) == [fds[:1]]
    monkeypatch.setattr(fsync_module, "_syncfs", lambda fd: 0)
    many = [(fd, "segment") for fd in range(100, 100 + fsync_module.SYNCFS_MIN_FILES)]
    assert fsync_module.split_sync(many, 4) == [many]  # one syncfs call
