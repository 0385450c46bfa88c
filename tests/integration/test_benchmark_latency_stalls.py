"""benchmarks.latency_stalls and benchmarks.latency_trace run end to end: a second of the lat-5k
shape against one broker, its fsync histogram read from /metrics while it runs, or the broker
traced (broker_trace.py) and each record cut into its stages."""

from __future__ import annotations

import json

from benchmarks import latency_stalls, latency_trace


def test_latency_stalls_places_fsync_jobs_beside_the_records(tmp_path):
    out = tmp_path / "runs.json"
    assert latency_stalls.main(["--runs", "1", "--seconds", "1", "--json", str(out)]) == 0
    (run,) = json.loads(out.read_text())
    assert run["records"] == 5_000
    assert 0 < run["latency_ms"]["p50"] <= run["latency_ms"]["p99"] <= run["latency_ms"]["max"]
    assert run["fsync_jobs"] > 0 and 0 <= run["slow_fsync_jobs"] <= run["fsync_over_5ms"] <= run["fsync_jobs"]
    assert run["episodes"] == len(run["episode_list"]) and run["slow_fsync_windows"] == len(run["window_list"])
    assert run["episodes_beside_a_slow_fsync"] <= run["episodes"]


def test_latency_trace_cuts_each_record_into_the_stages_the_broker_noted(tmp_path):
    out = tmp_path / "runs.json"
    assert latency_trace.main(["--seconds", "1", "--json", str(out)]) == 0
    (run,) = json.loads(out.read_text())
    assert run["records"] >= 4_900  # a few may lack a noted job (after the last one the trace kept)
    assert 0 < run["e2e_ms"]["p50"] <= run["e2e_ms"]["p99"] <= run["e2e_ms"]["max"]
    assert run["segment_fsync_ms"]["count"] > 0  # the group commit's fsyncs of the active segment, seen in its thread
    half = run["median_half"]
    assert sum(half["dominant_stage"].values()) == half["records"] >= half["disk_half_or_more"]
    stages = run["stage_ms"]  # each stage over every record
    assert set(stages) == set(latency_trace.STAGES)
    assert all(0 <= q["p50"] <= q["p90"] <= q["p99"] for q in stages.values() if q["p50"] >= 0), stages
    assert stages["syscall"]["p50"] > 0  # the fsyncs noted, whichever thread (C or Python) ran them
    assert 0 <= run["fetch_not_parked"] <= run["records"]
    assert stages["fetch_answer"]["p50"] > 0  # the Fetch responses' writes noted (broker_trace's write rows)
    assert 0 < run["ack_write_ms"]["p50"] <= run["ack_write_ms"]["p99"]  # and the Produce responses'
    for worst in run["worst"]:
        stages = worst["stages_ms"]
        assert all(value >= -0.01 for value in stages.values()), stages  # the same clock in both processes
        assert abs(sum(stages.values()) - worst["e2e_ms"]) < 0.05
        assert worst["job_fsyncs"] and any(name.endswith(".log") for _, name, _, _ in worst["job_fsyncs"])


def test_latency_trace_starts_from_write_back_done_and_runs_the_disk_alone_after(tmp_path):
    out = tmp_path / "runs.json"
    assert latency_trace.main(["--seconds", "1", "--reference", "--json", str(out)]) == 0
    (run,) = json.loads(out.read_text())
    settled = run["writeback_before"]
    assert settled["sync_s"] >= 0 and settled["dirty_mib_before"] >= 0
    over = run["segment_fsyncs_over_ms"]
    assert run["segment_fsync_ms"]["count"] >= over["10"] >= over["20"] >= over["50"] >= 0
    during = run["disk_during_load"]
    if during is not None:  # a data directory on a block device: the broker's own appends at least
        assert during["written_mib"] >= 4 and during["flushes"] > 0
    ref = run["reference"]
    assert ref["seconds"] == 1 and ref["fsyncs"] > 0 and 0 < ref["latency_ms"]["p50"] <= ref["latency_ms"]["p99"]
    assert ref["fsyncs"] >= ref["fsyncs_over_ms"]["10"] >= ref["fsyncs_over_ms"]["20"] >= ref["fsyncs_over_ms"]["50"]
