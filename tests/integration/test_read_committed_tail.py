"""read_committed consumers that read on at the log's tail while a transaction is aborted after
their last fetch (cluster/partition_txn.py keeps the offset past the last aborted marker and
answers a fetch from past it without a look at a .txnindex): the new ABORT marker raises that
offset, so the aborted records are never delivered. confluent-kafka and kafka-python, each one
consumer kept across the abort."""

from __future__ import annotations

import time
import uuid

from confluent_kafka import Consumer, KafkaError, TopicPartition
from kafka import KafkaConsumer
from kafka import TopicPartition as KpTopicPartition

from tests.integration.test_transactions import create_topic, txn_producer


def _transaction(producer, topic: str, values: list[bytes], commit: bool) -> None:
    producer.begin_transaction()
    for value in values:
        producer.produce(topic, value=value, partition=0)
    producer.flush(30)
    producer.commit_transaction(30) if commit else producer.abort_transaction(30)


class _Confluent:
    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"rc-{uuid.uuid4().hex}",
                                  "isolation.level": "read_committed", "enable.partition.eof": True,
                                  "enable.auto.commit": False, "fetch.wait.max.ms": 50})
        self.consumer.assign([TopicPartition(topic, 0, 0)])

    def read_to(self, end: int) -> list[bytes]:
        """Values read until the consumer's position reaches ``end`` and it saw the end (EOF)."""
        values, deadline = [], time.monotonic() + 30
        while True:
            assert time.monotonic() < deadline, f"confluent-kafka did not reach {end}: {values}"
            message = self.consumer.poll(0.2)
            if message is None:
                continue
            if message.error():
                assert message.error().code() == KafkaError._PARTITION_EOF, message.error()
                if message.offset() >= end:
                    return values
                continue
            values.append(message.value())


class _KafkaPython:
    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed",
                                      enable_auto_commit=False, fetch_max_wait_ms=50)
        self.tp = KpTopicPartition(topic, 0)
        self.consumer.assign([self.tp])
        self.consumer.seek(self.tp, 0)

    def read_to(self, end: int) -> list[bytes]:
        values, deadline = [], time.monotonic() + 30
        while self.consumer.position(self.tp) < end:
            assert time.monotonic() < deadline, f"kafka-python did not reach {end}: {values}"
            values += [m.value for m in self.consumer.poll(200).get(self.tp, [])]
        return values


def test_a_transaction_aborted_after_a_fetch_at_the_tail_is_not_delivered(broker):
    create_topic(broker.bootstrap, "tail", 1)
    producer = txn_producer(broker.bootstrap, "tx-tail")
    consumers = [_Confluent(broker.bootstrap, "tail"), _KafkaPython(broker.bootstrap, "tail")]
    try:
        # a0-a2 (0-2), ABORT (3), c0 (4), COMMIT (5): a lookup from 0 finds the abort, past it none
        _transaction(producer, "tail", [b"a0", b"a1", b"a2"], commit=False)
        _transaction(producer, "tail", [b"c0"], commit=True)
        for consumer in consumers:  # to the tail: then fetches from 6, past the known last abort
            assert consumer.read_to(6) == [b"c0"]
        # b0-b2 (6-8), ABORT (9), c1 (10), COMMIT (11): read on from 6
        _transaction(producer, "tail", [b"b0", b"b1", b"b2"], commit=False)
        _transaction(producer, "tail", [b"c1"], commit=True)
        for consumer in consumers:
            assert consumer.read_to(12) == [b"c1"]
    finally:
        for consumer in consumers:
            consumer.consumer.close()
