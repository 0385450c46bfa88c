"""The group commit's hand-off to its flush threads: who holds and closes a job's descriptors,
when its waiters are answered, and an fsync error reaching every waiter of its job. These run
the Python flush threads (every job there: the C fsync thread is switched off with os.fsync
gated); tests/unit/test_fsync_worker.py holds the same for the C thread's one-file jobs."""

from __future__ import annotations

import asyncio
import errno
import os
import threading

import pytest

from tidelog.protocol.errors import KafkaError
from tidelog.storage.errors import StorageError
from tidelog.storage.faults import faults
from tidelog.storage.fsync import FlushThreads
from tidelog.storage.log import LogConfig, PartitionLog
from tidelog.storage import manager as manager_module
from tidelog.storage.manager import LogManager

from .storage_helpers import append


@pytest.fixture(autouse=True)
def reset_faults():
    faults.reset()
    yield
    faults.reset()


async def eventually(condition, timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.01)


async def started_log(tmp_path, **config) -> tuple[LogManager, PartitionLog]:
    """A started manager and one balanced log with a batch made durable (the new directory's
    first flush out of the way)."""
    manager = LogManager(tmp_path, LogConfig(durability="balanced", **config))
    await manager.start()
    log = manager.create("t", 0)
    append(log)
    await manager.wait_durable(log, log.log_end_offset)
    return manager, log


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))  # counting its own listing's, each time


def inode(fd: int) -> int | None:
    try:
        return os.fstat(fd).st_ino
    except OSError:
        return None  # closed


class GatedFsync:
    """os.fsync that, once armed, holds each call until ``release`` is set; it notes each
    descriptor's inode when the call begins and again when it proceeds, and when it returns.
    Managers started meanwhile run every job in the Python flush threads (no C fsync thread)."""

    def __init__(self, monkeypatch) -> None:
        monkeypatch.setattr(manager_module, "FsyncWorker", None)
        self.real = os.fsync
        self.armed = False
        self.started, self.release = threading.Event(), threading.Event()
        self.events: list[tuple] = []
        monkeypatch.setattr(os, "fsync", self)

    def __call__(self, fd: int) -> None:
        if not self.armed or os.path.isdir(f"/proc/self/fd/{fd}"):
            return self.real(fd)
        before = os.fstat(fd).st_ino
        self.started.set()
        assert self.release.wait(10)
        after = os.fstat(fd).st_ino  # EBADF if the descriptor was closed under the fsync
        self.real(fd)
        self.events.append(("fsync returned", fd, before, after))


def test_a_waiter_is_answered_only_after_its_fsync_returned(tmp_path, monkeypatch):
    gate = GatedFsync(monkeypatch)

    async def run():
        manager, log = await started_log(tmp_path)
        gate.armed = True
        append(log)
        waiter = manager.durable_waiter([(log, log.log_end_offset)])
        waiter.add_done_callback(lambda _: gate.events.append(("answered",)))
        await eventually(gate.started.is_set)
        for _ in range(50):  # the loop turns on while the fsync is held
            await asyncio.sleep(0)
        assert not waiter.done() and log.durable_offset == 3
        gate.release.set()
        await asyncio.wait_for(waiter, 10)
        assert [event[0] for event in gate.events] == ["fsync returned", "answered"]
        assert log.durable_offset == 6
        await manager.close()

    asyncio.run(run())


@pytest.mark.parametrize("how", ["closed", "deleted"])
def test_a_segment_closed_while_its_fsync_runs_keeps_its_descriptor_until_the_job_ends(tmp_path, monkeypatch, how):
    """The job syncs the segment's own descriptor (not a duplicate): closing the segment meanwhile
    (an idle-file eviction, a deletion) must leave it open, its number not reused, until the
    fsync has returned, and the job's end must close it."""
    gate = GatedFsync(monkeypatch)

    async def run():
        manager, log = await started_log(tmp_path)
        baseline = open_descriptors()
        segment = log.active_segment
        file = inode(segment.fd)
        gate.armed = True
        append(log)
        waiter = asyncio.ensure_future(manager.wait_durable(log, log.log_end_offset))
        await eventually(gate.started.is_set)
        held = segment.sync_fd
        if how == "closed":
            segment.close_file()  # what OpenFiles does to an idle segment
        else:
            manager.delete_partition("t", 0)
        reused = os.open(tmp_path / "other", os.O_RDWR | os.O_CREAT)  # takes the lowest free number
        assert reused != held
        gate.release.set()
        if how == "closed":
            await asyncio.wait_for(waiter, 10)
            assert log.durable_offset == 6
        else:
            with pytest.raises((StorageError, KafkaError)):  # the partition went away
                await asyncio.wait_for(waiter, 10)
        await eventually(lambda: segment.sync_fd is None)  # the job has ended
        assert gate.events == [("fsync returned", held, file, file)]  # the segment's file all along
        assert inode(held) != file  # and closed at the job's end
        os.close(reused)
        if how == "closed":
            assert open_descriptors() == baseline - 1
            append(log)  # the segment reopens its file
            await manager.wait_durable(log, log.log_end_offset)
            assert inode(segment.fd) == file and open_descriptors() == baseline
        else:
            assert open_descriptors() == baseline - 1
        await manager.close()

    asyncio.run(run())


