"""The broker's own writes on a stuck disk (writes15), in real broker processes with real clients.

The disk is stuck with tests/fault/stuck_disk (a sitecustomize on the broker's PYTHONPATH): while a
file exists, every flush job of the broker's log manager waits in its flush thread, as on a disk
that stopped answering; the event loop runs on. Each internal write is bounded by its timeout, the
flush included, answers REQUEST_TIMED_OUT and is retried by its writer, one WARNING an episode:

- a delay topic's mover (target led by the same broker): its append times out and the round is
  tried again at the next pass; once the disk answers, every record is in the target exactly once
  (the retries were answered as duplicates). Before, the mover (and every other delay partition's,
  one task steps them all) waited for the flush with no timeout: no retry, no log line.
- a transaction's markers, on a partition led by a broker whose disk is stuck, from the
  coordinator on another broker: that broker answers WriteTxnMarkers REQUEST_TIMED_OUT within
  ``offsets.commit.timeout.ms`` and the coordinator's channel retries with back-off (Kafka's
  TransactionMarkerChannelManager retries markers until written); once the disk answers, a
  read_committed consumer reads the transaction's records. Before, the marker write waited for the
  flush with no timeout, so the coordinator's request to that broker (and every transaction queued
  behind it) was held until its 30 s channel timeout.

Records are produced with confluent-kafka and read back with kafka-python (and confluent-kafka's
read_committed consumer)."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KafkaTopicPartition

from tests.brokerproc import BrokerProcess, wait_until
from tests.clusterproc import Cluster, ClusterBrokerProcess
from tests.fault.test_delay_topic_cluster import metric
from tests.fault.test_transactions_cluster import read_committed

STUCK_DISK = Path(__file__).with_name("stuck_disk")
RECORDS = 20
DELAY_MS = 5000  # the records come due this long after they are produced: the disk is stuck by then


def stuck_disk_env(hold: Path) -> dict[str, str]:
    """A broker's environment for tests/fault/stuck_disk: its flushes wait while ``hold`` exists."""
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(STUCK_DISK), os.environ.get("PYTHONPATH")])),
            "TESTS_HOLD_FSYNC": str(hold)}


def produce(bootstrap: str, topic: str, values: list[bytes], headers=None, **config) -> None:
    """Produce ``values`` (acks=all, idempotent) and check each was acknowledged."""
    errors = []
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, **config})
    for value in values:
        producer.produce(topic, value=value, headers=headers,
                         on_delivery=lambda error, _message: errors.append(error) if error else None)
    assert producer.flush(30) == 0 and errors == []


