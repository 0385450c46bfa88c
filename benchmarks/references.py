"""Physical references measured in the same run as the brokers: what the disk and the
client library can do on this machine, with no broker in the way."""

from __future__ import annotations

import fcntl
import mmap
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import crc32c

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


def socket_to_page_cache(directory: Path, total_mib: int, sync: bool, timeout_s: float = 120.0,
                         passes: int = 4, into: str = "copy", check: bool = False, sync_mib: int = 1) -> dict:
    """The kernel's floor under a broker's produce path: MiB blocks sent over loopback TCP by
    another process, received here with ``recv_into`` into one reused 1 MiB buffer and written
    to a file in ``directory`` (each MiB once it is whole), with an fdatasync per MiB when
    ``sync`` (as ``balanced`` commits a group; every ``sync_mib`` MiB for larger groups). What a
    broker that keeps what it receives in the page cache cannot do with less: copy each byte out
    of the socket and into a file. ``into`` and ``check``: other ways of doing it (_socket_pass).

    ``total_mib`` is measured in ``passes`` passes, after a warm-up pass of the same size; each
    pass writes a new file and deletes the one before as it begins, so a measured pass gets its
    page-cache pages from memory the guest has just used. On this VM (free page reporting to the
    host, memory initialised lazily) the first write into a page the guest has not used lately
    takes a fault on the host: a single cold pass measured 0.9-2.4 s/GB where a warm one
    measures 0.4-0.55, the copy into the page cache 42% of the samples against the socket copy's
    5.5% (9-10% each when warm). That is the machine's memory state, not the kernel's work; the
    warm-up pass's figures are kept apart (``first_pass_cpu_s_per_gb``, ``first_pass_mb_per_s``).

    ``receiver_cpu_s_per_gb`` is the median pass's user + system CPU of the receiving thread
    (its own rusage) per GB, ``pass_cpu_s_per_gb`` and ``pass_mb_per_s`` each pass's;
    ``receiver_user_s`` and ``receiver_system_s`` are summed over the measured passes (the floor
    is nearly all system time); the sender's whole CPU is ``client_cpu_s``. The files are
    deleted."""
    pass_mib = max(1, total_mib // passes)
    buffer = bytearray(BLOCK_BYTES)
    view = memoryview(buffer)
    measured = []  # per pass: (seconds, user, system, MiB)
    warmup = None
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(timeout_s)
        sender = subprocess.Popen([sys.executable, "-c", _SENDER, str(listener.getsockname()[1]),
                                   str(pass_mib * (passes + 1))],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout_s
        path = None
        try:
            connection, _ = listener.accept()
            with connection:
                connection.settimeout(max(0.1, deadline - time.monotonic()))
                for n in range(passes + 1):
                    if path is not None:
                        path.unlink()
                    path = Path(directory) / f"socket-reference-{os.getpid()}-{n}.bin"
                    figures = _socket_pass(connection, view, path, pass_mib, sync, deadline, into, check, sync_mib)
                    if n == 0:
                        warmup = figures
                    else:
                        measured.append(figures)
                    if figures[3] < pass_mib:
                        break
        finally:
            for leftover in Path(directory).glob(f"socket-reference-{os.getpid()}-*.bin"):
                leftover.unlink()
            if sum(m[3] for m in measured) < passes * pass_mib:
                os.kill(sender.pid, signal.SIGKILL)  # not Popen.kill: its poll() would reap the rusage
            _, status, usage = os.wait4(sender.pid, 0)
            sender.returncode = os.waitstatus_to_exitcode(status)
            errors = [sender.stderr.read().decode(errors="replace")[-2000:]]
            sender.stderr.close()
    blocks = sum(m[3] for m in measured)
    ok = blocks == passes * pass_mib and sender.returncode == 0
    seconds = sum(m[0] for m in measured)
    result = kafka_load.phase_result(blocks, BLOCK_BYTES, seconds, usage.ru_utime + usage.ru_stime,
                                     "ok" if ok else "timeout" if time.monotonic() >= deadline else "failed",
                                     None if ok else errors)
    result["records_per_s"] = None  # blocks, not records: only MB/s is meaningful

    def per_gb(figures):
        return (figures[1] + figures[2]) / (figures[3] * BLOCK_BYTES / 1e9) if figures and figures[3] else None

    result["receiver_user_s"] = sum(m[1] for m in measured)
    result["receiver_system_s"] = sum(m[2] for m in measured)
    result["receiver_cpu_s"] = result["receiver_user_s"] + result["receiver_system_s"]
    result["pass_cpu_s_per_gb"] = [per_gb(m) for m in measured if m[3]]
    result["pass_mb_per_s"] = [m[3] * BLOCK_BYTES / m[0] / 1e6 for m in measured if m[3]]
    result["receiver_cpu_s_per_gb"] = statistics.median(result["pass_cpu_s_per_gb"]) if ok else None
    result["first_pass_cpu_s_per_gb"] = per_gb(warmup)
    result["first_pass_mb_per_s"] = warmup[3] * BLOCK_BYTES / warmup[0] / 1e6 if warmup and warmup[3] else None
    result["passes"] = passes
    return result


# How socket_to_page_cache puts the bytes into the file.
COPY, PREALLOCATED, MAPPED, SPLICED = "copy", "preallocated", "mapped", "spliced"
_MADV_POPULATE_WRITE = 23  # Linux 5.14; not in Python 3.11's mmap module
_F_SETPIPE_SZ = 1031


def _socket_pass(connection: socket.socket, view: memoryview, path: Path, mib: int, sync: bool,
                 deadline: float, into: str = COPY, check: bool = False,
                 sync_mib: int = 1) -> tuple[float, float, float, int]:
    """One pass of socket_to_page_cache: ``mib`` MiB from ``connection`` into a new file at
    ``path``; (seconds, the thread's user and system seconds, MiB written). ``into``: COPY
    receives each MiB into ``view`` and writes it; PREALLOCATED the same into a file first
    given its full size with fallocate; MAPPED receives straight into a shared mapping of such
    a file, each MiB's pages faulted in for writing at once (MADV_POPULATE_WRITE) before it is
    received: one copy, out of the socket into the page cache; SPLICED moves the socket's
    buffers into a pipe and from the pipe into the file (splice(2) twice; the kernel copies once,
    into the page cache; nothing reaches user space). ``check``: each MiB's CRC-32C is computed
    before it is written (a broker validates what it receives before it is visible): in the
    receive buffer, or for MAPPED in the mapping, for SPLICED through a read-only mapping of the
    file after the splice (the bytes never were in user space)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    mapping = None
    pipe = None
    try:
        user0, system0 = _thread_cpu_s()
        start = time.perf_counter()
        if into != COPY:
            os.posix_fallocate(fd, 0, mib * BLOCK_BYTES)
        if into == MAPPED:
            mapping = mmap.mmap(fd, mib * BLOCK_BYTES, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            target = memoryview(mapping)
        if into == SPLICED and check:
            mapping = mmap.mmap(fd, mib * BLOCK_BYTES, mmap.MAP_SHARED, mmap.PROT_READ)
            target = memoryview(mapping)
        if into == SPLICED:
            pipe = os.pipe()
            fcntl.fcntl(pipe[1], _F_SETPIPE_SZ, BLOCK_BYTES)
            connection.setblocking(True)
        filled = written = 0
        while written < mib and time.monotonic() < deadline:
            if into == SPLICED:
                n = os.splice(connection.fileno(), pipe[1], BLOCK_BYTES - filled)
                moved = 0
                while moved < n:
                    moved += os.splice(pipe[0], fd, n - moved)
            elif into == MAPPED:
                if filled == 0:
                    mapping.madvise(_MADV_POPULATE_WRITE, written * BLOCK_BYTES, BLOCK_BYTES)
                n = connection.recv_into(target[written * BLOCK_BYTES + filled:(written + 1) * BLOCK_BYTES])
            else:
                n = connection.recv_into(view[filled:])
            if not n:
                break
            filled += n
            if filled == BLOCK_BYTES:
                if check:
                    crc32c.crc32c(view if into in (COPY, PREALLOCATED)
                                  else target[written * BLOCK_BYTES:(written + 1) * BLOCK_BYTES])
                if into in (COPY, PREALLOCATED):
                    os.write(fd, view)
                written += 1
                filled = 0
                if sync and (written % sync_mib == 0 or written == mib):
                    os.fdatasync(fd)
        seconds = time.perf_counter() - start
        user1, system1 = _thread_cpu_s()
    finally:
        if mapping is not None:
            target.release()
            mapping.close()
        if pipe is not None:
            os.close(pipe[0])
            os.close(pipe[1])
        os.close(fd)
    return seconds, user1 - user0, system1 - system0, written


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
                      follower_flush_s: float = 1.0, samples: bool = False) -> dict:
    """The lat-5k group commit's write pattern without the broker: a record of ``record_bytes``
    arrives every 1/``rate`` s; every ``interval_ms`` from the start (the producer's linger.ms=1
    sends a request a millisecond) or as soon as the previous fsync returns if it took longer, the records arrived
    since are appended to a growing file (a `balanced` broker's active segment: not preallocated,
    so each fsync also writes the inode for the new size) and fsynced, one fsync at a time.
    ``latency_ms``: each record's wait from its arrival to the end of the fsync that covers it (the
    part of an acknowledgement and of a consumer's sight of the record this disk sets at the
    broker's own pattern), percentiles over every record; ``fsync_ms`` the fsync syscalls'. What
    lat-5k's end-to-end tail would be from the disk alone, in the same run; the file is deleted.
    ``request_wait_ms``: the same from a request's arrival (one every ``interval_ms``), the disk's
    part of a record's time at a broker that costs nothing (``samples``: each one, in seconds, as
    ``request_waits_s``; benchmarks/latency_floor.py adds them to the clients' own path).
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
        return _group_commit_wait(directory, seconds, rate, record_bytes, interval_ms, preallocate, samples)
    finally:
        for companion in companions:
            try:
                companion.wait(seconds + 30)
            except subprocess.TimeoutExpired:
                companion.kill()
                companion.wait()


def _group_commit_wait(directory: Path, seconds: float, rate: int, record_bytes: int, interval_ms: float,
                       preallocate: bool, samples: bool) -> dict:
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
            # The next request's arrival: every interval_s from the start (at once if one arrived
            # during this fsync), so a request's wait is timed from its arrival (_waits).
            pause = start + (int((now - start) / interval_s) + 1) * interval_s - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
        finished = time.perf_counter()
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    waits = _waits(syncs, start, rate)
    # A request's (every interval_ms, as the producer's linger sends one) from its arrival: the
    # part of a record's wait a broker that cost nothing would add to the client's own path.
    request_waits = _waits(syncs, start, 1000 / interval_ms)
    result = kafka_load.phase_result(len(waits), record_bytes, finished - start, 0.0, "ok" if waits else "no fsync")

    def percentiles(values):
        values = sorted(values)
        out = {q: values[min(len(values) - 1, int(f * len(values)))] * 1e3
               for q, f in (("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999))}
        out["max"] = values[-1] * 1e3
        return out

    if waits:
        result["latency_ms"] = percentiles(waits)
        result["request_wait_ms"] = percentiles(request_waits)
        if samples:
            result["request_waits_s"] = request_waits
        result["fsync_ms"] = percentiles([end - begin for begin, end in syncs])
        result["fsyncs"] = len(syncs)
        result["fsyncs_over_ms"] = fsyncs_over([end - begin for begin, end in syncs])
    return result


def _waits(syncs: list[tuple[float, float]], start: float, per_s: float) -> list[float]:
    """For arrivals every 1/``per_s`` s from ``start``: each one's wait for the end of the first
    fsync appended after it (``syncs``: (appended at, fsync end))."""
    waits = []
    i = 0
    for k in range(int((syncs[-1][0] - start) * per_s) if syncs else 0):
        arrival = start + k / per_s
        while syncs[i][0] < arrival:
            i += 1
        waits.append(syncs[i][1] - arrival)
    return waits


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


def main(argv=None) -> int:
    """``python -m benchmarks.references``: the kernel's floor under produce (socket_to_page_cache)
    and the other ways of putting received bytes into a file beside it, alternated, each with
    and without an fdatasync per MiB: each way's median pass, its passes and its warm-up pass."""
    import argparse
    import tempfile

    p = argparse.ArgumentParser(prog="python -m benchmarks.references", description=main.__doc__)
    p.add_argument("--dir", type=Path, help="a directory on the data directories' filesystem (default: a new temp dir)")
    p.add_argument("--mib", type=int, default=1024, help="MiB measured per way, in four passes (default 1,024)")
    p.add_argument("--rounds", type=int, default=3, help="rounds of every way (default 3)")
    p.add_argument("--ways", default="copy,copy+check,preallocated,mapped+check,spliced,spliced+check",
                   help="ways to measure, in this order each round (default: all; +check adds a CRC-32C a MiB)")
    p.add_argument("--sync", default="1,0", help="1: an fdatasync per MiB, 0: none (default 1,0)")
    p.add_argument("--sync-mib", type=int, default=1, help="with --sync 1: an fdatasync every N MiB (default 1)")
    args = p.parse_args(argv)
    directory = args.dir or Path(tempfile.mkdtemp(prefix="tidelog-floor-", dir="/var/tmp"))
    try:
        for round_ in range(1, args.rounds + 1):
            for sync in (s == "1" for s in args.sync.split(",")):
                for way in args.ways.split(","):
                    into, _, check = way.partition("+")
                    row = socket_to_page_cache(directory, args.mib, sync, into=into, check=bool(check),
                                               sync_mib=args.sync_mib)
                    print(f"{round_} {f'fdatasync/{args.sync_mib} MiB' if sync else 'no sync':>15} {way:>14}: load "
                          f"{os.getloadavg()[0]:.1f}; {row['receiver_cpu_s_per_gb'] or float('nan'):.3f} s/GB "
                          f"(passes {' '.join(f'{x:.3f}' for x in row['pass_cpu_s_per_gb'])}; warm-up "
                          f"{row['first_pass_cpu_s_per_gb'] or float('nan'):.3f}), "
                          f"{statistics.median(row['pass_mb_per_s'] or [0]):,.0f} MB/s, sender "
                          f"{row['client_cpu_s'] / max(row['bytes'], 1) * 1e9:.3f} s/GB; {row['status']}", flush=True)
    finally:
        if args.dir is None:
            shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
