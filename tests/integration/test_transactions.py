"""Transactions (issue 17) with real clients on a single node: confluent-kafka, kafka-python, aiokafka.

What a read_committed consumer sees of committed, aborted and open transactions against a
read_uncommitted one; offsets committed in a transaction (visible on commit only); zombie
fencing; a hung transaction aborted by its timeout; the admin's list/describe; the state
surviving a restart.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import confluent_kafka
import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

FAST_TIMEOUTS = {"transaction.abort.timed.out.transaction.cleanup.interval.ms": "200"}


def create_topic(bootstrap: str, name: str, partitions: int = 2) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(30)


def txn_producer(bootstrap: str, transactional_id: str, **config) -> Producer:
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": transactional_id, "linger.ms": 5,
                         **config})
    producer.init_transactions(30)
    return producer


def read_all(bootstrap: str, topic: str, isolation: str, partitions: int = 2, timeout_s: float = 30) -> list[bytes]:
    """Every value a consumer with ``isolation`` reads up to the end of each partition (its EOF)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"read-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest", "isolation.level": isolation,
                         "enable.partition.eof": True, "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    values, at_end = [], set()
    deadline = time.monotonic() + timeout_s
    try:
        while len(at_end) < partitions:
            assert time.monotonic() < deadline, f"did not reach the end of {topic}: {sorted(at_end)}"
            message = consumer.poll(0.2)
            if message is None:
                continue
            if message.error():
                assert message.error().code() == KafkaError._PARTITION_EOF, message.error()
                at_end.add(message.partition())
                continue
            at_end.discard(message.partition())
            values.append(message.value())
    finally:
        consumer.close()
    return sorted(values)


def wait_for(condition, timeout_s: float = 30, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_read_committed_sees_committed_only(broker):
    create_topic(broker.bootstrap, "t")
    producer = txn_producer(broker.bootstrap, "tx-views")
    producer.begin_transaction()
    for i in range(10):
        producer.produce("t", value=b"c%d" % i, partition=i % 2)
    producer.commit_transaction(30)
    producer.begin_transaction()
    for i in range(10):
        producer.produce("t", value=b"a%d" % i, partition=i % 2)
    producer.flush(30)
    producer.abort_transaction(30)
    producer.begin_transaction()
    for i in range(4):
        producer.produce("t", value=b"o%d" % i, partition=i % 2)
    producer.flush(30)  # written, not decided: it holds the LSO

    committed = sorted(b"c%d" % i for i in range(10))
    assert read_all(broker.bootstrap, "t", "read_committed") == committed
    assert read_all(broker.bootstrap, "t", "read_uncommitted") == sorted(
        committed + [b"a%d" % i for i in range(10)] + [b"o%d" % i for i in range(4)])

    # ListOffsets: read_committed's latest offset is the LSO (the open transaction's first offset).
    committed_view = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "lo", "isolation.level": "read_committed"})
    uncommitted_view = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "lo", "isolation.level": "read_uncommitted"})
    _, lso = committed_view.get_watermark_offsets(TopicPartition("t", 0), 10, cached=False)
    _, high = uncommitted_view.get_watermark_offsets(TopicPartition("t", 0), 10, cached=False)
    # partition 0: 5 committed + COMMIT marker, 5 aborted + ABORT marker, then the open transaction
    assert (lso, high) == (12, 14)

    producer.commit_transaction(30)
    assert read_all(broker.bootstrap, "t", "read_committed") == sorted(committed + [b"o%d" % i for i in range(4)])
    _, lso = committed_view.get_watermark_offsets(TopicPartition("t", 0), 10, cached=False)
    assert lso == 15  # past the COMMIT marker
    committed_view.close()
    uncommitted_view.close()


