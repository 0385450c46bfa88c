"""A 3-broker cluster (real processes, real etcd) seen by clients: brokers, controller, replica
placement, leaders and ISR in Metadata, DescribeCluster, replication-factor checks, requests to a
non-leader, replicated produce/consume and the group coordinator on the offsets leader."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from tests.brokerproc import wait_until
from tests.clusterproc import Cluster
from tidelog.cluster.broker_channel import BrokerChannel
from tidelog.protocol.errors import ErrorCode


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cluster = Cluster(tmp_path_factory.mktemp("cluster"), 3).start()
    yield cluster
    cluster.stop()


@pytest.fixture
def admin(cluster):
    return AdminClient({"bootstrap.servers": cluster.bootstrap})


def create(admin, name, partitions, replication_factor, **configs):
    """Create a topic; its partitions once Metadata shows each led with a full ISR (a broker that
    has not yet seen the creation answers the topic with no partitions: not taken for "all led")."""
    admin.create_topics([NewTopic(name, partitions, replication_factor, config=configs)])[name].result(10)
    shown = {}

    def led() -> bool:
        shown.update(p=admin.list_topics(name, timeout=5).topics[name].partitions)
        return len(shown["p"]) == partitions and all(p.leader > 0 and len(p.isrs) == replication_factor
                                                     for p in shown["p"].values())

    wait_until(led, 15, message=f"{name} led with a full ISR")
    return shown["p"]


def test_metadata_and_describe_cluster_list_every_broker(cluster, admin):
    wait_until(lambda: len(admin.list_topics(timeout=5).brokers) == 3, 15, message="three brokers registered")
    metadata = admin.list_topics(timeout=5)
    assert {b.port for b in metadata.brokers.values()} == {b.port for b in cluster.brokers.values()}
    assert metadata.controller_id in cluster.brokers
    described = admin.describe_cluster().result(10)
    assert {n.id for n in described.nodes} == {1, 2, 3}
    assert described.controller.id == metadata.controller_id


def test_replicas_placed_on_distinct_brokers_with_leaders_spread(admin):
    partitions = create(admin, "placed", 6, 3)
    assert all(sorted(p.replicas) == [1, 2, 3] and p.leader == p.replicas[0] for p in partitions.values())
    assert {p.leader for p in partitions.values()} == {1, 2, 3}
    partitions = create(admin, "placed-rf2", 3, 2)
    assert all(len(set(p.replicas)) == 2 for p in partitions.values())


def test_replication_factor_above_the_live_brokers_is_refused(admin):
    with pytest.raises(KafkaException) as e:
        admin.create_topics([NewTopic("too-many", 1, 4)])["too-many"].result(10)
    assert e.value.args[0].name() == "INVALID_REPLICATION_FACTOR"


def test_non_leader_answers_not_leader_or_follower(cluster, admin):
    from kio.schema.list_offsets.v1 import request as list_offsets

    partitions = create(admin, "leadership", 1, 3)
    leader = partitions[0].leader
    for node_id, broker in cluster.brokers.items():
        async def ask():
            channel = BrokerChannel("127.0.0.1", broker.port, "test")
            try:
                request = list_offsets.ListOffsetsRequest(replica_id=-1, topics=(list_offsets.ListOffsetsTopic(
                    name="leadership", partitions=(list_offsets.ListOffsetsPartition(partition_index=0, timestamp=-1),)),))
                return (await channel.request(2, 1, request, 10)).topics[0].partitions[0].error_code
            finally:
                channel.close()

        import asyncio

        error = asyncio.run(ask())
        assert error == (ErrorCode.none if node_id == leader else ErrorCode.not_leader_or_follower)


def test_replicated_produce_consume_and_commit(cluster, admin):
    create(admin, "replicated", 3, 3, **{"min.insync.replicas": "2"})
    producer = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all", "enable.idempotence": True})
    acked = []
    for n in range(600):
        producer.produce("replicated", value=b"%d" % n, on_delivery=lambda err, msg: acked.append(err))
    producer.flush(30)
    assert len(acked) == 600 and not any(acked)
    consumer = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": "cluster-group",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe(["replicated"])
    values = set()
    deadline = time.monotonic() + 30
    while len(values) < 600 and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is not None and not message.error():
            values.add(int(message.value()))
    assert values == set(range(600))
    consumer.commit(asynchronous=False)
    committed = consumer.committed([TopicPartition("replicated", p) for p in range(3)], timeout=10)
    # Sticky partitioning may put every record in one or two partitions: the others have no commit (-1001).
    assert sum(max(tp.offset, 0) for tp in committed) == 600, [(tp.partition, tp.offset, tp.error) for tp in committed]
    consumer.close()
    # The coordinator is the leader of __consumer_offsets, which the controller replicated to all.
    offsets = admin.list_topics("__consumer_offsets", timeout=5).topics["__consumer_offsets"].partitions[0]
    assert sorted(offsets.replicas) == [1, 2, 3]


def raw_request(port: int, api_key: int, version: int, request):
    """One request over a plain (non-flexible header) connection to one broker."""
    import asyncio

    async def ask():
        channel = BrokerChannel("127.0.0.1", port, "test")
        try:
            return await channel.request(api_key, version, request, 10)
        finally:
            channel.close()

    return asyncio.run(ask())


def test_group_requests_to_a_non_coordinator_answer_not_coordinator(cluster, admin):
    from kio.schema.heartbeat.v3 import request as heartbeat
    from kio.schema.join_group.v5 import request as join_group
    from kio.schema.offset_commit.v7 import request as offset_commit
    from kio.schema.offset_fetch.v5 import request as offset_fetch

    create(admin, "coordinated", 1, 3)
    wait_until(lambda: admin.list_topics("__consumer_offsets", timeout=5).topics["__consumer_offsets"].partitions[0].leader > 0,
               15, message="a group coordinator")
    coordinator = admin.list_topics("__consumer_offsets", timeout=5).topics["__consumer_offsets"].partitions[0].leader
    join = join_group.JoinGroupRequest(group_id="g", session_timeout=timedelta(seconds=6), rebalance_timeout=timedelta(seconds=6), member_id="",
                                       group_instance_id=None, protocol_type="consumer",
                                       protocols=(join_group.JoinGroupRequestProtocol(name="range", metadata=b""),))
    commit = offset_commit.OffsetCommitRequest(group_id="g", generation_id_or_member_epoch=-1, member_id="",
                                               group_instance_id=None, topics=(offset_commit.OffsetCommitRequestTopic(
                                                   name="coordinated", partitions=(offset_commit.OffsetCommitRequestPartition(
                                                       partition_index=0, committed_offset=5, committed_metadata=None),)),))
    fetch = offset_fetch.OffsetFetchRequest(group_id="g", topics=None)
    beat = heartbeat.HeartbeatRequest(group_id="g", generation_id=1, member_id="m", group_instance_id=None)
    for node_id, broker in cluster.brokers.items():
        if node_id == coordinator:
            continue
        assert raw_request(broker.port, 11, 5, join).error_code == ErrorCode.not_coordinator
        assert raw_request(broker.port, 8, 7, commit).topics[0].partitions[0].error_code == ErrorCode.not_coordinator
        assert raw_request(broker.port, 9, 5, fetch).error_code == ErrorCode.not_coordinator
        assert raw_request(broker.port, 12, 3, beat).error_code == ErrorCode.not_coordinator
    # The coordinator itself takes the commit, and every broker's FindCoordinator names it.
    port = cluster.brokers[coordinator].port
    assert raw_request(port, 8, 7, commit).topics[0].partitions[0].error_code == ErrorCode.none
    fetched = raw_request(port, 9, 5, fetch)
    assert fetched.error_code == ErrorCode.none and fetched.topics[0].partitions[0].committed_offset == 5


def test_topic_config_change_reaches_every_replica(cluster, admin):
    """AlterConfigs is served by one broker; the open logs of the others take the new config too."""
    from confluent_kafka.admin import ConfigResource

    create(admin, "reconfigured", 1, 3)
    resource = ConfigResource("topic", "reconfigured", set_config={"segment.bytes": "2000"})
    admin.alter_configs([resource])[resource].result(10)
    producer = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all", "linger.ms": 0})
    for _ in range(30):
        producer.produce("reconfigured", value=b"x" * 500)
        producer.flush(10)

    def segments(node_id):
        return len(list((cluster.brokers[node_id].data_dir / "reconfigured-0").glob("*.log")))

    wait_until(lambda: all(segments(n) >= 3 for n in cluster.brokers), 15, message="every replica rolled at 2000 bytes")


def test_one_topic_created_on_every_broker_at_once_is_made_once_and_replicated(cluster, admin):
    """Three brokers asked at the same moment to create the same topic: one creation wins, the
    others answer TOPIC_ALREADY_EXISTS, and the losers keep the logs the winner's topic puts on
    them (they had removed them under a replica already following the winner's leader, whose
    fetcher then failed on a closed log forever and left the ISR)."""
    import asyncio

    import kio.schema.create_topics.v4.request as create_topics

    names = [f"raced-{i}" for i in range(8)]

    async def create_everywhere(name: str) -> list[int]:
        async def ask(port: int) -> int:
            channel = BrokerChannel("127.0.0.1", port, "test")
            try:
                request = create_topics.CreateTopicsRequest(
                    topics=(create_topics.CreatableTopic(name=name, num_partitions=3, replication_factor=3,
                                                         assignments=(), configs=()),),
                    timeout=timedelta(seconds=10), validate_only=False)
                return (await channel.request(19, 4, request, 10)).topics[0].error_code
            finally:
                channel.close()

        return list(await asyncio.gather(*(ask(b.port) for b in cluster.brokers.values())))

    async def race() -> list[list[int]]:
        return [await create_everywhere(name) for name in names]

    for name, errors in zip(names, asyncio.run(race())):
        assert sorted(errors) == [ErrorCode.none, ErrorCode.topic_already_exists, ErrorCode.topic_already_exists], (name, errors)
    for name in names:
        wait_until(lambda: all(p.leader > 0 and len(p.isrs) == 3
                               for p in admin.list_topics(name, timeout=5).topics[name].partitions.values()),
                   15, message=f"{name} led with a full ISR")
    producer = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all", "log_level": 0})
    for name in names:
        for partition in range(3):
            producer.produce(name, b"v", partition=partition)
    undelivered = producer.flush(30)
    del producer  # librdkafka's producer has no close(): destroyed here, not after the cluster stops
    assert undelivered == 0
    assert "is closed" not in cluster.logs(), cluster.logs()


def test_a_topic_a_broker_has_not_seen_yet_is_leader_not_available_to_an_auto_creating_metadata(cluster):
    """A Metadata request that may auto-create a topic another broker has just created, answered
    before this broker's etcd watch shows the topic: its create attempt loses to the existing topic,
    and the answer is LEADER_NOT_AVAILABLE (what Kafka answers while a topic is being created;
    clients retry it), never TOPIC_ALREADY_EXISTS, which Kafka never puts in Metadata (it did: a
    CI run's admin saw the topic with that error and no partitions right after creating it).
    The lagging broker is made deterministic: stopped (SIGSTOP) with the Metadata request already
    in its socket, resumed once the topic exists, so it reads the request before the watch event."""
    import asyncio

    import kio.schema.create_topics.v4.request as create_topics
    from kio.schema.metadata.v12 import request as metadata_request

    creator, lagging = cluster.brokers[1], cluster.brokers[2]

    async def ask(name: str):
        to_creator = BrokerChannel("127.0.0.1", creator.port, "test")
        to_lagging = BrokerChannel("127.0.0.1", lagging.port, "test")
        try:
            await to_lagging.request(3, 12, metadata_request.MetadataRequest(
                topics=(), allow_auto_topic_creation=False, include_topic_authorized_operations=False), 10)
            lagging.pause()
            try:
                pending = asyncio.ensure_future(to_lagging.request(3, 12, metadata_request.MetadataRequest(
                    topics=(metadata_request.MetadataRequestTopic(topic_id=None, name=name),),
                    allow_auto_topic_creation=True, include_topic_authorized_operations=False), 10))
                await asyncio.sleep(0.05)  # written into the stopped broker's socket
                created = await to_creator.request(19, 4, create_topics.CreateTopicsRequest(
                    topics=(create_topics.CreatableTopic(name=name, num_partitions=1, replication_factor=1,
                                                         assignments=(), configs=()),),
                    timeout=timedelta(seconds=10), validate_only=False), 10)
                assert created.topics[0].error_code == ErrorCode.none, created
            finally:
                lagging.resume()
            return (await pending).topics[0]
        finally:
            to_creator.close()
            to_lagging.close()

    answers = [asyncio.run(ask(f"seen-late-{n}")) for n in range(3)]
    # Were the watch event read first, the topic would be complete: allowed, but not every time.
    assert all(t.error_code == ErrorCode.leader_not_available and not t.partitions
               or t.error_code == ErrorCode.none and len(t.partitions) == 1 for t in answers), answers
    assert any(t.error_code == ErrorCode.leader_not_available for t in answers), answers
