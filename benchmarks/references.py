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


def client_ceiling(records: int, record_bytes: int) -> dict:
    return kafka_load.client_ceiling(records, record_bytes)