def test_offsets_committed_in_a_transaction_are_visible_on_commit_only(broker):
    create_topic(broker.bootstrap, "in", 1)
    create_topic(broker.bootstrap, "out", 1)
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    for i in range(20):
        producer.produce("in", value=b"%d" % i, partition=0)
    producer.flush(30)
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "eos", "auto.offset.reset": "earliest",
                         "enable.auto.commit": False, "isolation.level": "read_committed"})
    consumer.assign([TopicPartition("in", 0, 0)])
    txn = txn_producer(broker.bootstrap, "tx-offsets")

    def process(count: int, commit: bool) -> None:
        txn.begin_transaction()
        for _ in range(count):
            message = wait_for(lambda: consumer.poll(0.2), what="a record")
            assert not message.error(), message.error()
            txn.produce("out", value=message.value(), partition=0)
        txn.send_offsets_to_transaction(consumer.position(consumer.assignment()), consumer.consumer_group_metadata(), 30)
        if commit:
            txn.commit_transaction(30)
        else:
            txn.abort_transaction(30)

    def committed() -> int:
        return consumer.committed([TopicPartition("in", 0)], 30)[0].offset

    process(10, commit=True)
    assert committed() == 10
    process(5, commit=False)
    assert committed() == 10  # the aborted transaction's offsets never apply
    consumer.seek(TopicPartition("in", 0, 10))
    process(10, commit=True)
    assert committed() == 20
    assert read_all(broker.bootstrap, "out", "read_committed", partitions=1) == sorted(b"%d" % i for i in range(20))
    consumer.close()


def test_a_new_producer_fences_the_zombie(broker):
    create_topic(broker.bootstrap, "z", 1)
    zombie = txn_producer(broker.bootstrap, "tx-zombie")
    zombie.begin_transaction()
    zombie.produce("z", value=b"zombie", partition=0)
    zombie.flush(30)
    successor = txn_producer(broker.bootstrap, "tx-zombie")  # bumps the epoch, aborts the zombie's transaction
    successor.begin_transaction()
    successor.produce("z", value=b"successor", partition=0)
    successor.commit_transaction(30)
    with pytest.raises(KafkaException) as raised:
        zombie.produce("z", value=b"late", partition=0)
        zombie.commit_transaction(30)
    assert raised.value.args[0].fatal() or raised.value.args[0].code() in (
        KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH), raised.value
    assert read_all(broker.bootstrap, "z", "read_committed", partitions=1) == [b"successor"]


def test_a_hung_transaction_is_aborted_by_its_timeout(broker_factory):
    from kafka import KafkaAdminClient

    broker = broker_factory(FAST_TIMEOUTS)
    create_topic(broker.bootstrap, "h", 1)
    hung = txn_producer(broker.bootstrap, "tx-hung", **{"transaction.timeout.ms": 3000})
    hung.begin_transaction()
    hung.produce("h", value=b"never", partition=0)
    hung.flush(30)
    other = txn_producer(broker.bootstrap, "tx-other")
    other.begin_transaction()
    other.produce("h", value=b"after", partition=0)
    other.commit_transaction(30)
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    view = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "lso", "isolation.level": "read_committed"})
    try:
        def state() -> str:
            return admin.describe_transactions(["tx-hung"])["tx-hung"].state.value

        if state() == "Ongoing":
            _, lso = view.get_watermark_offsets(TopicPartition("h", 0), 10, cached=False)
            if state() == "Ongoing":  # the LSO was read while the transaction was open: it held it
                assert lso == 0
        wait_for(lambda: state() == "CompleteAbort", what="the timeout abort")
        assert read_all(broker.bootstrap, "h", "read_committed", partitions=1) == [b"after"]
        _, lso = view.get_watermark_offsets(TopicPartition("h", 0), 10, cached=False)
        assert lso == 4  # never, after, COMMIT, ABORT
    finally:
        view.close()
        admin.close()
    with pytest.raises(KafkaException):
        hung.commit_transaction(10)


