"""A single node's high watermark never passes what is durable (issue 10, item 4).

Under ``balanced`` (and ``durable``) a record appended but not yet fsynced is not served:
neither Fetch nor ListOffsets latest nor consumer lag shows it before its producer could be
acknowledged, and a fetch parked for data is woken by the flush that makes it readable. Under
``throughput`` (acknowledged at the page-cache write) the high watermark is the log end.
"""

from __future__ import annotations

import threading
import time
import urllib.request

from confluent_kafka import Consumer, Producer
from confluent_kafka import TopicPartition as CTopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaConsumer, TopicPartition

from tests.brokerproc import wait_until

WINDOW_MS = 4000  # the group-commit window: long enough to look at the broker inside it


def _metric(broker, line_start: str) -> str | None:
    with urllib.request.urlopen(f"http://127.0.0.1:{broker.metrics_port}/metrics", timeout=5) as page:
        for line in page.read().decode().splitlines():
            if line.startswith(line_start):
                return line
    return None


def _create(broker, topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(15)


def test_a_record_is_served_only_once_it_is_durable(broker_factory):
    broker = broker_factory({"log.flush.interval.ms": str(WINDOW_MS)})
    _create(broker, "hw")
    # A consumer parked on the empty partition: a fetch that waits far longer than the window.
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "hw", "fetch.wait.max.ms": 30_000,
                         "enable.auto.commit": False})
    consumer.assign([CTopicPartition("hw", 0, 0)])
    received: list[float] = []

    def consume():
        deadline = time.monotonic() + 25
        while not received and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and not msg.error():
                received.append(time.monotonic())

    reader = threading.Thread(target=consume)
    reader.start()
    try:
        producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 0})
        acked: list[float] = []
        producer.produce("hw", b"v", partition=0, on_delivery=lambda err, msg: acked.append(time.monotonic()) if err is None else None)
        producer.poll(0)
        wait_until(lambda: _metric(broker, 'tidelog_log_end_offset{partition="0",topic="hw"} 1.0') is not None,
                   message="the record appended (its flush is up to 4 s away)")
        # Appended, not yet durable: no client can see it.
        checker = KafkaConsumer(bootstrap_servers=broker.bootstrap)
        try:
            latest = checker.end_offsets([TopicPartition("hw", 0)])[TopicPartition("hw", 0)]
            by_time = checker.offsets_for_times({TopicPartition("hw", 0): 0})[TopicPartition("hw", 0)]
        finally:
            checker.close()
        watermarks = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "hw-check"})
        try:  # its own connection: the parked consumer's is busy with its fetch
            low, high = watermarks.get_watermark_offsets(CTopicPartition("hw", 0), timeout=10, cached=False)
        finally:
            watermarks.close()
        producer.poll(0)
        if not acked:  # still inside the window (a very slow machine may have passed it: then nothing to see)
            assert latest == 0 and high == 0 and by_time is None and not received
        assert producer.flush(20) == 0 and acked
    finally:
        reader.join(30)
        consumer.close()
    # The parked fetch was woken by the flush: the record came with its acknowledgement, not
    # at the fetch's 30 s timeout, and never before the producer could be answered.
    assert received, "the parked fetch was not woken by the flush"
    assert received[0] >= acked[0] - 1.0
    assert received[0] - acked[0] < 10


def test_throughput_serves_what_is_in_the_page_cache(broker_factory):
    broker = broker_factory({"log.durability.profile": "throughput", "log.flush.interval.ms": "60000"})
    _create(broker, "fast")
    producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
    producer.produce("fast", b"v", partition=0)
    assert producer.flush(10) == 0
    checker = KafkaConsumer(bootstrap_servers=broker.bootstrap)
    try:
        assert checker.end_offsets([TopicPartition("fast", 0)])[TopicPartition("fast", 0)] == 1
    finally:
        checker.close()
