"""PartitionLog: append, read, roll, KIP-74, out-of-range, timestamps, deletes, truncation."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tidelog.protocol.records import iter_records
from tidelog.storage.errors import OffsetOutOfRange

from .storage_helpers import all_offsets, append, batch_spans, open_log


def test_append_assigns_consecutive_offsets_and_reads_back(tmp_path):
    log = open_log(tmp_path)
    assert [append(log, count=3, tag=i) for i in range(5)] == [0, 3, 6, 9, 12]
    assert log.log_end_offset == 15
    records = list(iter_records(log.read(0, 1 << 20, True)))
    assert [r.offset for r in records] == list(range(15))
    assert records[4].value.startswith(b"1-1-")
    log.close()


def test_read_returns_the_batch_containing_the_offset_and_only_whole_batches(tmp_path):
    log = open_log(tmp_path, index_interval_bytes=100)
    for i in range(20):
        append(log, count=4, tag=i)
    data = log.read(9, 300, True)
    spans = batch_spans(data)
    assert spans[0] == (8, 11)
    assert len(data) <= 300
    assert spans == [(8 + 4 * i, 11 + 4 * i) for i in range(len(spans))]


def test_rolls_segments_and_reads_across_them(tmp_path):
    log = open_log(tmp_path, segment_bytes=1_000, index_interval_bytes=64)
    for i in range(60):
        append(log, count=2, tag=i)
    assert len(log.segments) > 5
    assert all(s.size_bytes <= 1_000 for s in log.segments)
    assert all_offsets(log) == list(range(120))
    # a read never spans segments
    for segment in log.segments[:-1]:
        assert batch_spans(log.read(segment.base_offset, 1 << 20, True))[-1][1] == segment.next_offset - 1


def test_rolls_on_segment_ms(tmp_path):
    log = open_log(tmp_path, segment_ms=1_000)
    append(log, now_ms=None)
    first_created = log.active_segment.created_ms
    append(log, now_ms=first_created + 10)
    assert len(log.segments) == 1
    append(log, now_ms=first_created + 1_000)
    assert len(log.segments) == 2


def test_min_one_batch_returns_an_oversized_first_batch_whole(tmp_path):
    log = open_log(tmp_path)
    append(log, count=1, value_size=5_000)
    append(log, count=1, value_size=10)
    assert log.read(0, 100, False) == b""
    data = log.read(0, 100, True)
    assert batch_spans(data) == [(0, 0)]
    assert len(data) > 5_000


def test_max_offset_bounds_the_read(tmp_path):
    log = open_log(tmp_path)
    for i in range(5):
        append(log, count=2, tag=i)
    assert batch_spans(log.read(0, 1 << 20, True, max_offset=6)) == [(0, 1), (2, 3), (4, 5)]
    assert log.read(6, 1 << 20, True, max_offset=6) == b""


def test_offset_out_of_range_and_empty_read_at_the_end(tmp_path):
    log = open_log(tmp_path)
    append(log, count=3)
    assert log.read(3, 1000, True) == b""
    with pytest.raises(OffsetOutOfRange):
        log.read(4, 1000, True)
    log.delete_records_before(2)
    with pytest.raises(OffsetOutOfRange):
        log.read(1, 1000, True)
    assert batch_spans(log.read(2, 1000, True)) == [(0, 2)]  # the containing batch


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    sizes=st.lists(st.tuples(st.integers(1, 5), st.integers(0, 400)), min_size=1, max_size=40),
    interval=st.integers(1, 600),
    segment_bytes=st.integers(600, 5_000),
    data=st.data(),
)
def test_read_matches_a_linear_scan(tmp_path_factory, sizes, interval, segment_bytes, data):
    log = open_log(tmp_path_factory.mktemp("log"), segment_bytes=segment_bytes, index_interval_bytes=interval)
    spans = []
    for i, (count, value_size) in enumerate(sizes):
        base = append(log, count=count, value_size=value_size, tag=i)
        spans.append((base, base + count - 1))
    fetch_offset = data.draw(st.integers(0, log.log_end_offset - 1))
    max_bytes = data.draw(st.integers(1, 3_000))
    got = batch_spans(log.read(fetch_offset, max_bytes, True))
    containing = next(s for s in spans if s[1] >= fetch_offset)
    assert got[0] == containing
    assert got == spans[spans.index(containing) : spans.index(containing) + len(got)]
    log.close()


def test_offset_for_timestamp_finds_the_first_record_at_or_after(tmp_path):
    log = open_log(tmp_path, segment_bytes=600, index_interval_bytes=50)
    for i in range(30):
        append(log, count=2, timestamp_ms=1_000 + 10 * i, tag=i)
    assert log.offset_for_timestamp(0) == (0, 1_000)
    assert log.offset_for_timestamp(1_000) == (0, 1_000)
    assert log.offset_for_timestamp(1_001) == (2, 1_010)
    assert log.offset_for_timestamp(1_150) == (30, 1_150)
    assert log.offset_for_timestamp(1_290) == (58, 1_290)
    assert log.offset_for_timestamp(1_291) is None
    assert log.max_timestamp_offset() == (58, 1_290)
    log.delete_records_before(31)
    assert log.offset_for_timestamp(0) == (31, 1_150)


def test_offset_for_timestamp_within_a_batch(tmp_path):
    from tidelog.protocol.records import build_batch, parse_batch_header

    log = open_log(tmp_path)
    batch = bytearray(build_batch([(None, b"a", [], 500), (None, b"b", [], 900), (None, b"c", [], 700)]))
    log.append(memoryview(batch), parse_batch_header(batch))
    assert log.offset_for_timestamp(600) == (1, 900)
    assert log.offset_for_timestamp(650) == (1, 900)
    assert log.max_timestamp_offset() == (1, 900)


def test_delete_records_before_moves_the_start_and_drops_whole_segments(tmp_path):
    log = open_log(tmp_path, segment_bytes=500)
    for i in range(30):
        append(log, count=2, tag=i)
    segments_before = len(log.segments)
    second_base = log.segments[1].base_offset
    assert log.delete_records_before(second_base + 1) == second_base + 1
    assert log.segments[0].base_offset == second_base
    assert len(log.segments) == segments_before - 1
    with pytest.raises(OffsetOutOfRange):
        log.delete_records_before(log.log_end_offset + 1)
    log.close()
    reopened = open_log(tmp_path)
    assert reopened.log_start_offset == second_base + 1
    assert reopened.delete_records_before(reopened.log_end_offset) == 60
    assert len(reopened.segments) == 1 and reopened.active_segment.size_bytes == 0
    assert reopened.read(60, 100, True) == b""
    assert append(reopened) == 60


def test_truncate_to_drops_whole_batches(tmp_path):
    log = open_log(tmp_path, segment_bytes=500, index_interval_bytes=50)
    for i in range(30):
        append(log, count=2, tag=i)
    log.truncate_to(41)  # inside batch 40..41: the whole batch goes
    assert log.log_end_offset == 40
    assert all_offsets(log) == list(range(40))
    assert append(log) == 40
    log.close()
    assert all_offsets(open_log(tmp_path, recover=True)) == list(range(43))


def test_truncate_to_below_the_first_segment_empties_the_log(tmp_path):
    log = open_log(tmp_path, segment_bytes=500)
    for i in range(10):
        append(log, count=2, tag=i)
    log.truncate_to(0)
    assert (log.log_start_offset, log.log_end_offset) == (0, 0)
    assert append(log) == 0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    sizes=st.lists(st.tuples(st.integers(1, 5), st.integers(0, 400)), min_size=1, max_size=40),
    interval=st.integers(1, 600),
    segment_bytes=st.integers(600, 5_000),
    data=st.data(),
)
def test_a_file_slice_holds_the_bytes_read_returns(tmp_path_factory, sizes, interval, segment_bytes, data):
    """read(as_slice=True) finds the same range from batch headers and the index alone (sendfile)."""
    log = open_log(tmp_path_factory.mktemp("log"), segment_bytes=segment_bytes, index_interval_bytes=interval)
    for i, (count, value_size) in enumerate(sizes):
        append(log, count=count, value_size=value_size, tag=i)
    fetch_offset = data.draw(st.integers(0, log.log_end_offset - 1))
    max_bytes = data.draw(st.integers(0, 3_000))
    min_one_batch = data.draw(st.booleans())
    max_offset = data.draw(st.one_of(st.none(), st.integers(0, log.log_end_offset)))
    expected = bytes(log.read(fetch_offset, max_bytes, min_one_batch, max_offset))
    got = log.read(fetch_offset, max_bytes, min_one_batch, max_offset, as_slice=True)
    assert (got.read() if got else b"") == expected
    if expected:
        spans = batch_spans(expected)
        assert got.records == spans[-1][1] + 1 - spans[0][0]
    log.close()


def test_a_file_slice_outlives_an_idle_close_but_not_its_segment_leaving_the_log(tmp_path):
    log = open_log(tmp_path, segment_bytes=600)
    for i in range(10):
        append(log, count=2, value_size=100, tag=i)
    first = log.segments[0]
    piece = log.read(0, 400, True, as_slice=True)
    expected = bytes(log.read(0, 400, True))
    first.close_file()  # closed while idle (OpenFiles): reopened for the send
    assert piece.read() == expected
    first.release()  # retention, truncation or the cleaner took it out of the log
    with pytest.raises(OSError, match="left the log"):
        piece.read()
    log.close()