def test_kafka_python_transactional_producer_and_admin(broker):
    from kafka import KafkaAdminClient, KafkaProducer

    create_topic(broker.bootstrap, "kp", 1)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, transactional_id="tx-kp")
    producer.init_transactions()
    producer.begin_transaction()
    for i in range(5):
        producer.send("kp", value=b"k%d" % i, partition=0)
    producer.commit_transaction()
    producer.begin_transaction()
    producer.send("kp", value=b"gone", partition=0)
    producer.abort_transaction()
    producer.begin_transaction()
    producer.send("kp", value=b"open", partition=0)
    producer.flush()
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        listed = [t for listings in admin.list_transactions().values() for t in listings]
        assert [(t.transactional_id, t.state.value) for t in listed] == [("tx-kp", "Ongoing")]
        described = admin.describe_transactions(["tx-kp"])["tx-kp"]
        assert described.state.value == "Ongoing"
        assert {(tp.topic, tp.partition) for tp in described.topic_partitions} == {("kp", 0)}
        assert described.transaction_start_time_ms > 0
    finally:
        admin.close()
    producer.commit_transaction()
    producer.close()
    assert read_all(broker.bootstrap, "kp", "read_committed", partitions=1) == sorted(
        [b"k%d" % i for i in range(5)] + [b"open"])


def test_aiokafka_transactional_producer_and_read_committed_consumer(broker):
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.structs import TopicPartition as AioTopicPartition

    create_topic(broker.bootstrap, "aio", 1)

    async def run() -> list[bytes]:
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, transactional_id="tx-aio")
        await producer.start()
        try:
            async with producer.transaction():
                for i in range(5):
                    await producer.send_and_wait("aio", b"y%d" % i, partition=0)
            await producer.begin_transaction()
            await producer.send_and_wait("aio", b"no", partition=0)
            await producer.abort_transaction()
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, isolation_level="read_committed",
                                    auto_offset_reset="earliest", enable_auto_commit=False)
        await consumer.start()
        try:
            tp = AioTopicPartition("aio", 0)
            consumer.assign([tp])
            values = []
            deadline = time.monotonic() + 30
            # 5 records, COMMIT, the aborted record, ABORT: the consumer ends at 8 without the aborted one
            while await consumer.position(tp) < 8:
                assert time.monotonic() < deadline, values
                batch = await consumer.getmany(tp, timeout_ms=500)
                values += [m.value for m in batch.get(tp, [])]
            return sorted(values)
        finally:
            await consumer.stop()

    assert asyncio.run(run()) == [b"y%d" % i for i in range(5)]
    assert read_all(broker.bootstrap, "aio", "read_uncommitted", partitions=1) == sorted(
        [b"y%d" % i for i in range(5)] + [b"no"])


def test_transactions_survive_a_restart(broker):
    create_topic(broker.bootstrap, "r", 1)
    producer = txn_producer(broker.bootstrap, "tx-restart")
    producer.begin_transaction()
    producer.produce("r", value=b"before", partition=0)
    producer.commit_transaction(30)
    producer.begin_transaction()
    producer.produce("r", value=b"open", partition=0)
    producer.flush(30)
    broker.kill()  # SIGKILL with a transaction open
    broker.start()
    # The restarted coordinator still knows the id: a new producer bumps its epoch, which aborts
    # the open transaction; read_committed then passes it.
    successor = txn_producer(broker.bootstrap, "tx-restart")
    successor.begin_transaction()
    successor.produce("r", value=b"after", partition=0)
    successor.commit_transaction(30)
    assert read_all(broker.bootstrap, "r", "read_committed", partitions=1) == [b"after", b"before"]
    from kafka import KafkaAdminClient
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        described = admin.describe_transactions(["tx-restart"])["tx-restart"]
        assert described.state.value == "CompleteCommit" and described.producer_epoch >= 1, described
    finally:
        admin.close()


