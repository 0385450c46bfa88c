"""The admin side of share groups over real sockets: kafka-python lists (types filter), describes and
deletes them and sets their configs on the GROUP resource; ShareGroupDescribe and the share offsets
APIs (which neither Python client has) as raw requests; dead-letter topics (KIP-1191) with
confluent-kafka's ShareConsumer rejecting and releasing, read back with kafka-python."""

from __future__ import annotations

import datetime

import pytest
from confluent_kafka import AcknowledgeType
from kafka import KafkaConsumer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient
from kio.schema.alter_share_group_offsets.v0 import request as alter_request
from kio.schema.delete_share_group_offsets.v0 import request as delete_request
from kio.schema.describe_share_group_offsets.v1 import request as describe_request
from kio.schema.share_group_describe.v1.request import ShareGroupDescribeRequest

from tests.integration.share_clients import (
    LOW_LIMIT,
    create_topic,
    metric,
    produce_values,
    request,
    share_consumer,
    wait_for,
    wait_members,
)


def _offsets(bootstrap: str, group_id: str) -> dict[int, tuple[int, int]]:
    """DescribeShareGroupOffsets v1 of every share-partition of the group: {partition: (start, lag)}."""
    response = request(bootstrap, 90, 1, describe_request.DescribeShareGroupOffsetsRequest(groups=(
        describe_request.DescribeShareGroupOffsetsRequestGroup(group_id=group_id, topics=None),)))
    [group] = response.groups
    assert group.error_code == 0, group
    return {p.partition_index: (p.start_offset, p.lag) for t in group.topics for p in t.partitions}


def _group_config(admin: KafkaAdminClient, group_id: str, **configs) -> dict:
    resource = ConfigResource(ConfigResourceType.GROUP, group_id, configs=configs)
    return admin.alter_configs([resource], incremental=True)["group"][group_id]


def test_list_describe_offsets_alter_and_delete_a_share_group(broker):
    create_topic(broker.bootstrap, "ledger", 2)
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    consumer = share_consumer(broker.bootstrap, "auditors", ["ledger"])
    try:
        wait_members(broker, "auditors", 1, [consumer])
        produce_values(broker.bootstrap, "ledger", 10, 2)
        seen: list = []

        def poll():
            seen.extend(m for m in consumer.poll(0.2) if m.error() is None)
        wait_for(lambda: len(seen) >= 10, 30, "10 records", poll)
        consumer.commit_sync(30)
        listed = admin.list_groups(types_filter=["share"])
        assert [(g["group_id"], g["group_type"], g["protocol_type"], g["group_state"]) for g in listed] == [
            ("auditors", "share", "share", "Stable")]
        assert admin.list_groups(types_filter=["consumer"]) == []
        described = admin.describe_groups(["auditors"])["auditors"]
        assert (described["group_state"], described["protocol_type"], len(described["members"])) == ("Stable", "share", 1)
        [group] = request(broker.bootstrap, 77, 1, ShareGroupDescribeRequest(
            group_ids=("auditors",), include_authorized_operations=False)).groups
        assert (group.error_code, group.group_state, group.assignor_name) == (0, "Stable", "simple")
        [member] = group.members
        assert member.subscribed_topic_names == ("ledger",)
        assert [(t.topic_name, t.partitions) for t in member.assignment.topic_partitions] == [("ledger", (0, 1))]
        wait_for(lambda: _offsets(broker.bootstrap, "auditors") == {0: (5, 0), 1: (5, 0)}, 30,
                 "start offsets past the acknowledged records")
        # Offsets of a group with members cannot be altered.
        alter = alter_request.AlterShareGroupOffsetsRequest(group_id="auditors", topics=(
            alter_request.AlterShareGroupOffsetsRequestTopic(topic_name="ledger", partitions=(
                alter_request.AlterShareGroupOffsetsRequestPartition(partition_index=0, start_offset=2),)),))
        assert request(broker.bootstrap, 91, 0, alter).error_code == 68  # NON_EMPTY_GROUP
    finally:
        consumer.close()
    wait_for(lambda: admin.list_groups(types_filter=["share"])[0]["group_state"] == "Empty", 30, "an empty group")
    response = request(broker.bootstrap, 91, 0, alter)
    assert response.error_code == 0 and response.responses[0].partitions[0].error_code == 0
    assert _offsets(broker.bootstrap, "auditors") == {0: (2, 3), 1: (5, 0)}  # 3 records to deliver again
    response = request(broker.bootstrap, 92, 0, delete_request.DeleteShareGroupOffsetsRequest(
        group_id="auditors", topics=(delete_request.DeleteShareGroupOffsetsRequestTopic(topic_name="ledger"),)))
    assert response.error_code == 0 and response.responses[0].error_code == 0
    assert _offsets(broker.bootstrap, "auditors") == {}
    admin.delete_groups(["auditors"])  # raises on an error
    assert admin.list_groups(types_filter=["share"]) == []
    admin.close()


