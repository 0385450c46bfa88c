"""The C fsync thread (storage/fsync.py ``FsyncWorker``) and the group commit's one-file and syncfs jobs on it:
the thread reports each fsync's own outcome, serves what it was given before it stops, and through
the LogManager a waiter is answered only after its fsync returned, a segment closed or deleted
meanwhile keeps its descriptor until the job's end, and an fsync error fails every waiter of the
job and takes the directory offline. The tests hold an fsync with the worker's ``gate`` (a pipe
read, one byte, before each fsync); test_flush_threads.py holds the same for the Python threads."""

from __future__ import annotations

import asyncio
import errno
import os
import select
from functools import partial

import pytest

from tidelog.protocol.errors import KafkaError
from tidelog.storage import manager as manager_module
from tidelog.storage.errors import StorageError
from tidelog.storage.faults import faults
from tidelog.storage.fsync import FsyncWorker, syncfs_available
from tidelog.storage.log import LogConfig
from tidelog.storage.manager import LogManager

from .storage_helpers import append

pytestmark = pytest.mark.skipif(FsyncWorker is None, reason="the C extension _fsyncworker was not built")


@pytest.fixture(autouse=True)
def reset_faults():
    faults.reset()
    yield
    faults.reset()


def reaped(worker, count: int, timeout_s: float = 10.0) -> list:
    """The next ``count`` outcomes, waiting on the worker's eventfd as the event loop does."""
    outcomes: list = []
    while len(outcomes) < count:
        readable, _, _ = select.select([worker.fileno()], [], [], timeout_s)
        assert readable, f"{len(outcomes)} of {count} outcomes in {timeout_s} s"
        outcomes += worker.reap()
    return outcomes


def test_the_worker_reports_each_fsyncs_own_outcome_in_order(tmp_path):
    worker = FsyncWorker()
    try:
        good = os.open(tmp_path / "file", os.O_RDWR | os.O_CREAT)
        os.write(good, b"x" * 4096)
        pipe_r, pipe_w = os.pipe()  # fsync of a pipe: EINVAL
        worker.submit(1, good)
        worker.submit(2, pipe_r)
        worker.submit(3, good)
        outcomes = reaped(worker, 3)
        assert [(token, error) for token, error, _, _ in outcomes] == [(1, 0), (2, errno.EINVAL), (3, 0)]
        assert all(0 < started <= ended for _, _, started, ended in outcomes)
        assert outcomes[0][3] <= outcomes[1][2]  # one at a time, in order
        assert worker.native_id not in (0, os.getpid())
        assert worker.reap() == []
        for fd in (good, pipe_r, pipe_w):
            os.close(fd)
    finally:
        worker.close()


def test_the_worker_syncs_a_whole_filesystem_when_asked_and_reports_its_error(tmp_path):
    worker = FsyncWorker()
    try:
        directory = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
        closed = os.open(tmp_path / "file", os.O_RDWR | os.O_CREAT)
        os.close(closed)  # syncfs of a descriptor no longer open: EBADF
        worker.submit(1, directory, True)
        worker.submit(2, closed, True)
        worker.submit(3, directory, False)
        outcomes = reaped(worker, 3)
        assert [(token, error) for token, error, _, _ in outcomes] == [(1, 0), (2, errno.EBADF), (3, 0)]
        os.close(directory)
    finally:
        worker.close()


def test_closing_the_worker_serves_what_it_was_given_then_stops(tmp_path):
    gate_r, gate_w = os.pipe()
    worker = FsyncWorker(gate=gate_r)
    fd = os.open(tmp_path / "file", os.O_RDWR | os.O_CREAT)
    for token in range(5):
        worker.submit(token, fd)
    os.write(gate_w, b"\0" * 5)
    worker.close()  # joins the thread once the five are done
    worker.close()
    with pytest.raises(RuntimeError):
        worker.submit(9, fd)
    assert worker.reap() == []  # closed: its outcomes went with it
    for each in (fd, gate_r, gate_w):
        os.close(each)


