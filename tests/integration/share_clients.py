"""Helpers for share-group tests with real clients: confluent-kafka's ShareConsumer (librdkafka),
the broker's /metrics, and produce/admin through confluent-kafka and kafka-python."""

from __future__ import annotations

import re
import time
import urllib.request

from confluent_kafka import Producer, ShareConsumer
from confluent_kafka.admin import AdminClient, NewTopic

# A low delivery limit with Kafka's default record lock (30 s), for tests that release records: with a
# 1 s lock a client slower than that between a delivery and its release (load) made it a lock expiry.
LOW_LIMIT = {"group.share.delivery.count.limit": "3"}


def create_topic(bootstrap: str, name: str, partitions: int, configs: dict[str, str] | None = None) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, partitions, 1, config=configs or {})])[name].result(30)


def share_consumer(bootstrap: str, group_id: str, topics: list[str], **config) -> ShareConsumer:
    consumer = ShareConsumer({"bootstrap.servers": bootstrap, "group.id": group_id, **config})
    consumer.subscribe(topics)
    return consumer


def metric(broker, name: str, **labels) -> float:
    """The value of one sample of the broker's /metrics (0 when absent)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{broker.metrics_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        match = re.fullmatch(rf"{re.escape(name)}(?:{{(.*)}})? (\S+)", line)
        if match and ",".join(sorted((match.group(1) or "").split(","))) == wanted:
            return float(match.group(2))
    return 0.0


def wait_for(condition, timeout_s: float, what: str, poll=None):
    """Until ``condition()`` is truthy (calling ``poll()`` between tries, e.g. consumers' polls)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        if poll is not None:
            poll()
        else:
            time.sleep(0.05)


def wait_members(broker, group_id: str, count: int, consumers=(), timeout_s: float = 30) -> None:
    """Until the group has ``count`` members (the consumers join on their first polls)."""
    def poll():
        for consumer in consumers:
            consumer.poll(0.1)
    wait_for(lambda: metric(broker, "tidelog_share_group_members", group=group_id) == count, timeout_s,
             f"{count} members in share group {group_id}", poll if consumers else None)


def produce_values(bootstrap: str, topic: str, count: int, partitions: int, prefix: str = "") -> set[bytes]:
    """``count`` records spread round-robin over the partitions, acks=all; their values."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    values = set()
    for i in range(count):
        value = f"{prefix}{i}".encode()
        producer.produce(topic, value, partition=i % partitions)
        values.add(value)
        if i % 1000 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0
    return values


def request(bootstrap: str, api_key: int, version: int, body):
    """One flexible request (header v2) to the broker, its kio response (for the share APIs
    neither Python client has)."""
    import io
    import socket
    import struct

    from kio.serial import entity_reader, entity_writer

    from tidelog.protocol.apis import load_request_schema, load_response_schema

    out = io.BytesIO()
    entity_writer(load_request_schema(api_key, version))(out, body)
    client_id = b"share-test"
    frame = struct.pack(">hhih", api_key, version, 1, len(client_id)) + client_id + b"\x00" + out.getvalue()
    host, port = bootstrap.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(struct.pack(">i", len(frame)) + frame)
        size = struct.unpack(">i", _read_exactly(sock, 4))[0]
        data = _read_exactly(sock, size)
    assert struct.unpack_from(">i", data)[0] == 1 and data[4] == 0  # correlation id, no tagged fields
    response, _ = entity_reader(load_response_schema(api_key, version))(memoryview(data), 5)
    return response


def _read_exactly(sock, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = sock.recv(left)
        assert chunk, "connection closed"
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)
