"""OffsetForLeaderEpoch (key 23).

Behaviour: per partition, the largest leader epoch at or below the requested one and the
offset where it ends in this leader's log (the log end offset for the current epoch), from the
leader-epoch cache. A follower asks this after a leader change and truncates what it has
beyond that offset (a divergent tail written under an older leader). A single node leads
every partition at epoch 0: epoch 0 ends at the log end offset.
Versions: 2-4 (v3 adds replica_id, v4 is flexible). Errors: NOT_LEADER_OR_FOLLOWER,
FENCED_LEADER_EPOCH / UNKNOWN_LEADER_EPOCH (current_leader_epoch older / newer than ours),
UNKNOWN_TOPIC_OR_PARTITION.
"""

from __future__ import annotations

import datetime

from tidelog.handlers.registry import RequestContext, handles
from tidelog.protocol.apis import build, response_module
from tidelog.protocol.errors import ErrorCode

API_KEY = 23


def _answer(ctx, topic: str, index: int, current_leader_epoch: int, leader_epoch: int) -> tuple[ErrorCode, int, int]:
    partition = ctx.replicas.get(topic, index)
    if partition is None or topic not in ctx.metadata.topics:
        return ErrorCode.unknown_topic_or_partition, -1, -1
    error = partition.leader_error(current_leader_epoch)
    if error is not None:
        return error, -1, -1
    epoch, end_offset = partition.offset_for_leader_epoch(leader_epoch)
    return ErrorCode.none, epoch, end_offset


@handles(API_KEY)
async def handle(ctx: RequestContext, request) -> object:
    module = response_module(API_KEY, ctx.api_version)
    topics = []
    for topic in request.topics:
        partitions = []
        for p in topic.partitions:
            error, epoch, end_offset = _answer(ctx, topic.topic, p.partition, p.current_leader_epoch, p.leader_epoch)
            partitions.append(build(module.EpochEndOffset, error_code=error, partition=p.partition,
                                    leader_epoch=epoch, end_offset=end_offset))
        topics.append(build(module.OffsetForLeaderTopicResult, topic=topic.topic, partitions=tuple(partitions)))
    return build(module.OffsetForLeaderEpochResponse, throttle_time=datetime.timedelta(0), topics=tuple(topics))
