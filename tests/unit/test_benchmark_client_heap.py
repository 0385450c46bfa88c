"""The benchmark's clients share one process; machine.steady_client_heap keeps glibc from giving
freed heap memory back to the kernel, so a phase reuses pages an earlier phase touched instead
of faulting in fresh ones (on this VM, pages the host may have taken back), and the run records
each consume phase's first touches of memory (minor page faults) to show it. A run measures each
workload's targets one after another (their order reversed every second run), and the report
still lists them target by target."""

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import report

ROOT = Path(__file__).resolve().parents[2]

# Two rounds of 128 blocks of 1 MiB (a librdkafka Fetch buffer's size), each touched, then freed;
# the faults of the second round are printed.
ROUNDS = """
import ctypes, sys
from benchmarks import machine
if sys.argv[1] == "steady":
    print(machine.steady_client_heap(), file=sys.stderr)
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]

def round_():
    blocks = [libc.malloc(1 << 20) for _ in range(128)]
    for block in blocks:
        libc.memset(block, 1, 1 << 20)
    for block in blocks:
        libc.free(block)

round_()
before = machine.own_minor_faults()
round_()
print(machine.own_minor_faults() - before)
"""


def second_round_faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", ROUNDS, mode], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         check=True)
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_a_steady_heap_reuses_the_pages_an_earlier_phase_touched():
    default, steady = second_round_faults("default"), second_round_faults("steady")
    # 128 MiB is 32,768 pages: glibc's defaults give them back and the second round touches them
    # afresh; kept, the second round reuses them.
    assert default > 16_000
    assert steady < 2_000


def test_the_report_gives_each_consume_phases_faults_per_gb():
    rows = [{"run": run, "target": target, "kind": "tidelog", "workload": "1k-acks-all", "phase": phase, "status": "ok",
             "bytes": 1_000_000_000, "records_per_s": 1.0, "mb_per_s": 1.0, "client_cpu_s": 1.0,
             "client_minor_faults": faults, "broker_minor_faults": 10, "broker_system_cpu_s": 0.1 * run}
            for run, faults in ((1, 200_000), (2, 4_000), (3, 6_000))
            for target, phase in (("tidelog-balanced", "consume"), ("tidelog-balanced", "produce"))]
    rows.append({"run": 1, "target": "client-ceiling", "kind": "reference", "workload": "1k-acks-all", "phase": "consume",
                 "status": "ok", "bytes": 500_000_000, "records_per_s": 1.0, "mb_per_s": 1.0, "client_cpu_s": 1.0,
                 "client_minor_faults": 1_000})
    text = "".join(report.faults_lines({"rows": rows}))
    assert ("tidelog-balanced 1k-acks-all: client 6,000 (4,000–200,000), broker 10 (10–10) (broker system CPU 0.20 (0.10–0.30) "
            "s/GB)") in text
    assert "client-ceiling 1k-acks-all: client 2,000." in text or "client-ceiling 1k-acks-all: client 2,000;" in text
    assert "produce" not in text


def test_a_run_measures_each_workloads_targets_together_alternating_their_order():
    from benchmarks.cli import run_order

    assert run_order(["a", "b", "c"], ["w1", "w2"], 1) == [("w1", "a"), ("w1", "b"), ("w1", "c"),
                                                           ("w2", "a"), ("w2", "b"), ("w2", "c")]
    assert run_order(["a", "b", "c"], ["w1", "w2"], 2) == [("w1", "c"), ("w1", "b"), ("w1", "a"),
                                                           ("w2", "c"), ("w2", "b"), ("w2", "a")]


def test_the_report_keeps_its_tables_target_by_target_whatever_the_run_order():
    def row(run, target, workload):
        return {"run": run, "target": target, "kind": "tidelog", "workload": workload, "phase": "consume",
                "status": "ok", "records_per_s": 1.0, "mb_per_s": 1.0, "client_cpu_s": 1.0}

    rows = [row(1, "tidelog-balanced", "1k"), row(1, "tansu", "1k"), row(1, "tidelog-balanced", "100b"),
            row(1, "tansu", "100b"), row(2, "tansu", "1k"), row(2, "tidelog-balanced", "1k")]
    assert [(g["target"], g["workload"], g["runs"]) for g in report.summary_rows({"rows": rows})] == [
        ("tidelog-balanced", "1k", 2), ("tidelog-balanced", "100b", 1), ("tansu", "1k", 2), ("tansu", "100b", 1)]
