"""OffsetDelete (key 47).

Behaviour: deletes a group's committed offsets for the given partitions (tombstones in
``__consumer_offsets``). Allowed for an Empty group, or for topics that no member of a
live group subscribes to (classic groups of protocol type "consumer"; KIP-848 consumer groups,
by name or by regex).
Versions: 0. Errors: GROUP_ID_NOT_FOUND, NON_EMPTY_GROUP (a live group whose subscriptions
cannot be read), INVALID_GROUP_ID; per partition GROUP_SUBSCRIBED_TO_TOPIC,
UNKNOWN_TOPIC_OR_PARTITION.
"""

from __future__ import annotations

import datetime

from tidelog.handlers.registry import RequestContext, handles
from tidelog.protocol.apis import build, response_module
from tidelog.protocol.errors import ErrorCode

API_KEY = 47


@handles(API_KEY)
async def handle(ctx: RequestContext, request) -> object:
    module = response_module(API_KEY, ctx.api_version)
    errors: dict[tuple[str, int], ErrorCode] = {}
    wanted: list[tuple[str, int]] = []
    for topic in request.topics:
        record = ctx.metadata.topics.get(topic.name)
        for p in topic.partitions:
            key = (topic.name, p.partition_index)
            if record is None or not 0 <= p.partition_index < record.partitions:
                errors[key] = ErrorCode.unknown_topic_or_partition
            else:
                wanted.append(key)
    if not request.group_id:
        error = ErrorCode.invalid_group_id
    elif ctx.group_coordinator_error() is not None:
        error = ctx.group_coordinator_error()
    else:
        error, results = await ctx.groups.offsets.delete_offsets(request.group_id, wanted)
        errors.update(results)
    if error is not ErrorCode.none:
        return build(module.OffsetDeleteResponse, error_code=error, throttle_time=datetime.timedelta(0), topics=())
    topics = tuple(
        build(
            module.OffsetDeleteResponseTopic,
            name=topic.name,
            partitions=tuple(
                build(module.OffsetDeleteResponsePartition, partition_index=p.partition_index,
                      error_code=errors[(topic.name, p.partition_index)])
                for p in topic.partitions
            ),
        )
        for topic in request.topics
    )
    return build(module.OffsetDeleteResponse, error_code=ErrorCode.none, throttle_time=datetime.timedelta(0), topics=topics)
