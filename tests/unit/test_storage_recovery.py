"""Recovery: torn tails, corrupt bytes, missing or broken indexes, garbage, empty dirs."""

from __future__ import annotations

import os
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tidelog.storage.log import LogConfig, PartitionLog

from .storage_helpers import all_offsets, append, batch_spans, open_log


def fill(dir, batches=20, write_indexes=False, **config):
    log = open_log(dir, **config)
    ends = []  # (end position in the last segment's file, next offset) after each batch
    for i in range(batches):
        append(log, count=2, value_size=30 + i, tag=i)
        ends.append((log.active_segment.size_bytes, log.log_end_offset))
    path = log.active_segment.log_path
    if write_indexes:  # as a clean stop does (flushes leave the active segment's in memory)
        log.active_segment.write_indexes()
    log.flush()  # simulate a crash: no close, files left as they are
    return path, ends


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_torn_tail_keeps_exactly_the_whole_batches_before_the_cut(tmp_path_factory, data):
    dir = tmp_path_factory.mktemp("torn")
    path, ends = fill(dir, index_interval_bytes=100)
    cut = data.draw(st.integers(0, ends[-1][0]))
    os.truncate(path, cut)
    log = open_log(dir, recover=True, index_interval_bytes=100)
    expected_end = max([next_offset for end, next_offset in ends if end <= cut], default=0)
    assert log.log_end_offset == expected_end
    assert all_offsets(log) == list(range(expected_end))
    assert append(log) == expected_end


def test_a_corrupt_byte_cuts_the_log_from_its_batch(tmp_path):
    path, ends = fill(tmp_path)
    data = bytearray(path.read_bytes())
    data[ends[9][0] + 70] ^= 0xFF  # inside the 11th batch's records
    path.write_bytes(data)
    log = open_log(tmp_path, recover=True)
    assert log.log_end_offset == ends[9][1]
    assert path.stat().st_size == ends[9][0]


def test_zero_filled_tail_is_cut(tmp_path):
    path, ends = fill(tmp_path)
    with open(path, "ab") as f:
        f.write(b"\x00" * 4096)
    for recover in (True, False):
        log = open_log(tmp_path, recover=recover)
        assert log.log_end_offset == ends[-1][1]
        assert path.stat().st_size == ends[-1][0]
        log.close()


def test_recovery_of_a_torn_middle_segment_drops_later_segments(tmp_path):
    log = open_log(tmp_path, segment_bytes=400)
    for i in range(20):
        append(log, count=2, tag=i)
    second = log.segments[1]
    keep_end = log.segments[0].next_offset
    os.truncate(second.log_path, 10)
    (log.dir / "recovery-point").unlink(missing_ok=True)  # nothing known durable: recover everything
    reopened = open_log(tmp_path, recover=True, segment_bytes=400)
    assert reopened.log_end_offset == keep_end
    assert len(reopened.segments) == 2
    assert all_offsets(reopened) == list(range(keep_end))


def test_missing_or_broken_index_files_are_rebuilt(tmp_path):
    log = open_log(tmp_path, segment_bytes=2_000, index_interval_bytes=64)
    for i in range(60):
        append(log, count=2, tag=i)
    before = [(s.base_offset, list(s.offset_index.keys), list(s.offset_index.values)) for s in log.segments]
    log.close()
    segments = sorted(p for p in (log.dir).glob("*.index"))
    segments[0].unlink()
    with open(segments[1], "ab") as f:
        f.write(b"\x01\x02\x03")  # not a multiple of the entry size
    with open(segments[-1], "ab") as f:
        f.write((1 << 20).to_bytes(4, "big") * 2)  # points beyond the log
    reopened = open_log(tmp_path, segment_bytes=2_000, index_interval_bytes=64)
    after = [(s.base_offset, list(s.offset_index.keys), list(s.offset_index.values)) for s in reopened.segments]
    assert after == before
    assert all_offsets(reopened) == list(range(120))


def test_clean_reopen_restores_state(tmp_path):
    log = open_log(tmp_path, segment_bytes=700, index_interval_bytes=64)
    for i in range(40):
        append(log, count=2, timestamp_ms=5_000 + i, tag=i)
    summaries = log.segment_summaries()
    log.close()
    reopened = open_log(tmp_path, segment_bytes=700, index_interval_bytes=64)
    assert reopened.segment_summaries() == summaries
    assert reopened.max_timestamp_offset() == (78, 5_039)
    assert append(reopened) == 80


