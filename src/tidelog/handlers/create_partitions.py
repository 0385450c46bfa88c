"""CreatePartitions (key 37).

Behaviour: grows a topic to ``count`` partitions: the new count is persisted in the metadata
store and the new partitions get empty logs, led by this ctx. Partition counts only grow:
the current count is INVALID_PARTITIONS ("Topic already has N partition(s)."), a lower one
INVALID_PARTITIONS ("... would not be an increase."), above 10000 INVALID_PARTITIONS. Manual
``assignments`` must list one replica set per new partition (else INVALID_REPLICA_ASSIGNMENT)
and name only this broker, once, as many times as the topic's replication factor (else
INVALID_REPLICA_ASSIGNMENT). A topic named twice is INVALID_REQUEST ("Duplicate topic name.");
an unknown topic UNKNOWN_TOPIC_OR_PARTITION. More partitions than the broker can hold
(``max.ctx.partitions``) is POLICY_VIOLATION, before anything is made; running out of
descriptors or disk part way removes the new partitions again: KAFKA_STORAGE_ERROR.
``validate_only`` checks and changes nothing.
Versions: 0-3. Errors (per topic): INVALID_PARTITIONS, INVALID_REPLICA_ASSIGNMENT,
INVALID_REQUEST, UNKNOWN_TOPIC_OR_PARTITION, POLICY_VIOLATION, KAFKA_STORAGE_ERROR.
"""

from __future__ import annotations

import collections
import datetime

from tidelog.handlers.registry import RequestContext, handles
from tidelog.protocol.apis import build, response_module
from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.security.acl import AclOperation, ResourceType

API_KEY = 37
MAX_PARTITIONS = 10000


def check_new_count(ctx: RequestContext, topic) -> None:
    record = ctx.metadata.topics.get(topic.name)
    if record is None:
        raise KafkaError(ErrorCode.unknown_topic_or_partition, "This server does not host this topic-partition.")
    current = record.partitions
    if topic.count == current:
        raise KafkaError(ErrorCode.invalid_partitions, f"Topic already has {current} partition(s).")
    if topic.count < current:
        raise KafkaError(
            ErrorCode.invalid_partitions,
            f"The topic {topic.name} currently has {current} partition(s); {topic.count} would not be an increase.",
        )
    if topic.count > MAX_PARTITIONS:
        raise KafkaError(ErrorCode.invalid_partitions, f"Number of partitions must be at most {MAX_PARTITIONS}, got {topic.count}.")
    additional = topic.count - current
    ctx.topics.check_partition_capacity(additional * record.replication_factor)
    if topic.assignments is None:
        return
    if len(topic.assignments) != additional:
        raise KafkaError(
            ErrorCode.invalid_replica_assignment,
            f"Attempted to add {additional} additional partition(s), but only {len(topic.assignments)} assignment(s) were specified.",
        )
    for assignment in topic.assignments:
        broker_ids = list(assignment.broker_ids)
        if not broker_ids:
            raise KafkaError(ErrorCode.invalid_replica_assignment, "The manual partition assignment includes an empty replica list.")
        if len(set(broker_ids)) != len(broker_ids):
            raise KafkaError(ErrorCode.invalid_replica_assignment, "The manual partition assignment includes a broker more than once.")
        for broker_id in broker_ids:
            if broker_id != ctx.node_id:
                raise KafkaError(
                    ErrorCode.invalid_replica_assignment,
                    f"The manual partition assignment includes broker {broker_id}, but no such broker is registered.",
                )
        if len(broker_ids) != record.replication_factor:
            raise KafkaError(
                ErrorCode.invalid_replica_assignment,
                f"The manual partition assignment includes a partition with {len(broker_ids)} replica(s), but this is not "
                f"consistent with previous partitions, which have {record.replication_factor} replica(s).",
            )


@handles(API_KEY)
async def handle(ctx: RequestContext, request) -> object:
    module = response_module(API_KEY, ctx.api_version)
    counts = collections.Counter(topic.name for topic in request.topics)
    results = []
    reported: set[str] = set()
    for topic in request.topics:
        error, message = ErrorCode.none, None
        if counts[topic.name] > 1:
            if topic.name in reported:
                continue
            reported.add(topic.name)
            error, message = ErrorCode.invalid_request, "Duplicate topic name."
        else:
            try:
                if not ctx.access.authorize(AclOperation.ALTER, ResourceType.TOPIC, topic.name):
                    raise KafkaError(ErrorCode.topic_authorization_failed, "Authorization failed.")
                check_new_count(ctx, topic)
                if not request.validate_only:
                    await ctx.topics.create_partitions(topic.name, topic.count)
            except KafkaError as e:
                error, message = e.error_code, e.message
        results.append(build(module.CreatePartitionsTopicResult, name=topic.name, error_code=error, error_message=message))
    return build(module.CreatePartitionsResponse, throttle_time=datetime.timedelta(0), results=tuple(results))
