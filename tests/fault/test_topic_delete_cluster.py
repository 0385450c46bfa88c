"""A 3-broker cluster (real processes, real etcd): deleting a topic removes the groups' committed
offsets of it at the group coordinator when that is another broker than the controller and than
the one the DeleteTopics went to (it hears the deletion from the metadata store), with the
share groups' state of it, and the tombstones in ``__consumer_offsets`` and
``__share_group_state`` keep them gone after the coordinator is SIGKILLed and another broker
takes over. confluent-kafka (consumer and ShareConsumer) and kafka-python.

The share state's removal is checked where it happens, not through DescribeShareGroupOffsets
(which leaves out a deleted topic at once, removed or not): the coordinator counts it
(tidelog_deleted_topic_offsets_total{kind="share"}) and logs it, and ``__share_group_state``
itself, read from the start with a consumer, ends each of the topic's share-partitions with a
tombstone."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

from tests.brokerproc import wait_until
from tests.clusterproc import Cluster
from tests.integration.share_clients import metric, share_consumer
from tests.integration.test_topic_delete_share_state import share_offsets
from tests.integration.test_topic_delete_offsets import (
    PARTITIONS,
    committed,
    consume_and_commit,
    delete_topic,
    listed_topics,
    make_topic,
)
from tidelog.protocol.topics import SHARE_GROUP_STATE
from tidelog.queues.state_records import decode_key

pytestmark = pytest.mark.slow

OFFSETS = "__consumer_offsets"


def offsets_partition(admin: AdminClient):
    return admin.list_topics(OFFSETS, timeout=5).topics[OFFSETS].partitions[0]


def listed_or_none(bootstrap: str, group: str) -> set[str] | None:
    """The group's listed topics; None while no coordinator answers (a failover)."""
    try:
        return listed_topics(bootstrap, group)
    except KafkaException:
        return None


