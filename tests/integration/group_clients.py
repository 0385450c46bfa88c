"""Helpers for the consumer group tests: group members of each client library, run in threads
or subprocesses, that report their current assignment (real clients, real sockets)."""

from __future__ import annotations

import asyncio
import sys
import threading
import time

from confluent_kafka import Consumer, Producer

GROUP_SETTINGS = {
    "group.initial.rebalance.delay.ms": "100",
    "group.min.session.timeout.ms": "1000",
    "num.partitions": "6",
}


def create_topic(bootstrap: str, topic: str, per_partition: int = 1, partitions: int = 6) -> None:
    """Auto-create ``topic`` (num.partitions=6) by producing ``per_partition`` records to each partition."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 1})
    errors: list = []
    for i in range(per_partition):
        for p in range(partitions):
            while True:
                try:
                    producer.produce(topic, value=b"%d-%d" % (p, i), partition=p,
                                     on_delivery=lambda err, _m: err and errors.append(err))
                    break
                except BufferError:
                    producer.poll(0.1)
        producer.poll(0)
    assert producer.flush(30) == 0 and not errors, errors


def confluent_consumer(bootstrap: str, group: str, **config) -> Consumer:
    return Consumer({
        "bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
        "session.timeout.ms": 6000, "heartbeat.interval.ms": 300, "enable.auto.commit": False, **config,
    })


def partitions_of(consumer: Consumer) -> set[int]:
    return {tp.partition for tp in consumer.assignment()}


def poll_until(consumers: list[Consumer], condition, timeout_s: float = 15.0, message: str = "condition") -> None:
    """Poll every consumer (rebalance callbacks run in poll) until ``condition()``; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {message}: "
                                 f"{[sorted(partitions_of(c)) for c in consumers]}")
        for consumer in consumers:
            consumer.poll(0.05)


def balanced(assignments: list[set[int]], partitions: int = 6) -> bool:
    """Every partition assigned exactly once, and evenly."""
    union = set().union(*assignments)
    sizes = [len(a) for a in assignments]
    return (sum(sizes) == partitions and union == set(range(partitions))
            and max(sizes) - min(sizes) <= 1 and min(sizes) > 0)


class ThreadMember:
    """A group member of any client library polling in its own thread; ``assignment`` is its latest."""

    def __init__(self, client: str, bootstrap: str, group: str, topic: str) -> None:
        self.client, self.bootstrap, self.group, self.topic = client, bootstrap, group, topic
        self.assignment: set[int] = set()
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"member-{client}", daemon=True)

    def start(self) -> "ThreadMember":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        assert not self._thread.is_alive(), f"{self.client} member did not stop"

    def _run(self) -> None:
        try:
            if self.client == "confluent":
                self._run_confluent()
            elif self.client == "kafka-python":
                self._run_kafka_python()
            else:
                asyncio.run(self._run_aiokafka())
        except BaseException as e:  # reported by the test
            self.error = e

    def _run_confluent(self) -> None:
        consumer = confluent_consumer(self.bootstrap, self.group, **{"partition.assignment.strategy": "range"})
        consumer.subscribe([self.topic])
        while not self._stop.is_set():
            consumer.poll(0.05)
            self.assignment = partitions_of(consumer)
        consumer.close()

    def _run_kafka_python(self) -> None:
        from kafka import KafkaConsumer
        from kafka.coordinator.assignors.range import RangePartitionAssignor

        consumer = KafkaConsumer(
            self.topic, bootstrap_servers=self.bootstrap, group_id=self.group, auto_offset_reset="earliest",
            enable_auto_commit=False, session_timeout_ms=6000, heartbeat_interval_ms=300,
            partition_assignment_strategy=[RangePartitionAssignor],
        )
        while not self._stop.is_set():
            consumer.poll(timeout_ms=50)
            self.assignment = {tp.partition for tp in consumer.assignment()}
        consumer.close()

    async def _run_aiokafka(self) -> None:
        from aiokafka import AIOKafkaConsumer
        from aiokafka.coordinator.assignors.range import RangePartitionAssignor

        consumer = AIOKafkaConsumer(
            self.topic, bootstrap_servers=self.bootstrap, group_id=self.group, auto_offset_reset="earliest",
            enable_auto_commit=False, session_timeout_ms=6000, heartbeat_interval_ms=300,
            partition_assignment_strategy=(RangePartitionAssignor,),
        )
        await consumer.start()
        try:
            while not self._stop.is_set():
                await consumer.getmany(timeout_ms=50)
                self.assignment = {tp.partition for tp in consumer.assignment()}
        finally:
            await consumer.stop()


# A consumer in its own process (to be SIGKILLed): prints "ASSIGNED p,p,..." on each assignment.
SUBPROCESS_CONSUMER = r"""
import sys
from confluent_kafka import Consumer
bootstrap, group, topic, session_ms = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "session.timeout.ms": session_ms,
              "heartbeat.interval.ms": 200, "auto.offset.reset": "earliest", "enable.auto.commit": False})
def on_assign(consumer, partitions):
    print("ASSIGNED " + ",".join(str(p.partition) for p in partitions), flush=True)
c.subscribe([topic], on_assign=on_assign)
while True:
    c.poll(0.1)
"""


def subprocess_args(bootstrap: str, group: str, topic: str, session_ms: int) -> list[str]:
    return [sys.executable, "-c", SUBPROCESS_CONSUMER, bootstrap, group, topic, str(session_ms)]
