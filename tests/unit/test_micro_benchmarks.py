"""The micro-benchmarks still run (timings are not asserted: they are for BENCHMARKS.md)."""

from benchmarks import micro


def test_micro_benchmarks_run_and_time_every_hot_function():
    results = micro.run(scale=0.002)
    assert len(results) == 19 and all(value > 0 for value in results.values())
