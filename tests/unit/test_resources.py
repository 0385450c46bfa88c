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


def test_a_segment_that_cannot_open_its_indexes_closes_its_log_file(tmp_path, monkeypatch):
    """Running out of descriptors between a segment's .log and its indexes leaked the .log's."""
    import os

    import pytest

    from tidelog.storage import segment as segment_module

    opened: list[int] = []
    real_open = os.open

    def open_twice(path, *args):
        if len(opened) == 2:
            raise OSError(errno.EMFILE, "Too many open files")
        fd = real_open(path, *args)
        opened.append(fd)
        return fd

    monkeypatch.setattr(os, "open", open_twice)
    with pytest.raises(OSError):
        segment_module.LogSegment(tmp_path, 0)
    monkeypatch.undo()
    for fd in opened:
        with pytest.raises(OSError):  # EBADF: closed
            os.fstat(fd)
