"""Record timestamps as the broker keeps them: LogAppendTime stamps what retention and ListOffsets
use, and CreateTime timestamps outside the topic's bounds are refused with INVALID_TIMESTAMP."""

from __future__ import annotations

import time

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaConsumer
from kafka import TopicPartition as KPTopicPartition

from tests.brokerproc import wait_until
from tests.integration.clients import consume, produce

HOUR_MS = 3600 * 1000
DAY_MS = 24 * HOUR_MS


def _create(broker, topic: str, **configs: str) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1, config=configs)])[topic].result(10)


def _low_watermark(broker, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "timestamps"})
    try:
        return consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[0]
    finally:
        consumer.close()


def _offset_for_time_confluent(broker, topic: str, timestamp_ms: int) -> int:
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "timestamps"})
    try:
        (found,) = consumer.offsets_for_times([TopicPartition(topic, 0, timestamp_ms)], timeout=10)
        assert found.error is None, found.error
        return found.offset
    finally:
        consumer.close()


def _offset_for_time_kafka_python(broker, topic: str, timestamp_ms: int):
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap)
    try:
        tp = KPTopicPartition(topic, 0)
        return consumer.offsets_for_times({tp: timestamp_ms})[tp]
    finally:
        consumer.close()


def test_log_append_time_topic_is_retained_and_looked_up_by_its_append_time(broker):
    """A month-old CreateTime sent to a LogAppendTime topic: the stamped time, not the producer's,
    is what retention and ListOffsets see (segment max timestamp and time index)."""
    stamped, control = "append-time", "create-time"
    one_batch_per_segment = {"segment.bytes": "14", "retention.ms": str(HOUR_MS)}
    _create(broker, stamped, **{"message.timestamp.type": "LogAppendTime"}, **one_batch_per_segment)
    _create(broker, control, **one_batch_per_segment)
    sent_at = int(time.time() * 1000)
    month_old = sent_at - 30 * DAY_MS
    for topic in (stamped, control):
        produce("confluent", broker.bootstrap, topic, [(b"old", b"month-old create time", [], month_old)])
        produce("kafka-python", broker.bootstrap, topic, [(b"new", b"fresh", [], sent_at)])
    # Retention runs every second over every partition in one pass: once it has deleted the
    # control topic's month-old record, it has looked at the stamped topic too.
    wait_until(lambda: _low_watermark(broker, control) == 1, timeout_s=20, message="retention of the control topic")
    assert _low_watermark(broker, stamped) == 0, "the record was appended now: an hour's retention keeps it"

    (kept,) = consume("aiokafka", broker.bootstrap, stamped, 1)
    assert (kept.key, kept.offset) == (b"old", 0)
    assert kept.timestamp >= sent_at, "consumers see the append time"
    assert _offset_for_time_confluent(broker, stamped, sent_at) == 0
    assert _offset_for_time_kafka_python(broker, stamped, sent_at).offset == 0
    assert _offset_for_time_kafka_python(broker, stamped, sent_at).timestamp == kept.timestamp