def test_group_configs_on_the_group_resource(broker_factory):
    broker = broker_factory({"group.share.max.record.lock.duration.ms": "60000"})
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    assert _group_config(admin, "tuned", **{"share.auto.offset.reset": "earliest",
                                            "share.record.lock.duration.ms": "20000"}) == "OK"
    refused = _group_config(admin, "tuned", **{"share.record.lock.duration.ms": "90000"})
    assert "InvalidConfigurationError" in refused and "group.share.max.record.lock.duration.ms" in refused
    assert "InvalidConfigurationError" in _group_config(admin, "tuned", **{"errors.deadletterqueue.topic.name": "x"})
    described = admin.describe_configs([ConfigResource(ConfigResourceType.GROUP, "tuned")])["group"]["tuned"]
    assert described["share.auto.offset.reset"]["value"] == "earliest"
    assert described["share.record.lock.duration.ms"]["value"] == "20000"
    # earliest: a group reads what was produced before its first member
    create_topic(broker.bootstrap, "backlog", 1)
    values = produce_values(broker.bootstrap, "backlog", 5, 1)
    consumer = share_consumer(broker.bootstrap, "tuned", ["backlog"])
    try:
        seen: list = []
        wait_for(lambda: {m.value() for m in seen} == values, 30, "the backlog",
                 lambda: seen.extend(m for m in consumer.poll(0.2) if m.error() is None))
    finally:
        consumer.close()
    admin.close()


@pytest.mark.parametrize("copy_record", [True, False])
def test_rejected_and_undeliverable_records_are_dead_lettered(broker_factory, copy_record):
    broker = broker_factory(LOW_LIMIT)
    create_topic(broker.bootstrap, "orders", 1)
    create_topic(broker.bootstrap, "dlq.orders", 1, {"errors.deadletterqueue.group.enable": "true"})
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    assert _group_config(admin, "pickers", **{"errors.deadletterqueue.topic.name": "dlq.orders",
                                              "errors.deadletterqueue.copy.record.enable": str(copy_record).lower()}) == "OK"
    consumer = share_consumer(broker.bootstrap, "pickers", ["orders"], **{"share.acknowledgement.mode": "explicit"})
    try:
        wait_members(broker, "pickers", 1, [consumer])
        produce_values(broker.bootstrap, "orders", 1, 1, prefix="poison-")
        produce_values(broker.bootstrap, "orders", 1, 1, prefix="flaky-")
        deliveries: list = []

        def poll():
            for message in consumer.poll(0.2):
                deliveries.append((message.value(), message.delivery_count()))
                kind = AcknowledgeType.REJECT if message.value().startswith(b"poison") else AcknowledgeType.RELEASE
                consumer.acknowledge(message, kind)
            consumer.commit_sync(30)
        wait_for(lambda: metric(broker, "tidelog_share_group_records_total", group="pickers", event="dead_lettered") == 2,
                 60, "two dead letters", poll)
        assert deliveries.count((b"poison-0", 1)) == 1 and [c for v, c in deliveries if v == b"flaky-0"] == [1, 2, 3]
    finally:
        consumer.close()
    reader = KafkaConsumer(bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=10_000)
    reader.assign([TopicPartition("dlq.orders", 0)])
    letters = []
    for record in reader:
        letters.append(record)
        if len(letters) == 2:
            break
    reader.close()
    admin.close()
    by_reason = {dict(r.headers)["__dlq.errors.reason"]: r for r in letters}
    assert set(by_reason) == {b"rejected", b"delivery_limit"}
    for reason, offset, count, value in ((b"rejected", b"0", b"1", b"poison-0"), (b"delivery_limit", b"1", b"3", b"flaky-0")):
        headers = dict(by_reason[reason].headers)
        assert (headers["__dlq.errors.topic"], headers["__dlq.errors.partition"], headers["__dlq.errors.offset"],
                headers["__dlq.errors.group.id"], headers["__dlq.errors.delivery.count"]) == (
            b"orders", b"0", offset, b"pickers", count)
        assert by_reason[reason].value == (value if copy_record else None)


def test_share_fetch_with_an_unknown_acquire_mode_is_invalid_request(broker):
    """A ShareFetch v2 whose ShareAcquireMode is neither 0 nor 1 gets INVALID_REQUEST (the handler
    once failed on it and closed the connection with an ERROR)."""
    from kio.schema.share_fetch.v2 import request as fetch_request

    body = fetch_request.ShareFetchRequest(
        group_id="g", member_id="m", share_session_epoch=0, max_wait=datetime.timedelta(0), min_bytes=1,
        max_bytes=1 << 20, max_records=10, batch_size=10, share_acquire_mode=-128, is_renew_ack=False, topics=(),
        forgotten_topics_data=())
    response = request(broker.bootstrap, 78, 2, body)
    assert response.error_code == 42  # INVALID_REQUEST
    assert " ERROR " not in broker.log()
