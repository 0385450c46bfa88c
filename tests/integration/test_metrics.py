"""Prometheus /metrics after real traffic: per-API latency, bytes and records in and out, lag, logs."""

from __future__ import annotations

import time

import pytest
import requests
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from prometheus_client.parser import text_string_to_metric_families

from tests.brokerproc import wait_until
from tests.integration.clients import consume, produce


def scrape(broker) -> dict[tuple[str, tuple], float]:
    """(sample name, sorted labels) -> value."""
    response = requests.get(f"http://127.0.0.1:{broker.metrics_port}/metrics", timeout=10)
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name: str, **labels) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def test_metrics_after_traffic(broker):
    rows = [(b"k%d" % i, b"v" * 100, None, None) for i in range(20)]
    produce("confluent", broker.bootstrap, "metered", rows, partition=0)
    assert len(consume("confluent", broker.bootstrap, "metered", 20, partition=0)) == 20

    # A group commits offset 15 of 20: lag 5.
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "billing", "enable.auto.commit": False})
    try:
        consumer.commit(offsets=[TopicPartition("metered", 0, 15)], asynchronous=False)
    finally:
        consumer.close()

    samples = scrape(broker)
    # Per-API request counts and latency histograms.
    for api in ("Produce", "Fetch", "Metadata", "ApiVersions", "OffsetCommit"):
        assert value(samples, "tidelog_requests_total", api=api) >= 1, api
        assert value(samples, "tidelog_request_latency_seconds_count", api=api) >= 1, api
        assert value(samples, "tidelog_request_latency_seconds_bucket", api=api, le="+Inf") >= 1, api
        assert value(samples, "tidelog_request_latency_seconds_sum", api=api) > 0, api
    # Bytes and records in and out per topic.
    assert value(samples, "tidelog_produced_records_total", topic="metered") == 20
    produced_bytes = value(samples, "tidelog_produced_bytes_total", topic="metered")
    assert produced_bytes > 20 * 100
    assert value(samples, "tidelog_fetched_records_total", topic="metered") >= 20
    assert value(samples, "tidelog_fetched_bytes_total", topic="metered") >= produced_bytes
    # Logs per partition.
    assert value(samples, "tidelog_log_end_offset", topic="metered", partition="0") == 20
    assert value(samples, "tidelog_log_start_offset", topic="metered", partition="0") == 0
    assert value(samples, "tidelog_log_size_bytes", topic="metered", partition="0") == produced_bytes
    assert value(samples, "tidelog_log_segments", topic="metered", partition="0") == 1
    # Lag of the committed group.
    assert value(samples, "tidelog_consumer_committed_offset", group="billing", topic="metered", partition="0") == 15
    assert value(samples, "tidelog_consumer_lag", group="billing", topic="metered", partition="0") == 5
    assert value(samples, "tidelog_consumer_lag_sum", group="billing") == 5
    assert value(samples, "tidelog_consumer_groups", state="Empty") == 1
    # fsyncs happened (the balanced profile's group commit), and were timed.
    assert value(samples, "tidelog_fsync_latency_seconds_count") >= 1
    assert value(samples, "tidelog_fsync_errors_total") == 0
    # Connections were counted; every client closed its own.
    assert value(samples, "tidelog_connections_accepted_total") >= 3
    assert value(samples, "tidelog_under_replicated_partitions") == 0
    assert value(samples, "tidelog_offline_partitions") == 0
    assert value(samples, "tidelog_topics") == 2  # metered and __consumer_offsets
    assert value(samples, "tidelog_fetch_purgatory_size") == 0
    # The event loop's lag is measured all along (server/loop_monitor.py), a sample every 0.5 s
    # from the broker's start: this test's traffic may all come before the first.
    wait_until(lambda: value(scrape(broker), "tidelog_event_loop_lag_seconds_count") >= 1, 10,
               message="a first event loop lag sample")
    assert value(samples, "tidelog_event_loop_stalls_total") >= 0

    # More records: the lag follows the log end; deleting the topic removes its series.
    produce("confluent", broker.bootstrap, "metered", rows[:3], partition=0)
    samples = scrape(broker)
    assert value(samples, "tidelog_consumer_lag", group="billing", topic="metered", partition="0") == 8
    requests.delete(f"http://127.0.0.1:{broker.metrics_port}/api/v1/topics/metered", timeout=10).raise_for_status()
    samples = scrape(broker)
    assert ("tidelog_log_end_offset", (("partition", "0"), ("topic", "metered"))) not in samples
    assert not any(name == "tidelog_consumer_lag" for name, _ in samples)
    # HTTP requests by route template and status; unknown paths share one label.
    requests.get(f"http://127.0.0.1:{broker.metrics_port}/no/such/path/{time.time()}", timeout=10)
    samples = scrape(broker)
    assert value(samples, "tidelog_http_requests_total", method="DELETE", route="/api/v1/topics/{topic}", status="200") == 1
    assert value(samples, "tidelog_http_requests_total", method="GET", route="/metrics", status="200") >= 3
    assert value(samples, "tidelog_http_requests_total", method="GET", route="unmatched", status="404") == 1


@pytest.mark.parametrize("per_partition", [True, False])
def test_per_partition_series_can_be_left_out(broker_factory, per_partition):
    """metrics.per.partition.enable=false: a scrape's series no longer grow with the
    partitions hosted and committed to (a broker with 10,000 partitions had 40,000 and more)."""
    broker = broker_factory({"metrics.per.partition.enable": str(per_partition).lower()})
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "wide", "enable.auto.commit": False})

    def add_topic_and_scrape(topic: str, partitions: int) -> dict:
        admin.create_topics([NewTopic(topic, partitions, 1)], request_timeout=30)[topic].result(30)
        produce("confluent", broker.bootstrap, topic, [(b"k", b"v", None, None)], partition=0)
        consumer.commit(offsets=[TopicPartition(topic, p, 0) for p in range(partitions)], asynchronous=False)
        return scrape(broker)

    try:
        few = add_topic_and_scrape("narrow", 2)
        many = add_topic_and_scrape("broad", 100)
    finally:
        consumer.close()
    with_partition = [key for key in many if any(label == "partition" for label, _ in key[1])]
    assert value(many, "tidelog_partitions") == 103 and value(many, "tidelog_consumer_lag_sum", group="wide") == 2
    if per_partition:
        assert len(many) - len(few) >= 6 * 100  # 4 log families, the committed offset and the lag
        assert value(many, "tidelog_log_end_offset", topic="broad", partition="0") == 1
    else:
        assert not with_partition
        assert len(many) - len(few) < 20, f"{len(many) - len(few)} more series for 100 more partitions"


def test_fetch_purgatory_counts_waiting_fetches(broker):
    produce("confluent", broker.bootstrap, "idle", [(None, b"x", None, None)], partition=0)
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "idle-reader", "fetch.wait.max.ms": 5000,
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition("idle", 0, 1)])
    try:
        deadline = time.monotonic() + 15
        # The consumer's fetch at the log end waits in the broker; poll drives it.
        while time.monotonic() < deadline:
            consumer.poll(0.1)
            if value(scrape(broker), "tidelog_fetch_purgatory_size") >= 1:
                break
        else:
            raise AssertionError("no fetch was seen waiting")
    finally:
        consumer.close()
    wait_until(lambda: value(scrape(broker), "tidelog_fetch_purgatory_size") == 0, message="the waiting fetch to leave")


def test_ready(broker):
    response = requests.get(f"http://127.0.0.1:{broker.metrics_port}/ready", timeout=10)
    assert response.status_code == 200 and response.json()["status"] == "ready"
