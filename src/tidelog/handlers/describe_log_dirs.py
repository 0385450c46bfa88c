"""DescribeLogDirs (key 35).

Behaviour: the broker has one log directory, its data directory (reported by absolute path,
as Kafka reports ``log.dirs`` entries). For it: every partition log this broker keeps (those
of the requested topic-partitions, or all when ``topics`` is null) with its size (the sum of
its segment files), offset lag max(high watermark - log end offset, 0) as Kafka computes it
for a current log (so 0: a replica's high watermark never passes its log end offset), and
``is_future_key`` false (no log is ever being moved between directories). Requested
partitions this broker has no log for are left out, and so are topics left with no partition
(as Kafka does). v4 adds the volume's total and usable bytes (``os.statvfs``: blocks and
blocks available to unprivileged users, times the fragment size, as Java's FileStore
reports them). A directory that cannot be read is KAFKA_STORAGE_ERROR for that directory.
Versions: 1-4 (v0 was removed in Kafka 4.0). Errors: KAFKA_STORAGE_ERROR (per directory).
"""

from __future__ import annotations

import datetime
import os

from tidelog.handlers.registry import RequestContext, handles
from tidelog.protocol.apis import build, response_module
from tidelog.protocol.errors import ErrorCode

API_KEY = 35


def log_dir_path(ctx) -> str:
    """The broker's one log directory as clients see it (absolute, as Kafka reports it)."""
    return os.path.abspath(str(ctx.logs.data_dir))


@handles(API_KEY)
async def handle(ctx: RequestContext, request) -> object:
    module = response_module(API_KEY, ctx.api_version)
    path = log_dir_path(ctx)
    logs = list(ctx.logs.logs()) if ctx.logs is not None else []
    if request.topics is not None:
        wanted = {(t.topic, p) for t in request.topics for p in t.partitions}
        logs = [log for log in logs if (log.topic, log.partition) in wanted]
    by_topic: dict[str, list] = {}
    for log in sorted(logs, key=lambda log: (log.topic, log.partition)):
        by_topic.setdefault(log.topic, []).append(build(
            module.DescribeLogDirsPartition, partition_index=log.partition, partition_size=log.size_bytes,
            offset_lag=0, is_future_key=False))
    topics = tuple(build(module.DescribeLogDirsTopic, name=name, partitions=tuple(partitions))
                   for name, partitions in by_topic.items())
    try:
        stat = os.statvfs(path)
        total_bytes, usable_bytes = stat.f_blocks * stat.f_frsize, stat.f_bavail * stat.f_frsize
        result = build(module.DescribeLogDirsResult, error_code=ErrorCode.none, log_dir=path, topics=topics,
                       total_bytes=total_bytes, usable_bytes=usable_bytes)
    except OSError:
        result = build(module.DescribeLogDirsResult, error_code=ErrorCode.kafka_storage_error, log_dir=path, topics=(),
                       total_bytes=-1, usable_bytes=-1)
    return build(module.DescribeLogDirsResponse, throttle_time=datetime.timedelta(0), error_code=ErrorCode.none,
                 results=(result,))
