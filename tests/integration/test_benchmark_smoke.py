"""The benchmark harness runs end to end (python -m benchmarks --quick: a few thousand
records against one Tidelog broker), so that it cannot rot between benchmark runs."""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from tests.etcdproc import etcd_binary

REPO = Path(__file__).resolve().parents[2]


def run_benchmarks(args: list[str], timeout_s: float) -> str:
    """``python -m benchmarks *args``; its stdout. It must exit 0 within ``timeout_s`` (else it
    gets a SIGTERM, on which the harness stops the servers it started)."""
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks", *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.terminate()
        stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stdout[-3000:] + stderr[-3000:]
    return stdout


def test_quick_benchmark_produces_and_consumes_every_record(tmp_path):
    out = tmp_path / "results"
    run_benchmarks(["--quick", "--out", str(out), "--tmp-dir", str(tmp_path)], 120)

    results = json.loads((out / "latest.json").read_text())
    rows = {(r["target"], r["phase"]): r for r in results["rows"]}
    assert set(rows) == {("tidelog-balanced", "produce"), ("tidelog-balanced", "consume")}
    for row in rows.values():
        assert row["status"] == "ok"
        assert row["records"] == 2_000
        assert row["records_per_s"] > 0
        # CPU time comes in 10 ms ticks: a quick phase may measure 0. What must hold: it was
        # measured (a number), never negative.
        assert isinstance(row["broker_cpu_s"], (int, float)) and row["broker_cpu_s"] >= 0
        assert row["broker_peak_rss_bytes"] > 0
    assert "tidelog-balanced" in (out / "results.md").read_text()
    # The temporary data directories of the brokers it started are removed.
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("tidelog-bench-")]


def test_the_consume_ceiling_reads_what_the_mock_cluster_holds_again_and_again():
    """The consumer against librdkafka's mock cluster: it keeps ~5 MB a partition, so 20,000
    records of 1 KiB need several seeks back (40,000 over five partitions, in two mock topics)."""
    sys.path.insert(0, str(REPO))
    from benchmarks import references

    for partitions in (1, 5):
        records = 20_000 * (1 if partitions == 1 else 2)
        row = references.consume_ceiling(records, 1024, partitions, timeout_s=60)
        assert row["status"] == "ok", row
        assert row["records"] >= records and row["records_per_s"] > 0
        assert row["records_held_per_partition"] < records / partitions and row["seeks"] >= partitions


def test_the_fsync_reference_reports_latency_percentiles(tmp_path):
    sys.path.insert(0, str(REPO))
    from benchmarks import references

    row = references.fsync_latency(tmp_path, appends=20)
    assert row["status"] == "ok" and row["records"] == 20
    assert 0 < row["latency_ms"]["p50"] <= row["latency_ms"]["p99"] <= row["latency_ms"]["max"]
    assert list(tmp_path.iterdir()) == []


def test_the_group_commit_reference_times_each_records_wait_for_its_fsync(tmp_path):
    sys.path.insert(0, str(REPO))
    from benchmarks import references

    row = references.group_commit_wait(tmp_path, seconds=0.3)
    assert row["status"] == "ok" and row["fsyncs"] > 0
    assert row["records"] >= 1_000  # 5,000 records/s, each timed (those after the last fsync are not)
    wait, fsync = row["latency_ms"], row["fsync_ms"]
    assert 0 < wait["p50"] <= wait["p99"] <= wait["p99.9"] <= wait["max"]
    assert wait["max"] >= fsync["max"] and wait["p50"] >= fsync["p50"] * 0.5  # a wait holds an fsync at least
    assert list(tmp_path.iterdir()) == []
    row = references.group_commit_wait(tmp_path, seconds=0.3, preallocate=True)  # overwrites, an fdatasync each
    assert row["status"] == "ok" and row["fsyncs"] > 0 and row["latency_ms"]["p50"] > 0
    assert list(tmp_path.iterdir()) == []


