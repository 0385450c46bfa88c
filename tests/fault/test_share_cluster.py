"""Share groups in a 3-broker cluster (real processes, real etcd), topics with 3 replicas: a
ShareConsumer (librdkafka) acknowledges records one batch at a time while the leader of the
partition it reads is SIGKILLed. No acknowledgement the broker confirmed is lost (such a record is
never delivered again) and every record is eventually acknowledged: the new leader continues from
the share-partition state its predecessor made durable in __share_group_state."""

from __future__ import annotations

import threading
import time

import pytest
from confluent_kafka import AcknowledgeType, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

from tests.brokerproc import wait_until
from tests.clusterproc import Cluster
from tests.integration.share_clients import produce_values, share_consumer

pytestmark = pytest.mark.slow

TOPIC = "work"
RECORDS = 3000
DEADLINE_S = 150


@pytest.fixture
def cluster(tmp_path):
    cluster = Cluster(tmp_path, 3).start()
    yield cluster
    cluster.stop()


class Writer(threading.Thread):
    """Produce numbered records (idempotent, acks=all) at a bounded rate; note the acknowledged ones."""

    def __init__(self, bootstrap: str) -> None:
        super().__init__(daemon=True)
        self.producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                                  "linger.ms": 5, "message.timeout.ms": 60000, "retry.backoff.ms": 50,
                                  "topic.metadata.refresh.interval.ms": 1000})
        self.acked: set[bytes] = set()

    def run(self) -> None:
        for i in range(RECORDS):
            self.producer.produce(TOPIC, f"job-{i}".encode(), partition=0,
                                  on_delivery=lambda err, msg: err is None and self.acked.add(msg.value()))
            self.producer.poll(0)
            if i % 100 == 99:
                time.sleep(0.05)  # about 2,000 records/s, so the kill comes while records arrive
        self.producer.flush(90)


@pytest.mark.parametrize("victim", ["partition leader", "group coordinator"])
def test_share_partition_leader_failover_under_load(cluster, victim):
    """SIGKILL the leader of the partition read (share-partition state moves) or the group coordinator
    (membership moves: the new coordinator knows the group by its state, and the member rejoins)."""
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    admin.create_topics([NewTopic(TOPIC, 1, 3, config={"min.insync.replicas": "2"})])[TOPIC].result(30)
    wait_until(lambda: admin.list_topics(TOPIC, timeout=5).topics[TOPIC].partitions[0].leader > 0, 30,
               message="a leader")
    kp = KafkaAdminClient(bootstrap_servers=cluster.bootstrap)
    kp.alter_configs([ConfigResource(ConfigResourceType.GROUP, "movers", configs={"share.auto.offset.reset": "earliest"})],
                     incremental=True)
    kp.close()
    writer = Writer(cluster.bootstrap)
    writer.start()
    consumer = share_consumer(cluster.bootstrap, "movers", [TOPIC], **{"share.acknowledgement.mode": "explicit",
                                                                       "topic.metadata.refresh.interval.ms": 1000})
    confirmed: set[bytes] = set()
    deliveries: dict[bytes, int] = {}
    killed = None
    deadline = time.monotonic() + DEADLINE_S
    try:
        while writer.is_alive() or not writer.acked <= confirmed:
            assert time.monotonic() < deadline, (f"{len(confirmed)} of {len(writer.acked)} confirmed after "
                                                 f"{DEADLINE_S}s (killed broker {killed})\n{cluster.logs()}")
            try:
                messages = [m for m in consumer.poll(0.5) if m.error() is None]
            except Exception:  # noqa: BLE001 - the leader is gone for a moment
                continue
            for message in messages:
                value = message.value()
                assert value not in confirmed, f"{value!r} delivered again after its acknowledgement was confirmed"
                deliveries[value] = message.delivery_count()
                consumer.acknowledge(message, AcknowledgeType.ACCEPT)
            if not messages:
                continue
            if killed is None and confirmed:
                watched = TOPIC if victim == "partition leader" else "__consumer_offsets"
                killed = admin.list_topics(watched, timeout=5).topics[watched].partitions[0].leader
                cluster.brokers[killed].kill()  # this batch's acknowledgement not sent yet
            try:
                results = consumer.commit_sync(30)
            except Exception:  # noqa: BLE001 - not confirmed: these may come again
                continue
            if all(error is None for error in results.values()):
                confirmed |= {m.value() for m in messages}
        assert killed is not None and len(writer.acked) > RECORDS // 2
        assert admin.list_topics(watched, timeout=5).topics[watched].partitions[0].leader != killed
        if victim == "partition leader":
            assert max(deliveries.values()) >= 2  # what was in flight at the kill came again
    finally:
        consumer.close()