class GatedWorker:
    """Managers started meanwhile get a C fsync thread that reads a byte from a pipe before each
    fsync: ``release(n)`` lets n fsyncs through; ``waiting()`` is what was submitted and not
    reaped (the job in the thread)."""

    def __init__(self, monkeypatch) -> None:
        self.gate_r, self.gate_w = os.pipe()
        self.outcomes: list[tuple] = []
        monkeypatch.setattr(manager_module, "FsyncWorker", partial(FsyncWorker, gate=self.gate_r))

    def watch(self, manager: LogManager) -> None:
        worker, outcomes = manager._worker, self.outcomes

        class Noted:  # the outcomes, as the manager reaps them
            def __getattr__(self, name):
                return getattr(worker, name)

            def reap(self):
                got = worker.reap()
                outcomes.extend(got)
                return got

        manager._worker = Noted()

    def release(self, count: int = 1) -> None:
        os.write(self.gate_w, b"\0" * count)

    def close(self) -> None:
        os.close(self.gate_r)
        os.close(self.gate_w)


@pytest.fixture
def gate(monkeypatch):
    gated = GatedWorker(monkeypatch)
    yield gated
    gated.close()


async def started_log(tmp_path, gate: GatedWorker):
    """A started manager and one balanced log with a batch made durable (the new directory's
    first job syncs three files, so it runs in the Python threads)."""
    manager = LogManager(tmp_path, LogConfig(durability="balanced"))
    await manager.start()
    gate.watch(manager)
    log = manager.create("t", 0)
    append(log)
    await manager.wait_durable(log, log.log_end_offset)
    return manager, log


async def eventually(condition, timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.01)


async def turns(count: int = 50) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


def test_a_waiter_is_answered_only_after_its_fsync_returned(tmp_path, gate):
    async def run():
        manager, log = await started_log(tmp_path, gate)
        append(log)
        answered: list[int] = []
        waiter = manager.durable_waiter([(log, log.log_end_offset)])
        waiter.add_done_callback(lambda _: answered.append(os.times().elapsed))
        await turns()
        assert manager._worker_jobs and not waiter.done() and log.durable_offset == 3  # held at the gate
        gate.release()
        await asyncio.wait_for(waiter, 10)
        assert [(error, ended > started) for _, error, started, ended in gate.outcomes] == [(0, True)]
        assert log.durable_offset == 6 and not manager._worker_jobs
        await manager.close()

    asyncio.run(run())


@pytest.mark.parametrize("how", ["closed", "deleted"])
def test_a_segment_closed_while_its_fsync_runs_keeps_its_descriptor_until_the_job_ends(tmp_path, gate, how):
    async def run():
        manager, log = await started_log(tmp_path, gate)
        segment = log.active_segment
        file = os.fstat(segment.fd).st_ino
        append(log)
        waiter = asyncio.ensure_future(manager.wait_durable(log, log.log_end_offset))
        await turns()
        held = segment.sync_fd
        assert held is not None and manager._worker_jobs
        if how == "closed":
            segment.close_file()  # what OpenFiles does to an idle segment
        else:
            manager.delete_partition("t", 0)
        reused = os.open(tmp_path / "other", os.O_RDWR | os.O_CREAT)  # takes the lowest free number
        assert reused != held and os.fstat(held).st_ino == file  # still the segment's file under the fsync
        gate.release()
        if how == "closed":
            await asyncio.wait_for(waiter, 10)
            assert log.durable_offset == 6
        else:
            with pytest.raises((StorageError, KafkaError)):  # the partition went away
                await asyncio.wait_for(waiter, 10)
        await eventually(lambda: segment.sync_fd is None)  # the job has ended, and closed it
        assert [error for _, error, _, _ in gate.outcomes] == [0]  # fsync(2) of an open descriptor
        with pytest.raises(OSError):
            os.fstat(held)
        os.close(reused)
        await manager.close()

    asyncio.run(run())


def test_an_fsync_error_fails_every_waiter_of_its_job_and_takes_the_directory_offline(tmp_path, gate):
    """The error is the kernel's: the job's descriptor is made a pipe's while the fsync is held,
    so fsync(2) fails with EINVAL in the C thread."""
    async def run():
        manager, log = await started_log(tmp_path, gate)
        append(log)
        first = manager.durable_waiter([(log, log.log_end_offset)])
        await turns()
        append(log)
        second = manager.durable_waiter([(log, log.log_end_offset)])  # the next job's
        held = log.active_segment.sync_fd
        saved = os.dup(held)
        pipe_r, pipe_w = os.pipe()
        os.dup2(pipe_r, held)  # the number now names a pipe
        gate.release()
        with pytest.raises(StorageError):
            await asyncio.wait_for(first, 10)
        with pytest.raises(StorageError):
            await asyncio.wait_for(second, 10)  # no job after an error: the directory is offline
        assert manager.offline and log.durable_offset == 3
        assert [error for _, error, _, _ in gate.outcomes] == [errno.EINVAL]
        os.dup2(saved, held)  # the segment's file again, for its close
        for fd in (saved, pipe_r, pipe_w):
            os.close(fd)
        await manager.close()

    asyncio.run(run())


