"""Physical references measured in the same run as the brokers: what the disk and the
client library can do on this machine, with no broker in the way."""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import kafka_load

BLOCK_BYTES = 1_048_576


def disk_write(directory: Path, total_mib: int, sync: bool, timeout_s: float = 60.0) -> dict:
    """Write ``total_mib`` blocks of 1 MiB to a temp file in ``directory`` (the broker data
    dirs' filesystem), with fdatasync after each block when ``sync``; delete the file."""
    path = Path(directory) / f"disk-reference-{os.getpid()}.bin"
    block = os.urandom(BLOCK_BYTES)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    written = 0
    deadline = time.monotonic() + timeout_s
    try:
        start = time.perf_counter()
        while written < total_mib and time.monotonic() < deadline:
            os.write(fd, block)
            if sync:
                os.fdatasync(fd)
            written += 1
        if not sync:
            os.fdatasync(fd)  # page-cache figure still includes getting it to disk once
        seconds = time.perf_counter() - start
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    result = kafka_load.phase_result(written, BLOCK_BYTES, seconds, 0.0, "ok" if written == total_mib else "timeout")
    result["records_per_s"] = None  # blocks, not records: only MB/s is meaningful
    return result


# The sender of socket_to_page_cache: its own process (as a producer is), connects to the port
# given, sends the MiB blocks given with sendall and exits.
_SENDER = """
import os, socket, sys
block = os.urandom(1 << 20)
with socket.create_connection(("127.0.0.1", int(sys.argv[1]))) as s:
    for _ in range(int(sys.argv[2])):
        s.sendall(block)
"""