def test_a_job_closes_the_descriptors_it_opened_and_leaves_the_active_segments(tmp_path, monkeypatch):
    """A job over a rolled segment opens its index files and the partition directory: those are
    closed once the job ends; the active segment's descriptor stays the segment's."""
    gate = GatedFsync(monkeypatch)

    async def run():
        manager, log = await started_log(tmp_path, segment_bytes=200)
        baseline = open_descriptors()
        active_fd = log.active_segment.fd
        gate.armed = True
        gate.release.set()
        for _ in range(4):  # rolls
            append(log, value_size=100)
        await manager.wait_durable(log, log.log_end_offset)
        assert len(log.segments) > 2 and gate.events
        assert all(s.file_open for s in log.segments)  # none idle yet: each segment's own, no more
        assert open_descriptors() == baseline + len(log.segments) - 1
        assert log.segments[0].fd == active_fd and all(s.sync_fd is None for s in log.segments)
        await manager.close()

    asyncio.run(run())


@pytest.mark.parametrize("logs_in_job", [1, 3])
def test_an_fsync_error_fails_every_waiter_of_its_job_and_takes_the_directory_offline(tmp_path, monkeypatch,
                                                                                       logs_in_job):
    """A job over one or several logs (several: their fsyncs side by side in flush threads): an EIO
    from one fsync fails every waiter of the job, of every log, and closes its descriptors; the
    job before it, which synced, answers its waiter."""
    gate = GatedFsync(monkeypatch)

    async def run():
        manager = LogManager(tmp_path, LogConfig(durability="balanced"))
        await manager.start()
        logs = [manager.create("t", p) for p in range(1 + logs_in_job)]
        for log in logs:
            append(log)
        await manager.wait_durable_many([(log, log.log_end_offset) for log in logs])
        baseline = open_descriptors()
        gate.armed = True
        append(logs[0])
        before = manager.durable_waiter([(logs[0], logs[0].log_end_offset)])
        await eventually(gate.started.is_set)  # that job runs; the next one gathers these:
        waiters = []
        for log in logs[1:] + logs[1:]:  # two waiters a log
            append(log)
            waiters.append(manager.durable_waiter([(log, log.log_end_offset)]))
        faults.fail_next_fsync(errno.EIO, target="segment")  # one of the next job's files
        gate.release.set()
        await asyncio.wait_for(before, 10)
        results = await asyncio.wait_for(asyncio.gather(*waiters, return_exceptions=True), 10)
        assert all(isinstance(result, StorageError) for result in results), results
        assert manager.offline and logs[0].durable_offset == 6
        assert all(log.durable_offset == 3 for log in logs[1:])
        assert len(gate.events) == 1 + logs_in_job - 1  # the first job's, and the next one's other files
        assert open_descriptors() == baseline
        await manager.close()

    asyncio.run(run())


def test_a_job_no_thread_could_take_releases_its_descriptors_and_leaves_its_segments_to_the_next(tmp_path,
                                                                                                   monkeypatch):
    monkeypatch.setattr(manager_module, "FsyncWorker", None)  # the Python threads' run (the C thread's: test_fsync_worker)

    async def run():
        manager, log = await started_log(tmp_path)
        baseline = open_descriptors()

        def no_thread(calls, on_done):
            raise RuntimeError("can't start new thread")

        monkeypatch.setattr(manager._flush_threads, "run", no_thread)
        append(log)
        with pytest.raises(StorageError):
            await manager.wait_durable(log, log.log_end_offset)
        assert log.active_segment.sync_fd is None and log.active_segment.sync_jobs == 0
        assert open_descriptors() == baseline and not manager.offline
        monkeypatch.undo()
        append(log)
        await asyncio.wait_for(manager.wait_durable(log, log.log_end_offset), 10)
        assert log.durable_offset == 9
        await manager.close()

    asyncio.run(run())


def test_flush_threads_run_a_job_side_by_side_and_end_it_once():
    threads = FlushThreads(4, "test-flush")
    try:
        ran: list[str] = []
        ends: list[tuple] = []
        done = threading.Event()
        release = threading.Barrier(3, timeout=10)  # all three calls run at once, in three threads

        def call(n):
            def sync():
                release.wait()
                ran.append(threading.current_thread().name)
                if n == 1:
                    raise OSError(errno.EIO, "injected")
            return sync

        def on_done(error, seconds):
            ends.append((error, seconds, threading.current_thread().name))
            done.set()

        threads.run([call(0), call(1), call(2)], on_done)
        assert done.wait(10)
        assert len(ends) == 1 and isinstance(ends[0][0], OSError) and ends[0][1] >= 0
        assert sorted(ran) == ["test-flush-0", "test-flush-1", "test-flush-2"]
        names = []
        for _ in range(3):  # a job of one file: always the first thread
            done.clear()
            threads.run([lambda: None], lambda error, seconds: (names.append(threading.current_thread().name),
                                                                done.set()))
            assert done.wait(10)
        assert names == ["test-flush-0"] * 3
        with pytest.raises(ValueError):
            threads.run([lambda: None] * 5, on_done)
    finally:
        threads.shutdown()
    assert not any(t.name.startswith("test-flush") for t in threading.enumerate())
