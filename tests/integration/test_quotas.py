"""Client quotas (issue 16): AlterClientQuotas / DescribeClientQuotas kept in the metadata store,
producers and a consumer held to their byte rates by throttle_time_ms and a muted connection, with
two clients, and the throttle time counted."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import kio.schema.alter_client_quotas.v0.request as alter
import kio.schema.describe_client_quotas.v0.request as describe
import pytest
from confluent_kafka import Producer
from kafka import KafkaProducer

from tidelog.cluster.broker_channel import BrokerChannel
from tidelog.protocol.errors import ErrorCode
from tests.integration.test_sasl import metric

RATE = 400_000  # bytes a second
RECORD = b"x" * 10_000


def _request(broker, api_key: int, request):
    async def send():
        channel = BrokerChannel("127.0.0.1", broker.port, "quota-test")
        try:
            return await channel.request(api_key, 0, request, 10)  # v0: the channel writes header v1
        finally:
            channel.close()
    return asyncio.run(send())


def set_quota(broker, client_id: str, key: str, value: float | None) -> None:
    entry = alter.EntryData(entity=(alter.EntityData(entity_type="client-id", entity_name=client_id),),
                            ops=(alter.OpData(key=key, value=value or 0.0, remove=value is None),))
    response = _request(broker, 49, alter.AlterClientQuotasRequest(entries=(entry,), validate_only=False))
    assert [e.error_code for e in response.entries] == [ErrorCode.none], response


def described(broker) -> dict:
    component = describe.ComponentData(entity_type="client-id", match_type=2, match=None)
    response = _request(broker, 48, describe.DescribeClientQuotasRequest(components=(component,), strict=False))
    assert response.error_code == ErrorCode.none, response
    return {tuple((e.entity_type, e.entity_name) for e in entry.entity): {v.key: v.value for v in entry.values}
            for entry in response.entries}


@pytest.fixture
def quota_broker(broker_factory):
    # Two 1 s samples: the rate is measured over 1-2 s, so the test reaches the steady state soon.
    return broker_factory({"quota.window.num": "2", "quota.window.size.seconds": "1"})


def test_alter_and_describe_client_quotas(quota_broker):
    set_quota(quota_broker, "app", "producer_byte_rate", 1024)
    set_quota(quota_broker, "app", "request_percentage", 12.5)
    assert described(quota_broker) == {(("client-id", "app"),): {"producer_byte_rate": 1024.0,
                                                                 "request_percentage": 12.5}}
    set_quota(quota_broker, "app", "producer_byte_rate", None)
    assert described(quota_broker) == {(("client-id", "app"),): {"request_percentage": 12.5}}
    entry = alter.EntryData(entity=(alter.EntityData(entity_type="client-id", entity_name="app"),),
                            ops=(alter.OpData(key="producer_byte_rate", value=-1.0, remove=False),))
    refused = _request(quota_broker, 49, alter.AlterClientQuotasRequest(entries=(entry,), validate_only=False))
    assert refused.entries[0].error_code == ErrorCode.invalid_request
    quota_broker.stop()
    quota_broker.start()  # kept in the metadata store
    assert described(quota_broker) == {(("client-id", "app"),): {"request_percentage": 12.5}}


# A quota of two 1 s samples lets a client take one window of its rate at once (the sampled rate
# counts at least one whole window) and a request past that before it is throttled: 500 KB at
# most in 1,000 simulated runs of either client; the bound allows two windows.
BURST = RATE * 2
SLOWEST = 0.6  # the lowest mean rate a client held at RATE may get


def _assert_held_to_rate(arrivals: list[tuple[float, int]], started: float) -> None:
    """Every byte arrived within the quota's budget since ``started`` (taken before the client's
    first request, so a late timestamp only ever loosens the bound), and the whole transfer was
    not held far below the quota.

    Kafka's sampled rate over two windows keeps the rate it measures at the quota, but the mean
    over a few seconds swings by +-20% around it (a sample dropping out of the window lets a
    few requests through at once), so a bound on a mean over a few seconds is a coin toss: the
    budget bound holds at every arrival whatever the client's scheduling."""
    for when, total in arrivals:
        budget = RATE * (when - started) + BURST
        assert total <= budget, f"{total} B by {when - started:.2f} s, over the quota's {budget:.0f} B"
    when, total = arrivals[-1]
    mean = total / (when - started)
    assert mean >= SLOWEST * RATE, f"{mean:.0f} B/s: held far below the quota of {RATE}"


