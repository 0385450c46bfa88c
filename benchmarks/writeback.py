"""The machine's write-back around a latency row: finish it before the row, count the disk's work during it.

A `balanced` acknowledgement waits for an fsync, and an fsync ends with a cache flush of the whole
device, which serves every writer's requests in one queue: a latency row that starts while an
earlier row's (or another process's) dirty pages are still going to the disk pays for them in its
acknowledgements. So every latency row, of every target, and the disk's latency references start
with ``settle()``: one sync(2), which returns once everything dirty until then is on the disk;
what it found is noted in the row. ``disk_counters`` reads /proc/diskstats for the device under a
directory (bytes written by everyone, cache flushes, discards), to say what the disk did during a
row in counts rather than in timings.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

MIB = 1 << 20


def dirty_bytes() -> tuple[int, int]:
    """(Dirty, Writeback) of /proc/meminfo in bytes: page-cache data not yet on the disk, and in flight."""
    values = {}
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("Dirty", "Writeback"):
                    values[key] = int(rest.split()[0]) * 1024
    except (OSError, ValueError):
        pass
    return values.get("Dirty", 0), values.get("Writeback", 0)


def settle() -> dict:
    """Write back everything dirty (sync(2) waits for it) and say what there was and how long it took."""
    dirty, writeback = dirty_bytes()
    started = time.perf_counter()
    os.sync()
    return {"dirty_mib_before": round(dirty / MIB, 1), "writeback_mib_before": round(writeback / MIB, 1),
            "sync_s": round(time.perf_counter() - started, 3)}


def device_name(directory: Path) -> str | None:
    """The block device (as /proc/diskstats names it) holding ``directory``; None for tmpfs and the like."""
    try:
        st_dev = os.stat(directory).st_dev
        return Path(f"/sys/dev/block/{os.major(st_dev)}:{os.minor(st_dev)}").resolve().name
    except OSError:
        return None


def disk_counters(device: str | None) -> dict | None:
    """The device's cumulative counters: bytes written, write requests, cache flushes, bytes discarded."""
    if device is None:
        return None
    try:
        with open("/proc/diskstats") as f:
            for line in f:
                fields = line.split()
                if len(fields) >= 14 and fields[2] == device:
                    numbers = [int(x) for x in fields[3:]]
                    return {"written_bytes": numbers[6] * 512, "writes": numbers[4],
                            "discarded_bytes": numbers[13] * 512 if len(numbers) > 13 else 0,
                            "flushes": numbers[15] if len(numbers) > 15 else 0}
    except (OSError, ValueError):
        pass
    return None


def disk_delta(before: dict | None, after: dict | None) -> dict | None:
    """What the device did between two ``disk_counters`` readings (every process's requests)."""
    if before is None or after is None:
        return None
    return {"written_mib": round((after["written_bytes"] - before["written_bytes"]) / MIB, 1),
            "writes": after["writes"] - before["writes"], "flushes": after["flushes"] - before["flushes"],
            "discarded_mib": round((after["discarded_bytes"] - before["discarded_bytes"]) / MIB, 1)}
