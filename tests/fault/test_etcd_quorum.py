"""etcd itself failing under a 3-broker cluster: three etcd members on loopback.

Losing one member changes nothing (produce, consume, CreateTopics). Losing two (no quorum)
stops metadata changes (CreateTopics answers a retriable error) but not produce and consume to
the partitions' existing leaders. Restoring the quorum heals: CreateTopics works again.
"""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from tests.brokerproc import wait_until
from tests.clusterproc import Cluster
from tidelog.protocol.errors import ErrorCode

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster(tmp_path):
    cluster = Cluster(tmp_path, 3, etcd_members=3).start()
    yield cluster
    cluster.stop()


def create(admin: AdminClient, topic: str, timeout_s: float = 10) -> None:
    admin.create_topics([NewTopic(topic, 1, 3)], request_timeout=timeout_s)[topic].result(timeout_s + 5)
    def led() -> bool:
        partition = admin.list_topics(topic, timeout=5).topics[topic].partitions.get(0)  # absent until the watch tells
        return partition is not None and partition.leader > 0 and len(partition.isrs) == 3

    wait_until(led, 15, message=f"{topic} led with a full ISR")


def round_trip(bootstrap: str, topic: str, count: int = 200) -> None:
    """acks=all produce ``count`` records, then read them all back from the leader."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True})
    errors = []
    for n in range(count):
        producer.produce(topic, value=b"%d" % n, partition=0, on_delivery=lambda err, _: err and errors.append(err))
    assert producer.flush(20) == 0 and not errors, errors[:3]
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{time.monotonic_ns()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        consumer.assign([TopicPartition(topic, 0, max(high - count, 0))])
        seen = 0
        deadline = time.monotonic() + 20
        while seen < count and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and not message.error():
                seen += 1
        assert seen == count
    finally:
        consumer.close()


def test_one_member_lost_changes_nothing_and_quorum_lost_stops_only_metadata(cluster):
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    create(admin, "before")
    round_trip(cluster.bootstrap, "before")
    members = cluster.etcd.members
    try:
        # One of three members gone: still a quorum.
        members[0].kill()
        round_trip(cluster.bootstrap, "before")
        create(admin, "one-down")
        round_trip(cluster.bootstrap, "one-down")

        # Two gone: no quorum. Metadata changes fail, retriably; existing leaders go on.
        members[1].kill()
        started = time.monotonic()
        with pytest.raises(KafkaException) as e:
            admin.create_topics([NewTopic("no-quorum", 1, 3)], request_timeout=20)["no-quorum"].result(30)
        assert ErrorCode(e.value.args[0].code()).retriable, e.value  # REQUEST_TIMED_OUT, as Kafka without its quorum
        print(f"\nCreateTopics without an etcd quorum: {e.value.args[0].name()} after {time.monotonic() - started:.1f} s")
        round_trip(cluster.bootstrap, "before")
        round_trip(cluster.bootstrap, "one-down")

        # Quorum back: metadata changes work again, the brokers are all still registered.
        members[0].start(wait_healthy=False)
        members[1].start(wait_healthy=False)
        for member in members:
            member.start_waiting()
        wait_until(lambda: _created(admin, "healed"), 30, interval_s=0.5, message="CreateTopics after the quorum returned")
        wait_until(lambda: len(admin.list_topics(timeout=5).brokers) == 3, 15, message="three brokers registered")
        round_trip(cluster.bootstrap, "healed")
    except BaseException:
        print(cluster.logs())
        raise


def _created(admin: AdminClient, topic: str) -> bool:
    try:
        create(admin, topic)
        return True
    except KafkaException as e:
        if e.args[0].name() == "TOPIC_ALREADY_EXISTS":
            return True
        if e.args[0].name() == "INVALID_REPLICATION_FACTOR":
            # Brokers whose keep-alives failed without the quorum register again once it is back:
            # until they have, the controller counts fewer than 3 (a CI run saw 1), as Kafka would.
            # That all three do is asserted after.
            return False
        assert ErrorCode(e.args[0].code()).retriable, e
        return False
