"""DeleteShareGroupOffsets (key 92, KIP-932).

Behaviour: forgets an Empty share group's state of whole topics (every share-partition of each
topic named; tombstones in ``__share_group_state``, durable before the answer). The next member
to subscribe starts those partitions again from ``share.auto.offset.reset``.
Versions: 0 (Kafka 4.2). Errors: top level NON_EMPTY_GROUP, GROUP_ID_NOT_FOUND (no such share
group, or the id is a classic or consumer group), INVALID_GROUP_ID, NOT_COORDINATOR /
COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE; per topic TOPIC_AUTHORIZATION_FAILED (no READ
on it; DELETE on the group is checked before the handler runs), UNKNOWN_TOPIC_OR_PARTITION and
what the state write failed with.
"""

from __future__ import annotations

import datetime

from tidelog.handlers.alter_share_group_offsets import share_group_manager
from tidelog.handlers.registry import RequestContext, handles
from tidelog.protocol.apis import build, response_module
from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.security.acl import AclOperation, ResourceType

API_KEY = 92


@handles(API_KEY)
async def handle(ctx: RequestContext, request) -> object:
    module = response_module(API_KEY, ctx.api_version)
    try:
        manager = await share_group_manager(ctx, request.group_id)
        if ctx.shares.group(request.group_id) is None:
            raise KafkaError(ErrorCode.group_id_not_found, f"Share group {request.group_id} not found.")
    except KafkaError as e:
        return build(module.DeleteShareGroupOffsetsResponse, throttle_time=datetime.timedelta(0),
                     error_code=e.error_code, error_message=e.message, responses=())
    responses = []
    readable = ctx.access.authorized(AclOperation.READ, ResourceType.TOPIC, (t.topic_name for t in request.topics))
    for topic in request.topics:
        record = ctx.metadata.topics.get(topic.topic_name)
        error, message = ErrorCode.none, None
        if topic.topic_name not in readable:
            error = ErrorCode.topic_authorization_failed
        elif record is None:
            error = ErrorCode.unknown_topic_or_partition
        else:
            try:
                await manager.delete_offsets(request.group_id, [(record.topic_id, p) for p in range(record.partitions)])
            except KafkaError as e:
                error, message = e.error_code, e.message
        responses.append(build(module.DeleteShareGroupOffsetsResponseTopic, topic_name=topic.topic_name,
                               topic_id=record.topic_id if record is not None else None, error_code=error,
                               error_message=message))
    return build(module.DeleteShareGroupOffsetsResponse, throttle_time=datetime.timedelta(0), error_code=ErrorCode.none,
                 error_message=None, responses=tuple(responses))
