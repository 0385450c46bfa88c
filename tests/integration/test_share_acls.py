"""ACLs on the share-group APIs (issue 16), as Kafka's KafkaApis checks them: ShareGroupHeartbeat
READ on the group and DESCRIBE on each subscribed topic, ShareFetch and ShareAcknowledge READ on
each topic (named by id, answered TOPIC_AUTHORIZATION_FAILED per partition), ShareGroupDescribe
DESCRIBE per group, DescribeShareGroupOffsets DESCRIBE on the group and its topics,
Alter/DeleteShareGroupOffsets READ on each topic. With confluent-kafka's ShareConsumer and raw
requests as an authenticated user."""

from __future__ import annotations

import datetime
import uuid

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient
from kio.schema.alter_share_group_offsets.v0 import request as alter_request
from kio.schema.delete_share_group_offsets.v0 import request as delete_request
from kio.schema.describe_share_group_offsets.v1 import request as describe_offsets
from kio.schema.share_acknowledge.v1 import request as ack_request
from kio.schema.share_fetch.v1 import request as fetch_request
from kio.schema.share_group_describe.v1.request import ShareGroupDescribeRequest
from kio.schema.share_group_heartbeat.v1.request import ShareGroupHeartbeatRequest

from tests.brokerproc import wait_until
from tests.integration.sasl_requests import SaslConnection
from tests.integration.share_clients import produce_values, share_consumer
from tests.integration.test_acls import add_users_and_acls, start_acl_broker, user
from tests.integration.test_sasl import SECRET

TOPIC_DENIED, GROUP_DENIED = 29, 30


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    """alice: READ on topics q- and groups share-; carol: DESCRIBE (not READ) on q-1, READ on
    groups share-; dave: READ and DELETE on groups share-, nothing on topics; erin: READ on q-1 only."""
    broker = start_acl_broker(tmp_path_factory.mktemp("share-acls") / "data")
    try:
        admin = f"127.0.0.1:{broker.listener_ports['ADMIN']}"
        add_users_and_acls(broker, ("alice", "carol", "dave", "erin"), (
            ("q-", "--topic", "--prefixed", "--principal", "User:alice", "--operation", "read"),
            ("share-", "--group", "--prefixed", "--principal", "User:alice", "--operation", "read"),
            ("q-1", "--topic", "--principal", "User:carol", "--operation", "describe"),
            ("share-", "--group", "--prefixed", "--principal", "User:carol", "--operation", "read"),
            ("share-", "--group", "--prefixed", "--principal", "User:dave", "--operation", "read"),
            ("share-", "--group", "--prefixed", "--principal", "User:dave", "--operation", "delete"),
            ("q-1", "--topic", "--principal", "User:erin", "--operation", "read"),
        ))
        topics = AdminClient({"bootstrap.servers": admin})
        topics.create_topics([NewTopic("q-1", 1)])["q-1"].result(15)
        configs = KafkaAdminClient(bootstrap_servers=admin)
        for group in ("share-alice", "share-carol", "share-raw"):
            configs.alter_configs([ConfigResource(ConfigResourceType.GROUP, group,
                                                  configs={"share.auto.offset.reset": "earliest"})], incremental=True)
        configs.close()
        produce_values(admin, "q-1", 5, 1)
        broker.admin_bootstrap = admin
        yield broker
    finally:
        broker.stop()


def _sasl_bootstrap(broker) -> str:
    return f"127.0.0.1:{broker.listener_ports['SASL_PLAINTEXT']}"


def _topic_id(broker) -> uuid.UUID:
    from kio.schema.metadata.v12 import request as metadata_request

    with _connect(broker, "alice") as alice:
        answer = alice.request(3, 12, metadata_request.MetadataRequest(
            topics=(metadata_request.MetadataRequestTopic(topic_id=None, name="q-1"),),
            allow_auto_topic_creation=False, include_topic_authorized_operations=False))
    return answer.topics[0].topic_id


def _connect(broker, name: str) -> SaslConnection:
    return SaslConnection(_sasl_bootstrap(broker), name, SECRET)