def test_the_group_commit_reference_runs_followers_beside_it(tmp_path):
    sys.path.insert(0, str(REPO))
    from benchmarks import references

    row = references.group_commit_wait(tmp_path, seconds=1.2, followers=2, follower_flush_s=0.5)
    assert row["status"] == "ok" and row["fsyncs"] > 0 and row["latency_ms"]["p50"] > 0
    assert list(tmp_path.iterdir()) == []  # the followers stopped and removed their files


def test_the_socket_to_page_cache_floor_reports_the_receivers_cpu_per_gb(tmp_path):
    """The kernel's floor under produce: another process sends a warm-up pass and 8 MiB in four
    measured passes over loopback TCP, every byte reaches a file (with and without an fdatasync
    per MiB, and in each way of putting it there), the receiver's own CPU per pass and the
    sender's are measured, the files are deleted and the sender reaped."""
    sys.path.insert(0, str(REPO))
    from benchmarks import references

    for sync, into, check in ((True, references.COPY, False), (False, references.COPY, False),
                              (True, references.PREALLOCATED, False), (True, references.MAPPED, True),
                              (False, references.SPLICED, True)):
        row = references.socket_to_page_cache(tmp_path, 8, sync, into=into, check=check)
        assert row["status"] == "ok", row
        assert row["records"] == 8 and row["bytes"] == 8 << 20 and row["mb_per_s"] > 0 and row["passes"] == 4
        # CPU time comes in ticks: 2 MiB may measure 0; it must be measured and never negative.
        assert row["receiver_cpu_s"] == row["receiver_user_s"] + row["receiver_system_s"] >= 0
        assert len(row["pass_cpu_s_per_gb"]) == len(row["pass_mb_per_s"]) == 4
        assert row["receiver_cpu_s_per_gb"] == statistics.median(row["pass_cpu_s_per_gb"]) >= 0
        assert row["first_pass_cpu_s_per_gb"] >= 0 and row["first_pass_mb_per_s"] > 0
        assert row["client_cpu_s"] > 0  # the sender's own process: at least its interpreter's start
        assert list(tmp_path.iterdir()) == []


def test_the_report_puts_the_broker_cpu_per_gb_over_the_floor_of_the_same_run():
    sys.path.insert(0, str(REPO))
    from benchmarks import report

    def row(run, target, workload, phase, **figures):
        return {"run": run, "target": target, "kind": "reference" if target.startswith("socket") else "tidelog",
                "workload": workload, "phase": phase, "status": "ok", "mb_per_s": 1.0, "client_cpu_s": 0.0, **figures}

    rows = [row(1, report.FLOOR, "-", "write", receiver_cpu_s_per_gb=0.5),
            row(1, "tidelog-balanced", "1k-acks-all", "produce", broker_cpu_s_per_gb=1.0),
            row(2, report.FLOOR, "-", "write", receiver_cpu_s_per_gb=0.25),
            row(2, "tidelog-balanced", "1k-acks-all", "produce", broker_cpu_s_per_gb=1.0),
            row(3, "tidelog-balanced", "1k-acks-all", "produce", broker_cpu_s_per_gb=9.0)]  # no floor in run 3
    checks = {c["target"]: c for c in report.issue_targets({"rows": rows})}
    (over,) = [c for c in checks.values() if "over the kernel's floor" in c["target"]]
    assert over["measured"] == "3.00 (2.00–4.00)x (the floor: 0.38 (0.25–0.50) s)" and over["met"] is None
    (floor,) = [g for g in report.summary_rows({"rows": rows}) if g["target"] == report.FLOOR]
    assert floor["cpu_per_gb"] == [0.5, 0.25]


