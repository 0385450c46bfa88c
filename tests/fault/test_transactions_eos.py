"""Exactly-once consume-transform-produce across crashes (issue 17), with confluent-kafka.

100,000 numbered records are read from ``in`` by a read_committed consumer and written to
``out`` by a transactional producer, each transaction carrying its input offsets
(``send_offsets_to_transaction``). In the middle the broker is SIGKILLed and restarted (single
node), or the broker coordinating the transactional id is SIGKILLed (a 3-broker cluster: the
coordinator fails over mid-transaction). The processor does what an application does on an
error: drop its clients and start again from the committed offsets with a new producer of the
same transactional id (which fences the old one and aborts its open transaction). At the end a
read_committed consumer must read every number from ``out`` exactly once.
"""

from __future__ import annotations

import threading
import time

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from tests import client_leaks
from tests.brokerproc import wait_until
from tests.clusterproc import Cluster

pytestmark = pytest.mark.slow

RECORDS = 100_000
PARTITIONS = 2
BATCH = 1_000
TRANSACTIONAL_ID = "eos-processor"
MAX_RUN_S = 240


def fill_input(bootstrap: str) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 20})
    for n in range(RECORDS):
        while True:
            try:
                producer.produce("in", value=b"%d" % n, partition=n % PARTITIONS)
                break
            except BufferError:
                producer.poll(0.1)
    assert producer.flush(60) == 0


class Processor(threading.Thread):
    """The consume-transform-produce loop, restarted from the committed offsets on any error."""

    def __init__(self, bootstrap: str) -> None:
        super().__init__(daemon=True)
        self.bootstrap = bootstrap
        self.committed_transactions = 0
        self.restarts = 0
        self.done = threading.Event()
        self.errors: list[str] = []
        self.phase = "starting"  # where the loop is, for a failure message
        self.clients: tuple = ()  # the consumer and producer of the current attempt

    def run(self) -> None:
        deadline = time.monotonic() + MAX_RUN_S
        while not self.done.is_set() and time.monotonic() < deadline:
            try:
                self._process(deadline)
            except KafkaException as e:
                self.errors.append(str(e))
                self.restarts += 1
                time.sleep(0.2)  # the next attempt's clients find the broker when it is back

    def _process(self, deadline: float) -> None:
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": "eos", "isolation.level": "read_committed",
                             "enable.auto.commit": False, "auto.offset.reset": "earliest",
                             "enable.partition.eof": True})
        producer = Producer({"bootstrap.servers": self.bootstrap, "transactional.id": TRANSACTIONAL_ID, "linger.ms": 5,
                             "transaction.timeout.ms": 20000, "message.timeout.ms": 15000})
        self.clients = (consumer, producer)
        try:
            self.phase = "init"
            producer.init_transactions(30)
            consumer.assign([TopicPartition("in", p) for p in range(PARTITIONS)])  # from the committed offsets
            at_end: set[int] = set()
            while time.monotonic() < deadline:
                messages = consumer.consume(BATCH, 1.0)
                records = []
                for m in messages:
                    if m.error():
                        if m.error().code() == KafkaError._PARTITION_EOF:
                            at_end.add(m.partition())
                            continue
                        raise KafkaException(m.error())
                    at_end.discard(m.partition())
                    records.append(m)
                if not records:
                    if len(at_end) == PARTITIONS and self._all_consumed(consumer):
                        self.done.set()
                        return
                    continue
                self.phase = "begin"
                producer.begin_transaction()
                for m in records:
                    producer.produce("out", value=b"out-" + m.value(), partition=m.partition())
                self.phase = "send_offsets"
                producer.send_offsets_to_transaction(consumer.position(consumer.assignment()),
                                                     consumer.consumer_group_metadata(), 30)
                self.phase = "commit"
                producer.commit_transaction(30)
                self.committed_transactions += 1
        finally:
            consumer.close()
            producer.flush(0)

    @staticmethod
    def _all_consumed(consumer: Consumer) -> bool:
        return sum(p.offset for p in consumer.position(consumer.assignment())) >= RECORDS


