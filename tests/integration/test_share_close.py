"""A share consumer's close: the acknowledgements it sends as it closes count, even when its
leave (ShareGroupHeartbeat with member epoch -1, to the coordinator) is handled first.
librdkafka sends the final ShareAcknowledge and the leave at the same moment on two connections;
the broker used to close the member's share session at the leave, so the acknowledgements were
refused with SHARE_SESSION_NOT_FOUND and every record of the last poll was delivered again to
another consumer. As in Kafka, the share session is closed by its own final request (or its
connection closing, or the record locks expiring), not by the group membership."""

from __future__ import annotations

import datetime
import uuid

from confluent_kafka import AcknowledgeType
from kio.schema.describe_share_group_offsets.v1 import request as describe_offsets
from kio.schema.metadata.v12 import request as metadata_request
from kio.schema.share_acknowledge.v1 import request as ack_request
from kio.schema.share_fetch.v1 import request as fetch_request
from kio.schema.share_group_heartbeat.v1.request import ShareGroupHeartbeatRequest

from tests.brokerproc import wait_until
from tests.integration.sasl_requests import KafkaConnection
from tests.integration.share_clients import create_topic, produce_values, share_consumer, wait_members
from tidelog.protocol.errors import ErrorCode

ACCEPT = 1


def _topic_id(connection: KafkaConnection, topic: str) -> uuid.UUID:
    answer = connection.request(3, 12, metadata_request.MetadataRequest(
        topics=(metadata_request.MetadataRequestTopic(topic_id=None, name=topic),),
        allow_auto_topic_creation=False, include_topic_authorized_operations=False))
    return answer.topics[0].topic_id


def _heartbeat(connection: KafkaConnection, group: str, member: str, epoch: int, topics=None):
    return connection.request(76, 1, ShareGroupHeartbeatRequest(
        group_id=group, member_id=member, member_epoch=epoch, rack_id=None, subscribed_topic_names=topics))


def _share_fetch(connection: KafkaConnection, group: str, member: str, topic_id: uuid.UUID, epoch: int):
    return connection.request(78, 1, fetch_request.ShareFetchRequest(
        group_id=group, member_id=member, share_session_epoch=epoch, max_wait=datetime.timedelta(milliseconds=500),
        min_bytes=1, max_bytes=1 << 20, max_records=100, batch_size=100,
        topics=(fetch_request.FetchTopic(topic_id=topic_id, partitions=(
            fetch_request.FetchPartition(partition_index=0, acknowledgement_batches=()),)),),
        forgotten_topics_data=()))


def start_offset(connection: KafkaConnection, group: str, topic: str) -> int:
    """The share-partition start offset: every record below it is acknowledged (or archived)."""
    [answer] = connection.request(90, 1, describe_offsets.DescribeShareGroupOffsetsRequest(groups=(
        describe_offsets.DescribeShareGroupOffsetsRequestGroup(group_id=group, topics=(
            describe_offsets.DescribeShareGroupOffsetsRequestTopic(topic_name=topic, partitions=(0,)),)),))).groups
    [partition] = answer.topics[0].partitions
    assert partition.error_code == 0, answer
    return partition.start_offset


def test_a_final_acknowledgement_after_the_leave_is_applied(broker):
    create_topic(broker.bootstrap, "closing", 1)
    member = str(uuid.uuid4())
    with KafkaConnection(broker.bootstrap) as fetcher, KafkaConnection(broker.bootstrap) as coordinator:
        topic_id = _topic_id(fetcher, "closing")
        assert _heartbeat(coordinator, "closers", member, 0, ("closing",)).error_code == 0
        opened = _share_fetch(fetcher, "closers", member, topic_id, 0)  # the session; the share-partition starts at the log end
        assert opened.error_code == 0, opened
        produce_values(broker.bootstrap, "closing", 5, 1)
        acquired: list[tuple[int, int]] = []
        epoch = 1

        def fetched() -> bool:
            nonlocal epoch
            answer = _share_fetch(fetcher, "closers", member, topic_id, epoch)
            epoch += 1
            assert answer.error_code == 0, answer
            acquired.extend((r.first_offset, r.last_offset) for t in answer.responses for p in t.partitions
                            for r in p.acquired_records)
            return sum(last - first + 1 for first, last in acquired) >= 5
        wait_until(fetched, 20, message="the five records acquired")
        assert sorted(acquired)[0][0] == 0 and max(last for _, last in acquired) == 4

        # The leave reaches the coordinator first; the close's acknowledgements come after it.
        assert _heartbeat(coordinator, "closers", member, -1).error_code == 0
        closed = fetcher.request(79, 1, ack_request.ShareAcknowledgeRequest(
            group_id="closers", member_id=member, share_session_epoch=-1, topics=(ack_request.AcknowledgeTopic(
                topic_id=topic_id, partitions=(ack_request.AcknowledgePartition(partition_index=0, acknowledgement_batches=(
                    ack_request.AcknowledgementBatch(first_offset=0, last_offset=4, acknowledge_types=(ACCEPT,)),)),)),)))
        assert closed.error_code == 0, closed
        assert [p.error_code for t in closed.responses for p in t.partitions] == [0], closed
        assert start_offset(coordinator, "closers", "closing") == 5  # all five acknowledged, none to deliver again
        # The session is closed: another final request finds none.
        again = _share_fetch(fetcher, "closers", member, topic_id, -1)
        assert again.error_code == ErrorCode.share_session_not_found, again


def test_a_share_consumer_that_closes_commits_its_pending_acknowledgements(broker):
    """confluent-kafka's ShareConsumer in explicit mode: acknowledgements recorded and not yet sent
    go with its close (Kafka's KafkaShareConsumer.close: 'attempts to commit any pending
    acknowledgements and releases any remaining acquired records'), which librdkafka sends beside
    the leave. Before the fix all 50 came back; in implicit mode a close releases what the last
    poll delivered, which is right and not tested here."""
    create_topic(broker.bootstrap, "closing-client", 1)
    consumer = share_consumer(broker.bootstrap, "client-closers", ["closing-client"],
                              **{"share.acknowledgement.mode": "explicit"})
    try:
        wait_members(broker, "client-closers", 1, [consumer])
        values = produce_values(broker.bootstrap, "closing-client", 50, 1)
        got: list[bytes] = []

        def polled() -> bool:
            for message in consumer.poll(0.5):
                assert message.error() is None, message.error()
                got.append(message.value())
                consumer.acknowledge(message, AcknowledgeType.ACCEPT)  # sent by the close
            return len(got) >= 50
        wait_until(polled, 30, message="the 50 records delivered")
        assert sorted(got) == sorted(values)
    finally:
        consumer.close()
    with KafkaConnection(broker.bootstrap) as connection:
        wait_until(lambda: start_offset(connection, "client-closers", "closing-client") == 50, 15,
                   message="the 50 records acknowledged by the close")
