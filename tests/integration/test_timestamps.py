"""Record timestamps as the broker keeps them: LogAppendTime stamps what retention and ListOffsets
use, and CreateTime timestamps outside the topic's bounds are refused with INVALID_TIMESTAMP."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from kafka import KafkaConsumer
from kafka import TopicPartition as KPTopicPartition

from tests.brokerproc import wait_until
from tests.integration.clients import consume, produce
from tests.integration.test_retention import _create
from tests.integration.test_retention import _low_watermark_confluent as _low_watermark

HOUR_MS = 3600 * 1000
DAY_MS = 24 * HOUR_MS


@pytest.fixture
def broker(shared_broker):
    """One broker for the module (tests/conftest.py ``shared_broker``): each test uses its own names."""
    return shared_broker


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


# --- message.timestamp.before.max.ms / after.max.ms -------------------------------------------

INVALID_TIMESTAMP = 32


def _produce_confluent_error(broker, topic: str, timestamp_ms: int) -> str | None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0, "message.timeout.ms": 10000})
    outcome = []
    producer.produce(topic, value=b"v", partition=0, timestamp=timestamp_ms,
                     on_delivery=lambda err, msg: outcome.append(None if err is None else err.name()))
    assert producer.flush(15) == 0
    return outcome[0]


def _produce_kafka_python_error(broker, topic: str, timestamp_ms: int) -> str | None:
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=0, retries=0)
    try:
        producer.send(topic, value=b"v", partition=0, timestamp_ms=timestamp_ms).get(timeout=15)
        return None
    except KafkaError as e:
        return type(e).__name__
    finally:
        producer.close(5)


def test_timestamps_too_far_ahead_or_behind_are_refused(broker):
    """Kafka 4's defaults: an hour ahead at most (after.max.ms), any age (before.max.ms); a topic
    may bound the age. Both clients get INVALID_TIMESTAMP and nothing is appended."""
    _create(broker, "bounded", **{"message.timestamp.before.max.ms": str(DAY_MS)})
    now = int(time.time() * 1000)
    assert _produce_confluent_error(broker, "bounded", now + 2 * HOUR_MS) == "INVALID_TIMESTAMP"
    assert _produce_kafka_python_error(broker, "bounded", now + 2 * HOUR_MS) == "InvalidTimestampError"
    assert _produce_confluent_error(broker, "bounded", now - 2 * DAY_MS) == "INVALID_TIMESTAMP"
    assert _produce_kafka_python_error(broker, "bounded", now - 2 * DAY_MS) == "InvalidTimestampError"
    assert _produce_confluent_error(broker, "bounded", now + 30 * 60 * 1000) is None
    assert _produce_kafka_python_error(broker, "bounded", now - HOUR_MS) is None
    values = [m.timestamp for m in consume("confluent", broker.bootstrap, "bounded", 2)]
    assert values == [now + 30 * 60 * 1000, now - HOUR_MS], "only the two in range were appended"

    # the broker default: no bound on age, an hour ahead
    _create(broker, "default-bounds")
    assert _produce_kafka_python_error(broker, "default-bounds", now - 10 * 365 * DAY_MS) is None
    assert _produce_confluent_error(broker, "default-bounds", 4102444800000) == "INVALID_TIMESTAMP"  # year 2100
    # a LogAppendTime topic does not look at the producer's time
    _create(broker, "stamped", **{"message.timestamp.type": "LogAppendTime"})
    assert _produce_confluent_error(broker, "stamped", 4102444800000) is None


def test_broker_setting_and_kafkas_record_errors(broker_factory):
    from tests.integration.test_bad_input import Conn, produce as produce_raw
    from tidelog.protocol.records import build_batch

    broker = broker_factory({"log.message.timestamp.after.max.ms": "60000"})
    _create(broker, "strict")
    now = int(time.time() * 1000)
    rows = [(None, b"ok", [], now), (None, b"ahead", [], now + 120_000), (None, b"ok", [], now - 5),
            (None, b"ahead", [], now + 600_000)]
    result = produce_raw(Conn(broker), "strict", build_batch(rows))
    assert result.error_code == INVALID_TIMESTAMP
    assert result.error_message == "One or more records have been rejected due to invalid timestamp"
    errors = [(e.batch_index, e.batch_index_error_message) for e in result.record_errors]
    assert [index for index, _ in errors] == [1, 3]
    assert errors[0][1].startswith(f"Timestamp {now + 120_000} of message with offset 1 is out of range. "
                                   "The timestamp should be within [")


def test_header_max_timestamp_is_taken_from_the_records(broker):
    """A header claiming a later maxTimestamp than its records is corrected, as Kafka does: else
    that claim would hold back retention (and ListOffsets -3 would point at no record)."""
    import struct

    import crc32c
    from confluent_kafka.admin import OffsetSpec

    from tests.integration.test_bad_input import Conn, produce as produce_raw
    from tidelog.protocol.records import build_batch

    _create(broker, "claims")
    now = int(time.time() * 1000)
    batch = bytearray(build_batch([(None, b"a", [], now - 10), (None, b"b", [], now)]))
    struct.pack_into(">q", batch, 35, 4102444800000)  # maxTimestamp: the year 2100
    struct.pack_into(">I", batch, 17, crc32c.crc32c(bytes(batch[21:])))
    assert produce_raw(Conn(broker), "claims", bytes(batch)).error_code == 0

    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    found = admin.list_offsets({TopicPartition("claims", 0): OffsetSpec.max_timestamp()})
    result = list(found.values())[0].result(10)
    assert (result.offset, result.timestamp) == (1, now)
    assert [m.timestamp for m in consume("kafka-python", broker.bootstrap, "claims", 2)] == [now - 10, now]
