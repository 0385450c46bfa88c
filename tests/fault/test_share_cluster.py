"""Share groups in a 3-broker cluster (real processes, real etcd), topics with 3 replicas: a
ShareConsumer (librdkafka) acknowledges records one batch at a time while the leader of the
partition it reads is SIGKILLed. No acknowledgement the broker confirmed is lost (such a record is
never delivered again) and every record is eventually acknowledged: the new leader continues from
the share-partition state its predecessor made durable in __share_group_state."""

from __future__ import annotations

import threading
import time

import pytest
from confluent_kafka import AcknowledgeType, KafkaException, Producer
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
        # everything can be confirmed before the killed broker's lease lapses (the share-partition
        # leader stays up when the coordinator is the victim): wait for the failover, do not race it
        wait_until(lambda: admin.list_topics(watched, timeout=5).topics[watched].partitions[0].leader not in
                   (killed, -1), 30, message=f"{watched}-0 led by a broker other than the killed {killed}")
        if victim == "partition leader":
            assert max(deliveries.values()) >= 2  # what was in flight at the kill came again
    finally:
        consumer.close()


def start_from_earliest(cluster: Cluster, group: str) -> None:
    """The group's share.auto.offset.reset is earliest (kafka-python, IncrementalAlterConfigs GROUP)."""
    kp = KafkaAdminClient(bootstrap_servers=cluster.bootstrap)
    kp.alter_configs([ConfigResource(ConfigResourceType.GROUP, group, configs={"share.auto.offset.reset": "earliest"})],
                     incremental=True)
    kp.close()


def share_everything(cluster: Cluster, topic: str, partitions: int, replication_factor: int, group: str) -> None:
    """A topic with a leader on every broker: a ShareConsumer of ``group`` reads all 300 records
    produced to it (confluent-kafka), each once."""
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    wait_until(lambda: len(admin.list_topics(timeout=5).brokers) == 3, 30, message="3 brokers registered")
    admin.create_topics([NewTopic(topic, partitions, replication_factor)])[topic].result(30)
    wait_until(lambda: {p.leader for p in admin.list_topics(topic, timeout=5).topics[topic].partitions.values()}
               == {1, 2, 3}, 30, message="a leader on every broker")
    start_from_earliest(cluster, group)
    values = produce_values(cluster.bootstrap, topic, 300, partitions)
    consumer = share_consumer(cluster.bootstrap, group, [topic])
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


def test_a_broker_without_a_replica_of_the_state_topic_serves_share_groups(tmp_path):
    """__share_group_state with 2 replicas on 3 brokers: the partitions led by the third broker are
    served too (it reads the state from the state topic's leader and writes through it)."""
    cluster = Cluster(tmp_path, 3, {"share.coordinator.state.topic.replication.factor": "2"}).start()
    try:
        share_everything(cluster, "spread", 3, 3, "spreaders")
        admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
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
        share_everything(cluster, "placed", 6, 1, "placers")
    finally:
        cluster.stop()


