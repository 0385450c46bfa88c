"""The floor under the latency rows (benchmarks/latency_floor.py): the clients against librdkafka's
mock cluster plus the disk's group fsync from a request's arrival, and the report's lines on it."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from benchmarks import latency_floor, references, report  # noqa: E402


def test_a_requests_wait_is_counted_from_its_arrival_to_the_end_of_the_fsync_after_it():
    # Requests every millisecond from 0; appends at 0.05, 2.5 and 3 ms, their fsyncs ending at 2.5, 3.0
    # and 3.2 ms: the request at 0 waits for the first fsync; those at 1 and 2 ms arrived during it,
    # so each waits for its end and then for the next one (each counted, not one for the stall).
    syncs = [(0.00005, 0.0025), (0.0025, 0.0030), (0.0030, 0.0032)]
    assert [round(w * 1e6) for w in references._waits(syncs, 0.0, 1000)] == [2500, 2000, 1000]
    # And on the disk: one request a millisecond, each timed (those after the last fsync are not).
    row = references.group_commit_wait(Path("/var/tmp"), seconds=0.5, samples=True)
    assert row["status"] == "ok"
    requests = row["request_wait_ms"]
    assert 0 < requests["p50"] <= requests["p99"] <= requests["max"]
    assert 300 <= len(row["request_waits_s"]) <= 500
    assert "request_waits_s" not in references.group_commit_wait(Path("/var/tmp"), seconds=0.2)


def test_the_floor_is_the_sum_of_two_independent_parts():
    # Every client sample 1 ms, the disk 0 or 2 ms half the time each: the sums 1 and 3 ms, half each.
    floor = latency_floor.compose([0.001] * 100, [0.0, 0.002], draws=50)
    assert floor["p50"] in (1.0, 3.0) and floor["p99"] == 3.0 and floor["max"] == 3.0
    floor = latency_floor.compose([0.001, 0.002], [0.0005], draws=3)  # 1.5 three times, 2.5 three times
    assert (floor["p50"], floor["p99"], floor["max"]) == (2.5, 2.5, 2.5)


def test_the_floor_measures_the_clients_against_the_mock_cluster_and_the_disk(tmp_path):
    row = latency_floor.floor(tmp_path, rate=2_000, seconds=1.0, record_bytes=1024, linger_ms=1, timeout_s=60)
    assert row["status"] == "ok", row
    assert row["records"] == 2_000 and "ack_latencies_s" not in row and "request_waits_s" not in row
    floor, client, disk = row["latency_ms"], row["client_latency_ms"], row["disk_request_wait_ms"]
    assert 0 < client["p50"] < floor["p50"] and disk["p50"] < floor["p50"]
    assert floor["p50"] <= floor["p99"] <= floor["p99.9"] <= floor["max"]
    assert list(tmp_path.iterdir()) == []


def test_the_report_says_how_far_above_its_floor_each_latency_row_is():
    rows = []
    for run, (p50, p99) in enumerate(((1.5, 2.6), (1.4, 3.0)), 1):
        base = {"run": run, "status": "ok", "mb_per_s": 5.0, "client_cpu_s": 1.0, "seconds": 10.0, "records_per_s": 5000.0}
        rows.append({**base, "target": "tidelog-balanced", "kind": "tidelog", "workload": "lat-5k", "phase": "latency",
                     "latency_ms": {"p50": p50, "p99": p99, "p99.9": 4.0, "max": 5.0}})
        rows.append({**base, "target": "e2e-floor", "kind": "reference", "workload": "lat-5k", "phase": "latency",
                     "latency_ms": {"p50": 1.0, "p99": 2.0, "p99.9": 2.5, "max": 3.0}})
        rows.append({**base, "target": "disk-group-commit-wait", "kind": "reference", "workload": "-", "phase": "latency",
                     "latency_ms": {"p50": 0.8, "p99": 1.4, "p99.9": 2.0, "max": 3.0}})
    results = {"started": "s", "finished": "f", "rows": rows, "profile": None, "skipped": [], "command": "c", "note": "",
               "machine": {"cores": 2, "cpu": "x", "memory_gib": 4, "disk": "d", "kernel": "k", "loadavg_at_start": ["0"] * 3,
                           "loadavg_at_end": ["0"] * 3, "busy_at_start": [], "busy_at_end": []},
               "settings": {"records": 1, "runs": 2, "workloads": [{"name": "lat-5k", "linger_ms": 1}]}}
    text = report.markdown(results)
    lines = {line.split(" | ")[1]: line for line in text.splitlines() if line.startswith("| ") and " | " in line}
    lat = lines["end-to-end p99, lat-5k (producer linger.ms=1), acks=all, balanced"]
    assert "the floor (a broker that costs nothing, same run) p50 1.00 / p99 2.00 ms" in lat
    over = lines["lat-5k: Tidelog over the floor (e2e-floor, same run), per run: p50 / p99"]
    assert "+0.45 (+0.40–+0.50) / +0.80 (+0.60–+1.00) ms" in over
    # The floor is a row of the latency table, and Tidelog's ratio over it is in the ratio table.
    assert any(line.startswith("| e2e-floor | lat-5k |") for line in text.splitlines())
    assert any(line.startswith("| tidelog-balanced | e2e-floor | lat-5k |") for line in text.splitlines())