@pytest.mark.slow
def test_the_replicated_benchmark_reports_throughput_cpu_by_role_and_latency(tmp_path):
    """python -m benchmarks replicated end to end with a few thousand records: a single node and
    three brokers (RF 3) each produce, consume and run the latency shape; the leader's and the
    followers' CPU per GB and the load average are reported."""
    etcd_binary()
    out = tmp_path / "results"
    stdout = run_benchmarks(["replicated", "--records", "3000", "--runs", "1", "--failovers", "0", "--latency-seconds", "1",
                             "--out", str(out)], 240)
    results = json.loads((out / "replicated-latest.json").read_text())
    for setup, followers in (("single", 0), ("replicated", 2)):
        (row,) = results[setup]
        assert row["produce"]["status"] == "ok" and row["consume"]["status"] == "ok", row
        assert row["produce"]["leader_cpu_s_per_gb"] >= 0 and len(row["produce"]["follower_cpu_s_per_gb"]) == followers
        assert len(row["produce"]["load_average"]) == 3
        assert len(row["produce"]["leader_user_system_s_per_gb"]) == 2  # Python's share and the kernel's
        assert len(row["produce"].get("follower_user_system_s_per_gb", [])) == followers
        (latency,) = results[f"{setup}_latency"]
        assert latency["status"] == "ok" and latency["records"] == 5_000, latency
        assert 0 < latency["latency_ms"]["p50"] <= latency["latency_ms"]["p99"]
        assert 0 < latency["ack_latency_ms"]["p50"] <= latency["ack_latency_ms"]["p99"]
        assert latency["leader_cpu_us_per_record"] >= 0 and len(latency["follower_cpu_us_per_record"]) == followers
        assert latency["writeback_before"]["sync_s"] >= 0  # started with the produce phase's write-back done
        (disk,) = results[f"{setup}_disk"]  # the disk alone at the setup's write pattern, right after
        assert disk["status"] == "ok" and 0 < disk["latency_ms"]["p50"] <= disk["latency_ms"]["p99"], disk
        assert disk["writeback_before"]["sync_s"] >= 0
    assert "3 brokers (RF 3)" in stdout and "e2e p99" in stdout
    assert "the disk alone at RF 3's write pattern" in stdout
    assert not list(tmp_path.glob("**/follower-reference-*"))  # the followers' files are removed


def test_the_replication_trace_follows_acks_all_batches_through_every_stage(tmp_path):
    """benchmarks.replication_trace: three traced brokers, a short paced run; every batch the
    leader appended is followed to its acknowledgement, and its stages add up to at most its total."""
    etcd_binary()
    out = tmp_path / "trace.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.replication_trace", "--rate", "1000", "--seconds", "2",
                           "--json", str(out)], cwd=REPO, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    stages = json.loads(out.read_text())["stages_ms"]
    for name in ("wake", "to_follower", "f_append", "f_next", "to_leader", "hw_after", "ack_after", "durable", "total"):
        assert stages[name]["n"] > 100 and stages[name]["p50"] >= 0, (name, stages[name])
    chain = ("wake", "to_follower", "f_append", "f_next", "to_leader", "hw_after", "ack_after")
    assert sum(stages[name]["mean"] for name in chain) == pytest.approx(stages["total"]["mean"], rel=1e-6)
    assert stages["wake_parked"].get("n", 0) + stages["wake_busy"].get("n", 0) == stages["wake"]["n"]
    summary = json.loads(out.read_text())
    every, slowest = summary["tail"]["all"], summary["tail"]["slowest"]  # the slowest 1% against every batch
    assert every["n"] == stages["total"]["n"] and 1 <= slowest["n"] < every["n"] and slowest["total"] >= every["total"]
    assert 0 <= slowest["leader_fsync_critical"] <= 1 and 0 <= slowest["follower_flush_overlap"] <= 1
    assert summary["leader_fsyncs_ms"]["alone"]["n"] > 0  # the leader's group commit fsyncs, split by overlap


