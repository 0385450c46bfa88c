"""DeleteRecords (key 21).

Behaviour: for each partition, moves its log start offset (the low watermark) up to the given
offset; -1 means the high watermark (on a single node, the log end offset). Segments wholly
below the new start are deleted; consumers reading from "earliest" then start there. An offset
at or below the current start changes nothing. The result is the partition's low watermark.
An offset above the high watermark, or negative other than -1, is OFFSET_OUT_OF_RANGE; a topic
whose ``cleanup.policy`` lacks ``delete`` is POLICY_VIOLATION ("Records of partition ... can not
be deleted due to the configured policy"), as in Kafka; an unknown topic or partition is
UNKNOWN_TOPIC_OR_PARTITION. Failed partitions report low watermark -1. In a cluster only the
leader deletes (others answer NOT_LEADER_OR_FOLLOWER) up to its high watermark; followers move
their log start with the leader's as they fetch.
Versions: 0-2. Errors (per partition): OFFSET_OUT_OF_RANGE, POLICY_VIOLATION,
UNKNOWN_TOPIC_OR_PARTITION, KAFKA_STORAGE_ERROR, NOT_LEADER_OR_FOLLOWER.
"""

from __future__ import annotations

import datetime

from tidelog.handlers.registry import RequestContext, handles
from tidelog.protocol.apis import build, response_module
from tidelog.protocol.errors import ErrorCode, KafkaError

API_KEY = 21
INVALID_LOW_WATERMARK = -1


def delete_before(ctx: RequestContext, topic: str, partition: int, offset: int) -> int:
    """Apply one partition's deletion; return its new low watermark."""
    replica = ctx.replicas.get(topic, partition)
    if replica is None:
        raise KafkaError(ErrorCode.unknown_topic_or_partition, None)
    if "delete" not in str(ctx.topics.topic_value(topic, "cleanup.policy")).split(","):
        raise KafkaError(
            ErrorCode.policy_violation, f"Records of partition {topic}-{partition} can not be deleted due to the configured policy"
        )
    error = replica.leader_error()  # only the leader moves the log start; followers follow its fetch answers
    if error is not None:
        raise KafkaError(error, None)
    return replica.delete_records_before(offset)


@handles(API_KEY)
async def handle(ctx: RequestContext, request) -> object:
    module = response_module(API_KEY, ctx.api_version)
    topics = []
    for topic in request.topics:
        partitions = []
        for p in topic.partitions:
            try:
                low_watermark, error = delete_before(ctx, topic.name, p.partition_index, p.offset), ErrorCode.none
            except KafkaError as e:
                low_watermark, error = INVALID_LOW_WATERMARK, e.error_code
            partitions.append(
                build(module.DeleteRecordsPartitionResult, partition_index=p.partition_index, low_watermark=low_watermark, error_code=error)
            )
        topics.append(build(module.DeleteRecordsTopicResult, name=topic.name, partitions=tuple(partitions)))
    return build(module.DeleteRecordsResponse, throttle_time=datetime.timedelta(0), topics=tuple(topics))
