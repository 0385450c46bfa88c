"""Small helpers to produce and consume with each real client library (no broker mocks)."""

from __future__ import annotations

import asyncio
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from kafka import KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KPTopicPartition

CLIENTS = ("confluent", "kafka-python", "aiokafka")


class Msg:
    """A consumed record, the same shape whichever client read it."""

    def __init__(self, topic, partition, offset, key, value, headers, timestamp):
        self.topic, self.partition, self.offset = topic, partition, offset
        self.key, self.value, self.timestamp = key, value, timestamp
        self.headers = [(k, v) for k, v in (headers or [])]

    def __repr__(self) -> str:
        return f"Msg({self.topic}-{self.partition}@{self.offset} key={self.key!r} value={self.value!r:.40})"


# (key, value, headers, timestamp_ms)
Record = tuple


def produce(client: str, bootstrap: str, topic: str, records: list, partition: int = 0, **config) -> list[int]:
    """Produce records to one partition with ``client``; return their offsets (acks=all)."""
    if client == "confluent":
        return _produce_confluent(bootstrap, topic, records, partition, config)
    if client == "kafka-python":
        return _produce_kafka_python(bootstrap, topic, records, partition, config)
    if client == "aiokafka":
        return asyncio.run(_produce_aiokafka(bootstrap, topic, records, partition, config))
    raise ValueError(client)


def _produce_confluent(bootstrap, topic, records, partition, config):
    codec = config.pop("compression", "none")
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
                         "compression.type": codec, "message.max.bytes": 2_000_000, **config})
    offsets: list[int] = []
    errors: list = []

    def delivered(err, msg):
        if err:
            errors.append(err)
        else:
            offsets.append(msg.offset())

    for key, value, headers, timestamp in records:
        producer.produce(topic, value=value, key=key, partition=partition, headers=headers or None,
                         timestamp=timestamp or 0, on_delivery=delivered)
        producer.poll(0)
    remaining = producer.flush(30)
    assert remaining == 0 and not errors, (remaining, errors)
    return offsets


def _produce_kafka_python(bootstrap, topic, records, partition, config):
    codec = config.pop("compression", None)
    if codec == "none":
        codec = None
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, compression_type=codec,
                             max_request_size=2_000_000, **config)
    futures = [producer.send(topic, value=value, key=key, partition=partition, headers=headers or None,
                             timestamp_ms=timestamp) for key, value, headers, timestamp in records]
    producer.flush(30)
    offsets = [f.get(timeout=30).offset for f in futures]
    producer.close(5)
    return offsets


async def _produce_aiokafka(bootstrap, topic, records, partition, config):
    from aiokafka import AIOKafkaProducer

    codec = config.pop("compression", None)
    if codec == "none":
        codec = None
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, compression_type=codec,
                                max_request_size=2_000_000, **config)
    await producer.start()
    try:
        futures = [await producer.send(topic, value=value, key=key, partition=partition, headers=headers or None,
                                       timestamp_ms=timestamp) for key, value, headers, timestamp in records]
        return [(await f).offset for f in futures]
    finally:
        await producer.stop()


def consume(client: str, bootstrap: str, topic: str, count: int, partition: int = 0, offset: int = 0,
            timeout_s: float = 30.0) -> list[Msg]:
    """Read ``count`` records from one partition starting at ``offset`` (assign, no group)."""
    if client == "confluent":
        return _consume_confluent(bootstrap, topic, count, partition, offset, timeout_s)
    if client == "kafka-python":
        return _consume_kafka_python(bootstrap, topic, count, partition, offset, timeout_s)
    if client == "aiokafka":
        return asyncio.run(_consume_aiokafka(bootstrap, topic, count, partition, offset, timeout_s))
    raise ValueError(client)


def _consume_confluent(bootstrap, topic, count, partition, offset, timeout_s):
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "tidelog-test-assign",
                         "enable.auto.commit": False, "fetch.message.max.bytes": 2_000_000})
    consumer.assign([TopicPartition(topic, partition, offset)])
    out: list[Msg] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            _, ts = msg.timestamp()
            out.append(Msg(msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.value(), msg.headers(), ts))
    finally:
        consumer.close()
    return out


def _consume_kafka_python(bootstrap, topic, count, partition, offset, timeout_s):
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             max_partition_fetch_bytes=2_000_000)
    tp = KPTopicPartition(topic, partition)
    consumer.assign([tp])
    consumer.seek(tp, offset)
    out: list[Msg] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < count and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                for r in records:
                    out.append(Msg(r.topic, r.partition, r.offset, r.key, r.value, r.headers, r.timestamp))
    finally:
        consumer.close()
    return out


async def _consume_aiokafka(bootstrap, topic, count, partition, offset, timeout_s):
    from aiokafka import AIOKafkaConsumer
    from aiokafka.structs import TopicPartition as AIOTopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                max_partition_fetch_bytes=2_000_000)
    await consumer.start()
    tp = AIOTopicPartition(topic, partition)
    consumer.assign([tp])
    consumer.seek(tp, offset)
    out: list[Msg] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < count and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for r in records:
                    out.append(Msg(r.topic, r.partition, r.offset, r.key, r.value, r.headers, r.timestamp))
    finally:
        await consumer.stop()
    return out
