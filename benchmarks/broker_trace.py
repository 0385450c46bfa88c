"""A `tidelog serve` that notes, on the clock the benchmark's client uses (CLOCK_MONOTONIC,
``time.perf_counter_ns``), what the broker did: run as ``python benchmarks/broker_trace.py OUT
serve ...`` (a script, not a module, so that ``--tidelog-ref``'s exported src/ is the only
tidelog on the path). Nothing of the broker is changed; its functions are wrapped.

Noted, each as a row of a list in OUT (JSON, written at exit):

- ``fsync``: every fsync/fdatasync/syncfs syscall of the process, its thread, start and end, the
  file (its path) and the file's size then: the group commit's, and any other (checkpoints,
  directories, indexes);
- ``job``: each group-commit job, when the loop started it, how many logs and records it covers,
  and when its outcome was back on the loop (``_job_synced``);
- ``wait``: each Produce's wait for durability (``durable_waiter``; in older trees
  ``wait_durable_many``), entered after the append with the log end offset it waits for, and
  left when the answer can go;
- ``gc``: each collection, its generation, start and end, what it freed (and after a full one,
  how many objects the oldest generation holds: what the next full one walks);
- ``lag``: the event loop's lateness: a timer every ``LAG_PROBE_S`` whose callback ran more than
  ``LAG_NOTE_S`` late (the loop was busy or the process had no CPU);
- ``roll``: segment rolls;
- ``fetch``: each parked Fetch (``wait_for_data`` in handlers/fetch.py), parked and woken.
"""

from __future__ import annotations

import atexit
import gc
import json
import os
import runpy
import sys
import threading
import time

LAG_PROBE_S = 0.002
LAG_NOTE_S = 0.0005

rows: list[list] = []
_now = time.perf_counter_ns


def _path(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return "?"


def _size(fd: int) -> int:
    try:
        return os.fstat(fd).st_size
    except OSError:
        return -1


def _wrap_sync(name: str, call):
    def synced(fd):
        path, size = _path(fd), _size(fd)
        started = _now()
        try:
            return call(fd)
        finally:
            rows.append(["fsync", threading.get_native_id(), started, _now(), name, path, size])
    return synced


def _install_os() -> None:
    os.fsync = _wrap_sync("fsync", os.fsync)
    os.fdatasync = _wrap_sync("fdatasync", os.fdatasync)

    def on_gc(phase, info, starts={}):
        if phase == "start":
            starts["t"] = _now()
        else:
            rows.append(["gc", info["generation"], starts.get("t", 0), _now(), info.get("collected", 0),
                         len(gc.get_objects(2)) if info["generation"] == 2 else None])
    gc.callbacks.append(on_gc)


def _install_tidelog() -> None:
    import asyncio

    from tidelog.storage import fsync as fsync_module
    from tidelog.storage import manager as manager_module

    if fsync_module._syncfs is not None:
        syncfs = fsync_module._syncfs
        fsync_module._syncfs = _wrap_sync("syncfs", lambda fd: syncfs(fd))

    LogManager = manager_module.LogManager
    start_job, job_synced = LogManager._start_job, LogManager._job_synced
    wait_many, on_roll, start = LogManager.wait_durable_many, LogManager._on_roll, LogManager.start

    def _start_job(self):
        logs = list(self._sync_requested)
        pending = sum(max(0, log.log_end_offset - log.durable_offset) for log in logs)
        rows.append(["job", _now(), len(logs), pending, max((log.log_end_offset for log in logs), default=-1)])
        return start_job(self)

    def _job_synced(self, logs, pendings, error, seconds):
        rows.append(["synced", _now(), seconds, error is None, max((p.target_offset for _, p in pendings), default=-1)])
        return job_synced(self, logs, pendings, error, seconds)

    async def wait_durable_many(self, targets):
        entered = _now()
        ends = [offset for _, offset in targets]
        try:
            return await wait_many(self, targets)
        finally:
            rows.append(["wait", entered, _now(), max(ends, default=-1)])

    # Since cc9478e a Produce awaits durable_waiter's future itself (wait_durable_many is a
    # wrapper left for other callers): that is the wait noted where it exists.
    durable_waiter = getattr(LogManager, "durable_waiter", None)

    def durable_waiter_(self, targets):
        entered = _now()
        end = max((offset for _, offset in targets), default=-1)
        future = durable_waiter(self, targets)
        if future is None:
            rows.append(["wait", entered, _now(), end])
        else:
            future.add_done_callback(lambda _future: rows.append(["wait", entered, _now(), end]))
        return future

    def _on_roll(self, log):
        rows.append(["roll", _now(), f"{log.topic}-{log.partition}"])
        return on_roll(self, log)

    async def start_(self):
        await start(self)
        loop = asyncio.get_running_loop()

        def probe(due):
            late = _now() - due
            if late > LAG_NOTE_S * 1e9:
                rows.append(["lag", due, late])
            loop.call_later(LAG_PROBE_S, probe, _now() + int(LAG_PROBE_S * 1e9))
        loop.call_later(LAG_PROBE_S, probe, _now() + int(LAG_PROBE_S * 1e9))

    try:
        from tidelog.handlers import fetch as fetch_handler
    except ImportError:  # an older tree: no fetch wake-ups noted
        fetch_handler = None
    if fetch_handler is not None and hasattr(fetch_handler, "wait_for_data"):
        wait_for_data = fetch_handler.wait_for_data

        async def parked_fetch(*args, **kwargs):
            parked = _now()
            try:
                return await wait_for_data(*args, **kwargs)
            finally:
                rows.append(["fetch", parked, _now()])
        fetch_handler.wait_for_data = parked_fetch

    LogManager._start_job, LogManager._job_synced = _start_job, _job_synced
    LogManager._on_roll, LogManager.start = _on_roll, start_
    if durable_waiter is not None:
        LogManager.durable_waiter = durable_waiter_
    else:  # an older tree
        LogManager.wait_durable_many = wait_durable_many


def main() -> None:
    out = sys.argv[1]
    sys.argv = ["tidelog", *sys.argv[2:]]
    rows.append(["pid", os.getpid(), _now()])

    def dump():
        with open(out + ".tmp", "w") as f:
            json.dump(rows, f)
        os.replace(out + ".tmp", out)
    atexit.register(dump)
    _install_os()
    _install_tidelog()
    runpy.run_module("tidelog", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