def test_cli_lists_and_describes_transactions(broker):
    import json
    import subprocess
    import sys

    def tidelog(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "tidelog", "transactions", *args, "--bootstrap-server",
                               broker.bootstrap], capture_output=True, timeout=60)

    create_topic(broker.bootstrap, "cli", 1)
    open_txn = txn_producer(broker.bootstrap, "tx-cli-open")
    open_txn.begin_transaction()
    open_txn.produce("cli", value=b"v", partition=0)
    open_txn.flush(30)
    txn_producer(broker.bootstrap, "tx-cli-empty")  # initialised, no transaction yet (no start time)

    listed = json.loads(tidelog("list", "--json").stdout)
    assert [(t["transactional_id"], t["state"]) for t in listed] == [("tx-cli-empty", "Empty"), ("tx-cli-open", "Ongoing")]
    assert json.loads(tidelog("list", "--state", "Ongoing", "--json").stdout)[0]["transactional_id"] == "tx-cli-open"
    described = json.loads(tidelog("describe", "tx-cli-open", "--json").stdout)
    assert described["state"] == "Ongoing" and described["partitions"] == [{"topic": "cli", "partition": 0}]
    assert described["start_time_ms"] > 0 and described["timeout_ms"] == 60000
    empty = json.loads(tidelog("describe", "tx-cli-empty", "--json").stdout)
    assert empty["state"] == "Empty" and empty["start_time_ms"] is None
    missing = tidelog("describe", "tx-nobody")
    assert missing.returncode == 1 and missing.stderr.decode().strip() == "error: tx-nobody: TRANSACTIONAL_ID_NOT_FOUND"


def test_metrics_count_transactions_and_the_lso_lag(broker):
    import urllib.request

    def scrape() -> dict[str, float]:
        text = urllib.request.urlopen(f"http://127.0.0.1:{broker.metrics_port}/metrics", timeout=10).read().decode()
        return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                if line.startswith("tidelog_") and "transaction" in line or line.startswith("tidelog_last_stable")}

    create_topic(broker.bootstrap, "m", 1)
    producer = txn_producer(broker.bootstrap, "tx-metrics")
    producer.begin_transaction()
    producer.produce("m", value=b"c", partition=0)
    producer.commit_transaction(30)
    producer.begin_transaction()
    producer.produce("m", value=b"a", partition=0)
    producer.flush(30)
    producer.abort_transaction(30)
    producer.begin_transaction()
    for _ in range(3):
        producer.produce("m", value=b"o", partition=0)
    producer.flush(30)
    samples = wait_for(lambda: (s := scrape()).get('tidelog_transactions_completed_total{result="abort"}') and s,
                       what="the abort counted")
    assert samples['tidelog_transactions_completed_total{result="commit"}'] == 1
    assert samples['tidelog_transactions{state="Ongoing"}'] == 1
    assert samples["tidelog_open_transactions"] == 1
    # c, COMMIT, a, ABORT, then the open transaction's 3 records: the LSO is 4, the high watermark 7
    assert samples['tidelog_last_stable_offset_lag{partition="0",topic="m"}'] == 3
    producer.commit_transaction(30)


def test_http_api_lists_transactions(broker):
    import json
    import urllib.request

    def listed() -> dict:
        url = f"http://127.0.0.1:{broker.metrics_port}/api/v1/transactions"
        return json.loads(urllib.request.urlopen(url, timeout=10).read())

    assert listed() == {"transactions": [], "unreachable": []}
    create_topic(broker.bootstrap, "api", 1)
    producer = txn_producer(broker.bootstrap, "tx-api")
    producer.begin_transaction()
    producer.produce("api", value=b"v", partition=0)
    producer.flush(30)
    (row,) = listed()["transactions"]
    assert row["transactional_id"] == "tx-api" and row["state"] == "Ongoing" and row["start_time_ms"] > 0
    assert row["partitions"] == [{"topic": "api", "partition": 0}] and row["coordinator"] == 1
    producer.commit_transaction(30)


