"""An idempotent producer the broker has no state for (its batches deleted, then a crash) goes
on: its next sequence is accepted, as Kafka does since KIP-360, instead of failing the client
fatally with OUT_OF_ORDER_SEQUENCE_NUMBER."""

from __future__ import annotations

from confluent_kafka import Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from tests.integration.clients import consume

TOPIC = "forgotten"


def test_idempotent_producer_survives_delete_records_and_sigkill(broker):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(TOPIC, 1, 1)])[TOPIC].result(10)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True, "linger.ms": 0,
                         "message.timeout.ms": 30000})
    reports: list[tuple[object, int]] = []

    def delivered(err, msg) -> None:  # a fatal error is raised by flush() below
        reports.append((None, msg.offset()) if err is None else (err, -1))

    def send(value: bytes) -> None:
        producer.produce(TOPIC, value=value, partition=0, on_delivery=delivered)
        assert producer.flush(30) == 0

    for n in range(3):  # three batches: sequences 0, 1, 2
        send(b"before-%d" % n)
    assert reports == [(None, 0), (None, 1), (None, 2)]

    deleted = admin.delete_records([TopicPartition(TOPIC, 0, 3)])
    assert list(deleted.values())[0].result(10).low_watermark == 3
    broker.kill()
    broker.restart()  # same port: the producer reconnects, keeping its id, epoch and sequence 3

    send(b"after")
    assert reports[-1] == (None, 3), reports
    send(b"after-again")  # and it is tracked again from there
    assert reports[-1] == (None, 4), reports
    producer.poll(0)
    assert [m.value for m in consume("kafka-python", broker.bootstrap, TOPIC, 2, offset=3)] == [b"after", b"after-again"]
