"""An idempotent acks=all producer (confluent-kafka) whose partition's ISR falls below
min.insync.replicas and heals while its batches wait: every record it is told was delivered has an
offset, and is in the log at that offset. Two real brokers (one etcd), replication factor 2,
min.insync.replicas=2; the follower is SIGSTOPped and resumed.

The shape of test_cluster_failover's "acknowledged record ... at None", made deterministic:
batch 1 is durable on the leader and waits for the paused follower; batch 2 waits for the leader's
next group fsync (``flush.ms`` makes it linger); the leader takes the follower out of the ISR (its
lag passes ``replica.lag.time.max.ms``), so batch 1 is answered NOT_ENOUGH_REPLICAS_AFTER_APPEND;
the follower is resumed and rejoins before batch 2's fsync. Kafka answers batch 2
NOT_ENOUGH_REPLICAS_AFTER_APPEND too (its high watermark passes every pending produce at the
shrink); answering it with success made librdkafka deliver batch 1's re-queued record as
implicitly acknowledged, without an offset (rd_kafka_dr_implicit_ack).
"""

from __future__ import annotations

import urllib.request

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from tests.brokerproc import wait_until
from tests.clusterproc import Cluster

pytestmark = pytest.mark.slow

TOPIC = "shortfall"
LINGER_MS = 5000  # flush.ms: a group fsync starts this long after the first write it covers
LAG_MS = 6000  # replica.lag.time.max.ms: the shrink comes after batch 2's append, before its fsync
FSYNCS = "tidelog_fsync_latency_seconds_count"
SHRINKS = "tidelog_isr_shrinks_total"


def _metric(broker, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{broker.metrics_port}/metrics", timeout=5) as page:
        for line in page.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


def test_every_delivered_record_has_its_offset_when_the_isr_falls_short_and_heals(tmp_path):
    # A long session: the paused follower keeps its registration, only the leader's lag check acts.
    cluster = Cluster(tmp_path, 2, {"http.port": "0", "broker.session.timeout.ms": "30000",
                                    "replica.lag.time.max.ms": str(LAG_MS)}).start()
    try:
        admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
        admin.create_topics([NewTopic(TOPIC, 1, 2, config={"min.insync.replicas": "2", "flush.ms": str(LINGER_MS)})]
                            )[TOPIC].result(10)
        partition = lambda: admin.list_topics(TOPIC, timeout=5).topics[TOPIC].partitions[0]  # noqa: E731
        wait_until(lambda: len(partition().isrs) == 2 and partition().leader > 0, 15, message="a full ISR")
        leader_id = partition().leader
        leader = cluster.brokers[leader_id]
        follower = next(b for i, b in cluster.brokers.items() if i != leader_id)

        delivered = []
        producer = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all", "enable.idempotence": True,
                             "linger.ms": 0, "message.timeout.ms": 60000, "retry.backoff.ms": 50})

        def send(value: bytes) -> None:
            producer.produce(TOPIC, value=value, partition=0,
                             on_delivery=lambda err, msg: delivered.append((err, msg.value(), msg.offset())))
            producer.poll(0)

        send(b"warm")
        assert producer.flush(30) == 0 and delivered == [(None, b"warm", 0)]

        # (The leader's metrics, not Metadata: a client may ask the paused broker.)
        fsyncs, shrinks = _metric(leader, FSYNCS), _metric(leader, SHRINKS)
        follower.pause()
        try:
            send(b"1")
            wait_until(lambda: _metric(leader, FSYNCS) > fsyncs, 15, message="batch 1 durable on the leader")
            send(b"2")
            wait_until(lambda: _metric(leader, SHRINKS) > shrinks, 15, message="the follower out of the ISR")
        finally:
            follower.resume()
        assert producer.flush(60) == 0
        assert [err for err, _, _ in delivered] == [None] * 3, delivered
        assert [(value, offset) for _, value, offset in delivered] == [(b"warm", 0), (b"1", 1), (b"2", 2)], delivered

        consumer = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": "check", "enable.auto.commit": False,
                             "auto.offset.reset": "earliest"})
        try:
            consumer.assign([TopicPartition(TOPIC, 0, 0)])
            seen = {}
            wait_until(lambda: _poll_into(consumer, seen) >= 3, 30, message="the three records read back")
        finally:
            consumer.close()
        assert seen == {0: b"warm", 1: b"1", 2: b"2"}
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        cluster.stop()


def _poll_into(consumer, seen: dict) -> int:
    message = consumer.poll(0.2)
    if message is not None and not message.error():
        seen[message.offset()] = message.value()
    return len(seen)