def test_the_lag_of_an_exactly_once_group_counts_to_the_lso(broker):
    import urllib.request

    def lag() -> float | None:
        text = urllib.request.urlopen(f"http://127.0.0.1:{broker.metrics_port}/metrics", timeout=10).read().decode()
        for line in text.splitlines():
            if line.startswith('tidelog_consumer_lag{group="eos-lag",partition="0",topic="src"}'):
                return float(line.rsplit(" ", 1)[1])
        return None

    create_topic(broker.bootstrap, "src", 1)
    create_topic(broker.bootstrap, "dst", 1)
    source = txn_producer(broker.bootstrap, "tx-src")
    source.begin_transaction()
    for i in range(4):
        source.produce("src", value=b"%d" % i, partition=0)
    source.commit_transaction(30)  # 0-3, COMMIT at 4
    source.begin_transaction()
    for i in range(3):
        source.produce("src", value=b"open", partition=0)
    source.flush(30)  # 5-7 open: the LSO is 5, the high watermark 8
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "eos-lag", "enable.auto.commit": False,
                         "isolation.level": "read_committed", "auto.offset.reset": "earliest"})
    consumer.assign([TopicPartition("src", 0, 0)])
    processor = txn_producer(broker.bootstrap, "tx-lag")
    processor.begin_transaction()
    for _ in range(4):
        message = wait_for(lambda: consumer.poll(0.2), what="a committed record")
        processor.produce("dst", value=message.value(), partition=0)
    processor.send_offsets_to_transaction([TopicPartition("src", 0, 5)], consumer.consumer_group_metadata(), 30)
    processor.commit_transaction(30)
    # Committed at 5 = the LSO: nothing more it can read, though the high watermark is 8.
    assert wait_for(lambda: lag() is not None, what="the group's lag") and lag() == 0
    source.commit_transaction(30)  # the LSO moves to 9 (past the COMMIT marker)
    wait_for(lambda: lag() == 4, what="the lag to count the committed records")
    consumer.close()


@pytest.mark.parametrize("transactional, plain", [("confluent", "kafka-python"), ("kafka-python", "confluent")])
def test_a_plain_commit_after_the_transactions_offsets_wins_at_the_marker(broker, transactional, plain):
    """Kafka keeps the most recent commit by its place in __consumer_offsets: a plain OffsetCommit
    written between a transaction's TxnOffsetCommit and its COMMIT marker stays (the marker does
    not bring the older transactional offset back), one written before it is replaced; the same
    after a restart replays the log."""
    from kafka import KafkaConsumer, KafkaProducer
    from kafka import TopicPartition as KpTopicPartition
    from kafka.structs import OffsetAndMetadata

    create_topic(broker.bootstrap, "src", 2)
    group = f"mixed-{transactional}"
    confluent_consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group,
                                   "enable.auto.commit": False})
    kp_consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=group, enable_auto_commit=False)

    def commit_plainly(partition: int, offset: int) -> None:
        if plain == "confluent":
            confluent_consumer.commit(offsets=[TopicPartition("src", partition, offset)], asynchronous=False)
        else:
            kp_consumer.commit({KpTopicPartition("src", partition): OffsetAndMetadata(offset, "", -1)})

    def committed() -> list[int]:
        return [tp.offset for tp in confluent_consumer.committed([TopicPartition("src", 0), TopicPartition("src", 1)], 30)]

    commit_plainly(1, 3)  # before the transaction's offsets: the transaction's replace it
    if transactional == "confluent":
        producer = txn_producer(broker.bootstrap, f"tx-{group}")
        producer.begin_transaction()
        producer.send_offsets_to_transaction([TopicPartition("src", 0, 5), TopicPartition("src", 1, 5)],
                                             confluent_consumer.consumer_group_metadata(), 30)
        commit_plainly(0, 8)  # after them, before the marker: it stays
        producer.commit_transaction(30)
    else:
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, transactional_id=f"tx-{group}")
        producer.init_transactions()
        producer.begin_transaction()
        producer.send_offsets_to_transaction({KpTopicPartition("src", 0): OffsetAndMetadata(5, "", -1),
                                              KpTopicPartition("src", 1): OffsetAndMetadata(5, "", -1)}, group)
        commit_plainly(0, 8)
        producer.commit_transaction()
        producer.close()
    wait_for(lambda: committed()[1] == 5, what="the transaction's offsets applied (its marker written)")
    assert committed() == [8, 5]
    kp_consumer.close()
    confluent_consumer.close()
    broker.kill()
    broker.start()
    again = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group})
    try:
        assert [tp.offset for tp in again.committed([TopicPartition("src", 0), TopicPartition("src", 1)], 30)] == [8, 5]
    finally:
        again.close()
