"""OffsetFetch (key 9).

Behaviour: returns a group's committed offsets: for the listed partitions (offset -1 and
metadata "" where nothing is committed), or every committed partition when the topic list is
null (v2+). v8+ asks for several groups at once. ``require_stable`` (v7+): a partition with a
commit still being written, or a transactional commit (TxnOffsetCommit) still waiting for its
marker, answers UNSTABLE_OFFSET_COMMIT (the client retries). A group that does
not exist simply has no offsets (no error), as in Kafka.
Versions: 1-9 (v2 top-level error and null topics, v5 leader epoch, v6 flexible, v7
require_stable, v8 groups, v9 member id/epoch: checked for consumer-protocol (KIP-848) groups,
ignored for classic ones). Errors: INVALID_GROUP_ID, UNKNOWN_MEMBER_ID and STALE_MEMBER_EPOCH
(v9, consumer-protocol groups), COORDINATOR_LOAD_IN_PROGRESS (not while this broker serves).
"""

from __future__ import annotations

import datetime

from tidelog.handlers.registry import RequestContext, handles
from tidelog.protocol.apis import build, response_module
from tidelog.protocol.errors import ErrorCode
from tidelog.security.acl import AclOperation, ResourceType

API_KEY = 9


def _group_topics(ctx: RequestContext, module, group_id: str, topics, partition_cls, topic_cls,
                  member_id: str | None = None, member_epoch: int = -1, require_stable: bool = False):
    """(error, topic entries) for one group."""
    if topics is None:
        wanted = None
    else:
        wanted = [(t.name, p) for t in topics for p in t.partition_indexes]
    if not group_id and ctx.api_version >= 2:
        return ErrorCode.invalid_group_id, ()
    if not ctx.access.authorize(AclOperation.DESCRIBE, ResourceType.GROUP, group_id):
        return ErrorCode.group_authorization_failed, ()
    coordinator_error = ctx.group_coordinator_error()
    if coordinator_error is not None:
        if ctx.api_version >= 2 or wanted is None:
            return coordinator_error, ()
        by_topic: dict[str, list] = {}
        for topic, partition in wanted:  # v1 has no top-level error: one per partition
            by_topic.setdefault(topic, []).append(build(partition_cls, partition_index=partition, committed_offset=-1,
                                                        committed_leader_epoch=-1, metadata="", error_code=coordinator_error))
        return ErrorCode.none, tuple(build(topic_cls, name=name, partitions=tuple(ps)) for name, ps in by_topic.items())
    if ctx.api_version >= 9:
        error = ctx.groups.offsets.validate_offset_fetch(group_id, member_id, member_epoch)
        if error is not ErrorCode.none:
            return error, ()
    entries = ctx.groups.offsets.fetch_offsets(group_id, wanted)
    # Topics without DESCRIBE: left out of an all-topics answer, TOPIC_AUTHORIZATION_FAILED when named.
    visible = ctx.access.authorized(AclOperation.DESCRIBE, ResourceType.TOPIC, {t for t, _, _ in entries},
                                    log_if_denied=wanted is not None)
    by_topic: dict[str, list] = {}
    for topic, partition, committed in entries:
        if topic not in visible:
            if wanted is not None:
                by_topic.setdefault(topic, []).append(build(
                    partition_cls, partition_index=partition, committed_offset=-1, committed_leader_epoch=-1,
                    metadata="", error_code=ErrorCode.topic_authorization_failed))
            continue
        if require_stable and ctx.groups.offsets.unstable(group_id, topic, partition):
            by_topic.setdefault(topic, []).append(build(
                partition_cls, partition_index=partition, committed_offset=-1, committed_leader_epoch=-1, metadata="",
                error_code=ErrorCode.unstable_offset_commit))
            continue
        by_topic.setdefault(topic, []).append(
            build(
                partition_cls,
                partition_index=partition,
                committed_offset=committed.offset if committed else -1,
                committed_leader_epoch=committed.leader_epoch if committed else -1,
                metadata=committed.metadata if committed else "",
                error_code=ErrorCode.none,
            )
        )
    return ErrorCode.none, tuple(build(topic_cls, name=name, partitions=tuple(parts)) for name, parts in by_topic.items())


@handles(API_KEY)
async def handle(ctx: RequestContext, request) -> object:
    module = response_module(API_KEY, ctx.api_version)
    if ctx.api_version >= 8:
        groups = []
        for group in request.groups:
            error, topics = _group_topics(ctx, module, group.group_id, group.topics, module.OffsetFetchResponsePartitions,
                                          module.OffsetFetchResponseTopics, getattr(group, "member_id", None),
                                          getattr(group, "member_epoch", -1), request.require_stable)
            groups.append(build(module.OffsetFetchResponseGroup, group_id=group.group_id, topics=topics, error_code=error))
        return build(module.OffsetFetchResponse, throttle_time=datetime.timedelta(0), groups=tuple(groups))
    error, topics = _group_topics(ctx, module, request.group_id, request.topics, module.OffsetFetchResponsePartition,
                                  module.OffsetFetchResponseTopic, require_stable=getattr(request, "require_stable", False))
    return build(module.OffsetFetchResponse, throttle_time=datetime.timedelta(0), topics=topics, error_code=error)
