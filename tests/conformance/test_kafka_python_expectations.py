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


def junit_report(root, cases: str):
    """A junit report of test/integration/test_x.py's cases under root (which gets that file)."""
    (root / "test" / "integration").mkdir(parents=True)
    (root / "test" / "integration" / "test_x.py").write_text("")
    junit = root / "junit.xml"
    junit.write_text(f"""<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest">{cases}</testsuite></testsuites>""")
    return junit


def test_junit_report_maps_to_upstream_test_ids(tmp_path):
    junit = junit_report(tmp_path, """
  <testcase classname="test.integration.test_x" name="test_ok[gzip]" time="0.1"/>
  <testcase classname="test.integration.test_x" name="test_bad" time="0.1"><failure message="AssertionError: boom">trace</failure></testcase>
  <testcase classname="test.integration.test_x.TestSSL" name="test_setup" time="0.1"><error message="failed on setup with &quot;x&quot;">trace</error></testcase>
  <testcase classname="test.integration.test_x" name="test_skip" time="0"><skipped type="pytest.skip" message="needs 4.1">s</skipped></testcase>
  <testcase classname="test.integration.test_x" name="test_teardown" time="0.1"/>
  <testcase classname="test.integration.test_x" name="test_teardown" time="0.1"><error message="failed on teardown">t</error></testcase>
""")
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


# A consumer's captured log from a run that lost kafka-python 3.0.12's race (forced by delaying the
# consumer's subscribe and its metadata update; the CI run of main 36c1bf7 lost it by itself): the
# consumer's bootstrap Metadata request was built before the subscription and answered after it.
CONSUMER = "140027946333888:kafka-io-test_kafka_consumer_max_bytes_simple_dous_EKPE"
LOST_SUBSCRIPTION_LOG = f"""\
18:55:17.109 INFO     140028027590336:producer-network-thread kafka.cluster           Updated metadata: ClusterMetadata(brokers: 1, topics: 1, coordinators: 0)
18:55:17.226 DEBUG    {CONSUMER} kafka.cluster           Metadata refresh loop needs bootstrap...
18:55:17.226 INFO     {CONSUMER} kafka.net.manager       Attempting bootstrap to bootstrap-0 at 127.0.0.1:29411 (rack None)
18:55:17.232 DEBUG    {CONSUMER} kafka.cluster           Sending metadata request MetadataRequest(topics=[], allow_auto_topic_creation=True, include_cluster_authorized_operations=False, include_topic_authorized_operations=False) to node bootstrap-0
18:55:17.249 INFO     140028116294528:MainThread kafka.consumer.subscription_state Updating subscribed topics to: ('test_kafka_consumer_max_bytes_simple_TzPKLJMNBN',)
18:55:17.308 INFO     {CONSUMER} kafka.cluster           Updated metadata: ClusterMetadata(brokers: 1, topics: 0, coordinators: 0)
18:55:17.310 INFO     {CONSUMER} kafka.cluster           Starting metadata refresh loop
18:55:26.321 INFO     {CONSUMER} kafka.cluster           Stopping metadata refresh loop
"""
NAMED_REQUEST = (f"18:55:17.400 DEBUG    {CONSUMER} kafka.cluster           Sending metadata request "
                 "MetadataRequest(topics=[MetadataRequestTopic(topic_id=None, "
                 "name='test_kafka_consumer_max_bytes_simple_TzPKLJMNBN')], allow_auto_topic_creation=True) "
                 "to node 0\n")


def test_lost_subscription_race_is_recognised_only_with_its_evidence():
    assert suite.client_race(LOST_SUBSCRIPTION_LOG) == suite.LOST_SUBSCRIPTION
    # The consumer asked the broker about its topic after subscribing: whatever failed, the broker was asked.
    assert suite.client_race(LOST_SUBSCRIPTION_LOG.replace(
        "18:55:26.321", NAMED_REQUEST + "18:55:26.321", 1)) is None
    # The response came before the subscription: kafka-python then asks again, no race.
    lines = LOST_SUBSCRIPTION_LOG.splitlines(keepends=True)
    assert suite.client_race("".join(lines[:4] + [lines[5], lines[4]] + lines[6:])) is None
    # The request in flight named the topic: the broker's answer is what the consumer saw.
    assert suite.client_race(LOST_SUBSCRIPTION_LOG.replace(
        "MetadataRequest(topics=[],", "MetadataRequest(topics=[MetadataRequestTopic(topic_id=None, "
        "name='test_kafka_consumer_max_bytes_simple_TzPKLJMNBN')],")) is None
    assert suite.client_race("") is None


def test_compare_reports_a_failure_with_client_race_evidence_apart_and_fails_without_it():
    outcomes = {"t.py::race": "failed", "t.py::bug": "failed", "t.py::ok": "passed"}
    logs = {"t.py::race": LOST_SUBSCRIPTION_LOG, "t.py::bug": "nothing of the race here"}
    comparison = suite.compare(outcomes, {}, logs)
    assert comparison.unexpected_failures == ["t.py::bug"]
    assert comparison.client_races == {"t.py::race": suite.LOST_SUBSCRIPTION}
    comparison = suite.compare({"t.py::race": "failed"}, {}, logs)
    assert comparison.ok


def test_junit_report_keeps_the_captured_log_of_failed_tests(tmp_path):
    junit = junit_report(tmp_path, """
  <testcase classname="test.integration.test_x" name="test_bad" time="0.1"><failure message="boom">trace</failure><system-out>--- Captured Log ---
12:00:00.000 INFO     1:MainThread kafka.x line one</system-out></testcase>
  <testcase classname="test.integration.test_x" name="test_ok" time="0.1"/>
""")
    logs = suite.parse_junit_logs(junit, tmp_path)
    assert logs == {"test/integration/test_x.py::test_bad": "--- Captured Log ---\n"
                                                             "12:00:00.000 INFO     1:MainThread kafka.x line one"}
