"""DeleteTopics (key 20).

Behaviour: deletes topics by name (v1-6) or by topic id (v6): the metadata entry first, then
every partition's data; fetches waiting on the topic return. A topic re-created with the same
name is a new topic with a new id and empty logs. What groups hold of the topic goes too, at the
group coordinator's broker once it hears of the deletion from the metadata store (as Kafka's
onPartitionsDeleted): every group's committed and pending transactional offsets of it
(``__consumer_offsets`` tombstones, groups/offset_manager.py) and share groups' state of it
(``__share_group_state`` tombstones, queues/share_groups.py); the response does not wait for that.
When ``delete.topic.enable`` is false every topic gets TOPIC_DELETION_DISABLED (INVALID_REQUEST
before v3, which predates that code), as Kafka does. A name or id given twice is
INVALID_REQUEST ("Duplicate topic name." / "Duplicate topic id."); giving both a name and an
id, or neither, is INVALID_REQUEST. An unknown name is UNKNOWN_TOPIC_OR_PARTITION, an unknown
id UNKNOWN_TOPIC_ID. Results carry both the name and the id when the topic was found.
An internal topic (``__consumer_offsets``, ``__transaction_state``, ``__share_group_state``) is
not deleted: INVALID_REQUEST. Kafka's broker would delete it (its tools refuse to), but Tidelog's
coordinators cannot reload from a re-created one, so the broker refuses.
Versions: 1-6. Errors (per topic): TOPIC_DELETION_DISABLED, INVALID_REQUEST,
UNKNOWN_TOPIC_OR_PARTITION, UNKNOWN_TOPIC_ID.
"""

from __future__ import annotations

import collections
import datetime
import logging
import uuid

from tidelog.handlers.registry import RequestContext, handles
from tidelog.protocol.apis import build, response_module
from tidelog.protocol.errors import ErrorCode
from tidelog.protocol.topics import INTERNAL_TOPICS
from tidelog.security.acl import AclOperation, ResourceType

logger = logging.getLogger(__name__)

API_KEY = 20
ZERO_UUID = uuid.UUID(int=0)

UNKNOWN_TOPIC_MESSAGE = "This server does not host this topic-partition."
UNKNOWN_TOPIC_ID_MESSAGE = "This server does not host this topic ID."


@handles(API_KEY)
async def handle(ctx: RequestContext, request) -> object:
    version = ctx.api_version
    module = response_module(API_KEY, version)
    if version >= 6:
        wanted = [(state.name, state.topic_id or ZERO_UUID) for state in request.topics]
    else:
        wanted = [(name, ZERO_UUID) for name in request.topic_names]

    def result(name, topic_id, error_code=ErrorCode.none, message=None):
        return build(
            module.DeletableTopicResult, name=name, topic_id=topic_id, error_code=error_code, error_message=message
        )

    if not ctx.config["delete.topic.enable"]:
        if version < 3:
            error, message = ErrorCode.invalid_request, "Topic deletion is disabled."
        else:
            error, message = ErrorCode.topic_deletion_disabled, "Topic deletion is disabled."
        responses = tuple(result(name, topic_id, error, message) for name, topic_id in wanted)
        return build(module.DeleteTopicsResponse, throttle_time=datetime.timedelta(0), responses=responses)

    name_counts = collections.Counter(name for name, topic_id in wanted if name is not None)
    id_counts = collections.Counter(topic_id for name, topic_id in wanted if topic_id != ZERO_UUID)
    responses = []
    for name, topic_id in wanted:
        if name is not None and topic_id != ZERO_UUID:
            responses.append(result(name, topic_id, ErrorCode.invalid_request, "You may not specify both topic name and topic id."))
            continue
        if name is None and topic_id == ZERO_UUID:
            responses.append(result(name, topic_id, ErrorCode.invalid_request, "Neither topic name nor id were specified."))
            continue
        if name is not None and name_counts[name] > 1:
            responses.append(result(name, topic_id, ErrorCode.invalid_request, "Duplicate topic name."))
            continue
        if name is None and id_counts[topic_id] > 1:
            responses.append(result(name, topic_id, ErrorCode.invalid_request, "Duplicate topic id."))
            continue
        if name is not None and not ctx.access.authorize(AclOperation.DELETE, ResourceType.TOPIC, name):
            responses.append(result(name, topic_id, ErrorCode.topic_authorization_failed, "Authorization failed."))
            continue
        if name is not None:
            record = ctx.metadata.topics.get(name)
            if record is None:
                responses.append(result(name, topic_id, ErrorCode.unknown_topic_or_partition, UNKNOWN_TOPIC_MESSAGE))
                continue
        else:
            record = ctx.topics.topic_by_id(topic_id)
            if record is None:
                responses.append(result(None, topic_id, ErrorCode.unknown_topic_id, UNKNOWN_TOPIC_ID_MESSAGE))
                continue
            if not ctx.access.authorize(AclOperation.DELETE, ResourceType.TOPIC, record.name):
                # Kafka hides the name of a topic named by id unless DESCRIBE is allowed.
                shown = record.name if ctx.access.authorize(AclOperation.DESCRIBE, ResourceType.TOPIC, record.name) else None
                responses.append(result(shown, topic_id, ErrorCode.topic_authorization_failed, "Authorization failed."))
                continue
        if record.name in INTERNAL_TOPICS:
            logger.warning("refusing to delete internal topic %s (asked by %s)", record.name, ctx.peer)
            responses.append(result(record.name, topic_id, ErrorCode.invalid_request,
                                    f"Topic {record.name} is an internal topic and is not allowed to be deleted."))
            continue
        await ctx.topics.delete_topic(record.name)
        responses.append(result(record.name, record.topic_id))
    return build(module.DeleteTopicsResponse, throttle_time=datetime.timedelta(0), responses=tuple(responses))
