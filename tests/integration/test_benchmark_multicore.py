"""``python -m benchmarks multicore --quick`` runs end to end (a single node, then a 2-broker
cluster with its etcd, client processes producing and consuming a few thousand records), so that
the beyond-one-core benchmark cannot rot between benchmark runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.etcdproc import etcd_binary

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_quick_multicore_benchmark_spreads_the_partitions_and_reads_back_every_record(tmp_path):
    etcd_binary()  # the benchmark finds it on PATH; skips the test where it cannot be had
    out = tmp_path / "results"
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks", "multicore", "--quick", "--pin", "--out", str(out),
                             "--tmp-dir", str(tmp_path)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        proc.terminate()  # the benchmark stops its brokers, etcd and clients on SIGTERM
        stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stdout[-3000:] + stderr[-3000:]

    results = json.loads((out / "multicore-latest.json").read_text())
    rows = {r["setup"]: r for r in results["rows"]}
    assert set(rows) == {"single", "cluster-2"}
    assert rows["single"]["placement"]["leaders_per_broker"] == {"1": 16}
    assert rows["cluster-2"]["placement"] == {"leaders_per_broker": {"1": 8, "2": 8},
                                              "replicas_per_broker": {"1": 8, "2": 8}}
    for row in rows.values():
        assert sum(row["records_per_partition"]) == 4_000
        assert sum(1 for held in row["records_per_partition"] if held) > 1  # the producers spread them
        for phase in ("produce", "consume"):
            measured = row[phase]
            assert measured["status"] == "ok", measured
            assert measured["records"] == 4_000 and measured["records_per_s"] > 0
            assert measured["clients"] == 2 and len(measured["client_records_per_s"]) == 2
            # CPU time comes in 10 ms ticks: a quick phase may measure 0; it must be measured per broker.
            assert set(measured["broker_cpu_s"]) == set(row["placement"]["leaders_per_broker"])
            assert all(cpu >= 0 for cpu in measured["broker_cpu_s"].values())
            assert measured["clients_cpu_s"] > 0
    assert rows["cluster-2"]["pinned"]["brokers"] == {"1": [0], "2": [1 % os.cpu_count()]}
    assert rows["cluster-2"]["etcd_peak_rss_bytes"] > 0 and rows["single"]["etcd_peak_rss_bytes"] == 0
    assert "2-broker cluster, RF 1" in stdout
    # The data directories it made are removed.
    assert [p.name for p in tmp_path.iterdir()] == ["results"]


def test_consumers_get_contiguous_blocks_of_every_partition():
    sys.path.insert(0, str(REPO))
    from benchmarks.multicore import blocks

    assert blocks(16, 3) == [list(range(0, 6)), list(range(6, 11)), list(range(11, 16))]
    assert blocks(2, 3) == [[0], [1]]


def test_pinning_moves_every_thread_of_a_process_to_its_core():
    sys.path.insert(0, str(REPO))
    from benchmarks.multicore import pin

    # A process with a second thread, both waiting on stdin.
    child = subprocess.Popen([sys.executable, "-c", "import sys, threading\n"
                              "threading.Thread(target=sys.stdin.read, daemon=True).start()\n"
                              "print('ready', flush=True)\nsys.stdin.read()"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "ready\n"
        tasks = [int(t.name) for t in Path(f"/proc/{child.pid}/task").iterdir()]
        assert len(tasks) >= 2
        pin([child.pid], {0})
        assert all(os.sched_getaffinity(tid) == {0} for tid in tasks)
    finally:
        child.kill()
        child.communicate()  # and closes its pipes
