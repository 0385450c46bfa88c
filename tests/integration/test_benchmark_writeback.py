"""benchmarks/writeback.py: a latency row starts with the machine's write-back finished, and what
the disk did during it is counted (/proc/diskstats)."""

from __future__ import annotations

import os

import pytest

from benchmarks import writeback
from benchmarks.cli import run_target
from benchmarks.peers import Tidelog
from benchmarks.workloads import Workload

MIB = 1 << 20


def test_settle_puts_what_is_dirty_on_the_disk(tmp_path):
    device = writeback.device_name(tmp_path)
    if writeback.disk_counters(device) is None:
        pytest.skip(f"{tmp_path} is not on a block device /proc/diskstats counts")
    before = writeback.disk_counters(device)
    with open(tmp_path / "dirty.bin", "wb") as f:  # 64 MiB in the page cache, no fsync
        f.write(os.urandom(64 * MIB))
    settled = writeback.settle()
    delta = writeback.disk_delta(before, writeback.disk_counters(device))
    # Without the sync they would sit in the page cache for dirty_expire_centisecs (30 s by default);
    # other processes' writes meanwhile only add to the count.
    assert delta["written_mib"] >= 64, (settled, delta)
    assert settled["sync_s"] >= 0 and settled["dirty_mib_before"] >= 0 and delta["flushes"] >= 0


def test_every_latency_row_starts_settled_and_counts_the_disk_during_it(tmp_path):
    workload = Workload("lat-smoke", 1024, "all", rate=2_000, seconds=0.5)
    (row,) = run_target(Tidelog("balanced"), workload, 1, 0, tmp_path, 60)
    assert row["status"] == "ok" and row["phase"] == "latency", row
    assert set(row["writeback_before"]) == {"dirty_mib_before", "writeback_mib_before", "sync_s"}
    if row["disk_during"] is not None:
        assert row["disk_during"]["written_mib"] >= 0.5 and row["disk_during"]["flushes"] > 0  # the broker's fsyncs
    assert list(tmp_path.iterdir()) == []


def test_the_report_counts_the_disk_references_long_fsyncs_per_run():
    from benchmarks import report

    rows = [{"run": run, "target": "disk-group-commit-wait", "kind": "reference", "workload": "-", "phase": "latency",
             "status": "ok", "latency_ms": {"p50": 0.5, "p99": 2.0, "p99.9": 9.0, "max": 60.0},
             "fsyncs_over_ms": {"10": 4, "20": over_20, "50": over_50}} for run, over_20, over_50 in ((1, 3, 1), (2, 0, 0))]
    (check,) = [c for c in report.issue_targets({"rows": rows, "settings": {"workloads": []}})
                if "disk-group-commit-wait" in c["target"]]
    assert check["measured"].endswith("; fsyncs over 20 / 50 ms, per run: 3 / 1, 0 / 0"), check
