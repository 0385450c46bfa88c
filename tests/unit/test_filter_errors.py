"""``filter_errors`` counts once each record a share group's filter fails on (a missing header read
with ``headers["x"]``, a type error), on every path a batch may be judged by
(queues/record_attrs._filtered_runs): the one-header walk with the verdicts looked up in C
(protocol/_recordwalk.c ``header_runs``), the one-header values judged in Python
(``RecordFilter.verdicts``), the batch subset in C (``filter_atoms``), and the full walk through
``RecordFilter.judge`` (the CEL memo, the plan's combine). Batch after batch: a value judged before
(a failure remembered by the memo) counts again on every record that has it."""

from __future__ import annotations

import pytest

from tidelog.protocol.records import build_batch, parse_batch_header
from tidelog.queues import record_attrs
from tidelog.queues.filters import compile_filter
from tidelog.queues.record_attrs import QueueSettings, scan_batch

from .test_queue_features import Setup, header, run

NOW = 1_700_000_000_000
ONE_HEADER_SUBSET = 'headers["type"] == b"order"'  # fails on a record without the header
ONE_HEADER_CEL = 'size(headers["type"]) > 3'  # outside the subset: CEL, through the memo
WITH_TIMESTAMP = 'headers["type"] == b"order" && timestamp > 0'  # the subset, not one header alone


def records(n: int = 10) -> list[tuple]:
    """``n`` records: type "order" on i % 5 in (0, 1), "refund" on 2, no type header on 3 and 4."""
    return [(None, b"v%d" % i, [("type", b"order" if i % 5 < 2 else b"refund")] if i % 5 < 3 else [], NOW)
            for i in range(n)]


def failing(batch_records) -> int:
    return sum(1 for _, _, headers, _ in batch_records if not headers)


PATHS = {
    "c-header-runs": (),
    "c-header-values": ("_header_runs_in_c",),
    "c-fields": ("_header_runs_in_c", "_header_values_in_c"),
    "python": ("_header_runs_in_c", "_header_values_in_c", "_fields_in_c", "_filter_atoms_in_c"),
}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("expression", [ONE_HEADER_SUBSET, ONE_HEADER_CEL, WITH_TIMESTAMP])
def test_filter_errors_count_once_a_record_batch_after_batch(monkeypatch, path, expression):
    for name in PATHS[path]:
        monkeypatch.setattr(record_attrs, name, None)
    f = compile_filter(expression)
    settings = QueueSettings(matches=f)
    counted = []
    for base in (0, 10, 20):
        batch_records = records()
        batch = build_batch(batch_records, base_offset=base)
        runs = scan_batch(batch, 0, parse_batch_header(batch), settings, {})
        matched = [o for run_ in runs if run_.matches for o in range(run_.first, run_.last + 1)]
        expected = {ONE_HEADER_CEL: [0, 1, 2, 5, 6, 7]}.get(expression, [0, 1, 5, 6])
        assert matched == [base + o for o in expected]
        counted.append(f.errors)
    assert counted == [4, 8, 12], "each record without the header counts, in every batch"


def test_a_shared_value_counts_on_each_record_when_a_batch_has_many_distinct_values(monkeypatch):
    """More distinct values in a batch than header_runs compares in its walk (16), and a value
    that fails (a null value, ``size(null)``) repeated: each record counts."""
    f = compile_filter(ONE_HEADER_CEL)
    settings = QueueSettings(matches=f)
    batch_records = [(None, b"v", [("type", None if i % 3 == 0 else b"value-%d" % i)], NOW) for i in range(60)]
    for round_ in (1, 2):
        batch = build_batch(batch_records, base_offset=0)
        scan_batch(batch, 0, parse_batch_header(batch), settings, {})
        assert f.errors == 20 * round_


def test_a_share_groups_filter_errors_count_each_record_fetch_after_fetch():
    async def scenario():
        s = Setup(group_configs={"tidelog.filter": ONE_HEADER_SUBSET})
        for _ in range(3):
            s.produce([(b"k", b"v", [header("type", "order")]), (b"k", b"v", []), (b"k", b"v", []),
                       (b"k", b"v", [header("type", "refund")])])
        assert await s.fetch(100) == [0, 4, 8]
        assert s.counts["filtered"] == 9 and s.counts["filter_errors"] == 6
    run(scenario())
