"""kafka-python's own integration suite (3.0.12 sdist from PyPI) passes against Tidelog.

Every failure is either a Tidelog bug to fix or listed with its reason in
kafka_python_expected_failures.txt; a listed test that passes fails this test too, so the
list only shrinks. A failure whose log proves a known kafka-python race is reported apart, not
counted against the broker. The harness is in kafka_python_suite.py.
"""

from __future__ import annotations

import pytest

from tests.conformance import kafka_python_suite as suite


@pytest.mark.slow
@pytest.mark.timeout(suite.SUITE_TIMEOUT_S + 900)  # + download, installs, broker start
def test_kafka_python_integration_suite(tmp_path, capsys):
    run, comparison = suite.run_all(tmp_path)
    report = suite.summary(run, comparison)
    with capsys.disabled():
        print("\n" + report)
    if not run.outcomes:
        pytest.fail(f"no tests collected:\n{run.output_tail}", pytrace=False)
    if not comparison.ok:
        pytest.fail(f"{report}\n--- pytest output (tail) ---\n{run.output_tail}\n"
                    f"--- broker log (tail) ---\n{run.broker_log_tail}\n"
                    f"(reports of this run: {suite.cache_dir() / 'last-run'})", pytrace=False)
