"""The benchmark harness runs end to end (python -m benchmarks --quick: a few thousand
records against one Tidelog broker), so that it cannot rot between benchmark runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_quick_benchmark_produces_and_consumes_every_record(tmp_path):
    out = tmp_path / "results"
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks", "--quick", "--out", str(out), "--tmp-dir", str(tmp_path)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.terminate()  # the harness stops its broker on SIGTERM
        stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stdout[-3000:] + stderr[-3000:]

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