def read_output(bootstrap: str) -> dict[bytes, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "verify", "isolation.level": "read_committed",
                         "auto.offset.reset": "earliest", "enable.partition.eof": True, "enable.auto.commit": False})
    consumer.assign([TopicPartition("out", p, 0) for p in range(PARTITIONS)])
    counts: dict[bytes, int] = {}
    at_end: set[int] = set()
    deadline = time.monotonic() + 120
    try:
        while len(at_end) < PARTITIONS:
            assert time.monotonic() < deadline, f"output not read to its end: {len(counts)} distinct values"
            for m in consumer.consume(10_000, 1.0):
                if m.error():
                    assert m.error().code() == KafkaError._PARTITION_EOF, m.error()
                    at_end.add(m.partition())
                    continue
                at_end.discard(m.partition())
                counts[m.value()] = counts.get(m.value(), 0) + 1
    finally:
        consumer.close()
    return counts


def run_with_fault(bootstrap: str, fault) -> list[Processor]:
    """Run the processor, apply ``fault`` after 20 transactions, and run to the end.

    librdkafka can block in send_offsets_to_transaction past its timeout when its cached group
    coordinator went down (confluentinc/librdkafka#5456, #5511: the coordinator request is
    never sent again). An application's watchdog then starts a new processor with a new
    producer of the same transactional id, which fences the stuck one: so does this test, after
    30 s without a committed transaction."""
    processors = [Processor(bootstrap)]
    processors[0].start()
    wait_until(lambda: processors[0].committed_transactions >= 20 or not processors[0].is_alive(), 120,
               message="20 transactions committed")
    fault()
    deadline = time.monotonic() + MAX_RUN_S
    while not processors[-1].done.is_set():
        current = processors[-1]
        committed, stalled_since = current.committed_transactions, time.monotonic()
        while not current.done.is_set() and time.monotonic() - stalled_since < 30:
            assert time.monotonic() < deadline, [(p.phase, p.committed_transactions, p.errors[-3:]) for p in processors]
            if current.committed_transactions != committed:
                committed, stalled_since = current.committed_transactions, time.monotonic()
            time.sleep(0.1)
        if not current.done.is_set():
            assert len(processors) < 4, [(p.phase, p.committed_transactions, p.errors[-3:]) for p in processors]
            for client in current.clients:  # blocked in librdkafka for good: closing it would block too
                client_leaks.abandon(client)
            processors.append(Processor(bootstrap))  # the stuck one is fenced by the new producer
            processors[-1].start()
    return processors


def check_exactly_once(bootstrap: str) -> None:
    counts = read_output(bootstrap)
    duplicated = [v for v, c in counts.items() if c > 1]
    missing = RECORDS - len(counts)
    assert not duplicated and missing == 0, f"{missing} missing, {len(duplicated)} duplicated (e.g. {duplicated[:5]})"
    assert set(counts) == {b"out-%d" % n for n in range(RECORDS)}


def test_exactly_once_across_a_broker_sigkill(broker):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for name in ("in", "out"):
        admin.create_topics([NewTopic(name, PARTITIONS, 1)])[name].result(30)
    fill_input(broker.bootstrap)

    def crash() -> None:
        broker.kill()
        broker.restart()

    processors = run_with_fault(broker.bootstrap, crash)
    check_exactly_once(broker.bootstrap)
    print(f"\n{sum(p.committed_transactions for p in processors)} transactions, "
          f"{sum(p.restarts for p in processors)} restarts, {len(processors) - 1} stuck processors replaced")


@pytest.fixture
def cluster(tmp_path):
    cluster = Cluster(tmp_path, 3).start()
    yield cluster
    cluster.stop()


def test_exactly_once_across_a_coordinator_failover(cluster):
    from tidelog.txn.log_records import partition_for

    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    for name in ("in", "out"):
        admin.create_topics([NewTopic(name, PARTITIONS, 3)])[name].result(30)
    fill_input(cluster.bootstrap)
    state_partition = partition_for(TRANSACTIONAL_ID, 50)

    def kill_coordinator() -> None:
        topics = admin.list_topics("__transaction_state", timeout=10).topics
        leader = topics["__transaction_state"].partitions[state_partition].leader
        cluster.brokers[leader].kill()
        cluster.brokers[leader].restart()

    processors = run_with_fault(cluster.bootstrap, kill_coordinator)
    check_exactly_once(cluster.bootstrap)
    print(f"\n{sum(p.committed_transactions for p in processors)} transactions, "
          f"{sum(p.restarts for p in processors)} restarts, {len(processors) - 1} stuck processors replaced")
