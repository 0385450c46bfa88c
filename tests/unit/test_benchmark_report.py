"""The benchmark report shows the latency rows with the producer's linger.ms, Tidelog's latency
against a peer's in the same run, and issue 19's p99 target for both client settings."""

from benchmarks import report
from benchmarks.workloads import DEFAULT_WORKLOADS, WORKLOADS


def latency_row(run, target, workload, p50, p99, ack=None):
    row = {"run": run, "target": target, "kind": "tidelog" if target.startswith("tidelog-") else "peer",
           "workload": workload, "phase": "latency", "status": "ok", "records_per_s": 5_000, "mb_per_s": 5.1,
           "client_cpu_s": 1.0, "latency_ms": {"p50": p50, "p99": p99, "p99.9": p99 * 2, "max": p99 * 3}}
    if ack is not None:
        row["ack_latency_ms"] = {"p50": ack, "p99": ack * 2, "p99.9": ack * 3}
    return row


def test_linger0_rows_are_the_same_shape_with_linger_0_and_run_by_default():
    for name, base in (("lat-5k-linger0", "lat-5k"), ("lat-20k-linger0", "lat-20k")):
        zero, one = WORKLOADS[name], WORKLOADS[base]
        assert (zero.rate, zero.seconds, zero.record_bytes, zero.acks) == (one.rate, one.seconds, one.record_bytes, one.acks)
        assert (zero.linger_ms, one.linger_ms) == (0, 1)
        assert "linger.ms=0" in zero.describe() and "linger.ms=1" in one.describe()
        assert name in DEFAULT_WORKLOADS.split(",") and base in DEFAULT_WORKLOADS.split(",")


def test_report_shows_linger_ack_latency_ratios_and_both_targets():
    rows = []
    for run in (1, 2):
        rows += [latency_row(run, "tidelog-balanced", "lat-5k", 1.4, 2.2, ack=1.2),
                 latency_row(run, "tidelog-balanced", "lat-5k-linger0", 0.5, 1.0 + run / 10, ack=0.3),
                 latency_row(run, "tansu", "lat-5k", 150.0, 500.0, ack=100.0),
                 latency_row(run, "tansu", "lat-5k-linger0", 10.0, 20.0, ack=5.0)]
    results = {"started": "s", "finished": "f", "rows": rows, "profile": None, "skipped": [],
               "machine": {"cores": 2, "cpu": "x", "memory_gib": 4, "disk": "d", "kernel": "k", "loadavg_at_start": ["0"]},
               "settings": {"records": 1, "runs": 2, "workloads": [vars(WORKLOADS["lat-5k"]), vars(WORKLOADS["lat-5k-linger0"])]}}
    text = report.markdown(results)
    assert "| tidelog-balanced | lat-5k-linger0 | 0 | 5,000 (5,000–5,000) | 0.50 (0.50–0.50) | 1.15 (1.10–1.20) |" in text
    assert "| tidelog-balanced | lat-5k | 1 |" in text and "ack p99" in text
    assert "| tidelog-balanced | tansu | lat-5k-linger0 | 0.050 (0.050–0.050) | 0.058 (0.055–0.060) |" in text
    checks = {c["target"]: c for c in report.issue_targets(results)}
    assert not checks["end-to-end p99, lat-5k (producer linger.ms=1), acks=all, balanced"]["met"]
    assert checks["end-to-end p99, lat-5k-linger0 (producer linger.ms=0), acks=all, balanced"]["met"]


def test_the_group_commit_benchmark_times_the_answer_beside_the_fsync(tmp_path):
    """benchmarks.group_commit (in a process of its own: it times os.fsync by replacing it)."""
    from pathlib import Path

    from benchmarks import group_commit

    row = group_commit.run_side(Path(group_commit.__file__).parents[1] / "src", 20, 0.0, tmp_path)
    assert row["appends"] == 20
    assert 0 < row["fsync_us"]["p50"] <= row["answer_us"]["p50"]
    assert row["answer_minus_fsync_us"]["p50"] > 0 and row["hw_moved_minus_fsync_us"]["p50"] > 0
    assert not list(tmp_path.iterdir())  # its data directory is removed


def test_the_group_commit_benchmark_keeps_the_loop_busy_and_sets_the_switch_interval(tmp_path):
    """--busy-us and --switch-interval-ms reach the measured process (a busy loop: the fsync thread's
    GIL acquisitions and the job's callback wait for it)."""
    from pathlib import Path

    from benchmarks import group_commit

    row = group_commit.run_side(Path(group_commit.__file__).parents[1] / "src", 20, 1.0, tmp_path, busy_us=300,
                                switch_interval_ms=0.5)
    assert row["appends"] == 20 and row["busy_us"] == 300 and abs(row["switch_interval_ms"] - 0.5) < 1e-6
    assert 0 < row["fsync_us"]["p50"] <= row["answer_us"]["p50"]
    assert not list(tmp_path.iterdir())