def share_state_records(bootstrap: str, group_id: str) -> dict[tuple, bool]:
    """``__share_group_state`` as written, read from the start to the high watermark: (topic id,
    partition) -> whether the group's state of that share-partition is live (its last record is
    not a tombstone)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "state-reader", "enable.auto.commit": False})
    try:
        partitions = consumer.list_topics(SHARE_GROUP_STATE, timeout=10).topics[SHARE_GROUP_STATE].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(SHARE_GROUP_STATE, p), timeout=10)[1] for p in partitions}
        unread = {p for p, end in ends.items() if end > 0}
        consumer.assign([TopicPartition(SHARE_GROUP_STATE, p, 0) for p in unread])
        live: dict[tuple, bool] = {}
        deadline = time.monotonic() + 30
        while unread:
            assert time.monotonic() < deadline, f"{SHARE_GROUP_STATE} not read to its end within 30 s: {unread}"
            for message in consumer.consume(500, 1):
                assert message.error() is None, message.error()
                key = decode_key(message.key())[1]
                if key.group_id == group_id:
                    live[(key.topic_id, key.partition)] = message.value() is not None
                if message.offset() + 1 >= ends[message.partition()]:
                    unread.discard(message.partition())
        return live
    finally:
        consumer.close()


def controller(admin: AdminClient) -> int:
    """The controller's id as DescribeCluster answers it, or -1 (not known yet) when no answer came
    within 5 s. A Metadata request first: librdkafka sends DescribeCluster to the controller it
    last heard of, and after that broker's SIGKILL it only tried to connect to it again (a
    million refused connects in 30 s) without asking anyone else who controls now, so the wait
    timed out though the other brokers had a new controller 2 s after the kill (session 15's
    final CI, and 1 run in 12 by hand). The Metadata answer names the new controller."""
    try:
        admin.list_topics(timeout=5)
        return admin.describe_cluster(request_timeout=5).result(6).controller.id
    except (KafkaException, TimeoutError):
        return -1


def coordinator_apart_from_controller(cluster: Cluster, admin: AdminClient) -> tuple[int, int]:
    """(coordinator, controller), two brokers: when one broker is both, it is restarted; the
    controller stays where it moved and the preferred leader of __consumer_offsets-0 takes its
    leadership back (auto.leader.rebalance, checked every second here)."""
    wait_until(lambda: offsets_partition(admin).leader > 0, 30, message="a group coordinator")
    preferred = offsets_partition(admin).replicas[0]
    if offsets_partition(admin).leader == controller(admin):
        cluster.brokers[preferred].kill()
        wait_until(lambda: controller(admin) not in (-1, preferred), 30, message="another controller")
        cluster.brokers[preferred].start()
    def another_controller() -> int | None:
        answered = controller(admin)
        return None if answered in (-1, preferred) else answered

    controller_id = wait_until(lambda: offsets_partition(admin).leader == preferred and another_controller(), 60,
                               message="the preferred replica leading __consumer_offsets-0 and another broker controlling")
    return preferred, controller_id


def test_a_coordinator_apart_from_the_controller_removes_a_deleted_topics_offsets_and_a_failover_keeps_them_gone(
        tmp_path):
    cluster = Cluster(tmp_path, 3, {"group.initial.rebalance.delay.ms": "100", "group.min.session.timeout.ms": "1000",
                                    "leader.imbalance.check.interval.seconds": "1", "http.port": "0"}).start()
    try:
        admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
        coordinator, controller_id = coordinator_apart_from_controller(cluster, admin)
        bootstrap = cluster.bootstrap
        make_topic(bootstrap, "gone", 2, replication_factor=3)
        make_topic(bootstrap, "kept", 1, replication_factor=3)
        assert len(consume_and_commit("confluent", bootstrap, "g", ["gone", "kept"], 6)) == 6
        assert len(consume_and_commit("kafka-python", bootstrap, "h", ["gone"], 4)) == 4
        assert committed("kafka-python", bootstrap, "h", "gone") == [2, 2]
        configs = KafkaAdminClient(bootstrap_servers=bootstrap)
        try:  # the share group reads the records already there
            configs.alter_configs([ConfigResource(ConfigResourceType.GROUP, "sharers",
                                                  configs={"share.auto.offset.reset": "earliest"})], incremental=True)
        finally:
            configs.close()
        sharer = share_consumer(bootstrap, "sharers", ["gone"])
        try:
            seen: list = []
            wait_until(lambda: seen.extend(m for m in sharer.poll(0.2) if m.error() is None) or len(seen) >= 4, 60,
                       message="the share consumer's 4 records")
            sharer.commit_sync(30)
        finally:
            sharer.close()
        at_coordinator = cluster.brokers[coordinator].bootstrap
        wait_until(lambda: share_offsets(at_coordinator, "sharers") == {("gone", 0): 2, ("gone", 1): 2}, 30,
                   interval_s=0.2, message="the share group's state")
        written = share_state_records(bootstrap, "sharers")  # the group read only "gone": its two share-partitions
        assert len(written) == 2 and all(written.values()), written
        assert metric(cluster.brokers[coordinator], "tidelog_deleted_topic_offsets_total", kind="share") == 0

        # Asked of the controller's broker: the coordinator hears it from the metadata store.
        delete_topic(cluster.brokers[controller_id].bootstrap, "gone")
        wait_until(lambda: listed_topics(bootstrap, "g") == {"kept"}, 30, interval_s=0.2,
                   message="the deleted topic's offsets to go")
        assert committed("kafka-python", bootstrap, "h", "gone") == [None] * PARTITIONS
        assert "topic gone deleted: removed the committed offsets of 2 groups (4 partitions)" in \
            cluster.brokers[coordinator].log()
        wait_until(lambda: metric(cluster.brokers[coordinator], "tidelog_deleted_topic_offsets_total", kind="share") == 2,
                   30, interval_s=0.2, message="the coordinator to count the deleted topic's 2 share-partition states removed")
        assert "topic gone deleted: removed the share-partition state of 1 share groups (2 partitions)" in \
            cluster.brokers[coordinator].log()
        assert share_state_records(bootstrap, "sharers") == {key: False for key in written}  # each ends in a tombstone
        assert share_offsets(at_coordinator, "sharers") == {}

        cluster.brokers[coordinator].kill()
        wait_until(lambda: offsets_partition(admin).leader not in (-1, coordinator), 30, message="a new coordinator")
        wait_until(lambda: listed_or_none(bootstrap, "g") == {"kept"}, 30, interval_s=0.2,
                   message="the new coordinator to answer")
        assert committed("confluent", bootstrap, "g", "gone") == [None] * PARTITIONS
        assert committed("confluent", bootstrap, "g", "kept") == [1, 1]
        assert committed("kafka-python", bootstrap, "h", "gone") == [None] * PARTITIONS
        successor = cluster.brokers[offsets_partition(admin).leader].bootstrap
        assert share_offsets(successor, "sharers") == {}
        assert share_state_records(successor, "sharers") == {key: False for key in written}

        make_topic(bootstrap, "gone", 3, replication_factor=2)  # the killed broker is down: two replicas
        values = consume_and_commit("kafka-python", bootstrap, "h", ["gone"], 6)
        assert sorted(values) == sorted(b"%d-%d" % (p, i) for p in range(PARTITIONS) for i in range(3))
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        cluster.stop()