def test_a_broker_without_a_replica_of_the_state_topic_serves_share_groups(tmp_path):
    """__share_group_state with 2 replicas on 3 brokers: the partitions led by the third broker are
    served too (it reads the state from the state topic's leader and writes through it)."""
    cluster = Cluster(tmp_path, 3, {"share.coordinator.state.topic.replication.factor": "2"}).start()
    try:
        admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
        admin.create_topics([NewTopic("spread", 3, 3)])["spread"].result(30)
        wait_until(lambda: {p.leader for p in admin.list_topics("spread", timeout=5).topics["spread"].partitions.values()}
                   == {1, 2, 3}, 30, message="a leader on every broker")
        kp = KafkaAdminClient(bootstrap_servers=cluster.bootstrap)
        kp.alter_configs([ConfigResource(ConfigResourceType.GROUP, "spreaders",
                                         configs={"share.auto.offset.reset": "earliest"})], incremental=True)
        kp.close()
        values = produce_values(cluster.bootstrap, "spread", 300, 3)
        consumer = share_consumer(cluster.bootstrap, "spreaders", ["spread"])
        try:
            seen: list = []
            deadline = time.monotonic() + 60
            while len(seen) < 300:
                assert time.monotonic() < deadline, f"{len(seen)} of 300 records\n{cluster.logs()}"
                seen += [m.value() for m in consumer.poll(0.5) if m.error() is None]
            consumer.commit_sync(30)
            assert sorted(seen) == sorted(values)
        finally:
            consumer.close()
        replicas = admin.list_topics("__share_group_state", timeout=5).topics["__share_group_state"].partitions[0].replicas
        assert len(replicas) == 2
    finally:
        cluster.stop()


def test_share_group_reads_single_replica_partitions_the_coordinator_does_not_host(tmp_path):
    """A topic with one replica per partition, its partitions on all 3 brokers: the group
    coordinator hosts only some of them, yet every partition is read (the share-partition's
    leader initialises its state where the coordinator has no replica to read offsets from).
    confluent-kafka's ShareConsumer and kafka-python for the group config."""
    cluster = Cluster(tmp_path, 3).start()
    try:
        admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
        wait_until(lambda: len(admin.list_topics(timeout=5).brokers) == 3, 30, message="3 brokers registered")
        admin.create_topics([NewTopic("placed", 6, 1)])["placed"].result(30)
        wait_until(lambda: {p.leader for p in admin.list_topics("placed", timeout=5).topics["placed"].partitions.values()}
                   == {1, 2, 3}, 30, message="the partitions spread over the 3 brokers")
        kp = KafkaAdminClient(bootstrap_servers=cluster.bootstrap)
        kp.alter_configs([ConfigResource(ConfigResourceType.GROUP, "placers",
                                         configs={"share.auto.offset.reset": "earliest"})], incremental=True)
        kp.close()
        values = produce_values(cluster.bootstrap, "placed", 300, 6)
        consumer = share_consumer(cluster.bootstrap, "placers", ["placed"])
        try:
            seen: list = []
            deadline = time.monotonic() + 60
            while len(seen) < 300:
                assert time.monotonic() < deadline, f"{len(seen)} of 300 records\n{cluster.logs()}"
                seen += [m.value() for m in consumer.poll(0.5) if m.error() is None]
            consumer.commit_sync(30)
            assert sorted(seen) == sorted(values)
        finally:
            consumer.close()
    finally:
        cluster.stop()
