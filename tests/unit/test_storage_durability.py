"""LogManager: discovery, clean/unclean start, durability profiles, retention, faults."""

from __future__ import annotations

import asyncio
import errno
import os

import pytest

from tidelog.storage.errors import StorageError
from tidelog.storage.faults import faults
from tidelog.storage.log import LogConfig
from tidelog.storage.manager import CLEAN_SHUTDOWN_FILE, LogManager

from .storage_helpers import all_offsets, append, open_log, spy_fsyncs


@pytest.fixture(autouse=True)
def reset_faults():
    faults.reset()
    yield
    faults.reset()


async def eventually(condition, timeout_s: float = 5.0) -> None:
    """Poll ``condition`` until it holds (background tasks run late on a loaded machine)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.01)


def count_fsyncs(monkeypatch) -> list[int]:
    """fsyncs of files (directory fsyncs, after files are created or removed, are not counted)."""
    calls = []
    real_fsync = os.fsync

    def fsync(fd):
        if not os.path.isdir(f"/proc/self/fd/{fd}"):
            calls.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return calls


def test_open_all_discovers_logs_and_detects_unclean_shutdown(tmp_path):
    async def run():
        manager = LogManager(tmp_path, LogConfig())
        manager.open_all({})
        for partition in range(2):
            append(manager.create("my-topic.v2", partition), count=2)
        await manager.close()
        assert (tmp_path / CLEAN_SHUTDOWN_FILE).exists()

    asyncio.run(run())
    (tmp_path / "old-0.0123abcd-delete").mkdir()
    (tmp_path / "__tidelog_metadata").mkdir()
    manager = LogManager(tmp_path, LogConfig())
    manager.open_all({"my-topic.v2": LogConfig(retention_ms=5)})
    assert not (tmp_path / CLEAN_SHUTDOWN_FILE).exists()
    assert not (tmp_path / "old-0.0123abcd-delete").exists()
    assert sorted((log.topic, log.partition) for log in manager.logs()) == [("my-topic.v2", 0), ("my-topic.v2", 1)]
    assert manager.get("my-topic.v2", 1).log_end_offset == 2
    assert manager.get("my-topic.v2", 1).config.retention_ms == 5
    manager.delete_topic("my-topic.v2")
    assert list(manager.logs()) == [] and not list(tmp_path.glob("my-topic*"))


def test_throughput_profile_never_fsyncs(tmp_path, monkeypatch):
    async def run():
        manager = LogManager(tmp_path, LogConfig(durability="throughput"))
        await manager.start()
        log = manager.create("t", 0)
        fsyncs = count_fsyncs(monkeypatch)
        append(log)
        await manager.wait_durable(log, log.log_end_offset)
        assert fsyncs == []
        await manager.close()

    asyncio.run(run())


def test_durable_profile_fsyncs_before_returning_and_coalesces(tmp_path, monkeypatch):
    async def run():
        manager = LogManager(tmp_path, LogConfig(durability="durable"))
        await manager.start()
        log = manager.create("t", 0)
        fsyncs = count_fsyncs(monkeypatch)
        append(log)
        await manager.wait_durable(log, log.log_end_offset)
        assert log.durable_offset == log.log_end_offset == 3 and len(fsyncs) == 1
        for _ in range(10):
            append(log)
        await asyncio.gather(*(manager.wait_durable(log, 3 * (i + 2)) for i in range(10)))
        assert log.durable_offset == 33 and len(fsyncs) <= 3
        await manager.close()

    asyncio.run(run())


def test_balanced_profile_group_commits_many_logs_in_one_job(tmp_path, monkeypatch):
    import tidelog.storage.fsync as fsync_module
    import tidelog.storage.manager as manager_module

    monkeypatch.setattr(fsync_module, "SYNCFS_MIN_FILES", 1000)  # count the fsyncs one by one
    monkeypatch.setattr(manager_module, "WORKER_SYNCFS_MIN_LOGS", 1000)  # not one syncfs in the C thread

    async def run():
        manager = LogManager(tmp_path, LogConfig(durability="balanced", flush_interval_ms=300))
        await manager.start()
        logs = [manager.create("t", p) for p in range(4)]
        fsyncs = count_fsyncs(monkeypatch)
        waits = []
        for log in logs:
            append(log)
            waits.append(asyncio.ensure_future(manager.wait_durable(log, log.log_end_offset)))
        await asyncio.sleep(0.005)
        assert not any(w.done() for w in waits) and fsyncs == []  # still inside the window
        await asyncio.wait_for(asyncio.gather(*waits), 2)
        assert len(fsyncs) == 4 and all(log.durable_offset == 3 for log in logs)
        await manager.close()

    asyncio.run(run())


def test_balanced_profile_starts_an_fsync_at_once_and_batches_what_arrives_meanwhile(tmp_path, monkeypatch):
    """The default (flush.ms 0) is a natural group commit: the first write's fsync starts with
    no window, and everything written while it runs shares the next job."""
    import threading

    import tidelog.storage.manager as manager_module

    jobs: list[set[int]] = []  # the descriptors' files (inode numbers) of each job's sync call
    started, release = threading.Event(), threading.Event()
    real_sync_fds = manager_module.sync_fds

    def sync_fds(fds):  # in an fsync thread
        jobs.append({os.fstat(fd).st_ino for fd, _ in fds})
        started.set()
        release.wait(10)
        real_sync_fds(fds)

    monkeypatch.setattr(manager_module, "FsyncWorker", None)  # every job in the Python threads, through sync_fds

    async def run():
        manager = LogManager(tmp_path, LogConfig(durability="balanced"))
        await manager.start()
        first, second = manager.create("t", 0), manager.create("t", 1)
        for log in (first, second):  # the new directories' first flush, out of the way
            append(log)
            await manager.wait_durable(log, log.log_end_offset)
        monkeypatch.setattr(manager_module, "sync_fds", sync_fds)
        ended: list[bool] = []  # one entry a job (its files may be synced by several threads)
        manager.fsync_observer = lambda seconds, ok: ended.append(ok)
        release.set()
        append(first)
        await asyncio.wait_for(manager.wait_durable(first, first.log_end_offset), 5)
        assert len(jobs) == 1
        release.clear()
        started.clear()
        append(first)
        wait_first = asyncio.ensure_future(manager.wait_durable(first, first.log_end_offset))
        await eventually(started.is_set)  # no timer: the job starts with no window
        waits = []
        for log in (first, second, first, second):  # while that job runs
            append(log)
            waits.append(asyncio.ensure_future(manager.wait_durable(log, log.log_end_offset)))
        for _ in range(20):
            await asyncio.sleep(0)
        assert len(jobs) == 2 and not wait_first.done()  # one job at a time
        release.set()
        await asyncio.wait_for(asyncio.gather(wait_first, *waits), 5)
        segment_files = {os.stat(log.active_segment.log_path).st_ino for log in (first, second)}
        assert ended == [True] * 3  # the four appends, in one job after it
        assert len(jobs) == 4 and jobs[2] | jobs[3] == segment_files
        assert first.durable_offset == 15 and second.durable_offset == 9
        await manager.close()

    asyncio.run(run())


def test_failed_write_raises_and_leaves_the_log_consistent(tmp_path):
    log = open_log(tmp_path)
    append(log)
    log.flush()
    faults.fail_next_write(errno.ENOSPC)
    with pytest.raises(StorageError) as e:
        append(log)
    assert e.value.error_code.name == "kafka_storage_error"
    assert log.log_end_offset == 3
    assert log.active_segment.log_path.stat().st_size == log.active_segment.size_bytes  # no torn batch
    log.close()  # offline: nothing more is written; the next start recovers
    assert all_offsets(open_log(tmp_path, recover=True)) == list(range(3))


def test_a_short_write_is_completed_not_torn(tmp_path):
    log = open_log(tmp_path)
    append(log)
    faults.short_next_write(10)
    assert append(log) == 3
    assert all_offsets(log) == list(range(6))
    log.close()
    assert all_offsets(open_log(tmp_path, recover=True)) == list(range(6))


def test_retention_by_time(tmp_path):
    log = open_log(tmp_path, segment_bytes=500, retention_ms=1_000)
    for i in range(20):
        append(log, count=2, timestamp_ms=10_000 + 100 * i, tag=i)
    segments = log.segment_summaries()
    now_ms = segments[2].max_timestamp + 1_001  # the first three segments have expired
    freed = log.apply_retention(now_ms)
    assert freed == sum(s.size_bytes for s in segments[:3])
    assert log.log_start_offset == segments[3].base_offset
    assert log.apply_retention(10**12) > 0
    assert len(log.segments) == 1  # never the active segment


def test_retention_by_bytes(tmp_path):
    log = open_log(tmp_path, segment_bytes=500, retention_bytes=1_000, retention_ms=-1)
    for i in range(20):
        append(log, count=2, tag=i)
    log.apply_retention(0)
    assert log.size_bytes >= 1_000
    assert log.size_bytes - log.segments[0].size_bytes < 1_000
    assert all_offsets(log) == list(range(log.log_start_offset, 40))


def test_manager_retention_task_runs(tmp_path):
    async def run():
        manager = LogManager(tmp_path, LogConfig(segment_bytes=300, retention_bytes=0), retention_check_interval_ms=10)
        await manager.start()
        log = manager.create("t", 0)
        for i in range(10):
            append(log, tag=i)
        await eventually(lambda: len(log.segments) == 1)
        assert log.log_start_offset == log.active_segment.base_offset
        await manager.close()

    asyncio.run(run())


def test_rolled_segments_are_flushed_in_every_profile(tmp_path):
    async def run():
        manager = LogManager(tmp_path, LogConfig(durability="throughput", segment_bytes=400))
        await manager.start()
        log = manager.create("t", 0)
        for i in range(10):
            append(log, tag=i)
        await eventually(lambda: log.durable_offset >= log.active_segment.base_offset > 0)
        assert int((log.dir / "recovery-point").read_text()) >= log.segments[-2].base_offset
        await manager.close()

    asyncio.run(run())


def test_set_config_applies_to_future_rolls(tmp_path):
    log = open_log(tmp_path)
    for i in range(5):
        append(log, tag=i)
    assert len(log.segments) == 1
    log.set_config(LogConfig(segment_bytes=200))
    append(log)
    append(log)
    assert len(log.segments) == 3


def test_durable_waiters_interleaved_with_appends_all_finish(tmp_path):
    """Appends keep arriving while fsyncs finish: every waiter returns (no spin on a done flush)."""

    async def run():
        manager = LogManager(tmp_path, LogConfig(durability="durable"))
        manager.open_all({})
        await manager.start()
        log = manager.create("t", 0)

        async def produce_one(i):
            offset = append(log, count=1, tag=i)
            await manager.wait_durable(log, offset + 1)
            return offset

        async def stream():
            waiters = []
            for i in range(300):
                waiters.append(asyncio.ensure_future(produce_one(i)))
                if i % 7 == 0:
                    await asyncio.sleep(0)  # let some fsyncs complete between appends
            return await asyncio.gather(*waiters)

        offsets = await asyncio.wait_for(stream(), 30)
        assert sorted(offsets) == list(range(300))
        assert log.durable_offset == 300
        await manager.close()

    asyncio.run(run())


def test_many_dirty_logs_are_synced_with_one_syncfs(tmp_path, monkeypatch):
    """A group commit over many partitions: one syncfs, not an fsync per file, and all durable."""
    import tidelog.storage.fsync as fsync_module

    calls = {"syncfs": 0}
    real_syncfs = fsync_module._syncfs
    if real_syncfs is None:
        pytest.skip("no syncfs on this platform")

    def counting_syncfs(fd):
        calls["syncfs"] += 1
        return real_syncfs(fd)

    monkeypatch.setattr(fsync_module, "_syncfs", counting_syncfs)
    fsyncs = count_fsyncs(monkeypatch)

    async def run():
        manager = LogManager(tmp_path, LogConfig(durability="balanced", flush_interval_ms=1))
        manager.open_all({})
        await manager.start()
        logs = [manager.create("wide", p) for p in range(32)]
        offsets = [append(log, count=1) for log in logs]
        await asyncio.wait_for(asyncio.gather(*(manager.wait_durable(log, o + 1) for log, o in zip(logs, offsets))), 10)
        assert all(log.durable_offset == 1 for log in logs)
        fsyncs_before_close = len(fsyncs)
        await manager.close()
        return fsyncs_before_close

    fsyncs_in_group_commits = asyncio.run(run())
    assert calls["syncfs"] >= 1
    assert fsyncs_in_group_commits < 32, "one fsync per partition: syncfs was not used"


def test_removing_the_clean_shutdown_marker_is_made_durable(tmp_path, monkeypatch):
    """Else a power loss after the start could bring the marker back and skip the next recovery."""
    async def close_cleanly():
        manager = LogManager(tmp_path, LogConfig())
        manager.open_all({})
        await manager.close()

    asyncio.run(close_cleanly())
    synced = spy_fsyncs(monkeypatch)
    manager = LogManager(tmp_path, LogConfig())
    manager.open_all({})
    assert not (tmp_path / CLEAN_SHUTDOWN_FILE).exists()
    assert f"{tmp_path}/" in synced


def test_writing_the_clean_shutdown_marker_is_failable(tmp_path):
    async def run():
        manager = LogManager(tmp_path, LogConfig())
        manager.open_all({})
        faults.fail_next_write(errno.EIO, target="checkpoint")
        await manager.close()
        assert manager.offline

    asyncio.run(run())
    assert not (tmp_path / CLEAN_SHUTDOWN_FILE).exists()
