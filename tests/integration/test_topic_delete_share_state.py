"""Deleting a topic removes every share group's state of its partitions (``__share_group_state``
tombstones, as Kafka 4's share-group state deletion on topic deletion): DescribeShareGroupOffsets,
``tidelog share-groups describe``, the HTTP view and the metrics no longer show it, a restart
keeps it gone, and a topic created again under the name starts with no share-partition state.
confluent-kafka's ShareConsumer acknowledges, kafka-python deletes and recreates the topic."""

from __future__ import annotations

import json

from kafka.admin import KafkaAdminClient, NewTopic
from kio.schema.describe_share_group_offsets.v1 import request as describe_request

from tests.integration.share_clients import create_topic, metric, produce_values, request, share_consumer, wait_for, wait_members
from tests.integration.test_cli import ok
from tests.integration.test_http_api import HttpApi


def share_offsets(bootstrap: str, group_id: str, topics: list[str] | None = None) -> dict[tuple[str, int], int]:
    """DescribeShareGroupOffsets v1: {(topic, partition): start offset} (every share-partition when
    ``topics`` is None)."""
    wanted = None if topics is None else tuple(
        describe_request.DescribeShareGroupOffsetsRequestTopic(topic_name=t, partitions=(0, 1)) for t in topics)
    response = request(bootstrap, 90, 1, describe_request.DescribeShareGroupOffsetsRequest(groups=(
        describe_request.DescribeShareGroupOffsetsRequestGroup(group_id=group_id, topics=wanted),)))
    [group] = response.groups
    assert group.error_code == 0, group
    return {(t.topic_name, p.partition_index): p.start_offset for t in group.topics for p in t.partitions}


def test_deleting_a_topic_removes_its_share_group_state(broker):
    bootstrap = broker.bootstrap
    create_topic(bootstrap, "orders", 2)
    create_topic(bootstrap, "kept", 1)
    consumer = share_consumer(bootstrap, "pickers", ["orders", "kept"])
    try:
        wait_members(broker, "pickers", 1, [consumer])
        produce_values(bootstrap, "orders", 6, 2)
        produce_values(bootstrap, "kept", 2, 1)
        seen: list = []
        wait_for(lambda: len(seen) >= 8, 30, "8 records",
                 lambda: seen.extend(m for m in consumer.poll(0.2) if m.error() is None))
        consumer.commit_sync(30)
        wait_for(lambda: share_offsets(bootstrap, "pickers") == {("orders", 0): 3, ("orders", 1): 3, ("kept", 0): 2},
                 30, "every share-partition's state", lambda: consumer.poll(0.1))
    finally:
        consumer.close()

    http = HttpApi(broker)  # (made first: loading its schema took ~1 s the first time, which hid the race below)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.delete_topics(["orders"], timeout_ms=15000)
        # The state goes in the background after DeleteTopics answers (tombstones one share-partition
        # after the other). DescribeShareGroupOffsets leaves out a deleted topic's ids at once, so it
        # cannot tell when that is done; the counter is counted once every tombstone is durable.
        wait_for(lambda: metric(broker, "tidelog_deleted_topic_offsets_total", kind="share") == 2, 30,
                 "the deleted topic's share-partition state to be removed")
        assert share_offsets(bootstrap, "pickers") == {("kept", 0): 2}
        described = http.call("GET", "/share-groups/{group}", 200, group="pickers")
        assert [(p["topic"], p["partition"]) for p in described["partitions"]] == [("kept", 0)]
        described = json.loads(ok("share-groups", "describe", "pickers", "--json", broker=broker))
        assert [(o["topic"], o["partition"], o["start_offset"]) for o in described["offsets"]] == [("kept", 0, 2)]
        assert "topic orders deleted: removed the share-partition state of 1 share groups (2 partitions)" in broker.log()

        admin.create_topics([NewTopic("orders", 2, 1)], timeout_ms=15000)
        wait_for(lambda: share_offsets(bootstrap, "pickers", ["orders"]) == {("orders", 0): -1, ("orders", 1): -1},
                 15, "the topic made again to have no state")
    finally:
        admin.close()
    broker.kill()
    broker.start()
    assert share_offsets(bootstrap, "pickers") == {("kept", 0): 2}
