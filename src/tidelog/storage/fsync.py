"""Making files durable: an fsync each, or one ``syncfs`` for many.

A log's flush (storage/log.py ``start_flush``) hands out duplicated file descriptors, each
with its fault target (storage/faults.py); ``sync_fds`` makes them durable and closes them, in
an executor thread (storage/manager.py spreads one flush job over its threads with
``split_sync``, and ``run_side_by_side`` hands the job's outcome back once). Many files (a
group commit over many partitions) go to one ``syncfs`` per filesystem: one journal commit
instead of hundreds. Stateless; safe to call from any thread.
"""

from __future__ import annotations

import ctypes
import os
import platform
import threading
import time
from concurrent.futures import Executor
from typing import Callable

from tidelog.storage.faults import faults

SYNCFS_MIN_FILES = 8  # from this many files on, one syncfs beats an fsync each


def _load_syncfs():
    """libc's syncfs, where it reports write-back errors (Linux 5.8+); else None: fsync each file."""
    try:
        major, minor = (int(part) for part in platform.release().split(".")[:2])
        if (major, minor) < (5, 8):
            return None
        syncfs = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError, ValueError):
        return None
    syncfs.argtypes = [ctypes.c_int]
    return syncfs


_syncfs = _load_syncfs()


def syncfs_available() -> bool:
    return _syncfs is not None


def sync_filesystem(fd: int, targets: list[str]) -> None:
    """One ``syncfs`` through ``fd`` (a descriptor in the filesystem, open since before the writes
    it must cover) for a job over many files, whose fault targets are ``targets``; runs in an
    executor. It reports any write-back error of the filesystem this descriptor has not seen
    yet, even of a file closed (and its inode dropped) since it was written."""
    if faults.armed:
        for target in targets:
            faults.check("fsync", target)
    if _syncfs is None:
        raise RuntimeError("syncfs is not available (see syncfs_available)")
    if _syncfs(fd) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"syncfs: {os.strerror(error)}")


def split_sync(fds: list[tuple[int, str]], threads: int) -> list[list[tuple[int, str]]]:
    """How one fsync job's files are shared out among ``threads`` executor threads: many
    files go to one syncfs call; fewer are spread out, as fsyncs of different files running
    side by side are committed together by the filesystem's journal (one after another,
    each pays a commit). A file appears once in a job, so no fsync can hide another's error."""
    if len(fds) <= 1 or (len(fds) >= SYNCFS_MIN_FILES and _syncfs is not None):
        return [fds]
    return [fds[i::threads] for i in range(min(threads, len(fds)))]


def run_side_by_side(executor: Executor, calls: list[Callable[[], None]],
                     on_done: Callable[[BaseException | None, float], None]) -> None:
    """Run ``calls`` (each syncing its share of one job's files) in ``executor``'s threads side
    by side; when the last one returns, call ``on_done(error, seconds)`` in that thread: the first
    exception any of them raised (or None) and the seconds from this call to the last one's end.
    One hand-back per job (its ``on_done`` posts to the event loop once), instead of a future
    per thread gathered by a task: every loop turn between the fsync's end and the answer to the
    produce waiting for it is latency."""
    started = time.perf_counter()
    remaining = len(calls)
    errors: list[BaseException] = []
    lock = threading.Lock()

    def run(call: Callable[[], None]) -> None:
        nonlocal remaining
        error = None
        try:
            call()
        except BaseException as e:  # noqa: BLE001 - handed to on_done, which raises it where it is awaited
            error = e
        with lock:
            if error is not None:
                errors.append(error)
            remaining -= 1
            last = remaining == 0
        if last:
            on_done(errors[0] if errors else None, time.perf_counter() - started)

    for call in calls:
        executor.submit(run, call)


def sync_fds(fds: list[tuple[int, str]]) -> None:
    """Make the files behind duplicated descriptors durable, then close them; runs in an executor.

    Many files (a group commit over many partitions) are synced with one ``syncfs`` per
    filesystem instead of one fsync each: one journal commit instead of hundreds. syncfs
    reports a write-back error of any file of the filesystem that this descriptor's open
    file has not seen yet (Linux 5.8+; older kernels fsync each file), so an error of any
    file it covers fails the whole job. The fault hook is asked for every file either way.
    """
    try:
        if len(fds) >= SYNCFS_MIN_FILES and _syncfs is not None:
            if faults.armed:
                for _, target in fds:
                    faults.check("fsync", target)
            for fd in {os.fstat(fd).st_dev: fd for fd, _ in fds}.values():
                if _syncfs(fd) != 0:
                    error = ctypes.get_errno()
                    raise OSError(error, f"syncfs: {os.strerror(error)}")
            return
        for fd, target in fds:
            if faults.armed:
                faults.check("fsync", target)
            os.fsync(fd)
    finally:
        for fd, _ in fds:
            os.close(fd)
