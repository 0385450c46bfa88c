"""ListOffsets by time and position, and Fetch long polling, with two clients each."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from confluent_kafka import Consumer, TopicPartition
from kafka import KafkaConsumer
from kafka import TopicPartition as KPTopicPartition

from tests.brokerproc import wait_until
from tests.integration.clients import produce

BASE_MS = 1_700_000_000_000


@pytest.fixture
def broker(shared_broker):
    """One broker for the module (tests/conftest.py ``shared_broker``): each test uses its own names."""
    return shared_broker


@pytest.fixture
def timed_topic(broker, request):
    """100 records with timestamps BASE_MS + 1000*i, produced in 5 separate batches."""
    topic = f"timed-{request.node.name}"
    for chunk in range(5):
        records = [(None, f"v{i}".encode(), [], BASE_MS + 1000 * i) for i in range(chunk * 20, chunk * 20 + 20)]
        produce("confluent", broker.bootstrap, topic, records)
    return topic


def test_offsets_for_times_confluent(broker, timed_topic):
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "lo"})
    try:
        for ts, expected in [(BASE_MS, 0), (BASE_MS + 1, 1), (BASE_MS + 37_000, 37), (BASE_MS + 99_000, 99), (BASE_MS + 500_000, -1)]:
            (tp,) = consumer.offsets_for_times([TopicPartition(timed_topic, 0, ts)], timeout=10)
            assert tp.error is None and tp.offset == expected, (ts, tp)
        low, high = consumer.get_watermark_offsets(TopicPartition(timed_topic, 0), timeout=10)
        assert (low, high) == (0, 100)
    finally:
        consumer.close()


def test_offsets_for_times_kafka_python(broker, timed_topic):
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap)
    tp = KPTopicPartition(timed_topic, 0)
    try:
        found = consumer.offsets_for_times({tp: BASE_MS + 42_500})
        assert found[tp].offset == 43 and found[tp].timestamp == BASE_MS + 43_000
        assert consumer.offsets_for_times({tp: BASE_MS + 10**9})[tp] is None
        assert consumer.beginning_offsets([tp]) == {tp: 0}
        assert consumer.end_offsets([tp]) == {tp: 100}
    finally:
        consumer.close()


def test_max_timestamp_offset(broker):
    """ListOffsets -3 (MAX_TIMESTAMP, v7+): the record with the largest timestamp, not the last."""
    from kafka import KafkaAdminClient
    from kafka.admin import OffsetSpec

    topic = "maxts"
    produce("confluent", broker.bootstrap, topic, [(None, b"a", [], BASE_MS + 5000), (None, b"b", [], BASE_MS + 9000), (None, b"c", [], BASE_MS + 1000)])
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        result = admin.list_partition_offsets({KPTopicPartition(topic, 0): OffsetSpec.MAX_TIMESTAMP})
        (info,) = result.values()
        assert (info.offset, info.timestamp) == (1, BASE_MS + 9000)
    finally:
        admin.close()


def test_long_poll_waits_for_max_wait_without_data(broker):
    """An empty topic: a consumer's fetch waits fetch.max.wait, not spinning; the broker counts few fetches."""
    topic = "idle"
    produce("confluent", broker.bootstrap, topic, [(None, b"x", [], None)])
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, fetch_max_wait_ms=400, fetch_min_bytes=1)
    tp = KPTopicPartition(topic, 0)
    consumer.assign([tp])
    consumer.seek(tp, 1)
    try:
        started = time.monotonic()
        while time.monotonic() - started < 2.0:
            assert consumer.poll(timeout_ms=200) == {}
        fetches = _fetch_requests(broker)
        # 2 s of polling with a 400 ms max wait: about 5 fetches, certainly not hundreds.
        assert 2 <= fetches <= 12, fetches
    finally:
        consumer.close()


def _fetch_requests(broker) -> int:
    """Fetch requests counted by the broker, read from its logs' request metric via a Metadata-free path."""
    import re
    import urllib.request

    port = broker.metrics_port
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    match = re.search(r'^tidelog_requests_total\{api="Fetch"\} ([0-9.e+]+)$', text, re.M)
    return int(float(match.group(1))) if match else 0


@pytest.mark.parametrize("client", ["confluent", "aiokafka"])
def test_long_poll_is_woken_by_an_append(broker, client):
    """A consumer parked in a long fetch gets a new record right away, well before max wait."""
    topic = f"wake-{client}"
    produce("confluent", broker.bootstrap, topic, [(None, b"first", [], None)])
    received = {}

    fetches_before = _fetch_requests(broker)

    def late_producer():
        # Produce once the consumer has sent two fetches: the second one is parked in the broker.
        wait_until(lambda: _fetch_requests(broker) >= fetches_before + 2, message="the consumer's fetches")
        received["sent_at"] = time.monotonic()
        produce("confluent", broker.bootstrap, topic, [(None, b"second", [], None)], **{"linger.ms": 0})

    thread = threading.Thread(target=late_producer)
    if client == "confluent":
        consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "wake", "fetch.wait.max.ms": 5000})
        consumer.assign([TopicPartition(topic, 0, 1)])
        thread.start()
        try:
            msg = None
            deadline = time.monotonic() + 10
            while msg is None and time.monotonic() < deadline:
                msg = consumer.poll(0.1)
            received["got_at"] = time.monotonic()
            assert msg is not None and msg.value() == b"second"
        finally:
            consumer.close()
    else:
        async def run():
            from aiokafka import AIOKafkaConsumer
            from aiokafka.structs import TopicPartition as ATP

            consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, fetch_max_wait_ms=5000)
            await consumer.start()
            consumer.assign([ATP(topic, 0)])
            consumer.seek(ATP(topic, 0), 1)
            thread.start()
            try:
                msg = await asyncio.wait_for(consumer.getone(), 10)
                received["got_at"] = time.monotonic()
                assert msg.value == b"second"
            finally:
                await consumer.stop()

        asyncio.run(run())
    thread.join()
    # Woken by the append, not by the 5 s max wait.
    assert received["got_at"] - received["sent_at"] < 2.0
