"""Shared helpers for the storage unit tests."""

from __future__ import annotations

import os
from pathlib import Path

from tidelog.protocol.records import build_batch, iter_records, parse_batch_header
from tidelog.storage.log import LogConfig, PartitionLog


def make_batch(count: int = 3, value_size: int = 20, timestamp_ms: int = 1_000, tag: int = 0) -> bytearray:
    records = [(b"k%d" % i, (b"%d-%d-" % (tag, i)).ljust(value_size, b"x"), []) for i in range(count)]
    return bytearray(build_batch(records, timestamp_ms=timestamp_ms))


def append(log: PartitionLog, count: int = 3, value_size: int = 20, timestamp_ms: int = 1_000, tag: int = 0,
           now_ms: int | None = None) -> int:
    batch = make_batch(count, value_size, timestamp_ms, tag)
    return log.append(memoryview(batch), parse_batch_header(batch), now_ms=now_ms)


def open_log(dir: Path, recover: bool = False, **config) -> PartitionLog:
    return PartitionLog.open(dir / "topic.a-b-0", "topic.a-b", 0, LogConfig(**config), recover=recover)


def batch_spans(data) -> list[tuple[int, int]]:
    """(base offset, last offset) of each whole batch in ``data``; asserts nothing is cut."""
    spans, pos = [], 0
    while pos < len(data):
        info = parse_batch_header(data, pos)
        assert pos + info.size <= len(data), "a batch was cut"
        spans.append((info.base_offset, info.last_offset))
        pos += info.size
    return spans


def all_offsets(log: PartitionLog) -> list[int]:
    offsets, next_offset = [], log.log_start_offset
    while next_offset < log.log_end_offset:
        data = log.read(next_offset, 1 << 20, True)
        records = list(iter_records(data))
        assert records
        offsets += [r.offset for r in records if r.offset >= next_offset]
        next_offset = batch_spans(data)[-1][1] + 1
    return offsets


def spy_fsyncs(monkeypatch) -> list[tuple[str, bool]]:
    """(path, whether it still exists) of each fsync from now on; directories end with "/".
    Managers started meanwhile run every job in the Python flush threads, where os.fsync is
    called (the C fsync thread, storage/fsync.py FsyncWorker, calls fsync(2) itself)."""
    from tidelog.storage import manager as manager_module

    monkeypatch.setattr(manager_module, "FsyncWorker", None)
    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        path = os.readlink(f"/proc/self/fd/{fd}")
        synced.append(path + "/" if os.path.isdir(path) else path)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return synced
