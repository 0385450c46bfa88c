"""A consumer reading on from where its last read ended starts there (storage/segment.py
``read_range``'s ``_read_hint``), and with everything to the end due reads no batch header at all.
The slices it returns are those of a read that walks from the offset index, across appends,
truncations and max_offset bounds."""

from __future__ import annotations

import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tidelog.storage import segment as segment_module

from .storage_helpers import append, batch_spans, open_log


def _slice(log, offset, max_bytes, max_offset):
    got = log.read(offset, max_bytes, True, max_offset, as_slice=True)
    return got.read() if got else b""


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.tuples(st.sampled_from(["append", "read", "truncate"]), st.integers(1, 4),
                                st.integers(0, 300), st.integers(0, 2_000)), min_size=1, max_size=60),
       interval=st.integers(1, 600), segment_bytes=st.integers(600, 5_000))
def test_reading_on_returns_what_a_read_from_the_index_returns(tmp_path_factory, steps, interval, segment_bytes):
    log = open_log(tmp_path_factory.mktemp("log"), segment_bytes=segment_bytes, index_interval_bytes=interval)
    next_offset = 0  # the consumer's position
    for i, (kind, count, size, max_bytes) in enumerate(steps):
        if kind == "append":
            append(log, count=count, value_size=size, tag=i)
        elif kind == "truncate" and log.log_end_offset:
            log.truncate_to(max(log.log_end_offset - count, 0))
            next_offset = min(next_offset, log.log_end_offset)
        elif log.log_end_offset > next_offset:
            max_offset = log.log_end_offset - (count - 1 if size % 2 else 0)
            expected = bytes(log.read(next_offset, max_bytes, True, max_offset))  # the bytes read walk the index
            got = _slice(log, next_offset, max_bytes, max_offset)
            assert got == expected
            if got:
                next_offset = batch_spans(got)[-1][1] + 1
    log.close()


def test_a_read_from_where_the_last_ended_reads_no_header(tmp_path, monkeypatch):
    log = open_log(tmp_path, index_interval_bytes=4096)
    for i in range(8):
        append(log, count=1, value_size=1000, tag=i)
    assert batch_spans(_slice(log, 0, 1 << 20, None)) == [(i, i) for i in range(8)]
    headers = []
    real_header_at = segment_module.LogSegment._header_at
    monkeypatch.setattr(segment_module.LogSegment, "_header_at",
                        lambda self, position, end: headers.append(position) or real_header_at(self, position, end))
    for i in range(8, 11):
        append(log, count=1, value_size=1000, tag=i)
        assert batch_spans(_slice(log, i, 1 << 20, None)) == [(i, i)]
    assert headers == []
    _slice(log, 3, 1 << 20, None)  # elsewhere: from the index, header by header
    assert headers
    log.close()


def test_a_cut_file_forgets_where_the_last_read_ended(tmp_path):
    """After a truncation the same offset sits elsewhere in the file: the read must not start
    where the last one ended (it did not before the hint was forgotten on a cut)."""
    log = open_log(tmp_path, index_interval_bytes=1 << 20)
    now_ms = int(time.time() * 1000)  # (old timestamps would roll a new segment after the cut)
    for i in range(4):
        append(log, count=1, value_size=100, tag=i, timestamp_ms=now_ms)
    assert batch_spans(_slice(log, 0, 1 << 20, None))[-1] == (3, 3)  # the hint: offset 4 at the end
    log.truncate_to(2)
    append(log, count=3, value_size=150, tag=10, timestamp_ms=now_ms)  # offsets 2-4, past where 4 was
    append(log, count=1, value_size=10, tag=11, timestamp_ms=now_ms)  # offset 5
    assert len(log.segments) == 1
    assert bytes(log.read(4, 1 << 20, True)) == _slice(log, 4, 1 << 20, None)
    assert batch_spans(_slice(log, 4, 1 << 20, None)) == [(2, 4), (5, 5)]
    log.close()