def test_empty_partition_dir(tmp_path):
    (tmp_path / "topic.a-b-0").mkdir()
    log = open_log(tmp_path, recover=True)
    assert (log.log_start_offset, log.log_end_offset) == (0, 0)
    assert log.read(0, 100, True) == b""


def test_crash_without_any_flush_recovers_every_segment(tmp_path):
    log = open_log(tmp_path, segment_bytes=600, index_interval_bytes=64)
    for i in range(40):
        append(log, count=2, tag=i)
    assert len(log.segments) > 3
    # crash: the process dies, nothing flushed or closed; the recovery point is still 0
    reopened = open_log(tmp_path, recover=True, segment_bytes=600, index_interval_bytes=64)
    assert reopened.log_end_offset == 80
    assert all_offsets(reopened) == list(range(80))
    assert [len(s.offset_index) for s in reopened.segments] == [len(s.offset_index) for s in log.segments]


def _index_entries(path, entry_size=8) -> int:
    size = path.stat().st_size
    assert size % entry_size == 0, f"{path.name} is torn: {size} bytes"
    return size // entry_size


def test_recovery_replaces_the_stale_index_file_and_a_clean_restart_reads_right(tmp_path):
    """Issue 10.1: the rebuilt index used to be appended after the stale entries."""
    path, ends = fill(tmp_path, batches=25, write_indexes=True, index_interval_bytes=64)
    index_path = path.with_suffix(".index")
    assert _index_entries(index_path) > 5  # recovery has a stale file to replace
    cut = ends[14][0] + 10  # inside the 16th batch
    os.truncate(path, cut)
    log = open_log(tmp_path, recover=True, index_interval_bytes=64)
    expected = list(range(ends[14][1]))
    assert all_offsets(log) == expected
    in_memory = len(log.active_segment.offset_index)
    log.close()
    assert _index_entries(index_path) == in_memory
    clean = open_log(tmp_path, index_interval_bytes=64)  # a clean start trusts the index it finds
    assert all_offsets(clean) == expected
    for offset in expected:  # every offset is found where it is, not only a scan from the start
        first = batch_spans(clean.read(offset, 1, True))[0]
        assert first[0] <= offset <= first[1]


def test_a_torn_index_file_heals(tmp_path, caplog):
    log = open_log(tmp_path, index_interval_bytes=64)
    for i in range(30):
        append(log, count=2, tag=i)
    log.close()
    index_path = sorted(log.dir.glob("*.index"))[-1]
    timeindex_path = index_path.with_suffix(".timeindex")
    entries = _index_entries(index_path)
    for path in (index_path, timeindex_path):
        with open(path, "ab") as f:
            f.write(b"\x01\x02\x03")
    open_log(tmp_path, index_interval_bytes=64).close()
    assert _index_entries(index_path) == entries
    _index_entries(timeindex_path, 12)
    caplog.clear()
    reopened = open_log(tmp_path, index_interval_bytes=64)
    assert "rebuilding" not in caplog.text
    assert all_offsets(reopened) == list(range(60))


def _rewrite_entry(path, slot, entry):
    data = bytearray(path.read_bytes())
    data[slot * len(entry) : (slot + 1) * len(entry)] = entry
    path.write_bytes(bytes(data))


def test_an_index_unsorted_in_the_middle_is_rebuilt(tmp_path):
    log = open_log(tmp_path, segment_bytes=4_000, index_interval_bytes=64)
    for i in range(80):
        append(log, count=2, timestamp_ms=10_000 + i, tag=i)
    before = [(list(s.offset_index.keys), list(s.offset_index.values)) for s in log.segments]
    by_time = [log.offset_for_timestamp(10_000 + i) for i in range(0, 80, 7)]
    log.close()
    index_path = sorted(log.dir.glob("*.index"))[0]
    assert _index_entries(index_path) > 6
    _rewrite_entry(index_path, 2, struct.pack(">ii", 1 << 20, 1 << 20))  # the last two stay in order
    timeindex_path = sorted(log.dir.glob("*.timeindex"))[1]
    assert _index_entries(timeindex_path, 12) > 3
    _rewrite_entry(timeindex_path, 1, struct.pack(">qi", 1 << 50, 1))  # timestamps go backwards after it
    reopened = open_log(tmp_path, segment_bytes=4_000, index_interval_bytes=64)
    assert [(list(s.offset_index.keys), list(s.offset_index.values)) for s in reopened.segments] == before
    assert [reopened.offset_for_timestamp(10_000 + i) for i in range(0, 80, 7)] == by_time
    assert all_offsets(reopened) == list(range(160))


