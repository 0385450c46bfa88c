"""OffsetCommit (key 8).

Behaviour: stores a group's committed offsets in ``__consumer_offsets`` and acknowledges once
they are durable. Members of a classic group commit with their generation and member id;
``assign()`` consumers and admin tools commit with generation -1 and no member id, which
creates an Empty group with no protocol when there is none. A commit from a member also
counts as a heartbeat. Members of a consumer-protocol group (KIP-848) commit with v9+ and their
current member epoch in ``generation_id_or_member_epoch`` (STALE_MEMBER_EPOCH otherwise). Partitions of unknown topics are refused before the coordinator sees them.
Versions: 2-9 (v2-4 carry retention_time, -1 = broker default; v6 leader epoch; v7
group_instance_id; v8 flexible). Errors (per partition): UNKNOWN_TOPIC_OR_PARTITION, STALE_MEMBER_EPOCH, GROUP_ID_NOT_FOUND
(v9+, a member commit to an unknown group), UNSUPPORTED_VERSION (a consumer-protocol member below v9),
OFFSET_METADATA_TOO_LARGE (``offset.metadata.max.bytes``, 4096), ILLEGAL_GENERATION,
UNKNOWN_MEMBER_ID, REBALANCE_IN_PROGRESS, FENCED_INSTANCE_ID, INVALID_GROUP_ID,
COORDINATOR_NOT_AVAILABLE.
"""

from __future__ import annotations

import datetime

from tidelog.handlers.registry import RequestContext, handles
from tidelog.protocol.apis import build, response_module
from tidelog.protocol.errors import ErrorCode
from tidelog.security.acl import AclOperation, ResourceType

API_KEY = 8


def requested_offsets(ctx: RequestContext, topics, check_read: bool = True
                      ) -> tuple[dict[tuple[str, int], ErrorCode], dict[tuple[str, int], tuple[int, int, str | None]]]:
    """The partitions of an offset commit (OffsetCommit, TxnOffsetCommit): those refused
    (TOPIC_AUTHORIZATION_FAILED without READ when ``check_read``, UNKNOWN_TOPIC_OR_PARTITION) and
    the (offset, leader epoch, metadata) of the others."""
    errors: dict[tuple[str, int], ErrorCode] = {}
    offsets: dict[tuple[str, int], tuple[int, int, str | None]] = {}
    for topic in topics:
        record = ctx.metadata.topics.get(topic.name)
        readable = not check_read or ctx.access.authorize(AclOperation.READ, ResourceType.TOPIC, topic.name)
        for p in topic.partitions:
            key = (topic.name, p.partition_index)
            if not readable:
                errors[key] = ErrorCode.topic_authorization_failed
            elif record is None or not 0 <= p.partition_index < record.partitions:
                errors[key] = ErrorCode.unknown_topic_or_partition
            else:
                offsets[key] = (p.committed_offset, getattr(p, "committed_leader_epoch", -1), p.committed_metadata)
    return errors, offsets


def _retention_ms(request) -> int | None:
    retention = getattr(request, "retention_time", None)
    if retention is None:
        return None
    ms = int(retention.total_seconds() * 1000) if isinstance(retention, datetime.timedelta) else int(retention)
    return ms if ms >= 0 else None


@handles(API_KEY)
async def handle(ctx: RequestContext, request) -> object:
    module = response_module(API_KEY, ctx.api_version)
    errors, offsets = requested_offsets(ctx, request.topics)
    coordinator_error = ctx.group_coordinator_error()
    if coordinator_error is not None:
        errors.update((key, coordinator_error) for key in offsets)
    elif offsets:
        errors.update(
            await ctx.groups.offsets.commit_offsets(
                request.group_id,
                request.generation_id_or_member_epoch,
                request.member_id,
                getattr(request, "group_instance_id", None),
                offsets,
                _retention_ms(request),
                api_version=ctx.api_version,
            )
        )
    topics = tuple(
        build(
            module.OffsetCommitResponseTopic,
            name=topic.name,
            partitions=tuple(
                build(module.OffsetCommitResponsePartition, partition_index=p.partition_index,
                      error_code=errors[(topic.name, p.partition_index)])
                for p in topic.partitions
            ),
        )
        for topic in request.topics
    )
    return build(module.OffsetCommitResponse, throttle_time=datetime.timedelta(0), topics=topics)
