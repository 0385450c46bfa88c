"""Fetch responses from the segment files by sendfile (issue 19, item 2b): records come back
whole and in order to confluent-kafka and kafka-python on a plaintext listener, the bytes go by
sendfile there (and by copy over TLS: test_tls_listeners.py), and ``max.partition.fetch.bytes``
and ``fetch.max.bytes`` bound a response as Kafka bounds it (whole batches; the first one
whole whatever its size, KIP-74)."""

from __future__ import annotations

import asyncio
import datetime
import urllib.request

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaConsumer
from kafka import TopicPartition as KPTopicPartition
from kio.schema.fetch.v12 import request as fetch_v12

from tidelog.cluster.broker_channel import BrokerChannel
from tidelog.protocol.records import parse_batch_header

TOPIC = "slices"
RECORDS = 600  # 3 partitions x 200 x ~10 KiB: many fetches of several batches each


def _metrics(broker) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{broker.metrics_port}/metrics", timeout=5) as page:
        lines = page.read().decode().splitlines()
    return {name: float(value) for name, value in (line.rsplit(" ", 1) for line in lines if line and line[0] != "#")}


def _value(n: int) -> bytes:
    return (b"%d:" % n) * (10_000 // len(b"%d:" % n))


def _fill(broker) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(TOPIC, 3, 1)])[TOPIC].result(15)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 2,
                         "batch.size": 40_000})
    for n in range(RECORDS):
        producer.produce(TOPIC, _value(n), partition=n % 3)
    assert producer.flush(30) == 0


def _read_in_order(consumer: Consumer, topic: str, records: int, value=_value) -> None:
    """Read the 3 partitions of ``topic`` from the start with confluent-kafka: record n (``value(n)``), in order, in
    partition n % 3."""
    consumer.assign([TopicPartition(topic, p, 0) for p in range(3)])
    seen: dict[int, list[bytes]] = {0: [], 1: [], 2: []}
    while sum(map(len, seen.values())) < records:
        messages = consumer.consume(1000, 10)
        assert messages, "no records within 10 s"
        for message in messages:
            assert not message.error(), message.error()
            seen[message.partition()].append(message.value())
    consumer.close()
    for p in range(3):
        assert seen[p] == [value(n) for n in range(p, records, 3)]


def test_consumers_read_every_record_sent_from_the_file(broker):
    _fill(broker)
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "slices", "enable.auto.commit": False,
                         "max.partition.fetch.bytes": 65536, "fetch.max.bytes": 150_000,
                         "message.max.bytes": 100_000})
    _read_in_order(consumer, TOPIC, RECORDS)

    kp = KafkaConsumer(bootstrap_servers=broker.bootstrap, max_partition_fetch_bytes=65536, consumer_timeout_ms=20_000)
    kp.assign([KPTopicPartition(TOPIC, p) for p in range(3)])
    kp.seek_to_beginning()
    got = []
    for message in kp:
        got.append((message.partition, message.value))
        if len(got) == RECORDS:
            break
    kp.close()
    assert sorted(got, key=lambda m: (m[0], int(m[1].split(b":")[0]))) == sorted(
        ((n % 3, _value(n)) for n in range(RECORDS)), key=lambda m: (m[0], int(m[1].split(b":")[0])))
    metrics = _metrics(broker)
    assert metrics.get('tidelog_fetch_response_record_bytes_total{path="sendfile"}', 0) > 2 * RECORDS * 10_000 * 0.5


def _batch_sizes(records: bytes) -> list[int]:
    sizes, position = [], 0
    while position < len(records):
        sizes.append(parse_batch_header(records, position).size)
        position += sizes[-1]
    assert position == len(records), "a batch was cut"
    return sizes


def test_partition_and_response_limits_are_honoured(broker):
    _fill(broker)

    async def fetch(partition_max_bytes: int, max_bytes: int):
        channel = BrokerChannel("127.0.0.1", broker.port, "limits-test")
        try:
            request = fetch_v12.FetchRequest(
                replica_id=-1, max_wait=datetime.timedelta(0), min_bytes=0, max_bytes=max_bytes, isolation_level=0,
                session_id=0, session_epoch=-1, forgotten_topics_data=(), rack_id="", topics=(fetch_v12.FetchTopic(
                    topic=TOPIC, partitions=tuple(fetch_v12.FetchPartition(
                        partition=p, current_leader_epoch=-1, fetch_offset=0, last_fetched_epoch=-1, log_start_offset=-1,
                        partition_max_bytes=partition_max_bytes) for p in range(3))),))
            response = await channel.request(1, 12, request, 10)
        finally:
            channel.close()
        return [bytes(p.records or b"") for p in response.responses[0].partitions]

    for partition_max_bytes, max_bytes in ((65536, 1 << 20), (65536, 100_000), (1, 1 << 20), (1 << 20, 1)):
        records = asyncio.run(fetch(partition_max_bytes, max_bytes))
        sizes = [_batch_sizes(r) for r in records]
        total = 0
        for batches in sizes:
            limit = min(partition_max_bytes, max(0, max_bytes - total))
            if total == 0 and batches and batches[0] > limit:  # the response's first batch comes whole (KIP-74)
                assert batches == [batches[0]]
            else:
                assert sum(batches) <= limit
            total += sum(batches)
        assert sizes[0], "the first partition returned nothing"


