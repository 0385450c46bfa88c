"""Making files durable: an fsync each, or one ``syncfs`` for many.

A log's flush (storage/log_flush.py ``start_flush``) hands out file descriptors, each with its
fault target (storage/faults.py); ``sync_fds`` makes them durable in a ``FlushThreads`` thread
(storage/manager.py spreads one flush job over the threads with ``split_sync``, and
``FlushThreads.run`` hands the job's outcome back once); the log's ``finish_flush`` closes them
on the event loop afterwards, so the thread touches the GIL only to wake up and after each fsync. Many files (a
group commit over many partitions) go to one ``syncfs`` per filesystem: one journal commit
instead of hundreds. Stateless; safe to call from any thread.

``FsyncWorker`` (the C extension ``_fsyncworker``, None where it was not built) is an fsync thread
that never takes the GIL: the group commit's usual job, one file (the active segment of one
partition), and a job over two partitions or more (one ``syncfs`` through the data directory's descriptor) go
to it when no fault is armed; a job of a few files of one partition (a roll: fsyncs side by side) goes to the
Python threads. A Python thread's two GIL acquisitions a job each
wait for the event loop to let go, up to the interpreter's switch interval (5 ms) when it is busy;
the worker is handed the descriptor under a mutex and posts the outcome through an eventfd the
loop watches (``fileno``; ``reap`` collects the outcomes: token, errno, start and end on
CLOCK_MONOTONIC).
"""

from __future__ import annotations

import ctypes
import os
import platform
import queue
import threading
import time
from typing import Callable

from tidelog.storage.faults import faults

try:
    from tidelog.storage import _fsyncworker
except ImportError:  # built without a C compiler: every job goes to the Python flush threads
    _fsyncworker = None
FsyncWorker = getattr(_fsyncworker, "FsyncWorker", None)
# An extension built before the worker took syncfs jobs (not rebuilt since): its one-file jobs only.
WORKER_SYNCFS = getattr(_fsyncworker, "SYNCFS", 0) == 1

SYNCFS_MIN_FILES = 8  # from this many files on, one syncfs beats an fsync each
# From this many partitions on, a group-commit job the C thread can take is one syncfs there: a job
# of a few partitions (fsyncs side by side in the Python threads) costs the event loop the GIL at
# each thread's wake-up and end (BENCHMARKS.md, "The 16-partition rows, session 14").
WORKER_SYNCFS_MIN_LOGS = 2


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
    flush thread. It reports any write-back error of the filesystem this descriptor has not seen
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
    """How one fsync job's files are shared out among ``threads`` flush threads: many
    files go to one syncfs call; fewer are spread out, as fsyncs of different files running
    side by side are committed together by the filesystem's journal (one after another,
    each pays a commit). A file appears once in a job, so no fsync can hide another's error."""
    if len(fds) <= 1 or (len(fds) >= SYNCFS_MIN_FILES and _syncfs is not None):
        return [fds]
    return [fds[i::threads] for i in range(min(threads, len(fds)))]


OnDone = Callable[[BaseException | None, float], None]


class FlushThreads:
    """The fsync threads of one data directory: up to ``count`` long-lived threads, each
    waiting on its own queue, started when first needed; ``shutdown`` stops them.

    A job's share for a thread is one queue item, and the thread that ends a job calls its
    ``on_done`` once (which posts to the event loop once): no executor future, work item, idle
    semaphore or done-callback per file, and a one-file job (the usual one) wakes the same
    thread every time, not whichever pool thread wins the queue. Every GIL acquisition of a
    thread is a wait for the event loop to let go (up to the 5 ms switch interval when the
    loop is busy), so a thread takes it only to wake, after each fsync and to post the end.
    """

    def __init__(self, count: int, name: str) -> None:
        self.count = count
        self._name = name
        self._queues: list[queue.SimpleQueue] = []
        self._threads: list[threading.Thread] = []

    def _queue(self, index: int) -> queue.SimpleQueue:
        while len(self._queues) <= index:
            items: queue.SimpleQueue = queue.SimpleQueue()
            thread = threading.Thread(target=_serve, args=(items,), name=f"{self._name}-{len(self._queues)}",
                                      daemon=True)
            thread.start()
            self._queues.append(items)
            self._threads.append(thread)
        return self._queues[index]

    def run(self, calls: list[Callable[[], None]], on_done: OnDone) -> None:
        """Run ``calls`` (each syncing its share of one job's files; at most ``count``) side by
        side, one a thread; when the last one returns, call ``on_done(error, seconds)`` in its
        thread: the first exception any of them raised (or None) and the seconds from this call
        to the last one's end."""
        if not 0 < len(calls) <= self.count:
            raise ValueError(f"{len(calls)} calls for {self.count} threads")
        started = time.perf_counter()
        if len(calls) == 1:
            self._queue(0).put((calls[0], on_done, started))
            return
        countdown = _Countdown(len(calls), on_done)
        for index, call in enumerate(calls):
            self._queue(index).put((call, countdown.one_done, started))

    def shutdown(self) -> None:
        """Stop the threads once they have run what they were given (the caller waits for its jobs
        first: nothing is given after this)."""
        for items in self._queues:
            items.put(None)
        for thread in self._threads:
            thread.join()
        self._queues, self._threads = [], []


def _serve(items: queue.SimpleQueue) -> None:
    """A flush thread: run each call given, then its ``on_done``."""
    while True:
        item = items.get()
        if item is None:
            return
        call, on_done, started = item
        error = None
        try:
            call()
        except BaseException as e:  # noqa: BLE001 - handed to on_done, which raises it where it is awaited
            error = e
        on_done(error, time.perf_counter() - started)
        del item, call, on_done  # the job's objects are not kept alive until the next one


class _Countdown:
    """The end of a job spread over several threads: ``on_done`` once, by the last to finish."""

    def __init__(self, remaining: int, on_done: OnDone) -> None:
        self._remaining = remaining
        self._on_done = on_done
        self._error: BaseException | None = None
        self._lock = threading.Lock()

    def one_done(self, error: BaseException | None, seconds: float) -> None:
        with self._lock:
            if error is not None and self._error is None:
                self._error = error
            self._remaining -= 1
            last = self._remaining == 0
        if last:
            self._on_done(self._error, seconds)


def sync_fds(fds: list[tuple[int, str]]) -> None:
    """Make the files behind descriptors durable (the caller closes them); runs in a flush thread.

    Many files (a group commit over many partitions) are synced with one ``syncfs`` per
    filesystem instead of one fsync each: one journal commit instead of hundreds. syncfs
    reports a write-back error of any file of the filesystem that this descriptor's open
    file has not seen yet (Linux 5.8+; older kernels fsync each file), so an error of any
    file it covers fails the whole job. The fault hook is asked for every file either way.
    """
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