@pytest.mark.parametrize("client", ["confluent", "kafka-python"])
def test_a_producer_is_held_to_its_byte_rate(quota_broker, client):
    client_id = f"throttled-{uuid.uuid4().hex[:6]}"
    set_quota(quota_broker, client_id, "producer_byte_rate", RATE)
    count = 300  # 3 MB: about 7.5 s at the quota
    acknowledged: list[tuple[float, int]] = []
    lock = threading.Lock()
    started = time.monotonic()

    def delivered(size: int) -> None:
        with lock:
            acknowledged.append((time.monotonic(), (acknowledged[-1][1] if acknowledged else 0) + size))

    if client == "confluent":
        producer = Producer({"bootstrap.servers": quota_broker.bootstrap, "client.id": client_id, "linger.ms": 5,
                             "batch.size": 20_000, "acks": 1})
        for _ in range(count):
            producer.produce("quota", RECORD, partition=0, on_delivery=lambda err, msg: err or delivered(len(msg)))
            producer.poll(0)
        assert producer.flush(60) == 0
    else:
        producer = KafkaProducer(bootstrap_servers=quota_broker.bootstrap, client_id=client_id, linger_ms=5,
                                 batch_size=20_000, acks=1, max_request_size=100_000)
        futures = [producer.send("quota", RECORD, partition=0).add_callback(lambda md: delivered(len(RECORD)))
                   for _ in range(count)]
        producer.flush(60)
        assert all(f.succeeded() for f in futures)
        producer.close(5)
    assert acknowledged[-1][1] == count * len(RECORD)
    _assert_held_to_rate(acknowledged, started)
    assert metric(quota_broker, "tidelog_client_throttle_seconds_total", quota="produce") > 0


def test_a_consumer_is_held_to_its_byte_rate(quota_broker):
    # Batches far smaller than a quota window: a batch is never split, and one past the window
    # would be throttled on every fetch.
    producer = Producer({"bootstrap.servers": quota_broker.bootstrap, "linger.ms": 5, "acks": 1, "log_level": 0,
                         "batch.size": 20_000})
    count = 300
    for _ in range(count):
        producer.produce("fetched", RECORD, partition=0)
        producer.poll(0)
    assert producer.flush(60) == 0
    client_id = f"slow-reader-{uuid.uuid4().hex[:6]}"
    set_quota(quota_broker, client_id, "consumer_byte_rate", RATE)
    from confluent_kafka import Consumer, TopicPartition

    started = time.monotonic()  # before the consumer exists: it fetches from assign() on
    consumer = Consumer({"bootstrap.servers": quota_broker.bootstrap, "client.id": client_id, "group.id": client_id,
                         "enable.auto.commit": False, "fetch.max.bytes": 200_000, "message.max.bytes": 200_000,
                         "max.partition.fetch.bytes": 100_000, "log_level": 0})
    consumer.assign([TopicPartition("fetched", 0, 0)])
    received: list[tuple[float, int]] = []
    deadline = time.monotonic() + 60
    try:
        while (not received or received[-1][1] < count * len(RECORD)) and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error():
                received.append((time.monotonic(), (received[-1][1] if received else 0) + len(msg.value())))
    finally:
        consumer.close()
    assert received[-1][1] == count * len(RECORD)
    _assert_held_to_rate(received, started)
    assert metric(quota_broker, "tidelog_client_throttle_seconds_total", quota="fetch") > 0