def test_share_consumer_reads_with_read_on_the_topic_and_gets_nothing_without(broker):
    alice = share_consumer(_sasl_bootstrap(broker), "share-alice", ["q-1"], **user(broker, "alice"))
    try:
        seen: list = []
        wait_until(lambda: seen.extend(m.value() for m in alice.poll(0.5) if m.error() is None) or len(seen) >= 5,
                   message="alice's five records")
    finally:
        alice.close()
    # carol may describe q-1 (her heartbeat is served and she gets the partition) but not read it:
    # every ShareFetch answers the partition TOPIC_AUTHORIZATION_FAILED, which librdkafka raises
    # from poll; no record reaches her.
    carol = share_consumer(_sasl_bootstrap(broker), "share-carol", ["q-1"], **user(broker, "carol"))
    try:
        def refused() -> bool:
            try:
                for message in carol.poll(0.2):
                    assert message.error() is not None, "a consumer without READ on the topic got a record"
            except KafkaException as e:
                assert e.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, e
                return True
            return False
        wait_until(refused, message="carol's share fetch refused")
    finally:
        carol.close()
    assert ("Principal = User:carol is Denied operation = READ from host = 127.0.0.1 on resource = "
            "Topic:LITERAL:q-1") in broker.log()


def _heartbeat(connection: SaslConnection, group: str, member: str, topics=("q-1",)):
    return connection.request(76, 1, ShareGroupHeartbeatRequest(
        group_id=group, member_id=member, member_epoch=0, rack_id=None, subscribed_topic_names=topics))


def _fetch(connection: SaslConnection, group: str, member: str, topic_id: uuid.UUID, epoch: int = 0, acks=()):
    partition = fetch_request.FetchPartition(partition_index=0, acknowledgement_batches=acks)
    return connection.request(78, 1, fetch_request.ShareFetchRequest(
        group_id=group, member_id=member, share_session_epoch=epoch, max_wait=datetime.timedelta(milliseconds=500),
        min_bytes=1, max_bytes=1 << 20, max_records=10, batch_size=10,
        topics=(fetch_request.FetchTopic(topic_id=topic_id, partitions=(partition,)),), forgotten_topics_data=()))


def _acknowledge(connection: SaslConnection, group: str, member: str, topic_id: uuid.UUID, epoch: int):
    batch = ack_request.AcknowledgementBatch(first_offset=0, last_offset=0, acknowledge_types=(1,))
    return connection.request(79, 1, ack_request.ShareAcknowledgeRequest(
        group_id=group, member_id=member, share_session_epoch=epoch, topics=(ack_request.AcknowledgeTopic(
            topic_id=topic_id, partitions=(ack_request.AcknowledgePartition(
                partition_index=0, acknowledgement_batches=(batch,)),)),)))


def _partition_errors(response) -> list[tuple[int, int]]:
    return [(p.error_code, p.acknowledge_error_code if hasattr(p, "acknowledge_error_code") else None)
            for t in response.responses for p in t.partitions]


def test_share_fetch_and_acknowledge_need_read_on_each_topic(broker):
    topic_id = _topic_id(broker)
    member = str(uuid.uuid4())
    with _connect(broker, "carol") as carol:
        fetched = _fetch(carol, "share-raw", member, topic_id)
        assert fetched.error_code == 0 and _partition_errors(fetched) == [(TOPIC_DENIED, 0)], fetched
        assert b"".join(p.records or b"" for t in fetched.responses for p in t.partitions) == b""
        acknowledged = _acknowledge(carol, "share-raw", member, topic_id, 1)
        assert acknowledged.error_code == 0, acknowledged
        assert [p.error_code for t in acknowledged.responses for p in t.partitions] == [TOPIC_DENIED]
        # in a ShareFetch too, before any fetch
        piggybacked = _fetch(carol, "share-raw", member, topic_id, epoch=2, acks=(fetch_request.AcknowledgementBatch(
            first_offset=0, last_offset=0, acknowledge_types=(1,)),))
        assert _partition_errors(piggybacked) == [(TOPIC_DENIED, TOPIC_DENIED)], piggybacked
    with _connect(broker, "erin") as erin:  # READ on q-1, not on the group: refused as a whole
        assert _fetch(erin, "share-raw", member, topic_id).error_code == GROUP_DENIED
    with _connect(broker, "alice") as alice:  # READ on both: served
        other = str(uuid.uuid4())
        assert _partition_errors(_fetch(alice, "share-raw", other, topic_id))[0][0] == 0
        assert [p.error_code for t in _acknowledge(alice, "share-raw", other, topic_id, 1).responses
                for p in t.partitions] != [TOPIC_DENIED]


