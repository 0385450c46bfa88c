"""AlterShareGroupOffsets (key 91, KIP-932).

Behaviour: moves an Empty share group's start offset on the named partitions: each share-partition
starts afresh there (nothing in flight) with a new state epoch, durable in
``__share_group_state`` before the answer. A group the broker does not know yet is created by
this (as a reset before its first member).
Versions: 0 (Kafka 4.2). Errors: top level NON_EMPTY_GROUP (members are connected),
GROUP_ID_NOT_FOUND (the id is a classic or consumer group), INVALID_GROUP_ID, NOT_COORDINATOR /
COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE (share state not loaded here); per
partition TOPIC_AUTHORIZATION_FAILED (no READ on the topic; READ on the group is checked before the
handler runs), UNKNOWN_TOPIC_OR_PARTITION, INVALID_REQUEST (a negative offset), and what the state
write failed with.
"""

from __future__ import annotations

import datetime

from tidelog.handlers.registry import RequestContext, handles
from tidelog.protocol.apis import build, response_module
from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.security.acl import AclOperation, ResourceType

API_KEY = 91


@handles(API_KEY)
async def handle(ctx: RequestContext, request) -> object:
    module = response_module(API_KEY, ctx.api_version)
    try:
        manager = await share_group_manager(ctx, request.group_id)
    except KafkaError as e:
        return build(module.AlterShareGroupOffsetsResponse, throttle_time=datetime.timedelta(0), error_code=e.error_code,
                     error_message=e.message, responses=())
    responses = []
    readable = ctx.access.authorized(AclOperation.READ, ResourceType.TOPIC, (t.topic_name for t in request.topics))
    for topic in request.topics:
        record = ctx.metadata.topics.get(topic.topic_name)
        rows = []
        for partition in topic.partitions:
            error, message = ErrorCode.none, None
            if topic.topic_name not in readable:
                error = ErrorCode.topic_authorization_failed
            elif record is None or not 0 <= partition.partition_index < record.partitions:
                error = ErrorCode.unknown_topic_or_partition
            elif partition.start_offset < 0:
                error, message = ErrorCode.invalid_request, f"Invalid start offset {partition.start_offset}."
            else:
                try:
                    await manager.alter_offsets(request.group_id,
                                                {(record.topic_id, partition.partition_index): partition.start_offset})
                except KafkaError as e:
                    error, message = e.error_code, e.message
            rows.append(build(module.AlterShareGroupOffsetsResponsePartition, partition_index=partition.partition_index,
                              error_code=error, error_message=message))
        responses.append(build(module.AlterShareGroupOffsetsResponseTopic, topic_name=topic.topic_name,
                               topic_id=record.topic_id if record is not None else None, partitions=tuple(rows)))
    return build(module.AlterShareGroupOffsetsResponse, throttle_time=datetime.timedelta(0), error_code=ErrorCode.none,
                 error_message=None, responses=tuple(responses))


async def share_group_manager(ctx: RequestContext, group_id: str):
    """The share manager, if the group may have its offsets changed here; else KafkaError."""
    if not group_id:
        raise KafkaError(ErrorCode.invalid_group_id, "The group id is empty.")
    error = ctx.group_coordinator_error()
    if error is not None:
        raise KafkaError(error, "This is not the group coordinator" if error is ErrorCode.not_coordinator
                         else "The coordinator is loading")
    if ctx.groups.registry.known(group_id):
        raise KafkaError(ErrorCode.group_id_not_found, f"Group {group_id} is not a share group.")
    manager = await ctx.shares.ensure_loaded()
    group = ctx.shares.group(group_id)
    if group is not None and group.members:
        raise KafkaError(ErrorCode.non_empty_group, f"Share group {group_id} has members: stop them first.")
    return manager