def test_a_job_the_worker_cannot_take_releases_its_descriptors_and_leaves_its_segments_to_the_next(tmp_path, gate):
    async def run():
        manager, log = await started_log(tmp_path, gate)
        worker = manager._worker

        class Full:
            def __getattr__(self, name):
                return getattr(worker, name)

            def submit(self, token, fd, whole=False):
                raise BufferError("FsyncWorker: too many fsyncs in flight")

        manager._worker = Full()
        append(log)
        with pytest.raises(StorageError):
            await manager.wait_durable(log, log.log_end_offset)
        assert log.active_segment.sync_fd is None and log.active_segment.sync_jobs == 0
        assert not manager._worker_jobs and not manager.offline
        manager._worker = worker
        append(log)
        gate.release()
        await asyncio.wait_for(manager.wait_durable(log, log.log_end_offset), 10)
        assert log.durable_offset == 9
        await manager.close()

    asyncio.run(run())


def test_an_armed_fault_sends_the_job_to_the_python_threads(tmp_path, gate):
    """The fault hook runs in sync_fds: with a fault armed a one-file job goes there (and fails)."""
    async def run():
        manager, log = await started_log(tmp_path, gate)
        faults.fail_next_fsync(errno.EIO, target="segment")
        append(log)
        with pytest.raises(StorageError):
            await asyncio.wait_for(manager.wait_durable(log, log.log_end_offset), 10)
        assert manager.offline and gate.outcomes == []
        await manager.close()

    asyncio.run(run())


PARTITIONS = 12  # a job over this many logs is one syncfs (fsync.SYNCFS_MIN_FILES) with or without the C thread


def spy_python_syncs(monkeypatch) -> list[int]:
    """The number of targets of each ``sync_filesystem`` call (the Python threads' syncfs), noted
    in the list returned while the real call still runs."""
    python_syncs: list[int] = []
    real = manager_module.sync_filesystem
    monkeypatch.setattr(manager_module, "sync_filesystem",
                        lambda fd, targets: python_syncs.append(len(targets)) or real(fd, targets))
    return python_syncs


async def started_logs(tmp_path, gate: GatedWorker, monkeypatch, count: int = PARTITIONS):
    """A started manager and ``count`` balanced logs, each with a batch made durable; what
    ``sync_filesystem`` (the Python threads' syncfs) was called for is noted in the list returned."""
    python_syncs = spy_python_syncs(monkeypatch)
    manager = LogManager(tmp_path, LogConfig(durability="balanced"))
    await manager.start()
    logs = [manager.create("t", p) for p in range(count)]
    for log in logs:
        append(log)
    gate.watch(manager)
    waiter = manager.durable_waiter([(log, log.log_end_offset) for log in logs])
    gate.release()
    await asyncio.wait_for(waiter, 10)
    return manager, logs, python_syncs


@pytest.mark.skipif(not syncfs_available(), reason="syncfs reports write-back errors from Linux 5.8 on")
@pytest.mark.parametrize("count", [2, 7, PARTITIONS])
def test_a_job_over_several_logs_is_one_syncfs_in_the_c_thread_answered_only_after_it_returned(tmp_path, gate,
                                                                                              monkeypatch, count):
    """From two logs on (fsync.WORKER_SYNCFS_MIN_LOGS): not fsyncs side by side in the Python
    threads, each of which wakes and ends holding the GIL, a wait for the busy event loop."""
    python_fsyncs: list[int] = []
    real = manager_module.sync_fds
    monkeypatch.setattr(manager_module, "sync_fds", lambda fds: python_fsyncs.append(len(fds)) or real(fds))

    async def run():
        manager, logs, python_syncs = await started_logs(tmp_path, gate, monkeypatch, count)
        for log in logs:
            append(log)
        waiter = manager.durable_waiter([(log, log.log_end_offset) for log in logs])
        await turns()
        assert len(manager._worker_jobs) == 1 and not waiter.done()  # held at the gate
        assert all(log.durable_offset == 3 for log in logs)
        gate.release()
        await asyncio.wait_for(waiter, 10)
        assert all(log.durable_offset == 6 for log in logs) and not manager._worker_jobs
        assert [error for _, error, _, _ in gate.outcomes] == [0, 0] and python_syncs == [] and python_fsyncs == []
        await manager.close()

    asyncio.run(run())


