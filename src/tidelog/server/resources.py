"""What a broker can run out of (file descriptors, disk space, memory), and how much it can hold.

- ``raise_open_files_limit``: at start the soft RLIMIT_NOFILE goes up to the hard limit, as
  Kafka's packaging and Redpanda do; every partition keeps descriptors open.
- ``partition_capacity``: how many partition replicas this broker holds, from the open-files
  limit (``FDS_PER_PARTITION`` each, after a quarter kept for the sealed segments being read,
  ``segment_file_capacity``, for connections and everything else)
  and from memory (``MEMORY_PER_PARTITION_BYTES`` each, out of half the memory limit), as
  Redpanda caps partitions by descriptors and memory. ``max.broker.partitions`` (KIP-578's name)
  overrides it. Creating partitions beyond it is refused up front with POLICY_VIOLATION.
- ``ResourceMonitor``: an operation that failed because something ran out (EMFILE, ENOSPC,
  MemoryError...) is reported to it: what ran out is logged once per episode, counted in
  ``tidelog_resource_exhausted_total{resource}``, and shown by ``/ready`` and
  ``tidelog_resource_out{resource}`` while it lasts. It also looks every few seconds at how many
  descriptors are open: connections can use them all without any operation failing here (the
  event loop's accept drops what it cannot take), so 95% of the limit starts an episode too.

Not thread-safe; the event loop owns the monitor.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import resource
import time
from pathlib import Path

logger = logging.getLogger(__name__)

# Descriptors one partition holds open: its active segment's .log (storage/segment.py; the
# indexes hold none, storage/index.py). Sealed segments' files are open only while read and
# closed when idle, at most ``segment_file_capacity`` at once (storage/open_files.py), which the
# reserve below covers.
FDS_PER_PARTITION = 1
# What one partition costs in memory, with room: an empty one is ~6 KiB of Python objects, and
# its indexes are kept in memory (up to 2 MiB for a full 1 GiB segment at 4 KiB per entry).
MEMORY_PER_PARTITION_BYTES = 1 << 20
_MIN_FD_RESERVE = 64

FILE_DESCRIPTORS = "file descriptors"
DISK_SPACE = "disk space"
MEMORY = "memory"
RESOURCES = (FILE_DESCRIPTORS, DISK_SPACE, MEMORY)
_ERRNO_RESOURCE = {errno.EMFILE: FILE_DESCRIPTORS, errno.ENFILE: FILE_DESCRIPTORS, errno.ENOSPC: DISK_SPACE,
                   errno.EDQUOT: DISK_SPACE, errno.ENOMEM: MEMORY, errno.ENOBUFS: MEMORY}
_MEMORY_EPISODE_S = 60.0  # a MemoryError counts as "out of memory" for this long
WATCH_INTERVAL_S = 5.0
_DESCRIPTORS_FULL = 0.95  # of the limit: an episode starts
_DESCRIPTORS_BACK = 0.90  # of the limit: it ends


def raise_open_files_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return (before, after)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            return soft, hard
        except (ValueError, OSError) as e:
            logger.warning("cannot raise the open files limit from %d to %d: %s", soft, hard, e)
    return soft, soft


def memory_limit_bytes() -> int:
    """The memory this process may use: physical memory, lowered by a cgroup v2 limit or RLIMIT_AS."""
    limits = [os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")]
    try:
        value = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if value.isdigit():
            limits.append(int(value))
    except OSError:
        pass
    address_space = resource.getrlimit(resource.RLIMIT_AS)[0]
    if address_space != resource.RLIM_INFINITY:
        limits.append(address_space)
    return min(limits)


def segment_file_capacity(open_files: int) -> int:
    """How many sealed segments may keep their file open at once: an eighth of the limit, half
    of the reserve ``partition_capacity`` keeps (the other half is for connections and the rest)."""
    return max(open_files // 8, 16)


def partition_capacity(open_files: int, memory_bytes: int) -> tuple[int, str]:
    """(partitions this broker can hold, why): the smaller of the descriptor and memory bounds."""
    reserve = max(open_files // 4, _MIN_FD_RESERVE)
    by_descriptors = max((open_files - reserve) // FDS_PER_PARTITION, 0)
    by_memory = memory_bytes // 2 // MEMORY_PER_PARTITION_BYTES
    if by_descriptors <= by_memory:
        return by_descriptors, (f"open files limit {open_files}: {reserve} kept for connections, "
                                f"{FDS_PER_PARTITION} descriptors a partition")
    return by_memory, f"memory limit {memory_bytes >> 20} MiB: half of it at {MEMORY_PER_PARTITION_BYTES >> 20} MiB a partition"


def open_file_count() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return -1


def size_resources(configured: int, data_dir: Path, metrics) -> tuple["ResourceMonitor", int]:
    """At start: raise the open files limit, and size the partition capacity from it and memory
    (``configured``, max.broker.partitions, when not negative). The monitor and the capacity."""
    before, open_files = raise_open_files_limit()
    if open_files > before:
        logger.info("open files limit raised from %d to %d (the hard limit)", before, open_files)
    monitor = ResourceMonitor(open_files, data_dir, metrics)
    derived, why = partition_capacity(open_files, memory_limit_bytes())
    if configured < 0:
        capacity = derived
        logger.info("partition capacity %d (%s; max.broker.partitions sets it)", derived, why)
    else:
        capacity = configured
        if configured > derived:
            logger.warning("max.broker.partitions %d is above the %d partitions the %s allows: creating "
                           "partitions may run out of them", configured, derived, why.split(":")[0])
    metrics.open_files_limit.set(open_files)
    metrics.open_files.set_function(open_file_count)
    metrics.partition_capacity.set(capacity)
    return monitor, capacity


def resource_of(error: BaseException) -> str | None:
    """Which resource an exception says ran out, or None."""
    if isinstance(error, MemoryError):
        return MEMORY
    if isinstance(error, OSError):
        return _ERRNO_RESOURCE.get(error.errno)
    return None


class ResourceMonitor:
    """Running out of something, as operations report it; see the module docstring."""

    def __init__(self, open_files_limit: int, data_dir: Path, metrics=None) -> None:
        self.open_files_limit = open_files_limit
        self.data_dir = data_dir
        self._episodes: dict[str, tuple[str, float]] = {}  # resource -> (what failed, when)
        self._counter = metrics.resource_exhausted if metrics is not None else None

    async def watch(self) -> None:
        """Every few seconds: end the episodes that are over, and notice descriptors running out."""
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            if FILE_DESCRIPTORS not in self.exhausted():
                self.check_descriptors()

    def check_descriptors(self) -> None:
        open_files = open_file_count()
        if open_files >= self.open_files_limit * _DESCRIPTORS_FULL:
            self._start_episode(FILE_DESCRIPTORS, f"{open_files} of {self.open_files_limit} open; "
                                                  f"new connections are refused")

    def log_dir_offline(self, reason: str) -> None:
        """The log directory went offline (storage/log_dir.py): if the disk is full, that is what
        ran out, whatever the failed operation saw first."""
        if self._disk_full():
            self._start_episode(DISK_SPACE, f"the log directory went offline: {reason}")

    def report(self, error: BaseException, what: str) -> str | None:
        """``what`` failed with ``error``: if a resource ran out, log it (once an episode), count
        it and return its name; else None."""
        kind = resource_of(error)
        if kind is None:
            return None
        if self._counter is not None:
            self._counter.labels(kind).inc()
        detail = f"{what}: {error}" if str(error) else what
        if kind == FILE_DESCRIPTORS:
            detail += f" ({open_file_count()} open, limit {self.open_files_limit})"
        self._start_episode(kind, detail)
        return kind

    def _start_episode(self, kind: str, detail: str) -> None:
        if kind not in self.exhausted():
            logger.error("out of %s: %s", kind, detail)
        self._episodes[kind] = (detail, time.monotonic())

    def exhausted(self) -> dict[str, str]:
        """What is still out, with what failed: an episode ends when descriptors are back under
        90% of the limit, free disk space is back above 1%, or a minute after a MemoryError."""
        for kind in list(self._episodes):
            if self._recovered(kind):
                detail, _ = self._episodes.pop(kind)
                logger.info("%s available again (after: %s)", kind, detail)
        return {kind: detail for kind, (detail, _) in self._episodes.items()}

    def _disk_full(self) -> bool:
        """Less than 1% of the data directory's file system free (or it cannot be asked)."""
        try:
            stat = os.statvfs(self.data_dir)
        except OSError:
            return True
        return stat.f_bavail <= stat.f_blocks // 100

    def _recovered(self, kind: str) -> bool:
        if kind == FILE_DESCRIPTORS:
            return 0 <= open_file_count() < self.open_files_limit * _DESCRIPTORS_BACK
        if kind == DISK_SPACE:
            return not self._disk_full()
        return time.monotonic() - self._episodes[kind][1] > _MEMORY_EPISODE_S
