"""How much a broker can hold, derived from its open files limit and memory (server/resources.py)."""

from __future__ import annotations

import errno

from tidelog.server import resources
from tidelog.server.resources import partition_capacity, resource_of

GIB = 1 << 30


def test_capacity_from_descriptors_keeps_a_quarter_for_connections():
    capacity, why = partition_capacity(20000, 64 * GIB)
    assert capacity == (20000 - 5000) // resources.FDS_PER_PARTITION
    assert "open files limit 20000" in why


def test_capacity_from_memory_when_it_binds_first():
    capacity, why = partition_capacity(1 << 20, 2 * GIB)
    assert capacity == GIB // resources.MEMORY_PER_PARTITION_BYTES
    assert "memory limit 2048 MiB" in why


def test_capacity_follows_the_descriptor_cost_per_partition(monkeypatch):
    """The storage layer may come to hold fewer descriptors per partition: the cap follows."""
    monkeypatch.setattr(resources, "FDS_PER_PARTITION", 1)
    assert partition_capacity(512, 64 * GIB)[0] == 384


def test_tiny_limits_keep_a_minimum_reserve():
    assert partition_capacity(100, 64 * GIB)[0] == (100 - 64) // resources.FDS_PER_PARTITION
    assert partition_capacity(10, 64 * GIB)[0] == 0


def test_which_resource_an_error_names():
    assert resource_of(OSError(errno.EMFILE, "Too many open files")) == resources.FILE_DESCRIPTORS
    assert resource_of(OSError(errno.ENOSPC, "No space left on device")) == resources.DISK_SPACE
    assert resource_of(MemoryError()) == resources.MEMORY
    assert resource_of(OSError(errno.EIO, "Input/output error")) is None


def test_a_segment_holds_one_descriptor_and_its_indexes_none(tmp_path, monkeypatch):
    """A partition costs FDS_PER_PARTITION descriptors: its active segment's .log; the indexes
    are opened only while written (issue 19: three per segment stopped a broker at ~6,660)."""
    import os

    from tidelog.server.resources import FDS_PER_PARTITION
    from tidelog.storage.log import LogConfig, PartitionLog

    from .storage_helpers import append

    held: set[int] = set()
    real_open, real_close = os.open, os.close

    def tracking_open(path, *args):
        fd = real_open(path, *args)
        held.add(fd)
        return fd

    def tracking_close(fd):
        held.discard(fd)
        real_close(fd)

    monkeypatch.setattr(os, "open", tracking_open)
    monkeypatch.setattr(os, "close", tracking_close)
    log = PartitionLog.open(tmp_path / "t-0", "t", 0, LogConfig(index_interval_bytes=10), recover=False)
    for _ in range(20):
        append(log)
    log.flush()
    assert len(log.active_segment.offset_index) > 5 and len(held) == FDS_PER_PARTITION == 1
    log.close()
    assert held == set()


