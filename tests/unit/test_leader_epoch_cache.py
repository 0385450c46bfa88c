"""The leader-epoch cache (epoch -> first offset) against the log it describes."""

from __future__ import annotations

import os

from tidelog.protocol.records import parse_batch_header, set_partition_leader_epoch
from tidelog.storage.leader_epoch import EPOCH_FILE, LeaderEpochCache

from .storage_helpers import make_batch, open_log


def append_in_epoch(log, epoch: int, count: int = 2) -> int:
    batch = make_batch(count)
    info = set_partition_leader_epoch(batch, parse_batch_header(batch), epoch)
    return log.append(memoryview(batch), info)


def test_entries_past_a_recovery_cut_are_dropped_at_load(tmp_path):
    """A power loss can cut the log below where the (fsynced) cache says an epoch began:
    loading clamps the cache to the recovered log, as Kafka's log loading does."""
    log = open_log(tmp_path)
    cache = LeaderEpochCache(log)
    for epoch in (0, 1, 2):
        cache.assign(epoch, log.log_end_offset)
        append_in_epoch(log, epoch)
        append_in_epoch(log, epoch)
    assert cache.entries == [(0, 0), (1, 4), (2, 8)]
    cut_at = log.active_segment.size_bytes * 5 // 12  # inside the third batch (offsets 4-5)
    path = log.active_segment.log_path
    log.flush()
    os.truncate(path, cut_at)  # the crash: what was not fsynced is gone
    log = open_log(tmp_path, recover=True)
    assert log.log_end_offset == 4

    cache = LeaderEpochCache(log)
    assert cache.entries == [(0, 0)]
    assert cache.latest_epoch == 0
    assert cache.end_offset_for(1, log.log_end_offset) == (0, 4)
    log.flush()  # the clamped file is written before the next append or flush
    assert (log.dir / EPOCH_FILE).read_text() == "0 0\n"


def test_entries_below_the_log_start_are_moved_up_to_it(tmp_path):
    log = open_log(tmp_path)
    cache = LeaderEpochCache(log)
    for epoch in (0, 1):
        cache.assign(epoch, log.log_end_offset)
        append_in_epoch(log, epoch)
        append_in_epoch(log, epoch)
    log.roll()
    append_in_epoch(log, 1)
    log.delete_records_before(6)
    log.close()
    log = open_log(tmp_path)
    assert LeaderEpochCache(log).entries == [(1, 6)]


def test_an_empty_log_writes_no_file_until_an_epoch_begins(tmp_path):
    """A new partition costs one checkpoint write (its first epoch), not two: a missing file
    and an empty log say the same."""
    log = open_log(tmp_path)
    cache = LeaderEpochCache(log)
    assert not (log.dir / EPOCH_FILE).exists()
    cache.assign(0, 0)
    log.flush()
    assert (log.dir / EPOCH_FILE).read_text() == "0 0\n"
    cache = LeaderEpochCache(open_log(tmp_path))  # a restart: the clamp drops the empty epoch ...
    cache.assign(0, 0)  # ... and leading again brings it back: nothing to write
    assert cache.log._deferred_files == {}


def test_an_epoch_change_is_synced_by_the_logs_next_flush_not_on_its_own(tmp_path, monkeypatch):
    """Leading 10,000 partitions at start wrote and fsynced each one's checkpoint twice (issue
    19: a 205 s start). The file is replaced before the log's next append and synced by its next
    flush, which comes before any record of the new epoch is acknowledged."""
    log = open_log(tmp_path)
    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append(os.path.basename(os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    cache = LeaderEpochCache(log)
    cache.assign(3, 0)
    assert not (log.dir / EPOCH_FILE).exists()  # written before the next append
    append_in_epoch(log, 3)
    assert synced == [] and (log.dir / EPOCH_FILE).read_text() == "3 0\n"
    log.flush()
    assert EPOCH_FILE in synced and log.dir.name in synced  # the file and its directory entry
    synced.clear()
    append_in_epoch(log, 3)
    log.flush()
    assert EPOCH_FILE not in synced


def test_a_torn_or_emptied_file_is_rebuilt_from_the_log(tmp_path):
    log = open_log(tmp_path)
    cache = LeaderEpochCache(log)
    for epoch in (1, 2):
        cache.assign(epoch, log.log_end_offset)
        append_in_epoch(log, epoch)
    for damaged in ("1 0\n2", ""):  # a power loss before the flush that would have synced it
        (log.dir / EPOCH_FILE).write_text(damaged)
        assert LeaderEpochCache(log).entries == [(1, 0), (2, 2)]
