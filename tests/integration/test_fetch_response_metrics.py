"""``tidelog_fetch_response_record_bytes_total{path}`` (metrics.py): both series are there from
the start, at 0 (a dashboard's rate() and an alert on "sendfile stopped" need the series before
the first Fetch), and they count the record bytes a consumer was sent: a kafka-python consumer
that reads a small partition from the start in one response moves path="copy" by the log's size
exactly (a response of at most 64 KiB is read and written whole), and a large one moves
path="sendfile" by at least the records' bytes. The sendfile and copy paths themselves are
tested in test_fetch_sendfile.py."""

from __future__ import annotations

import json
import urllib.request

from confluent_kafka import Producer
from kafka import KafkaConsumer
from kafka import TopicPartition as KPTopicPartition

from tests.integration.share_clients import create_topic

SERIES = 'tidelog_fetch_response_record_bytes_total{path="%s"}'


def _metrics(broker) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{broker.metrics_port}/metrics", timeout=10) as page:
        lines = page.read().decode().splitlines()
    return {name: float(value) for name, value in (line.rsplit(" ", 1) for line in lines if line and line[0] != "#")}


def _size_bytes(broker, topic: str) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{broker.metrics_port}/api/v1/topics/{topic}", timeout=10) as page:
        return json.loads(page.read())["partitions"][0]["size_bytes"]


def _read_all(broker, topic: str, count: int) -> list[bytes]:
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, max_partition_fetch_bytes=8 << 20,
                             fetch_max_bytes=32 << 20, consumer_timeout_ms=20_000)
    try:
        consumer.assign([KPTopicPartition(topic, 0)])
        consumer.seek_to_beginning()
        got = []
        for message in consumer:
            got.append(message.value)
            if len(got) == count:
                break
        return got
    finally:
        consumer.close()


def _produce(broker, topic: str, values: list[bytes]) -> None:
    producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 5})
    for value in values:
        producer.produce(topic, value, partition=0)
    assert producer.flush(30) == 0


def test_the_fetch_response_series_exist_from_the_start_and_count_the_bytes_sent(broker):
    start = _metrics(broker)
    assert start.get(SERIES % "sendfile") == 0 and start.get(SERIES % "copy") == 0, \
        {k: v for k, v in start.items() if "fetch_response" in k}

    create_topic(broker.bootstrap, "small", 1)
    small = [b"small-%d" % n for n in range(50)]
    _produce(broker, "small", small)
    size = _size_bytes(broker, "small")
    assert 0 < size < 65_536
    before = _metrics(broker)
    assert _read_all(broker, "small", len(small)) == small
    after = _metrics(broker)
    # the consumer's first Fetch gets the whole partition; the ones after it get nothing
    assert after[SERIES % "copy"] - before[SERIES % "copy"] == size
    assert after[SERIES % "sendfile"] == before[SERIES % "sendfile"]

    create_topic(broker.bootstrap, "large", 1)
    large = [(b"%d:" % n) * 2_000 for n in range(200)]  # ~1 MiB: more than 64 KiB a response
    _produce(broker, "large", large)
    before = _metrics(broker)
    assert _read_all(broker, "large", len(large)) == large
    after = _metrics(broker)
    sent = {path: after[SERIES % path] - before[SERIES % path] for path in ("sendfile", "copy")}
    assert sent["sendfile"] > 0 and sum(sent.values()) >= sum(map(len, large)), sent
    assert sum(sent.values()) <= 2 * _size_bytes(broker, "large"), sent