def test_an_index_entry_outside_its_segment_is_rebuilt(tmp_path):
    log = open_log(tmp_path, segment_bytes=4_000, index_interval_bytes=64)
    for i in range(80):
        append(log, count=2, tag=i)
    before = [(list(s.offset_index.keys), list(s.offset_index.values)) for s in log.segments]
    log.close()
    index_path = sorted(log.dir.glob("*.index"))[0]
    # a negative first entry: monotonic, but outside the segment
    _rewrite_entry(index_path, 0, struct.pack(">ii", -5, -100))
    reopened = open_log(tmp_path, segment_bytes=4_000, index_interval_bytes=64)
    assert [(list(s.offset_index.keys), list(s.offset_index.values)) for s in reopened.segments] == before


def test_recovering_an_active_segment_touches_no_index_file_until_it_closes(tmp_path, monkeypatch):
    """A start after a crash rebuilds the active segment's indexes in memory only (a crash rebuilds
    them anyway); the files are settled at the next write (here the close), never emptied first."""
    path, ends = fill(tmp_path, batches=25, write_indexes=True, index_interval_bytes=64)
    index_path, timeindex_path = path.with_suffix(".index"), path.with_suffix(".timeindex")
    os.truncate(path, ends[19][0] + 10)  # a torn tail: the file holds entries past the cut
    stale = index_path.read_bytes(), timeindex_path.read_bytes()
    truncations = []
    real_ftruncate = os.ftruncate
    monkeypatch.setattr(os, "ftruncate", lambda fd, size: truncations.append(size) or real_ftruncate(fd, size))
    log = PartitionLog.open(path.parent, "topic.a-b", 0, LogConfig(index_interval_bytes=64), recover=True,
                            defer_recovery_sync=True)  # as LogManager.open_all opens logs after a crash
    log.recovered_indexes()
    log.complete_recovery(synced=True)  # (it synced the filesystem meanwhile)
    assert (index_path.read_bytes(), timeindex_path.read_bytes()) == stale
    assert truncations == [ends[19][0]]  # only the log's torn tail
    entries = list(zip(log.active_segment.offset_index.keys, log.active_segment.offset_index.values))
    log.close()
    assert 0 not in truncations[1:]  # the index files were cut behind the entries they share, not emptied
    assert _index_entries(index_path) == len(entries)
    clean = open_log(tmp_path, index_interval_bytes=64)
    assert list(zip(clean.active_segment.offset_index.keys, clean.active_segment.offset_index.values)) == entries
    assert all_offsets(clean) == list(range(ends[19][1]))


def test_an_index_file_differing_from_its_rebuild_is_rewritten_from_the_first_difference(tmp_path, monkeypatch):
    from tidelog.storage.index import OffsetIndex

    index = OffsetIndex(tmp_path / "00000000000000000000.index")
    index.path.write_bytes(b"".join(struct.pack(">ii", k, v) for k, v in [(0, 0), (5, 100), (9, 300), (12, 400)]))
    index.clear()  # a rebuild: the file is compared at the next write
    for key, value in [(0, 0), (5, 100), (8, 250)]:
        index.append(key, value)
    writes = []
    real_pwrite = os.pwrite
    monkeypatch.setattr(os, "pwrite", lambda fd, data, offset: writes.append(offset) or real_pwrite(fd, data, offset))
    index.write_pending()
    assert writes == [16]  # the two shared entries stay
    assert index.path.read_bytes() == b"".join(struct.pack(">ii", k, v) for k, v in [(0, 0), (5, 100), (8, 250)])
    assert not index.pending