@pytest.mark.slow
def test_partitions_benchmark_runs_every_phase_with_the_mock_cluster_reference(tmp_path):
    """benchmarks.partitions on 4 topics x 3 partitions: every produce row (the broker's and the
    mock cluster's, with librdkafka's defaults and TUNED), then the restarts that count the
    records back."""
    out = tmp_path / "partitions.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.partitions", "--topics", "4", "--partitions", "3",
                           "--records", "600", "--metadata-requests", "2", "--tmp-dir", str(tmp_path), "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    produce = result["produce"]
    for row in ("mock_spread", "mock_one", "mock_spread_tuned", "broker_spread", "broker_one", "broker_spread_tuned"):
        assert produce[row]["rps"][0] > 0, row
    assert produce["broker_spread"]["broker_cpu_us_per_record"][0] >= 0
    assert produce["broker_spread"]["records_per_request"][0] >= 1
    assert 0 < produce["broker_spread_over_mock_spread"][0]


def test_the_produce_cpu_benchmark_reports_the_brokers_threads_per_gb(tmp_path):
    """benchmarks.produce_cpu: a broker, a raw-socket client sending one Produce frame again and
    again (each answered without an error), the broker's user and system time per GB by thread."""
    sys.path.insert(0, str(REPO))
    from benchmarks import produce_cpu

    row = produce_cpu.measure(None, requests=40, records_per_request=200, record_bytes=1024, acks=-1, in_flight=5,
                              workdir=tmp_path / "broker")
    assert row["requests"] == 40 and row["request_bytes"] > 200 * 1024 and row["requests_per_s"] > 0
    # Ticks of 10 ms over 8 MB: small figures may be 0, never negative, and they add up.
    assert min(row["user_s_per_gb"], row["system_s_per_gb"], row["loop_user_s_per_gb"], row["other_threads_s_per_gb"]) >= 0
    assert row["broker_s_per_gb"] == pytest.approx(row["user_s_per_gb"] + row["system_s_per_gb"])
    assert row["loop_user_s_per_gb"] + row["loop_system_s_per_gb"] <= row["broker_s_per_gb"] + 1e-9
    assert 0 < row["peak_rss_mb"] < 1000


