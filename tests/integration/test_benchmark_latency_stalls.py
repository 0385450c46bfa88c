"""benchmarks.latency_stalls runs end to end: a second of the lat-5k shape against one broker,
its fsync histogram read from /metrics while it runs."""

from __future__ import annotations

import json

from benchmarks import latency_stalls


def test_latency_stalls_places_fsync_jobs_beside_the_records(tmp_path):
    out = tmp_path / "runs.json"
    assert latency_stalls.main(["--runs", "1", "--seconds", "1", "--json", str(out)]) == 0
    (run,) = json.loads(out.read_text())
    assert run["records"] == 5_000
    assert 0 < run["latency_ms"]["p50"] <= run["latency_ms"]["p99"] <= run["latency_ms"]["max"]
    assert run["fsync_jobs"] > 0 and 0 <= run["slow_fsync_jobs"] <= run["fsync_over_5ms"] <= run["fsync_jobs"]
    assert run["episodes"] == len(run["episode_list"]) and run["slow_fsync_windows"] == len(run["window_list"])
    assert run["episodes_beside_a_slow_fsync"] <= run["episodes"]
