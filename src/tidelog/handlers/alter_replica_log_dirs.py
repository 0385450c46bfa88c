"""AlterReplicaLogDirs (key 34).

Behaviour: the broker has one log directory (its data directory, by the absolute path that
DescribeLogDirs reports), so a replica can only be "moved" to where it already is: that
succeeds as a no-op (NONE), as Kafka answers a move to a replica's current directory. As in
Kafka, for each topic-partition (a partition named under two paths takes the last one): a
topic whose future-log directory name (``<topic>-<partition>.<32 hex>-future``) would pass 255
characters is INVALID_TOPIC_EXCEPTION; a path that is not a log directory of this broker is
LOG_DIR_NOT_FOUND (checked before the partition); a partition that does not exist is
UNKNOWN_TOPIC_OR_PARTITION; one this broker keeps no replica of (cluster mode) is
REPLICA_NOT_AVAILABLE (Kafka keeps that code here for NOT_LEADER_OR_FOLLOWER).
Versions: 1-2 (v0 was removed in Kafka 4.0). Errors (per partition): INVALID_TOPIC_EXCEPTION,
LOG_DIR_NOT_FOUND, UNKNOWN_TOPIC_OR_PARTITION, REPLICA_NOT_AVAILABLE.
"""

from __future__ import annotations

import datetime

from tidelog.handlers.describe_log_dirs import log_dir_path
from tidelog.handlers.registry import RequestContext, handles
from tidelog.protocol.apis import build, response_module
from tidelog.protocol.errors import ErrorCode

API_KEY = 34
MAX_DIR_NAME_LENGTH = 255
FUTURE_SUFFIX_LENGTH = len(".") + 32 + len("-future")


def partition_error(ctx, path: str, topic: str, partition: int) -> ErrorCode:
    if len(f"{topic}-{partition}") + FUTURE_SUFFIX_LENGTH > MAX_DIR_NAME_LENGTH:
        return ErrorCode.invalid_topic_exception
    if path != log_dir_path(ctx):
        return ErrorCode.log_dir_not_found
    record = ctx.metadata.topics.get(topic)
    if record is None or not 0 <= partition < record.partitions:
        return ErrorCode.unknown_topic_or_partition
    if ctx.logs is None or ctx.logs.get(topic, partition) is None:
        return ErrorCode.replica_not_available
    return ErrorCode.none  # already in the requested (the only) directory


@handles(API_KEY)
async def handle(ctx: RequestContext, request) -> object:
    module = response_module(API_KEY, ctx.api_version)
    destinations: dict[tuple[str, int], str] = {}
    for log_dir in request.dirs:
        for topic in log_dir.topics:
            for partition in topic.partitions:
                destinations[(topic.name, partition)] = log_dir.path
    by_topic: dict[str, list] = {}
    for (topic, partition), path in destinations.items():
        by_topic.setdefault(topic, []).append(build(
            module.AlterReplicaLogDirPartitionResult, partition_index=partition,
            error_code=partition_error(ctx, path, topic, partition)))
    results = tuple(build(module.AlterReplicaLogDirTopicResult, topic_name=topic, partitions=tuple(partitions))
                    for topic, partitions in by_topic.items())
    return build(module.AlterReplicaLogDirsResponse, throttle_time=datetime.timedelta(0), results=results)
