"""DescribeShareGroupOffsets (key 90, KIP-932; lag KIP-1226).

Behaviour: for each share group, the start offset of each share-partition asked for (every
share-partition the group has state for when ``topics`` is null): the offset before which every
record is acknowledged or archived, -1 where the group has never read the partition; from v1 the
lag, the records between the start offset and the high watermark not yet acknowledged or
archived (-1 when not known here). Leader epochs are not tracked per share-partition (-1).
Needs DESCRIBE on each group, and on each topic (left out when all were asked for).
Versions: 0-1 (Kafka 4.2). Errors per group: GROUP_AUTHORIZATION_FAILED, GROUP_ID_NOT_FOUND (the id is
a classic or consumer group), NOT_COORDINATOR / COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE (share state not
loaded here); per partition UNKNOWN_TOPIC_OR_PARTITION, TOPIC_AUTHORIZATION_FAILED.
"""

from __future__ import annotations

import datetime

from tidelog.handlers.registry import RequestContext, handles
from tidelog.protocol.apis import build, response_module
from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.security.acl import AclOperation, ResourceType

API_KEY = 90


@handles(API_KEY)
async def handle(ctx: RequestContext, request) -> object:
    module = response_module(API_KEY, ctx.api_version)
    groups = []
    for group in request.groups:
        try:
            groups.append(build(module.DescribeShareGroupOffsetsResponseGroup, group_id=group.group_id,
                                topics=await _describe(ctx, module, group), error_code=ErrorCode.none, error_message=None))
        except KafkaError as e:
            groups.append(build(module.DescribeShareGroupOffsetsResponseGroup, group_id=group.group_id, topics=(),
                                error_code=e.error_code, error_message=e.message))
    return build(module.DescribeShareGroupOffsetsResponse, throttle_time=datetime.timedelta(0), groups=tuple(groups))


async def _describe(ctx: RequestContext, module, group) -> tuple:
    if not ctx.access.authorize(AclOperation.DESCRIBE, ResourceType.GROUP, group.group_id):
        raise KafkaError(ErrorCode.group_authorization_failed, None)
    error = ctx.group_coordinator_error()
    if error is not None:
        raise KafkaError(error, "This is not the group coordinator" if error is ErrorCode.not_coordinator
                         else "The coordinator is loading")
    if ctx.groups.registry.known(group.group_id):
        raise KafkaError(ErrorCode.group_id_not_found, f"Group {group.group_id} is not a share group.")
    manager = await ctx.shares.ensure_loaded()
    await ctx.shares.catch_up()  # other brokers' writes (in a cluster the leaders write the state)
    topics = ctx.metadata.topics
    wanted: dict[str, list[int]] = {}
    if group.topics is None:
        for key in manager.state_keys(group.group_id):
            record = ctx.topics.topic_by_id(key.topic_id)
            if record is not None:
                wanted.setdefault(record.name, []).append(key.partition)
    else:
        for topic in group.topics:
            wanted.setdefault(topic.topic_name, []).extend(topic.partitions)
    describable = ctx.access.authorized(AclOperation.DESCRIBE, ResourceType.TOPIC, wanted)
    out = []
    for name, partitions in wanted.items():
        record = topics.get(name)
        if name not in describable:  # all partitions asked for: left out; named: refused, as Kafka does
            if group.topics is not None:
                rows = [_partition(module, p, -1, -1, ErrorCode.topic_authorization_failed) for p in partitions]
                out.append(build(module.DescribeShareGroupOffsetsResponseTopic, topic_name=name, topic_id=None,
                                 partitions=tuple(rows)))
            continue
        if record is None:
            rows = [_partition(module, p, -1, -1, ErrorCode.unknown_topic_or_partition) for p in partitions]
            out.append(build(module.DescribeShareGroupOffsetsResponseTopic, topic_name=name, topic_id=None,
                             partitions=tuple(rows)))
            continue
        valid = [p for p in sorted(set(partitions)) if 0 <= p < record.partitions]
        described = {p: (start, lag) for _, p, start, lag in
                     manager.describe_offsets(group.group_id, [(record.topic_id, p) for p in valid])}
        rows = [_partition(module, p, *described[p], ErrorCode.none) if p in described else
                _partition(module, p, -1, -1, ErrorCode.unknown_topic_or_partition) for p in sorted(set(partitions))]
        out.append(build(module.DescribeShareGroupOffsetsResponseTopic, topic_name=name, topic_id=record.topic_id,
                         partitions=tuple(rows)))
    return tuple(out)


def _partition(module, partition: int, start_offset: int, lag: int, error: ErrorCode):
    return build(module.DescribeShareGroupOffsetsResponsePartition, partition_index=partition,
                 start_offset=start_offset, leader_epoch=-1, lag=lag, error_code=error, error_message=None)
