"""The share-group filter's memo (queues/filters.py): a memoised filter decides what the CEL
program decides record by record, and its memo stays bounded."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tidelog.queues import filters
from tidelog.queues.filters import compile_filter

EXPRESSIONS = (
    'headers["type"] == b"order"',  # fails on a record without the header: no match
    '"type" in headers && headers["type"] == b"order"',
    '"type" in headers && headers.type in [b"a", b"order"] || "kind" in headers',
    'key == b"k1" && "type" in headers',
    'size(headers) > 1',
    'timestamp % 2 == 0 && "type" in headers',
)

_values = st.none() | st.sampled_from([b"order", b"refund", b"a", b"", b"k1"])
_records = st.lists(st.tuples(
    st.integers(0, 10_000), st.integers(0, 20), st.none() | st.sampled_from([b"k1", b"k2"]),
    st.dictionaries(st.sampled_from(["type", "kind", "trace"]), _values, max_size=3)), min_size=1, max_size=40)


def _unmemoised(f, key, headers, timestamp) -> bool:
    try:
        return f.program.execute({"key": key, "headers": headers, "timestamp": timestamp}) is True
    except Exception:  # noqa: BLE001 - as RecordFilter: a record it cannot judge does not match
        return False


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(EXPRESSIONS), st.lists(_records, min_size=1, max_size=4))
def test_a_memoised_filter_decides_as_the_program_does_record_by_record(expression, batches):
    f = compile_filter(expression)
    for records in batches:  # the memo carries over from batch to batch
        assert f.judge(records) == [_unmemoised(f, key, headers, timestamp) for _, timestamp, key, headers in records]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.none() | st.just(False) | st.sampled_from([b"order", b"x", b""]), min_size=1,
                         max_size=40), min_size=1, max_size=4))
def test_the_one_header_values_path_decides_as_the_program_does(batches):
    f = compile_filter('"type" in headers && headers["type"] == b"order"')
    for values in batches:  # False: the record has no such header
        assert f.judge_values(values) == [_unmemoised(f, None, {} if v is False else {"type": v}, 0) for v in values]


def test_the_memo_is_bounded_and_a_filter_reading_the_timestamp_is_not_memoised(monkeypatch):
    monkeypatch.setattr(filters, "MEMO_ENTRIES", 50)
    f = compile_filter('"type" in headers && headers["type"] == b"7"')
    for n in range(0, 400, 40):
        values = [b"%d" % (n + i) for i in range(40)]
        assert f.judge_values(values) == [v == b"7" for v in values]
        assert len(f._memo) <= 50
    assert f.judge_values([b"7"] * 5) == [True] * 5
    g = compile_filter('timestamp + 0 > 5')  # (outside the subset judged a batch at a time: CEL's path)
    assert g.plan is None
    records = [(i, i, None, {}) for i in range(200)]
    assert g.judge(records) == [i > 5 for i in range(200)]
    assert g.evaluations == 200 and len(g._memo) == 0  # every timestamp differs: no memo at all
