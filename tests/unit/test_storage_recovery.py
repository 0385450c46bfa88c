"""Recovery: torn tails, corrupt bytes, missing or broken indexes, garbage, empty dirs."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .storage_helpers import all_offsets, append, open_log


def fill(dir, batches=20, **config):
    log = open_log(dir, **config)
    ends = []  # (end position in the last segment's file, next offset) after each batch
    for i in range(batches):
        append(log, count=2, value_size=30 + i, tag=i)
        ends.append((log.active_segment.size_bytes, log.log_end_offset))
    path = log.active_segment.log_path
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
