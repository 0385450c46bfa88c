"""Descriptors of a log (issue 19, item 4): one per partition for its active segment, sealed
segments' files open only while read (closed when idle or least recently used past a cap,
never while unsynced), indexes none; a flush over many logs syncs the filesystem once
without a descriptor per file."""

from __future__ import annotations

import asyncio
import os

import pytest

from tidelog.storage.fsync import syncfs_available
from tidelog.storage.log import LogConfig, PartitionLog
from tidelog.storage.manager import CLEAN_SHUTDOWN_FILE, LogManager
from tidelog.storage.open_files import OpenFiles

from .storage_helpers import all_offsets, append


def open_descriptors(under) -> int:
    """This process's descriptors open on files under ``under`` (only those: a Kafka client a test
    left behind opens and closes sockets at any moment, so a count of every descriptor is racy)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed meanwhile (the listing's own descriptor)
            continue
        count += target.startswith(f"{under}/")
    return count


def rolled_log(tmp_path, files: OpenFiles, segments: int = 5) -> PartitionLog:
    log = PartitionLog.open(tmp_path / "t-0", "t", 0, LogConfig(segment_bytes=200), recover=False, files=files)
    while len(log.segments) < segments:
        append(log)
    return log


def test_sealed_segments_close_when_idle_and_reopen_when_read(tmp_path):
    files = OpenFiles(max_open=100, idle_ms=1_000)
    before = open_descriptors(tmp_path)
    log = rolled_log(tmp_path, files)
    log.flush()  # the rolled segments' writes are synced: their files may now be closed
    assert open_descriptors(tmp_path) - before == len(log.segments)
    assert files.sweep(now=10**9) == len(log.segments) - 1  # every sealed one, idle for ages
    assert open_descriptors(tmp_path) - before == 1 and log.active_segment.file_open
    assert all_offsets(log) == list(range(log.log_end_offset))  # reading reopens them
    assert len(files) == len(log.segments) - 1
    assert files.sweep() == 0  # just used: not idle
    log.close()
    assert open_descriptors(tmp_path) == before and len(files) == 0


def test_more_sealed_files_than_the_cap_close_the_least_recently_used(tmp_path):
    files = OpenFiles(max_open=2, idle_ms=60_000)
    log = rolled_log(tmp_path, files, segments=6)
    log.flush()
    first, *_, last_sealed, active = log.segments
    assert all_offsets(log)  # every sealed segment read once, oldest first
    assert len(files) == 2 and last_sealed.file_open and not first.file_open and active.file_open
    log.close()


def test_a_rolled_segment_is_not_closed_before_its_fsync(tmp_path):
    files = OpenFiles(max_open=1, idle_ms=0)
    log = rolled_log(tmp_path, files, segments=3)
    sealed = log.segments[:-1]
    assert all(s.unsynced for s in sealed)
    for segment in sealed:
        segment.fd  # noqa: B018 - a use, registering it
    assert files.sweep() == 0 and all(s.file_open for s in sealed)
    log.flush()  # synced: closable now, over the cap of one at once, the rest once idle
    files.sweep()
    assert files.closed_total == len(sealed) and not any(s.file_open for s in sealed)
    log.close()


def test_a_rolled_segment_closes_when_idle_even_if_never_read(tmp_path):
    """A group commit over many logs syncs the filesystem without touching a segment's
    descriptor: a rolled segment must still be handed to the cache when it is sealed, or its
    file stays open for good."""
    files = OpenFiles(max_open=100, idle_ms=0)
    log = rolled_log(tmp_path, files, segments=4)
    sealed = log.segments[:-1]
    assert len(files) == len(sealed) and all(s.file_open for s in sealed)
    for segment in sealed:
        segment.unsynced = False  # as after a syncfs (start_flush with syncfs=True touches no descriptor)
    assert files.sweep() == len(sealed) and not any(s.file_open for s in sealed)
    log.close()


needs_syncfs = pytest.mark.skipif(not syncfs_available(), reason="syncfs reports write-back errors from Linux 5.8")


@needs_syncfs
def test_a_flush_over_many_logs_duplicates_no_descriptor(tmp_path, monkeypatch):
    dups = []
    real_dup = os.dup
    monkeypatch.setattr(os, "dup", lambda fd: dups.append(fd) or real_dup(fd))

    async def run():
        manager = LogManager(tmp_path, LogConfig(durability="balanced"))
        manager.open_all({})
        await manager.start()
        logs = [manager.create("t", p) for p in range(20)]
        for log in logs:
            append(log)
        await manager.wait_durable_many([(log, log.log_end_offset) for log in logs])
        assert all(log.durable_offset == 3 for log in logs) and dups == []
        await manager.close()

    asyncio.run(run())


@needs_syncfs
def test_a_start_after_a_crash_syncs_once_for_every_log(tmp_path, monkeypatch):
    import tidelog.storage.manager as manager_module

    async def fill():
        manager = LogManager(tmp_path, LogConfig())
        manager.open_all({})
        for p in range(12):
            append(manager.create("t", p), count=5)
        await manager.close()

    asyncio.run(fill())
    (tmp_path / CLEAN_SHUTDOWN_FILE).unlink()  # as after a SIGKILL
    fsyncs, syncfs_calls = [], []
    monkeypatch.setattr(os, "fsync", lambda fd: fsyncs.append(fd))
    real_sync_filesystem = manager_module.sync_filesystem
    monkeypatch.setattr(manager_module, "sync_filesystem",
                        lambda fd, targets: syncfs_calls.append(len(targets)) or real_sync_filesystem(fd, targets))
    manager = LogManager(tmp_path, LogConfig())
    manager.open_all({})
    assert syncfs_calls == [12] and fsyncs == []  # not three fsyncs a log
    assert all(log.durable_offset == log.log_end_offset == 5 for log in manager.logs())
    assert all(log.active_segment.offset_index.persisted_entries == len(log.active_segment.offset_index)
               for log in manager.logs())