def test_the_produce_cpu_benchmark_rotates_one_partition_a_request(tmp_path):
    """produce_cpu --rotate: each request carries one partition's batch, partitions 0..N-1 in turn
    (librdkafka's sticky partitioner in the p16 rows), so every partition gets as many batches."""
    sys.path.insert(0, str(REPO))
    from benchmarks import produce_cpu

    row = produce_cpu.measure(None, requests=32, records_per_request=50, record_bytes=100, acks=-1, in_flight=5,
                              workdir=tmp_path / "broker", partitions=4, rotate=True)
    assert row["requests"] == 32 and 50 * 100 < row["request_bytes"] < 2 * 50 * 100  # one batch a request
    sizes = [sum(f.stat().st_size for f in (tmp_path / "broker" / "data" / f"{produce_cpu.TOPIC}-{index}").glob("*.log"))
             for index in range(4)]
    batches = 20 + 32  # the warm-up's and the measured requests, a quarter to each partition
    assert sizes[0] > 0 and sizes == [sizes[0]] * 4 and sizes[0] % (batches // 4) == 0
    assert row["gb"] == pytest.approx(32 * sizes[0] / (batches // 4) / 1e9)


def test_the_produce_cpu_floor_gives_the_brokers_ratio_over_the_kernels_floor(tmp_path):
    """produce_cpu --floor: the floor measured in the broker's directory right after it, and the
    broker's CPU per GB (and its system time) over the floor's."""
    sys.path.insert(0, str(REPO))
    from benchmarks import produce_cpu

    row = {"gb": 0.008, "broker_s_per_gb": 1.0, "system_s_per_gb": 0.5}
    figures = produce_cpu.floor_ratio(row, tmp_path)
    assert figures["floor_s_per_gb"] > 0 and figures["floor_system_s_per_gb"] > 0
    assert figures["over_floor"] == pytest.approx(1.0 / figures["floor_s_per_gb"])
    assert figures["system_over_floor"] == pytest.approx(0.5 / figures["floor_system_s_per_gb"])
    assert list(tmp_path.iterdir()) == []


def test_the_produce_cpu_benchmark_stops_on_an_error_answer(tmp_path, monkeypatch):
    """A Produce the broker refuses (here: acks=2, INVALID_REQUIRED_ACKS) stops the measurement
    instead of timing error answers."""
    sys.path.insert(0, str(REPO))
    from benchmarks import produce_cpu

    real = produce_cpu.produce_frame
    monkeypatch.setattr(produce_cpu, "produce_frame",
                        lambda topic, batch, acks, partitions=1: real(topic, batch, 2, partitions))
    with pytest.raises(RuntimeError, match="error code 21"):
        produce_cpu.measure(None, requests=5, records_per_request=10, record_bytes=100, acks=-1, in_flight=1,
                            workdir=tmp_path / "broker")


def test_the_consume_cpu_benchmark_reports_fetches_and_cpu_beside_the_mock_cluster(tmp_path):
    """benchmarks.consume_cpu: a broker takes the records, the benchmark's consumer reads them all
    back, librdkafka's statistics give its Fetch requests and bytes, the broker's CPU per GB is
    split by thread; the mock-cluster reference is measured the same way."""
    sys.path.insert(0, str(REPO))
    from benchmarks import consume_cpu

    records = 5_000
    row = consume_cpu.measure_tidelog(None, records, 1024, 1, tmp_path / "broker", 60.0, None)
    assert row["status"] == "ok" and row["records"] >= records and row["records_per_s"] > 0
    assert row["fetches"] >= 1 and row["rx_bytes"] >= records * 1024
    assert row["rtt_avg_ms"] is not None and row["rtt_avg_ms"] >= 0
    assert row["broker_s_per_gb"] == pytest.approx(row["user_s_per_gb"] + row["system_s_per_gb"])
    mock = consume_cpu.measure_mock(records, 1024, 1, 60.0)
    assert mock["status"] == "ok" and mock["records"] >= records and mock["fetches"] >= 1
    if shutil.which("ss"):  # each sender's socket: its congestion control and cwnd
        for sender in (row["tcp"], mock["tcp"]):
            assert sender["cc"] and int(sender["cwnd"]) > 0 and sender["bytes_sent"] >= records * 1024, sender


def test_consume_cpu_sums_each_side_up_in_medians():
    sys.path.insert(0, str(REPO))
    from benchmarks import consume_cpu

    rows = [{"side": "mock"}] + [{"side": side, "of_mock": share, "broker_s_per_gb": cpu, "system_s_per_gb": cpu / 2}
                                 for side, share, cpu in (("ref", 0.5, 0.6), ("new", 0.9, 0.4), ("ref", 0.7, 0.8),
                                                          ("new", 0.7, 0.2), ("ref", 0.6, 0.7))]
    assert consume_cpu._medians(rows) == [
        "median            ref (3 rounds): 60% of the mock (50-70%); broker 0.700 s/GB (system 0.350)",
        "median            new (2 rounds): 80% of the mock (70-90%); broker 0.300 s/GB (system 0.150)"]


def _report_rows(runs=(1, 2)):
    """Rows of a small made-up run: balanced and Tansu with the references every issue-19 ratio needs."""
    rows = []
    for run in runs:
        def add(target, workload, phase, **figures):
            kind = "reference" if target.startswith(("client-", "disk-", "socket-")) else \
                "tidelog" if target.startswith("tidelog-") else "peer"
            rows.append({"run": run, "target": target, "kind": kind, "workload": workload, "phase": phase, "status": "ok",
                         "mb_per_s": 1.0, "client_cpu_s": 0.0, "seconds": 1.0, "others_cpu_s": 0.1 * run, **figures})

        add("client-ceiling", "1k-acks-all", "produce", records_per_s=1000.0)
        add("tidelog-balanced", "1k-acks-all", "produce", records_per_s=900.0 + run * 100, broker_cpu_s_per_gb=0.4,
            broker_peak_rss_bytes=80 << 20)
        add("tansu", "1k-acks-all", "produce", records_per_s=400.0, broker_cpu_s_per_gb=3.0)
        add("tidelog-balanced", "lat-5k", "latency", records_per_s=5000.0,
            latency_ms={"p50": 1.0, "p99": 2.0, "p99.9": 3.0, "max": 4.0})
        add("disk-group-commit-wait", "-", "latency", records_per_s=5000.0, latency_ms={"p50": 0.5, "p99": 1.25, "p99.9": 2.0, "max": 3.0})
    return rows


def _replicated_part():
    def produce(rate):
        return {"produce": {"status": "ok", "records_per_s": rate, "leader_cpu_s_per_gb": 1.0,
                            "follower_cpu_s_per_gb": [0.5, 0.5], "load_average": [0.5, 0.5, 0.5]},
                "consume": {"status": "ok", "records_per_s": rate}}

    def latency(p99):
        return {"latency_ms": {"p50": 1.0, "p99": p99, "p99.9": 9.0}, "leader_cpu_us_per_record": 50.0,
                "follower_cpu_us_per_record": [20.0, 20.0], "load_average": [0.5, 0.5, 0.5]}

    return {"records": 1000, "record_bytes": 1024, "latency_rate": 5000, "failover_s": [2.0],
            "single": [produce(600.0), produce(500.0)], "replicated": [produce(300.0), produce(400.0)],
            "single_latency": [latency(2.0)], "replicated_latency": [latency(4.0), latency(6.0)],
            "replicated_disk": [{"latency_ms": {"p50": 1.0, "p99": 3.5, "p99.9": 5.0}}]}


def test_the_report_starts_with_every_issue_19_target_against_its_reference_of_the_same_run():
    """The generated part opens with the load line and the issue-19 table: each target's goal,
    its median (min-max) over runs, what it is measured against in the same run, met or not; the
    replicated part of the same sitting (item 3) is in it, paired run by run."""
    sys.path.insert(0, str(REPO))
    from benchmarks import report

    results = {"started": "s", "finished": "f", "rows": _report_rows(), "profile": None, "skipped": [],
               "command": "python -m benchmarks --replicated", "note": "Nothing else running.",
               "machine": {"cores": 2, "cpu": "x", "memory_gib": 4, "disk": "d", "kernel": "k",
                           "loadavg_at_start": ["0.10", "0.20", "0.30"], "loadavg_at_end": ["1.00", "0.50", "0.40"],
                           "busy_at_start": [], "busy_at_end": [{"command": "python -m pytest", "percent_of_a_core": 12.0}]},
               "settings": {"records": 1, "runs": 2, "workloads": [{"name": "lat-5k", "linger_ms": 1}]},
               "replicated": _replicated_part()}
    text = report.markdown(results)
    head = text.split("| target | workload | phase |")[0]  # everything before the first detail table
    assert "`python -m benchmarks --replicated`" in head
    assert ("Load average at the start 0.10 0.20 0.30, at the end 1.00 0.50 0.40. Other processes using at least 3% of "
            "a core at the start: none. Other processes using at least 3% of a core at the end: python -m pytest 12%. "
            "The rest of the machine used 15% of a core on average") in head
    assert "Nothing else running." in head
    rows = {line.split(" | ")[1]: line for line in head.splitlines() if line.startswith("| ") and " | " in line}
    produce = rows["produce 1k-acks-all, balanced vs the producer into nothing"]
    assert produce.startswith("| 1 |") and "| >= 85% | 105 (100–110)% |" in produce
    assert "the producer into nothing (1 KiB, 1 partition) 1,000 records/s; balanced 1,050 | yes |" in produce
    assert "| >= 2x | 2.62 (2.50–2.75)x | Tansu (in memory) 400 records/s; balanced 1,050 | yes |" in \
        rows["produce 1k-acks-all, balanced vs Tansu"]
    # Item 3 from the replicated part, run i against run i: 300/600 and 400/500.
    replicated = next(line for key, line in rows.items() if key.startswith("replicated produce"))
    assert "| >= 80% | 65 (50–80)% |" in replicated and "the single node" in replicated and replicated.endswith(
        "| **no** (81% of the goal) |")
    rf3 = rows["end-to-end p99 at 5,000 records/s, RF 3, acks=all, balanced"]
    assert "| < 5 ms | 5.00 (4.00–6.00) ms | the disk alone at RF 3's write pattern p99 3.50 ms" in rf3
    lat = rows["end-to-end p99, lat-5k (producer linger.ms=1), acks=all, balanced"]
    assert "| 2.00 (2.00–2.00) ms | the disk alone at lat-5k's write pattern (disk-group-commit-wait) p99 1.25 ms" in lat
    cpu = rows["broker CPU per GB produced (1k-acks-all), balanced"]
    assert "| <= 0.5 s | 0.40 (0.40–0.40) s |" in cpu and "Tansu 3.00 s | yes |" in cpu
    assert rows["peak broker RSS, every Tidelog row"].startswith("| – | peak broker RSS, every Tidelog row | < 300 MB | max 80 MB |")
    assert "Not measured by this run: item 8's share groups" in head and "item 3" not in head.split("Not measured")[1]
    # The replicated part's own tables follow the peers' ones.
    assert "3 brokers (RF 3, min.insync.replicas 2)" in text.split("| target | workload | phase |")[1]


def test_update_doc_replaces_only_the_generated_part(tmp_path):
    sys.path.insert(0, str(REPO))
    from benchmarks import report

    doc = tmp_path / "BENCHMARKS.md"
    doc.write_text(f"# Benchmarks\n\n## Summary\n\n{report.START}\nold run\n{report.END}\n\n# History\n\nkept\n")
    results = {"versions": {"python": "3"}, "settings": {"producer": {}, "consumer": {}, "targets": {}, "workloads": [],
                                                         "disk_reference_mib": 8, "phase_timeout_s": 1}}
    report.update_doc(doc, results, "NEW TABLES\n\nMedians over runs, (min–max) when there are several. More.\n")
    text = doc.read_text()
    assert "old run" not in text and "NEW TABLES" in text and text.endswith(f"{report.END}\n\n# History\n\nkept\n")
    # The plot between the issue-19 table and the detail tables.
    assert "NEW TABLES\n\n![throughput](benchmarks/throughput.png)\n\nMedians over runs," in text
    assert text.startswith(f"# Benchmarks\n\n## Summary\n\n{report.START}\n")


def test_busy_processes_names_what_else_runs_and_leaves_out_its_own_tree():
    sys.path.insert(0, str(REPO))
    from benchmarks import machine

    import uuid

    mark = uuid.uuid4().hex[:12]  # other people's "python -c" may be running too
    busy = subprocess.Popen([sys.executable, "-c", f"#{mark}\nimport time\nend = time.time() + 20\nwhile time.time() < end: pass"])
    try:
        # Nothing is ours: the busy child counts. (How much of a core it gets depends on the load of
        # the machine: at load 9 on 2 cores 15-20%; it spins, so it gets some.)
        others = machine.busy_processes(1.0, own_pid=-1, min_percent=0.5)
        (child,) = [p for p in others if mark in p["command"]]
        assert child["percent_of_a_core"] > 0.5
        assert not [p for p in machine.busy_processes(1.0, min_percent=0.5) if mark in p["command"]]
    finally:
        busy.kill()
        busy.wait()


def test_issue19_runs_every_target_on_the_rows_its_targets_need_and_the_replicated_part():
    sys.path.insert(0, str(REPO))
    from benchmarks import cli, report
    from benchmarks.peers import ALL_TARGETS

    args = cli.parse_args(["--issue19"])
    assert args.replicated and args.references and (args.records, args.runs) == (1_000_000, 3)
    assert args.targets == list(ALL_TARGETS)
    names = [w.name for w in args.workloads]
    # Every workload an issue-19 row of the report reads (report.issue_targets), for tidelog-balanced.
    needed = set(report.CEILING_WORKLOADS) | {"1k-acks-all-p256", "1k-p6-group3", "1k-p6-share1", "1k-p6-share3",
                                              "lat-5k", "lat-5k-linger0", "lat-20k"}
    assert needed <= set(names) and "tidelog-balanced" not in args.limited
    assert "1k-acks-all" in args.limited["tansu"] and "1k-p6-group3" not in args.limited["tansu"]
    for target in ("tidelog-throughput", "tidelog-durable", "redis", "nats", "rabbitmq"):
        assert args.limited[target] == ["1k-acks-all", "100b-acks-1", "lat-5k"]
    for conflicting in (["--quick"], ["--targets", "tansu"], ["--workloads", "lat-5k"]):
        with pytest.raises(SystemExit):
            cli.parse_args(["--issue19", *conflicting])


@pytest.mark.slow
def test_one_command_runs_the_replicated_part_and_reports_item_3_beside_the_rest(tmp_path):
    """python -m benchmarks --replicated: benchmarks.replicated runs in the same sitting, its rows
    go into the same results, and the issue-19 table at the top of the report has item 3."""
    etcd_binary()
    out = tmp_path / "results"
    stdout = run_benchmarks(["--targets", "tidelog-balanced", "--workloads", "1k-acks-all", "--no-references",
                             "--records", "2000", "--runs", "1", "--replicated", "--replicated-records", "3000",
                             "--replicated-failovers", "0", "--replicated-latency-seconds", "1", "--out", str(out),
                             "--tmp-dir", str(tmp_path)], 300)
    results = json.loads((out / "latest.json").read_text())
    part = results["replicated"]
    assert "error" not in part, part
    assert [r["produce"]["status"] for r in part["single"] + part["replicated"]] == ["ok", "ok"]
    assert part["replicated_latency"][0]["status"] == "ok" and part["started"] <= part["finished"]
    issue = stdout.split("| target | workload | phase |")[0]
    assert "| 3 | replicated produce: 3 brokers, RF 3" in issue and "| 3 | end-to-end p99 at 5,000 records/s, RF 3" in issue
    assert "3 brokers (RF 3, min.insync.replicas 2)" in stdout
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("tidelog-bench-")]


def test_the_run_says_whether_each_c_extension_is_built_from_its_current_source(tmp_path):
    """A broker run from a stale or missing build measures other code than the commit named (the
    Python fallback, or an older walk): the versions table says which."""
    import os

    sys.path.insert(0, str(REPO))
    from benchmarks import machine

    package = tmp_path / "tidelog" / "protocol"
    package.mkdir(parents=True)
    source = package / "_walk.c"
    source.write_text("/* C */")
    assert machine.c_extensions(tmp_path) == {"tidelog.protocol._walk": "not built: the Python fallback runs"}
    build = package / "_walk.cpython-311-x86_64-linux-gnu.so"
    build.write_bytes(b"")
    os.utime(build, (1_000, 1_000))
    os.utime(source, (2_000, 2_000))
    assert machine.c_extensions(tmp_path)["tidelog.protocol._walk"].startswith("STALE")
    os.utime(build, (3_000, 3_000))
    assert machine.c_extensions(tmp_path) == {"tidelog.protocol._walk": "built"}


def test_the_replicated_benchmark_holds_recent_memory_during_produce_with_cold_memory(tmp_path):
    """--cold-memory GIB: a helper holds GIB of just-touched memory during each produce phase (the
    idle machine's cold page cache, reproduced under load); the run ends and the row says so."""
    etcd_binary()
    out = tmp_path / "results"
    run_benchmarks(["replicated", "--records", "2000", "--runs", "1", "--failovers", "0", "--latency-seconds", "0",
                    "--cluster-only", "--cold-memory", "1", "--out", str(out)], 240)
    results = json.loads((out / "replicated-latest.json").read_text())
    (row,) = results["replicated"]
    assert row["produce"]["status"] == "ok" and row["produce"]["cold_memory_gib"] == 1
    assert row["consume"]["status"] == "ok"