BIG_TOPIC = "big-slices"
BIG_RECORDS = 1500  # 3 partitions x 500 x ~10 KiB: ~15 MB, asked for in one fetch


def test_a_response_larger_than_the_socket_buffer_goes_by_sendfile_whole(broker):
    """The socket takes a few MB at once (tcp_wmem); the rest of a bigger response follows by
    sendfile as the client reads, not read into the broker and queued in the transport."""
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(BIG_TOPIC, 3, 1)])[BIG_TOPIC].result(15)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 5, "batch.size": 1_000_000})
    for n in range(BIG_RECORDS):
        producer.produce(BIG_TOPIC, _value(n), partition=n % 3)
    assert producer.flush(30) == 0
    before = _metrics(broker)

    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "big-slices", "enable.auto.commit": False,
                         "max.partition.fetch.bytes": 8 << 20, "fetch.max.bytes": 32 << 20,
                         "receive.message.max.bytes": 40 << 20, "fetch.wait.max.ms": 10})
    _read_in_order(consumer, BIG_TOPIC, BIG_RECORDS)

    kp = KafkaConsumer(bootstrap_servers=broker.bootstrap, max_partition_fetch_bytes=8 << 20, fetch_max_bytes=32 << 20,
                       consumer_timeout_ms=20_000)
    kp.assign([KPTopicPartition(BIG_TOPIC, p) for p in range(3)])
    kp.seek_to_beginning()
    got = []
    for message in kp:
        got.append(message.value)
        if len(got) == BIG_RECORDS:
            break
    kp.close()
    assert sorted(got) == sorted(_value(n) for n in range(BIG_RECORDS))

    after = _metrics(broker)
    sent = {path: after.get(f'tidelog_fetch_response_record_bytes_total{{path="{path}"}}', 0)
            - before.get(f'tidelog_fetch_response_record_bytes_total{{path="{path}"}}', 0) for path in ("sendfile", "copy")}
    assert sent["copy"] == 0, sent
    assert sent["sendfile"] >= 2 * BIG_RECORDS * 10_000 * 0.99


SMALL_TOPIC = "small-slices"


def _small_value(n: int) -> bytes:
    return b"small-%d" % n


def test_a_small_response_is_read_and_written_whole(broker):
    """A response of at most 64 KiB of records (a consumer that has caught up, small batches) is
    read and written with its header in one piece: the records arrive whole and in order to
    confluent-kafka and kafka-python, counted under path="copy", none by sendfile."""
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(SMALL_TOPIC, 3, 1)])[SMALL_TOPIC].result(15)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 0, "batch.size": 2_000})
    values = [_small_value(n) for n in range(90)]
    for n, value in enumerate(values):
        producer.produce(SMALL_TOPIC, value, partition=n % 3)
        producer.flush(10)  # a batch each: every response small
    before = _metrics(broker)

    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "small-slices", "enable.auto.commit": False,
                         "max.partition.fetch.bytes": 4_096, "fetch.max.bytes": 12_000, "message.max.bytes": 10_000})
    _read_in_order(consumer, SMALL_TOPIC, len(values), _small_value)

    kp = KafkaConsumer(bootstrap_servers=broker.bootstrap, max_partition_fetch_bytes=4_096, consumer_timeout_ms=20_000)
    kp.assign([KPTopicPartition(SMALL_TOPIC, p) for p in range(3)])
    kp.seek_to_beginning()
    got = []
    for message in kp:
        got.append((message.partition, message.value))
        if len(got) == len(values):
            break
    kp.close()
    assert sorted(got) == sorted((n % 3, value) for n, value in enumerate(values))

    after = _metrics(broker)
    sent = {path: after.get(f'tidelog_fetch_response_record_bytes_total{{path="{path}"}}', 0)
            - before.get(f'tidelog_fetch_response_record_bytes_total{{path="{path}"}}', 0) for path in ("sendfile", "copy")}
    assert sent["sendfile"] == 0, sent
    assert sent["copy"] >= 2 * sum(len(value) for value in values), sent
