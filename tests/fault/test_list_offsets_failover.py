"""A consumer starting from LATEST on a new leader whose high watermark still lags the start of its
leader epoch (three real brokers on etcd, confluent-kafka).

The next leader (N) copies records the leader (L) acknowledged with acks=1 while the third replica
(P), paused, holds L's high watermark below them; L then hands leadership to N (controlled
shutdown). N leads with its follower's high watermark, below its epoch's start, until P is back.
Kafka answers ListOffsets LATEST OFFSET_NOT_AVAILABLE (retriable) in that state
(Partition.fetchOffsetForTimestamp); answering the lagging high watermark started the consumer
below the acknowledged records, which it then read as new. The in-process test is
tests/unit/test_list_offsets_lagging_hw.py.
"""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from tests.brokerproc import wait_until
from tests.clusterproc import Cluster

pytestmark = pytest.mark.slow

TOPIC = "latest"
# P stays registered and in the ISR while paused (the test ends its pause itself).
SETTINGS = {"broker.session.timeout.ms": "30000", "replica.lag.time.max.ms": "60000"}


def segment_bytes(broker, index: int) -> int:
    return sum(p.stat().st_size for p in (broker.data_dir / f"{TOPIC}-{index}").glob("*.log"))


def test_a_consumer_from_latest_does_not_start_below_acknowledged_records_after_an_election(tmp_path):
    cluster = Cluster(tmp_path, 3, SETTINGS).start()
    consumer = None
    paused = None
    try:
        admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
        wait_until(lambda: len(admin.list_topics(timeout=5).brokers) == 3, 20, message="three brokers")
        admin.create_topics([NewTopic(TOPIC, 3, 3)])[TOPIC].result(10)

        def partitions():
            return admin.list_topics(TOPIC, timeout=5).topics[TOPIC].partitions

        wait_until(lambda: all(p.leader == p.replicas[0] and len(p.isrs) == 3 for p in partitions().values()), 20,
                   message="preferred leaders, full ISRs")
        # A partition whose third replica (paused below) is not the controller: the handover needs one.
        controller = admin.list_topics(timeout=5).controller_id
        index, chosen = next((i, p) for i, p in sorted(partitions().items()) if p.replicas[2] != controller)
        brokers = cluster.brokers
        leader, nxt, paused = (brokers[r] for r in chosen.replicas)

        producer = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all"})
        for n in range(10):
            producer.produce(TOPIC, b"before-%d" % n, partition=index)
        assert producer.flush(20) == 0
        wait_until(lambda: segment_bytes(paused, index) == segment_bytes(leader, index), 20, message="P caught up")

        paused.pause()  # in the ISR, not fetching: L's high watermark stays at 10
        acked = []
        one = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "1"})
        for n in range(10):
            one.produce(TOPIC, b"acked-%d" % n, partition=index,
                        on_delivery=lambda err, msg: acked.append((err, msg.offset())))
        assert one.flush(20) == 0
        assert sorted(offset for err, offset in acked if err is None) == list(range(10, 20))
        wait_until(lambda: segment_bytes(nxt, index) == segment_bytes(leader, index), 20, message="N copied them")

        assert leader.stop() == 0  # controlled shutdown: N leads from offset 20 with high watermark 10
        admin = AdminClient({"bootstrap.servers": nxt.bootstrap})
        wait_until(lambda: partitions()[index].leader == nxt.broker_id, 20, message="N leading")

        consumer = Consumer({"bootstrap.servers": nxt.bootstrap, "group.id": "from-latest",
                             "auto.offset.reset": "latest", "enable.auto.commit": False})
        consumer.assign([TopicPartition(TOPIC, index)])
        started = time.monotonic()
        while time.monotonic() - started < 3:  # the consumer asks for LATEST while P is paused
            assert consumer.poll(0.2) is None
        paused.resume()

        # Whenever its reset is answered (the wait for P may end after the first of these is
        # acknowledged), the consumer starts at or past 20: the first record it reads is one of these.
        got = []
        deadline = time.monotonic() + 30
        while not got and time.monotonic() < deadline:
            producer.produce(TOPIC, b"after", partition=index)
            assert producer.flush(20) == 0
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                got.append((message.offset(), message.value()))
        assert got and got[0][0] >= 20 and got[0][1] == b"after", f"{got}\n{cluster.logs()}"
    finally:
        if consumer is not None:
            consumer.close()
        if paused is not None:
            paused.resume()
        cluster.stop()
