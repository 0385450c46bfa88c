"""The conformance harness's own bookkeeping, without network or broker: the expectation file
parses, and outcomes are compared with it the way test_kafka_python_suite.py relies on."""

from __future__ import annotations

import pytest

from tests.conformance import kafka_python_suite as suite


def test_expectation_file_parses_with_a_reason_for_every_test():
    expected = suite.load_expected_failures()
    for test_id, reason in expected.items():
        assert test_id.startswith("test/integration/test_") and ".py::" in test_id, test_id
        assert reason and not reason.startswith("#"), test_id


def test_expectation_file_rejects_a_line_without_reason(tmp_path):
    path = tmp_path / "expected.txt"
    path.write_text("# comment\n\ntest/integration/test_a.py::test_x\n")
    with pytest.raises(ValueError, match="test id -> reason"):
        suite.load_expected_failures(path)


def test_expectation_file_rejects_a_test_listed_twice(tmp_path):
    path = tmp_path / "expected.txt"
    path.write_text("t.py::a -> one\nt.py::a -> two\n")
    with pytest.raises(ValueError, match="listed twice"):
        suite.load_expected_failures(path)


def test_compare_fails_on_new_failures_listed_passes_and_stale_entries():
    outcomes = {"t.py::new_bug": "failed", "t.py::known": "failed", "t.py::fixed": "passed",
                "t.py::now_skipped": "skipped", "t.py::ok": "passed"}
    expected = {"t.py::known": "transactions: not built yet", "t.py::fixed": "admin: not built yet",
                "t.py::now_skipped": "x", "t.py::renamed": "y"}
    comparison = suite.compare(outcomes, expected)
    assert comparison.unexpected_failures == ["t.py::new_bug"]
    assert comparison.unexpected_passes == ["t.py::fixed"]
    assert comparison.stale == ["t.py::now_skipped", "t.py::renamed"]
    assert comparison.expected_by_reason == {"transactions: not built yet": ["t.py::known"]}
    assert not comparison.ok


def test_compare_accepts_either_outcome_for_flaky_entries():
    expected = {"t.py::a": "flaky: broker bug X", "t.py::b": "flaky: broker bug X"}
    comparison = suite.compare({"t.py::a": "passed", "t.py::b": "failed"}, expected)
    assert comparison.ok
    assert comparison.expected_by_reason == {"flaky: broker bug X": ["t.py::b"]}
    assert comparison.flaky_passed == ["t.py::a"]


def test_junit_report_maps_to_upstream_test_ids(tmp_path):
    (tmp_path / "test" / "integration").mkdir(parents=True)
    (tmp_path / "test" / "integration" / "test_x.py").write_text("")
    junit = tmp_path / "junit.xml"
    junit.write_text("""<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest">
  <testcase classname="test.integration.test_x" name="test_ok[gzip]" time="0.1"/>
  <testcase classname="test.integration.test_x" name="test_bad" time="0.1"><failure message="AssertionError: boom">trace</failure></testcase>
  <testcase classname="test.integration.test_x.TestSSL" name="test_setup" time="0.1"><error message="failed on setup with &quot;x&quot;">trace</error></testcase>
  <testcase classname="test.integration.test_x" name="test_skip" time="0"><skipped type="pytest.skip" message="needs 4.1">s</skipped></testcase>
  <testcase classname="test.integration.test_x" name="test_teardown" time="0.1"/>
  <testcase classname="test.integration.test_x" name="test_teardown" time="0.1"><error message="failed on teardown">t</error></testcase>
</testsuite></testsuites>""")
    outcomes, messages = suite.parse_junit(junit, tmp_path)
    assert outcomes == {
        "test/integration/test_x.py::test_ok[gzip]": "passed",
        "test/integration/test_x.py::test_bad": "failed",
        "test/integration/test_x.py::TestSSL::test_setup": "failed",
        "test/integration/test_x.py::test_skip": "skipped",
        "test/integration/test_x.py::test_teardown": "failed",
    }
    assert messages["test/integration/test_x.py::test_bad"] == "AssertionError: boom"
    assert messages["test/integration/test_x.py::test_skip"] == "needs 4.1"