def test_heartbeat_needs_describe_on_each_subscribed_topic(broker):
    with _connect(broker, "dave") as dave:
        assert _heartbeat(dave, "share-dave", str(uuid.uuid4())).error_code == TOPIC_DENIED
    with _connect(broker, "carol") as carol:
        assert _heartbeat(carol, "share-carol2", str(uuid.uuid4())).error_code == 0
    with _connect(broker, "erin") as erin:
        assert _heartbeat(erin, "share-erin", str(uuid.uuid4())).error_code == GROUP_DENIED


def test_share_group_describe_needs_describe_on_each_group(broker):
    with _connect(broker, "alice") as alice:
        assert _heartbeat(alice, "share-described", str(uuid.uuid4())).error_code == 0
        [group] = alice.request(77, 1, ShareGroupDescribeRequest(group_ids=("share-described",),
                                                                 include_authorized_operations=True)).groups
        assert group.error_code == 0 and len(group.members) == 1
        assert group.authorized_operations == (1 << 3) | (1 << 8)  # READ, and the DESCRIBE it implies
    with _connect(broker, "erin") as erin:
        [group] = erin.request(77, 1, ShareGroupDescribeRequest(group_ids=("share-described",),
                                                                include_authorized_operations=False)).groups
        assert (group.error_code, group.members) == (GROUP_DENIED, ())


def _describe_offsets(connection: SaslConnection, group: str, topics):
    [answer] = connection.request(90, 1, describe_offsets.DescribeShareGroupOffsetsRequest(groups=(
        describe_offsets.DescribeShareGroupOffsetsRequestGroup(group_id=group, topics=topics),))).groups
    return answer


def test_share_group_offsets_apis_check_the_group_and_each_topic(broker):
    with _connect(broker, "alice") as alice:
        member = str(uuid.uuid4())
        assert _heartbeat(alice, "share-offsets", member).error_code == 0
        wait_until(lambda: _describe_offsets(alice, "share-offsets", None).topics, message="the group's share-partition")
        assert [t.topic_name for t in _describe_offsets(alice, "share-offsets", None).topics] == ["q-1"]
        leave = alice.request(76, 1, ShareGroupHeartbeatRequest(group_id="share-offsets", member_id=member, member_epoch=-1,
                                                                rack_id=None, subscribed_topic_names=None))
        assert leave.error_code == 0  # an empty group: its offsets may be deleted
    named = (describe_offsets.DescribeShareGroupOffsetsRequestTopic(topic_name="q-1", partitions=(0,)),)
    with _connect(broker, "dave") as dave:  # the group, not the topic
        assert _describe_offsets(dave, "share-offsets", None).topics == ()  # left out
        [topic] = _describe_offsets(dave, "share-offsets", named).topics
        assert [(p.partition_index, p.error_code, p.start_offset) for p in topic.partitions] == [(0, TOPIC_DENIED, -1)]
        alter = dave.request(91, 0, alter_request.AlterShareGroupOffsetsRequest(group_id="share-empty", topics=(
            alter_request.AlterShareGroupOffsetsRequestTopic(topic_name="q-1", partitions=(
                alter_request.AlterShareGroupOffsetsRequestPartition(partition_index=0, start_offset=0),)),)))
        assert alter.error_code == 0 and [p.error_code for t in alter.responses for p in t.partitions] == [TOPIC_DENIED]
        delete = dave.request(92, 0, delete_request.DeleteShareGroupOffsetsRequest(group_id="share-offsets", topics=(
            delete_request.DeleteShareGroupOffsetsRequestTopic(topic_name="q-1"),)))
        assert delete.error_code == 0 and [t.error_code for t in delete.responses] == [TOPIC_DENIED], delete
    with _connect(broker, "erin") as erin:  # the topic, not the group
        assert _describe_offsets(erin, "share-offsets", None).error_code == GROUP_DENIED
