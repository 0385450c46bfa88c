"""The C fsync thread (storage/_fsyncworker.c ``FsyncWorker``) at its edges, where
test_fsync_worker.py does not go: 64 fsyncs in flight and the 65th refused (BufferError) until an
outcome is reaped, outcomes of many fsyncs reaped at once and each exactly once while submits and
reaps come from two threads, a worker dropped with fsyncs queued (served, then the thread joined),
one never initialised, one initialised twice, and a forked child's copy (no thread behind it)."""

from __future__ import annotations

import errno
import gc
import os
import threading

import pytest

from tidelog.storage.fsync import FsyncWorker

from .test_fsync_worker import reaped

pytestmark = pytest.mark.skipif(FsyncWorker is None, reason="the C extension _fsyncworker was not built")

SLOTS = 64  # _fsyncworker.c: fsyncs in flight at once


@pytest.fixture
def file_fd(tmp_path):
    fd = os.open(tmp_path / "file", os.O_RDWR | os.O_CREAT)
    os.write(fd, b"x")
    yield fd
    os.close(fd)


@pytest.fixture
def gate():
    gate_r, gate_w = os.pipe()
    yield gate_r, gate_w
    os.close(gate_r)
    os.close(gate_w)


def test_the_sixty_fifth_fsync_in_flight_is_refused_until_one_is_reaped(file_fd, gate):
    gate_r, gate_w = gate
    worker = FsyncWorker(gate=gate_r)
    try:
        for token in range(SLOTS):
            worker.submit(token, file_fd)
        with pytest.raises(BufferError):
            worker.submit(SLOTS, file_fd)
        os.write(gate_w, b"\0")
        assert [token for token, *_ in reaped(worker, 1)] == [0]
        worker.submit(SLOTS, file_fd)  # a slot is free again
        with pytest.raises(BufferError):
            worker.submit(SLOTS + 1, file_fd)
        os.write(gate_w, b"\0" * SLOTS)
        outcomes = reaped(worker, SLOTS)
        assert [token for token, *_ in outcomes] == list(range(1, SLOTS + 1))
        assert all(error == 0 for _, error, _, _ in outcomes)
        assert worker.reap() == []
    finally:
        os.write(gate_w, b"\0" * SLOTS)
        worker.close()


def test_outcomes_of_fsyncs_submitted_and_reaped_from_two_threads_come_once_each_in_order(file_fd, tmp_path):
    """Submits from one thread, reaps (the eventfd watched) from another: every token once, in
    submission order, errors where the descriptor was a pipe's. 2,000 fsyncs of a 1-byte file."""
    pipe_r, pipe_w = os.pipe()
    worker = FsyncWorker()
    total = 2000
    got: list = []
    failed: list = []

    def reap() -> None:
        try:
            got.extend(reaped(worker, total, 30))
        except BaseException as e:  # (reported by the main thread)
            failed.append(e)

    reaper = threading.Thread(target=reap)
    reaper.start()
    try:
        token = 0
        while token < total:
            try:
                worker.submit(token, pipe_r if token % 7 == 3 else file_fd)
            except BufferError:  # 64 in flight: the reaper catches up
                threading.Event().wait(0.001)
                continue
            token += 1
        reaper.join(60)
        assert not reaper.is_alive() and not failed
        assert [t for t, *_ in got] == list(range(total))
        assert [e for t, e, _, _ in got] == [errno.EINVAL if t % 7 == 3 else 0 for t in range(total)]
        assert all(got[i][3] <= got[i + 1][2] for i in range(total - 1))  # one at a time
    finally:
        worker.close()
        reaper.join(10)
        os.close(pipe_r)
        os.close(pipe_w)


def test_a_worker_dropped_with_fsyncs_queued_serves_them_and_joins_its_thread(file_fd, gate):
    gate_r, gate_w = gate
    worker = FsyncWorker(gate=gate_r)
    for token in range(5):
        worker.submit(token, file_fd)
    native = worker.native_id
    os.write(gate_w, b"\0" * 5)
    del worker  # dealloc: the thread serves the five, then is joined
    gc.collect()
    assert native == 0 or not os.path.exists(f"/proc/self/task/{native}")


def test_a_worker_never_initialised_or_initialised_twice_is_refused_not_crashed(file_fd):
    bare = FsyncWorker.__new__(FsyncWorker)
    with pytest.raises(RuntimeError):
        bare.submit(1, file_fd)
    with pytest.raises(ValueError):
        bare.fileno()
    assert bare.reap() == []
    bare.close()
    del bare
    worker = FsyncWorker()
    try:
        with pytest.raises(RuntimeError):
            worker.__init__()
        worker.submit(1, file_fd)
        assert [error for _, error, _, _ in reaped(worker, 1)] == [0]
    finally:
        worker.close()


_FORKED = """
import os, select, signal, sys
from tidelog.storage.fsync import FsyncWorker
worker = FsyncWorker()
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
pid = os.fork()
if pid == 0:
    signal.alarm(5)  # (a close that waits for the missing thread: killed, no letter written)
    try:
        worker.submit(1, fd)
    except RuntimeError:
        code = "R"  # refused
    else:
        code = "A" if select.select([worker.fileno()], [], [], 1)[0] else "H"  # answered / hangs
    print(code, flush=True)
    worker.close()
    print("closed", flush=True)
    os._exit(0)
os.waitpid(pid, 0)
worker.close()
"""


def test_a_forked_childs_worker_refuses_jobs_rather_than_queueing_them_for_no_thread(tmp_path):
    """After fork(2) the child has the worker's state but not its thread: a job it took would never
    be answered (its waiters hang). It must refuse it (RuntimeError, as a closed worker does), and
    close without waiting for a thread that is not there. (In a process of its own: pytest's has
    threads of its own.)"""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _FORKED, str(tmp_path / "file")], capture_output=True, text=True,
                          timeout=30)
    assert done.stdout.split() == ["R", "closed"], (done.stdout, done.stderr)