def socket_to_page_cache(directory: Path, total_mib: int, sync: bool, timeout_s: float = 60.0) -> dict:
    """The kernel's floor under a broker's produce path: ``total_mib`` MiB sent over loopback TCP
    by another process, received here with ``recv_into`` into one reused 1 MiB buffer and
    written to a file in ``directory`` (each MiB once it is whole), with an fdatasync per MiB
    when ``sync`` (as ``balanced`` commits a group). What a broker that keeps what it receives
    in the page cache cannot do with less: copy each byte out of the socket and into a file.
    ``receiver_cpu_s_per_gb`` is this thread's user + system CPU (its own rusage) per GB
    (``receiver_user_s`` and ``receiver_system_s`` apart: the floor is nearly all system time);
    the sender's is ``client_cpu_s``. The file is deleted."""
    path = Path(directory) / f"socket-reference-{os.getpid()}.bin"
    buffer = bytearray(BLOCK_BYTES)
    view = memoryview(buffer)
    received = 0
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(timeout_s)
        sender = subprocess.Popen([sys.executable, "-c", _SENDER, str(listener.getsockname()[1]), str(total_mib)],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        deadline = time.monotonic() + timeout_s
        try:
            connection, _ = listener.accept()
            with connection:
                connection.settimeout(max(0.1, deadline - time.monotonic()))
                user0, system0 = _thread_cpu_s()
                start = time.perf_counter()
                filled = 0
                while time.monotonic() < deadline:
                    n = connection.recv_into(view[filled:])
                    if not n:
                        break
                    filled += n
                    if filled == BLOCK_BYTES:
                        os.write(fd, buffer)
                        if sync:
                            os.fdatasync(fd)
                        received += filled
                        filled = 0
                seconds = time.perf_counter() - start
                user1, system1 = _thread_cpu_s()
        finally:
            os.close(fd)
            path.unlink(missing_ok=True)
            if received < total_mib * BLOCK_BYTES:
                os.kill(sender.pid, signal.SIGKILL)  # not Popen.kill: its poll() would reap the rusage
            _, status, usage = os.wait4(sender.pid, 0)
            sender.returncode = os.waitstatus_to_exitcode(status)
            errors = [sender.stderr.read().decode(errors="replace")[-2000:]]
            sender.stderr.close()
    blocks = received // BLOCK_BYTES
    ok = blocks == total_mib and sender.returncode == 0
    result = kafka_load.phase_result(blocks, BLOCK_BYTES, seconds, usage.ru_utime + usage.ru_stime,
                                     "ok" if ok else "timeout" if time.monotonic() >= deadline else "failed",
                                     None if ok else errors)
    result["records_per_s"] = None  # blocks, not records: only MB/s is meaningful
    result["receiver_user_s"], result["receiver_system_s"] = user1 - user0, system1 - system0
    result["receiver_cpu_s"] = receiver_cpu = result["receiver_user_s"] + result["receiver_system_s"]
    result["receiver_cpu_s_per_gb"] = receiver_cpu / (result["bytes"] / 1e9) if received else None
    return result


def _thread_cpu_s() -> tuple[float, float]:
    """User and system CPU seconds of the calling thread (of the process where there is no
    RUSAGE_THREAD)."""
    usage = resource.getrusage(getattr(resource, "RUSAGE_THREAD", resource.RUSAGE_SELF))
    return usage.ru_utime, usage.ru_stime


def fsync_latency(directory: Path, appends: int = 1_000, append_bytes: int = 4096) -> dict:
    """``appends`` writes of ``append_bytes`` to a file in ``directory``, each followed by an
    fsync (what one small group commit costs the broker): latency percentiles of the fsync."""
    path = Path(directory) / f"fsync-reference-{os.getpid()}.bin"
    block = os.urandom(append_bytes)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
    latencies = []
    try:
        start = time.perf_counter()
        for _ in range(appends):
            os.write(fd, block)
            before = time.perf_counter()
            os.fsync(fd)
            latencies.append(time.perf_counter() - before)
        seconds = time.perf_counter() - start
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    result = kafka_load.phase_result(appends, append_bytes, seconds, 0.0, "ok")
    latencies.sort()
    result["latency_ms"] = {q: latencies[min(len(latencies) - 1, int(f * len(latencies)))] * 1e3
                            for q, f in (("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999))}
    result["latency_ms"]["max"] = latencies[-1] * 1e3
    return result


# A follower of group_commit_wait(followers=N): its own process, appending argv[3] bytes a second to
# the file argv[1] in 4 ms copies for argv[2] seconds, with an fsync every argv[4] seconds (a
# follower on the replica flush schedule); removes the file when done.
_FOLLOWER = """
import os, sys, time
path, seconds, per_s, flush_s = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
chunk = os.urandom(max(1, per_s // 250))
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
start = last = time.perf_counter()
n = 0
try:
    while time.perf_counter() - start < seconds:
        os.write(fd, chunk)
        n += 1
        if time.perf_counter() - last >= flush_s:
            os.fsync(fd)
            last = time.perf_counter()
        pause = start + n * 0.004 - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
finally:
    os.close(fd)
    os.unlink(path)
"""


def group_commit_wait(directory: Path, seconds: float = 5.0, rate: int = 5_000, record_bytes: int = 1024,
                      interval_ms: float = 1.0, preallocate: bool = False, followers: int = 0,
                      follower_flush_s: float = 1.0) -> dict:
    """The lat-5k group commit's write pattern without the broker: a record of ``record_bytes``
    arrives every 1/``rate`` s; every ``interval_ms`` (the producer's linger.ms=1 sends a request
    a millisecond) or as soon as the previous fsync returns if it took longer, the records arrived
    since are appended to a growing file (a `balanced` broker's active segment: not preallocated,
    so each fsync also writes the inode for the new size) and fsynced, one fsync at a time.
    ``latency_ms``: each record's wait from its arrival to the end of the fsync that covers it (the
    part of an acknowledgement and of a consumer's sight of the record this disk sets at the
    broker's own pattern), percentiles over every record; ``fsync_ms`` the fsync syscalls'. What
    lat-5k's end-to-end tail would be from the disk alone, in the same run; the file is deleted.
    ``preallocate``: the file is written whole (zeros) and fsynced first, and the appends
    overwrite it with an fdatasync each (what a segment preallocated to its final size, Kafka's
    ``log.preallocate``, would cost: no inode write per fsync for a new size). ``followers``: as
    many other processes copy the same bytes a second meanwhile, each into its own file with an
    fsync every ``follower_flush_s`` (RF 3's write pattern on one disk: the leader's group commit
    beside its followers on the replica flush schedule)."""
    companions = [subprocess.Popen([sys.executable, "-c", _FOLLOWER,
                                    str(Path(directory) / f"follower-reference-{os.getpid()}-{i}.bin"),
                                    str(seconds + 0.5), str(rate * record_bytes), str(follower_flush_s)],
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                  for i in range(followers)]
    try:
        return _group_commit_wait(directory, seconds, rate, record_bytes, interval_ms, preallocate)
    finally:
        for companion in companions:
            try:
                companion.wait(seconds + 30)
            except subprocess.TimeoutExpired:
                companion.kill()
                companion.wait()


def _group_commit_wait(directory: Path, seconds: float, rate: int, record_bytes: int, interval_ms: float,
                       preallocate: bool) -> dict:
    path = Path(directory) / f"group-commit-reference-{os.getpid()}.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | (0 if preallocate else os.O_APPEND), 0o600)
    sync = os.fsync
    if preallocate:
        zeros = bytes(BLOCK_BYTES)
        for _ in range(int(seconds * rate * record_bytes * 1.2) // BLOCK_BYTES + 1):
            os.write(fd, zeros)
        os.fsync(fd)
        os.lseek(fd, 0, os.SEEK_SET)
        sync = os.fdatasync
    payload = os.urandom(record_bytes * max(1, int(rate * interval_ms / 1000)) * 64)
    interval_s = interval_ms / 1000
    syncs: list[tuple[float, float]] = []  # (appended at: covers every record arrived before, fsync end)
    try:
        start = time.perf_counter()
        written = 0
        while (now := time.perf_counter()) - start < seconds:
            arrived = int((now - start) * rate)
            if arrived > written:
                os.write(fd, payload[:(arrived - written) * record_bytes])
                written = arrived
                sync(fd)
                syncs.append((now, time.perf_counter()))
            pause = now + interval_s - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
        finished = time.perf_counter()
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    waits = []
    i = 0
    for k in range(int((syncs[-1][0] - start) * rate) if syncs else 0):
        arrival = start + k / rate
        while syncs[i][0] < arrival:
            i += 1
        waits.append(syncs[i][1] - arrival)
    result = kafka_load.phase_result(len(waits), record_bytes, finished - start, 0.0, "ok" if waits else "no fsync")

    def percentiles(values):
        values = sorted(values)
        out = {q: values[min(len(values) - 1, int(f * len(values)))] * 1e3
               for q, f in (("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999))}
        out["max"] = values[-1] * 1e3
        return out

    if waits:
        result["latency_ms"] = percentiles(waits)
        result["fsync_ms"] = percentiles([end - begin for begin, end in syncs])
        result["fsyncs"] = len(syncs)
        result["fsyncs_over_ms"] = fsyncs_over([end - begin for begin, end in syncs])
    return result


def fsyncs_over(seconds: list[float]) -> dict[str, int]:
    """How many of these fsync syscalls (seconds each) took over 10, 20 and 50 ms: a rare long one
    holds every record behind it, so counts compare two runs where a percentile of fsyncs hides it."""
    return {str(ms): sum(1 for s in seconds if s * 1e3 > ms) for ms in (10, 20, 50)}


def client_ceiling(records: int, record_bytes: int, partitions: int = 1) -> dict:
    """The producer into nothing (see kafka_load.client_ceiling)."""
    return kafka_load.client_ceiling(records, record_bytes, partitions)


def consume_ceiling(records: int, record_bytes: int, partitions: int = 1, timeout_s: float = 300.0) -> dict:
    """The consumer against librdkafka's mock cluster (see kafka_load.consume_ceiling)."""
    return kafka_load.consume_ceiling(records, record_bytes, timeout_s, partitions)
