"""A `tidelog serve` that notes, on the clock the benchmark's client uses (CLOCK_MONOTONIC,
``time.perf_counter_ns``), what the broker did: run as ``python benchmarks/broker_trace.py OUT
serve ...`` (a script, not a module, so that ``--tidelog-ref``'s exported src/ is the only
tidelog on the path). Nothing of the broker is changed; its functions are wrapped.

Noted, each as a row of a list in OUT (JSON, written at exit):

- ``fsync``: every fsync/fdatasync/syncfs syscall of the process, its thread, start and end, the
  file (its path) and the file's size then: the group commit's, and any other (checkpoints,
  directories, indexes); the C fsync thread's (storage/fsync.py FsyncWorker) as it reports them;
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
- ``fetch``: each parked Fetch (``wait_for_data`` in handlers/fetch.py), parked and woken;
- ``req``: each request's frame as the connection starts it (its API key, the connection's id);
- ``write`` / ``fwrite``: a connection's responses written (``_write_out``: one writelines of
  the responses ready; ``_write_slices``: a response with file slices, a Fetch's, once sent or
  queued), the connection's id: when an answer left the broker.

and, for replication (benchmarks/replication_trace.py puts an acks=all record's time together
from the three brokers' rows; each partition row names its topic):

- ``lappend``: an append as leader, done (end offset);
- ``lread``: a follower's read at the leader (replica, fetch offset, log end offset then);
- ``lfetched``: the leader took a follower's fetch offset as its position (replica, offset);
- ``hw``: the leader's high watermark moved (new value); ``durable``: its log's durable end
  moved (a group commit's outcome on the loop);
- ``acked``: a Produce's acknowledgement wait returned (largest end offset, acks);
- ``fsend`` / ``frecv``: a follower's Fetch sent / its response read (the request's bytes);
- ``fappend``: a follower's append done (log end offset after, bytes).
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
        if getattr(self, "_worker", None) is not None:  # the C fsync thread (storage/fsync.py FsyncWorker)
            self._worker = _TracedWorker(self._worker, self)

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

    try:
        from tidelog.server.connection import KafkaConnection
    except ImportError:
        KafkaConnection = None
    if KafkaConnection is not None and hasattr(KafkaConnection, "_start_request"):
        start_request = KafkaConnection._start_request

        def _start_request(self, view, *args, **kwargs):
            if len(view) >= 2:
                rows.append(["req", _now(), int.from_bytes(view[:2], "big"), id(self)])
            return start_request(self, view, *args, **kwargs)
        KafkaConnection._start_request = _start_request
    if KafkaConnection is not None and hasattr(KafkaConnection, "_write_out"):
        write_out = KafkaConnection._write_out

        def _write_out(self, out):
            if out:
                rows.append(["write", _now(), id(self), len(out)])
            return write_out(self, out)
        KafkaConnection._write_out = _write_out
    if KafkaConnection is not None and hasattr(KafkaConnection, "_write_slices"):
        write_slices = KafkaConnection._write_slices

        def _write_slices(self, parts):
            written = write_slices(self, parts)
            rows.append(["fwrite", _now(), id(self), len(parts)])
            return written
        KafkaConnection._write_slices = _write_slices

    _install_replication()
    LogManager._start_job, LogManager._job_synced = _start_job, _job_synced
    LogManager._on_roll, LogManager.start = _on_roll, start_
    if durable_waiter is not None:
        LogManager.durable_waiter = durable_waiter_
    else:  # an older tree
        LogManager.wait_durable_many = wait_durable_many


class _TracedWorker:
    """The C fsync thread, its fsyncs noted as rows like the Python threads' (it calls fsync(2)
    itself, not os.fsync): the file and its size when the job is submitted, the syscall's start
    and end as the thread measured them (CLOCK_MONOTONIC). In a tree whose manager hands the
    thread a job while another runs (a job with no submit time in ``_worker_jobs``), that job is
    noted as a job at its fsync's start, with the end offset it covered."""

    def __init__(self, worker, manager) -> None:
        self._worker = worker
        self._manager = manager
        self._files: dict[int, tuple[str, int]] = {}

    def submit(self, token: int, fd: int, *chained) -> None:
        self._files[token] = (_path(fd), _size(fd))
        self._worker.submit(token, fd, *chained)

    def reap(self) -> list:
        outcomes = self._worker.reap()
        for token, _error, started_ns, ended_ns in outcomes:
            path, size = self._files.pop(token, ("?", -1))
            job = self._manager._worker_jobs.get(token)
            if job is not None and job[2] is None:  # chained
                rows.append(["job", started_ns, 1, -1, max(p.target_offset for _, p in job[1])])
            rows.append(["fsync", self._worker.native_id, started_ns, ended_ns, "fsync", path, size])
        return outcomes

    def __getattr__(self, name: str):
        return getattr(self._worker, name)


