"""Round trips through a real broker with every client: what one produces, the others read."""

from __future__ import annotations

import time

import pytest

from tests.integration.clients import CLIENTS, consume, produce

NOW_MS = int(time.time() * 1000)

RECORDS = [
    (b"key-1", b"value-1", [("h1", b"v1"), ("h2", b"")], NOW_MS - 5000),
    (None, b"no key", [], NOW_MS - 4000),
    (b"empty-value", b"", [("dup", b"a"), ("dup", b"b")], NOW_MS - 3000),
    (b"null-value", None, [], NOW_MS - 2000),
    (b"\x00\xffbinary", bytes(range(256)) * 8, [("bin", bytes(range(10)))], NOW_MS - 1000),
]


@pytest.fixture
def broker(shared_broker):
    """One broker for the module (tests/conftest.py ``shared_broker``): each test uses its own names."""
    return shared_broker


def _check_round_trip(messages, records, first_offset=0):
    assert len(messages) == len(records)
    for i, (msg, (key, value, headers, timestamp)) in enumerate(zip(messages, records)):
        assert msg.offset == first_offset + i
        assert msg.key == key
        assert (msg.value or b"") == (value or b"")
        if value is None:
            assert msg.value is None
        assert msg.headers == headers
        assert msg.timestamp == timestamp


@pytest.mark.parametrize("producer", CLIENTS)
def test_round_trip_keys_values_headers_timestamps(broker, producer):
    topic = f"round-trip-{producer}"
    offsets = produce(producer, broker.bootstrap, topic, RECORDS)
    assert offsets == list(range(len(RECORDS)))
    for consumer in CLIENTS:
        _check_round_trip(consume(consumer, broker.bootstrap, topic, len(RECORDS)), RECORDS)


CODECS = ["gzip", "snappy", "lz4", "zstd"]


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("producer", CLIENTS)
def test_compressed_batches_pass_through(broker, producer, codec):
    if producer == "kafka-python" and codec == "snappy":
        pytest.importorskip("snappy", reason="kafka-python needs python-snappy for snappy")
    if producer == "kafka-python" and codec == "zstd":
        pytest.importorskip("zstandard", reason="kafka-python needs zstandard for zstd")
    if producer == "aiokafka":
        pytest.importorskip({"gzip": "gzip", "snappy": "cramjam", "lz4": "cramjam", "zstd": "cramjam"}[codec])
    topic = f"codec-{producer}-{codec}"
    records = [(f"k{i}".encode(), (f"value {i} " * 50).encode(), [("i", str(i).encode())], NOW_MS + i) for i in range(200)]
    assert produce(producer, broker.bootstrap, topic, records, compression=codec) == list(range(200))
    for consumer in CLIENTS:
        _check_round_trip(consume(consumer, broker.bootstrap, topic, len(records)), records)


@pytest.mark.parametrize("producer", ["confluent", "kafka-python"])
def test_one_megabyte_record(broker, producer):
    topic = f"big-{producer}"
    value = (bytes(range(256)) * 4000)[:1_000_000]  # 1 MB, under the default message.max.bytes (1048588)
    records = [(b"big", value, [], NOW_MS)]
    assert produce(producer, broker.bootstrap, topic, records) == [0]
    for consumer in CLIENTS:
        (msg,) = consume(consumer, broker.bootstrap, topic, 1)
        assert msg.value == value


def test_consume_from_the_middle_and_from_the_end(broker):
    topic = "seek"
    records = [(None, f"v{i}".encode(), [], NOW_MS + i) for i in range(100)]
    produce("confluent", broker.bootstrap, topic, records)
    for consumer in CLIENTS:
        messages = consume(consumer, broker.bootstrap, topic, 30, offset=70)
        assert [m.offset for m in messages] == list(range(70, 100))
        assert [m.value for m in messages] == [f"v{i}".encode() for i in range(70, 100)]


@pytest.mark.parametrize("consumer", ["confluent", "kafka-python"])
def test_topic_compression_type_recompresses(broker, consumer):
    """A topic with compression.type=gzip stores gzip batches whatever the producer sent."""
    from confluent_kafka.admin import AdminClient, NewTopic

    from tidelog.protocol.records import parse_batch_header

    topic = f"gzip-topic-{consumer}"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1, config={"compression.type": "gzip"})])[topic].result(10)
    records = [(b"k%d" % i, b"v" * 300, [("h", b"1")], NOW_MS + i) for i in range(50)]
    produce("confluent", broker.bootstrap, topic, records, compression="lz4")
    _check_round_trip(consume(consumer, broker.bootstrap, topic, 50), records)
    segment = next((broker.data_dir / f"{topic}-0").glob("*.log")).read_bytes()
    assert parse_batch_header(segment).compression == 1  # gzip
