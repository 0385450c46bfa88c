"""Retention by time and by size deletes whole old segments; consumers then start at the new log start."""

from __future__ import annotations

import time

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaConsumer
from kafka import TopicPartition as KPTopicPartition

from tests.brokerproc import wait_until
from tests.integration.clients import consume, produce

HOUR_MS = 3600 * 1000


def _create(broker, topic: str, **configs: str) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1, config=configs)])[topic].result(10)


def _low_watermark_confluent(broker, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "retention"})
    try:
        return consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[0]
    finally:
        consumer.close()


def _low_watermark_kafka_python(broker, topic: str) -> int:
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap)
    try:
        tp = KPTopicPartition(topic, 0)
        return consumer.beginning_offsets([tp])[tp]
    finally:
        consumer.close()


def test_retention_by_time_deletes_old_segments(broker):
    topic = "retention-time"
    _create(broker, topic, **{"segment.bytes": "20000", "retention.ms": str(HOUR_MS)})
    now = int(time.time() * 1000)
    old = [(None, b"old" * 100, [], now - 3 * HOUR_MS) for _ in range(300)]  # ~100 KB, 3 h old
    fresh = [(None, b"new" * 100, [], now) for _ in range(30)]
    produce("confluent", broker.bootstrap, topic, old, **{"batch.size": 4000})  # many batches, several segments
    produce("kafka-python", broker.bootstrap, topic, fresh, batch_size=4000)
    segments = lambda: sorted((broker.data_dir / f"{topic}-0").glob("*.log"))  # noqa: E731
    # The retention task runs every second in tests: wait until the old segments are gone.
    wait_until(lambda: _low_watermark_confluent(broker, topic) > 0, timeout_s=20, message="retention to run")
    low = _low_watermark_confluent(broker, topic)
    assert low == _low_watermark_kafka_python(broker, topic)
    assert 0 < low <= 300, "only segments holding nothing but old records may go"
    # Whole segments go: the new log start is the base offset of the oldest segment left.
    # (No count of segments before retention: the retention task may already have run.)
    assert low == int(segments()[0].stem)
    messages = consume("aiokafka", broker.bootstrap, topic, 330 - low, offset=low)
    assert [m.offset for m in messages] == list(range(low, 330))
    assert [m.value for m in messages[-30:]] == [b"new" * 100] * 30
    assert "retention" in broker.log().lower()


def test_retention_by_size_keeps_the_newest_bytes(broker):
    topic = "retention-size"
    _create(broker, topic, **{"segment.bytes": "20000", "retention.bytes": "50000"})
    records = [(None, b"%06d" % i + b"x" * 300, [], None) for i in range(600)]  # ~190 KB
    produce("confluent", broker.bootstrap, topic, records, **{"batch.size": 4000})
    partition_dir = broker.data_dir / f"{topic}-0"


    def size() -> int:
        total = 0
        for path in partition_dir.glob("*.log"):
            try:
                total += path.stat().st_size
            except FileNotFoundError:  # deleted by retention between glob and stat
                pass
        return total

    wait_until(lambda: size() <= 50000 + 20000, timeout_s=20, message="size retention")
    low = _low_watermark_kafka_python(broker, topic)
    assert low > 0
    messages = consume("confluent", broker.bootstrap, topic, 600 - low, offset=low)
    assert [int(m.value[:6]) for m in messages] == list(range(low, 600))
