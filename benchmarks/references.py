"""Physical references measured in the same run as the brokers: what the disk and the
client library can do on this machine, with no broker in the way."""

from __future__ import annotations

import os
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


def client_ceiling(records: int, record_bytes: int, partitions: int = 1) -> dict:
    """The producer into nothing (see kafka_load.client_ceiling)."""
    return kafka_load.client_ceiling(records, record_bytes, partitions)


def consume_ceiling(records: int, record_bytes: int, partitions: int = 1, timeout_s: float = 300.0) -> dict:
    """The consumer against librdkafka's mock cluster (see kafka_load.consume_ceiling)."""
    return kafka_load.consume_ceiling(records, record_bytes, timeout_s, partitions)