def test_a_late_acknowledgement_to_a_deposed_leader_is_refused(tmp_path):
    """Member m1 acquires records from the leader L of a partition; L is SIGSTOPped, a new leader N
    takes the partition and loads its share state (m2 fetches there); m1's acknowledgement, sent to
    L while it was stopped, is answered once L resumes: with NOT_LEADER_OR_FOLLOWER (or
    FENCED_STATE_EPOCH), never as if it counted, since no replayer of the state counts it (Kafka's
    share coordinator refuses such a write). Raw ShareGroupHeartbeat/ShareFetch/ShareAcknowledge
    over BrokerChannel sockets (no Python client speaks the share APIs), confluent-kafka to produce."""
    import asyncio
    import datetime

    from kio.schema.metadata.v12 import request as metadata_request
    from kio.schema.share_acknowledge.v2 import request as ack_request
    from kio.schema.share_fetch.v2 import request as fetch_request
    from kio.schema.share_group_heartbeat.v1 import request as heartbeat_request

    from tidelog.cluster.broker_channel import BrokerChannel
    from tidelog.protocol.errors import ErrorCode

    cluster = Cluster(tmp_path, 3).start()
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})

    def leaders(topic: str) -> dict[int, int]:
        """Partition -> leader; {} when the broker asked does not answer (the stopped one)."""
        try:
            found = admin.list_topics(topic, timeout=5).topics[topic]
        except KafkaException:
            return {}
        return {p: m.leader for p, m in found.partitions.items()}

    async def scenario() -> None:
        channels = {n: BrokerChannel("127.0.0.1", b.port, f"late-ack-{n}") for n, b in cluster.brokers.items()}

        async def ask(node: int, api_key: int, version: int, body, timeout_s: float = 20):
            return await channels[node].request(api_key, version, body, timeout_s)

        def heartbeat(member: str):
            return heartbeat_request.ShareGroupHeartbeatRequest(group_id="late", member_id=member, member_epoch=0,
                                                                rack_id=None, subscribed_topic_names=("moved",))

        def fetch(member: str, topic_id, partition: int):
            return fetch_request.ShareFetchRequest(
                group_id="late", member_id=member, share_session_epoch=0, max_wait=datetime.timedelta(milliseconds=3000),
                min_bytes=1, max_bytes=1 << 20, max_records=10, batch_size=10, share_acquire_mode=1, is_renew_ack=False,
                topics=(fetch_request.FetchTopic(topic_id=topic_id, partitions=(
                    fetch_request.FetchPartition(partition_index=partition, acknowledgement_batches=()),)),),
                forgotten_topics_data=())

        async def join(member: str) -> None:
            deadline = time.monotonic() + 60
            while True:  # the group coordinator (FindCoordinator is for clients: ask each broker)
                for node in channels:
                    if node in stopped:
                        continue
                    answer = await ask(node, 76, 1, heartbeat(member))
                    if answer.error_code == 0:
                        return
                assert time.monotonic() < deadline, f"{member} cannot join: {answer}"
                await asyncio.sleep(0.2)

        stopped: set[int] = set()
        try:
            await join("m0")  # creates __share_group_state
            wait_until(lambda: leaders("__share_group_state").get(0, -1) > 0 and leaders("__consumer_offsets").get(0, -1) > 0,
                       30, message="state and offsets leaders")
            busy = {leaders("__share_group_state")[0], leaders("__consumer_offsets")[0]}
            placed = leaders("moved")
            partition, victim = next((p, leader) for p, leader in placed.items() if leader not in busy)
            [topic] = (await ask(victim, 3, 12, metadata_request.MetadataRequest(
                topics=(metadata_request.MetadataRequestTopic(topic_id=None, name="moved"),),
                allow_auto_topic_creation=False, include_topic_authorized_operations=False))).topics
            await join("m1")
            acquired = []
            deadline = time.monotonic() + 30
            while not acquired:
                response = await ask(victim, 78, 2, fetch("m1", topic.topic_id, partition))
                [data] = response.responses[0].partitions
                acquired = [(a.first_offset, a.last_offset) for a in data.acquired_records]
                assert time.monotonic() < deadline, f"m1 acquired nothing: {response}"
            cluster.brokers[victim].pause()
            stopped.add(victim)
            live = next(n for n in channels if n != victim)
            deadline = time.monotonic() + 60
            while True:  # asked of a live broker (a client's metadata may go to the stopped one)
                [found] = (await ask(live, 3, 12, metadata_request.MetadataRequest(
                    topics=(metadata_request.MetadataRequestTopic(topic_id=None, name="moved"),),
                    allow_auto_topic_creation=False, include_topic_authorized_operations=False))).topics
                successor = next(p.leader_id for p in found.partitions if p.partition_index == partition)
                if successor not in (victim, -1):
                    break
                assert time.monotonic() < deadline, "no new leader"
                await asyncio.sleep(0.1)
            await join("m2")
            deadline = time.monotonic() + 30
            while True:  # the successor loads the share-partition (and takes the records m1 held)
                response = await ask(successor, 78, 2, fetch("m2", topic.topic_id, partition))
                [data] = response.responses[0].partitions
                if data.acquired_records:
                    break
                assert time.monotonic() < deadline, f"m2 acquired nothing at broker {successor}: {response}"
            late = asyncio.ensure_future(ask(victim, 79, 2, ack_request.ShareAcknowledgeRequest(
                group_id="late", member_id="m1", share_session_epoch=1, is_renew_ack=False,
                topics=(ack_request.AcknowledgeTopic(topic_id=topic.topic_id, partitions=(ack_request.AcknowledgePartition(
                    partition_index=partition, acknowledgement_batches=tuple(ack_request.AcknowledgementBatch(
                        first_offset=first, last_offset=last, acknowledge_types=(1,)) for first, last in acquired)),)),)),
                timeout_s=60))
            await asyncio.sleep(0.5)  # the request waits in the stopped broker's socket
            cluster.brokers[victim].resume()
            stopped.discard(victim)
            answer = await late
            errors = {ErrorCode(p.error_code) for t in answer.responses for p in t.partitions} | (
                {ErrorCode(answer.error_code)} - {ErrorCode.none})
            assert errors and errors <= {ErrorCode.not_leader_or_follower, ErrorCode.fenced_state_epoch,
                                         ErrorCode.share_session_not_found, ErrorCode.unknown_topic_or_partition}, (
                answer, cluster.logs())
        finally:
            for channel in channels.values():
                channel.close()

    try:
        wait_until(lambda: len(admin.list_topics(timeout=5).brokers) == 3, 30, message="3 brokers registered")
        admin.create_topics([NewTopic("moved", 3, 3, config={"min.insync.replicas": "2"})])["moved"].result(30)
        wait_until(lambda: set(leaders("moved").values()) == {1, 2, 3}, 30, message="a leader on every broker")
        start_from_earliest(cluster, "late")
        produce_values(cluster.bootstrap, "moved", 30, 3)
        asyncio.run(scenario())
    finally:
        for broker in cluster.brokers.values():
            broker.resume()
        cluster.stop()
