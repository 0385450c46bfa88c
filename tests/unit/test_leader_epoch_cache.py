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
    assert (log.dir / EPOCH_FILE).read_text() == "0 0\n"
