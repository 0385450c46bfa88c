"""The C fsync thread runs under SCHED_BATCH (storage/_fsyncworker.c): woken by the event loop's
``submit`` it waits for a free CPU instead of preempting the loop, which on a busy machine then
waited for its CPU back (81-231 us of the loop's wall time a job, 14-29 us with SCHED_BATCH). It
still serves every job and reports its outcome (test_fsync_worker.py)."""

from __future__ import annotations

import os
import select

import pytest

from tidelog.storage.fsync import FsyncWorker

pytestmark = pytest.mark.skipif(FsyncWorker is None, reason="the C extension _fsyncworker was not built")


def test_the_fsync_thread_runs_under_sched_batch_and_still_serves_its_jobs(tmp_path):
    worker = FsyncWorker()
    try:
        fd = os.open(tmp_path / "file", os.O_RDWR | os.O_CREAT)
        os.write(fd, b"x" * 4096)
        worker.submit(1, fd)
        readable, _, _ = select.select([worker.fileno()], [], [], 10)
        assert readable, "the job was not served"
        assert [(token, error) for token, error, _, _ in worker.reap()] == [(1, 0)]
        assert os.sched_getscheduler(worker.native_id) == os.SCHED_BATCH
        assert os.sched_getscheduler(0) == os.SCHED_OTHER  # the caller's own policy is left alone
        os.close(fd)
    finally:
        worker.close()
