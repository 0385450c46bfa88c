"""benchmarks.produce_wall runs end to end (a few thousand records, confluent-kafka against a
Tidelog broker and against librdkafka's mock cluster), so that it cannot rot between uses."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from benchmarks import produce_wall  # noqa: E402


def test_each_thread_is_split_into_cpu_run_queue_and_blocked_time():
    before = {1: ("python", 1.0, 0.5), 2: ("rdk:broker1", 0.0, 0.0), 3: ("idle", 4.0, 0.0)}
    after = {1: ("python", 1.75, 0.75), 2: ("rdk:broker1", 0.5, 0.25), 3: ("idle", 4.001, 0.0),
             4: ("rdk:broker1", 0.25, 0.0)}  # a thread started during the phase
    groups = produce_wall.by_name(before, after, wall_s=2.0)
    assert groups == {
        "python": {"threads": 1, "cpu_s": 0.75, "runq_s": 0.25, "blocked_s": 1.0},
        "rdk:broker1": {"threads": 2, "cpu_s": 0.75, "runq_s": 0.25, "blocked_s": 3.0},
    }  # a thread that ran under 5 ms is left out


def test_a_produce_is_split_by_thread_against_tidelog_and_the_mock_cluster(tmp_path):
    # 20,000 records: librdkafka's broker thread runs ~20 ms (threads under 5 ms are left out)
    rows = {target: produce_wall.measure(target, 20_000, 1024, "all", tmp_path / target) for target in ("balanced", "mock")}
    for target, row in rows.items():
        assert row["records"] == 20_000, row
        assert row["enqueued_s"] <= row["wall_s"]
        assert "rdk:broker1" in row["client"], row["client"]
        assert row["client"]["rdk:broker1"]["cpu_s"] > 0 and row["client_minor_faults"] >= 0
    assert rows["balanced"]["broker"] and sum(g["cpu_s"] for g in rows["balanced"]["broker"].values()) > 0
    assert not rows["mock"]["broker"]  # in the client's process
    text = produce_wall.report(rows["balanced"], ceiling_rate=rows["mock"]["records_per_s"])
    assert "client: " in text and "broker: " in text and "records/s = " in text and "bound on" in text