def read_all(bootstrap: str, topic: str, count: int, timeout_s: float = 30) -> list[bytes]:
    """kafka-python: the topic's values from the start, until ``count`` are read, then 1 s more
    (a duplicate would show there)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False,
                             group_id=None)
    consumer.assign([KafkaTopicPartition(topic, 0)])
    consumer.seek_to_beginning()
    values: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    settled = None
    try:
        while settled is None or time.monotonic() < settled:
            assert time.monotonic() < deadline, f"read {len(values)} of {count} records of {topic}"
            for records in consumer.poll(timeout_ms=200).values():
                values += [r.value for r in records]
            if settled is None and len(values) >= count:
                settled = time.monotonic() + 1
    finally:
        consumer.close()
    return values


def warnings_matching(log: str, pattern: str) -> list[str]:
    return [line for line in log.splitlines() if " WARNING " in line and re.search(pattern, line)]


def test_a_delay_movers_appends_on_a_stuck_disk_time_out_are_retried_and_move_each_record_once(tmp_path, monkeypatch):
    hold = tmp_path / "hold-fsync"
    for name, value in stuck_disk_env(hold).items():
        monkeypatch.setenv(name, value)
    broker = BrokerProcess(tmp_path / "data", {"http.port": "0", "offsets.commit.timeout.ms": "1000"}).start()
    try:
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        for future in admin.create_topics([NewTopic("target", 1, 1), NewTopic(
                "delays", 1, 1, config={"tidelog.delay.target.topic": "target"})]).values():
            future.result(30)
        values = [b"r%d" % i for i in range(RECORDS)]
        produce(broker.bootstrap, "delays", values, headers=[("tidelog-delay-ms", str(DELAY_MS).encode())], acks="all")
        hold.touch()  # the disk is stuck from here
        try:
            moved = metric(broker, "tidelog_delay_topic_records_total", event="moved", topic="delays")
            assert moved == 0, "the records were moved before the disk was stuck (produced too slowly?)"
            wait_until(lambda: metric(broker, "tidelog_internal_write_timeouts_total", writer="delay_mover") >= 2,
                       DELAY_MS / 1000 + 20, message="the mover's append timing out twice")
            stuck = warnings_matching(broker.log(), r"delay mover delays-0: appending to target-0 failed")
            assert len(stuck) == 1 and "REQUEST_TIMED_OUT" in stuck[0], stuck  # once a streak, not once a retry
        finally:
            hold.unlink()  # the disk answers again
        wait_until(lambda: metric(broker, "tidelog_delay_topic_records_total", event="moved", topic="delays") == RECORDS,
                   30, message="every record moved")
        got = read_all(broker.bootstrap, "target", RECORDS)
        assert sorted(got) == sorted(values)  # each once: the retried appends were answered as duplicates
        assert re.search(r"delay mover delays-0: appending to target-0 again after \d+ failed attempts", broker.log())
    finally:
        hold.unlink(missing_ok=True)
        broker.stop()


def test_transaction_markers_on_a_leader_with_a_stuck_disk_are_retried_until_written(tmp_path):
    settings = {"http.port": "0", "offsets.commit.timeout.ms": "1000", "transaction.state.log.num.partitions": "1",
                "transaction.state.log.replication.factor": "1", "transaction.state.log.min.isr": "1"}
    holds = {node_id: tmp_path / f"hold-fsync-{node_id}" for node_id in (1, 2)}
    cluster = Cluster(tmp_path, 2, settings)
    try:
        cluster.etcd.start()
        for node_id, hold in holds.items():
            broker = ClusterBrokerProcess(tmp_path / f"broker-{node_id}", f"etcd://{cluster.etcd.endpoint}", node_id,
                                          settings)
            broker.env = stuck_disk_env(hold)
            cluster.brokers[node_id] = broker.launch()
        for broker in cluster.brokers.values():
            broker.wait_started(60)
        producer = Producer({"bootstrap.servers": cluster.bootstrap, "transactional.id": "stuck-markers",
                             "transaction.timeout.ms": 60000})
        producer.init_transactions(30)
        admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
        coordinator = admin.list_topics("__transaction_state", timeout=10).topics["__transaction_state"] \
            .partitions[0].leader
        stuck = 3 - coordinator  # the other broker: its disk gets stuck, the coordinator's does not
        admin.create_topics([NewTopic("orders", 4, 1)])["orders"].result(30)

        def led_by_stuck() -> list[int]:
            partitions = admin.list_topics("orders", timeout=10).topics["orders"].partitions
            if len(partitions) < 4 or any(m.leader <= 0 for m in partitions.values()):
                return []
            return [p for p, m in partitions.items() if m.leader == stuck]

        partition = wait_until(led_by_stuck, 30, message=f"a partition of orders led by broker {stuck}")[0]
        producer.begin_transaction()
        producer.produce("orders", value=b"committed-on-a-stuck-disk", partition=partition)
        assert producer.flush(30) == 0  # the record is durable before the disk sticks
        holds[stuck].touch()
        try:
            producer.commit_transaction(30)  # PrepareCommit on the coordinator's disk, which answers
            wait_until(lambda: metric(cluster.brokers[stuck], "tidelog_internal_write_timeouts_total",
                                      writer="transaction_marker") >= 2, 20,
                       message=f"broker {stuck} answering the markers REQUEST_TIMED_OUT twice")
            log = cluster.brokers[coordinator].log()
            warned = warnings_matching(log, rf"transaction markers are not being written on broker {stuck}")
            assert len(warned) == 1 and "REQUEST_TIMED_OUT" in warned[0], warned  # once an episode
        finally:
            holds[stuck].unlink()  # the disk answers again
        wait_until(lambda: re.search(rf"transaction markers written again on broker {stuck}",
                                     cluster.brokers[coordinator].log()), 30, message="the markers written")
        # A second transaction, from kafka-python, on the same partition once the disk answers.
        second = KafkaProducer(bootstrap_servers=cluster.bootstrap, transactional_id="after-the-stall",
                               request_timeout_ms=30000)
        try:
            second.init_transactions()
            second.begin_transaction()
            second.send("orders", value=b"committed-after", partition=partition)
            second.commit_transaction()
        finally:
            second.close(timeout=10)
        seen = read_committed(cluster.bootstrap, "orders", 4, 2)
        assert sorted(seen) == [b"committed-after", b"committed-on-a-stuck-disk"]
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        for hold in holds.values():
            hold.unlink(missing_ok=True)
        cluster.stop()
