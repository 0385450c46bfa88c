"""Idempotent producer state expires (``producer.id.expiration.ms``), so the broker's memory does
not grow with every producer id ever seen; a producer that comes back after expiry goes on."""

from __future__ import annotations

import pytest
from confluent_kafka import Producer
from kafka import KafkaProducer

from tests.brokerproc import wait_until
from tests.integration.clients import consume
from tests.integration.test_metrics import scrape, value

EXPIRY = {"producer.id.expiration.ms": "1500", "producer.id.expiration.check.interval.ms": "200"}


def _producer_ids(broker) -> float:
    return value(scrape(broker), "tidelog_producer_ids")


class _Confluent:
    def __init__(self, bootstrap: str) -> None:
        self.producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 0})

    def send(self, topic: str, value: bytes) -> None:
        errors = []
        self.producer.produce(topic, value=value, partition=0, on_delivery=lambda err, _: errors.append(err))
        assert self.producer.flush(30) == 0 and errors == [None], errors

    def close(self) -> None:
        self.producer.flush(10)


class _KafkaPython:
    def __init__(self, bootstrap: str) -> None:
        self.producer = KafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all", linger_ms=0)

    def send(self, topic: str, value: bytes) -> None:
        self.producer.send(topic, value=value, partition=0).get(timeout=30)

    def close(self) -> None:
        self.producer.close(10)


@pytest.mark.parametrize("client", [_Confluent, _KafkaPython], ids=["confluent", "kafka-python"])
def test_idle_producer_state_expires_and_the_producer_goes_on(broker_factory, client):
    broker = broker_factory(EXPIRY)
    topic = f"expiring-{client.__name__.strip('_').lower()}"
    producer = client(broker.bootstrap)
    try:
        producer.send(topic, b"first")
        producer.send(topic, b"second")
        assert _producer_ids(broker) == 1
        wait_until(lambda: _producer_ids(broker) == 0, timeout_s=20, message="the idle producer's state to expire")
        producer.send(topic, b"after expiry")  # sequence 2, from a producer the partition no longer knows
        assert _producer_ids(broker) == 1
    finally:
        producer.close()
    values = [m.value for m in consume("confluent", broker.bootstrap, topic, 3)]
    assert values == [b"first", b"second", b"after expiry"]
    assert "forgot 1 idempotent producer states" in broker.log()