@pytest.mark.skipif(not syncfs_available(), reason="syncfs reports write-back errors from Linux 5.8 on")
def test_a_syncfs_error_in_the_c_thread_fails_every_waiter_and_takes_the_directory_offline(tmp_path, gate,
                                                                                          monkeypatch):
    """The error is the kernel's: the data directory's descriptor is closed while the syncfs is
    held, so syncfs(2) fails with EBADF in the C thread."""
    async def run():
        manager, logs, _ = await started_logs(tmp_path, gate, monkeypatch)
        for log in logs:
            append(log)
        waiter = manager.durable_waiter([(log, log.log_end_offset) for log in logs])
        await turns()
        fs_fd = manager._fs_fd
        saved = os.dup(fs_fd)
        os.close(fs_fd)
        gate.release()
        with pytest.raises(StorageError, match="syncfs"):
            await asyncio.wait_for(waiter, 10)
        assert manager.offline and all(log.durable_offset == 3 for log in logs)
        assert [error for _, error, _, _ in gate.outcomes] == [0, errno.EBADF]
        os.dup2(saved, fs_fd)  # the manager's descriptor again, for its close
        os.close(saved)
        await manager.close()

    asyncio.run(run())


@pytest.mark.skipif(not syncfs_available(), reason="syncfs reports write-back errors from Linux 5.8 on")
def test_an_armed_fault_sends_a_syncfs_job_to_the_python_threads(tmp_path, gate, monkeypatch):
    async def run():
        manager, logs, python_syncs = await started_logs(tmp_path, gate, monkeypatch)
        faults.fail_next_fsync(errno.EIO, target="segment")
        for log in logs:
            append(log)
        with pytest.raises(StorageError):
            await asyncio.wait_for(manager.wait_durable_many([(log, log.log_end_offset) for log in logs]), 10)
        assert manager.offline and python_syncs == [PARTITIONS] and len(gate.outcomes) == 1
        await manager.close()

    asyncio.run(run())


@pytest.mark.skipif(not syncfs_available(), reason="syncfs reports write-back errors from Linux 5.8 on")
def test_an_extension_built_before_syncfs_jobs_gets_one_file_jobs_only(tmp_path, gate, monkeypatch):
    """A venv whose _fsyncworker was not rebuilt (its submit takes a token and a descriptor, and
    the module has no SYNCFS): a job over many logs goes to the Python threads, not to a submit
    that would refuse it."""
    class OldWorker:
        def __init__(self, worker):
            self._worker = worker

        def __getattr__(self, name):
            return getattr(self._worker, name)

        def submit(self, token, fd):
            self._worker.submit(token, fd)

    async def run():
        monkeypatch.setattr(manager_module, "WORKER_SYNCFS", False)
        python_syncs = spy_python_syncs(monkeypatch)
        manager = LogManager(tmp_path, LogConfig(durability="balanced"))
        await manager.start()
        gate.watch(manager)
        manager._worker = OldWorker(manager._worker)
        logs = [manager.create("t", p) for p in range(PARTITIONS)]
        for log in logs:
            append(log)
        await asyncio.wait_for(manager.wait_durable_many([(log, log.log_end_offset) for log in logs]), 10)
        assert len(python_syncs) == 1 and all(log.durable_offset == 3 for log in logs)  # one syncfs, in Python
        append(logs[0])
        waiter = manager.durable_waiter([(logs[0], logs[0].log_end_offset)])
        gate.release()  # a one-file job: the C thread still
        await asyncio.wait_for(waiter, 10)
        assert [error for _, error, _, _ in gate.outcomes] == [0] and logs[0].durable_offset == 6
        await manager.close()

    asyncio.run(run())