def _install_replication() -> None:
    """The rows of an acks=all record's way through the leader and its followers (see above)."""
    try:
        from tidelog.cluster import broker_channel, partition as partition_module
        from tidelog.handlers import produce as produce_handler
    except ImportError:
        return
    Partition = partition_module.Partition
    append_as_leader, follower_fetched = Partition.append_as_leader, Partition.follower_fetched
    advance, on_flush, read = Partition._advance_high_watermark, Partition.on_local_flush, Partition.read
    append_as_follower = Partition.append_as_follower
    send = broker_channel.BrokerChannel.request_encoded_body
    wait_for_acks = produce_handler.wait_for_acks

    def append_as_leader_(self, *args, **kwargs):
        result = append_as_leader(self, *args, **kwargs)
        rows.append(["lappend", _now(), self.topic, result.end_offset])
        return result

    def read_(self, fetch_offset, *args, **kwargs):
        replica_id = kwargs.get("replica_id", args[2] if len(args) > 2 else -1)
        if replica_id >= 0:
            rows.append(["lread", _now(), self.topic, replica_id, fetch_offset, self.log.log_end_offset])
        return read(self, fetch_offset, *args, **kwargs)

    def follower_fetched_(self, replica_id, fetch_offset, *args, **kwargs):
        rows.append(["lfetched", _now(), self.topic, replica_id, fetch_offset])
        return follower_fetched(self, replica_id, fetch_offset, *args, **kwargs)

    def advance_(self):
        before = self.high_watermark
        advance(self)
        if self.high_watermark != before:
            rows.append(["hw", _now(), self.topic, self.high_watermark])

    def on_flush_(self):
        rows.append(["durable", _now(), self.topic, self.log.durable_end_offset])
        return on_flush(self)

    def append_as_follower_(self, records, *args, **kwargs):
        appended = append_as_follower(self, records, *args, **kwargs)
        rows.append(["fappend", _now(), self.topic, self.log.log_end_offset, appended])
        return appended

    async def send_(self, api_key, version, body, timeout_s):
        rows.append(["fsend", _now(), len(body)])
        response = await send(self, api_key, version, body, timeout_s)
        rows.append(["frecv", _now(), len(response)])
        return response

    async def wait_for_acks_(appended, required_acks, *args, **kwargs):
        errors = await wait_for_acks(appended, required_acks, *args, **kwargs)
        rows.append(["acked", _now(), appended[0][0].topic if appended else "", max((end for _, end in appended), default=-1), required_acks])
        return errors

    Partition.append_as_leader, Partition.follower_fetched = append_as_leader_, follower_fetched_
    Partition._advance_high_watermark, Partition.on_local_flush, Partition.read = advance_, on_flush_, read_
    Partition.append_as_follower = append_as_follower_
    broker_channel.BrokerChannel.request_encoded_body = send_
    produce_handler.wait_for_acks = wait_for_acks_


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
