"""ListOffsets (key 2).

Behaviour: per partition, the offset for a timestamp: -2 earliest (log start offset), -1 latest
(high watermark; the last stable offset for read_committed, isolation_level 1), -3 the record
with the largest timestamp (v7+), -4 earliest local (v8+, same as earliest), -5 latest tiered
(v9+, none: offset -1), otherwise the first offset whose timestamp is at or after the given one
(offset -1 when there is none). A record found at or past the high watermark (read_committed:
the last stable offset) is not found (consumers cannot read it yet), as in Kafka.
A new leader whose high watermark is still below the start offset of its leader epoch (it trails
the old leader's by a fetch round after an election) answers a client OFFSET_NOT_AVAILABLE,
retriable, for LATEST and for a lookup by time that finds nothing below the high watermark, until
the high watermark reaches that offset (Kafka's Partition.fetchOffsetForTimestamp, KAFKA-2334):
the lagging high watermark would start a consumer with auto.offset.reset=latest below records
already acknowledged.
Versions: 1-10. Errors: UNKNOWN_TOPIC_OR_PARTITION, UNKNOWN_LEADER_EPOCH, OFFSET_NOT_AVAILABLE, KAFKA_STORAGE_ERROR
(also when a lookup by time meets records on disk that cannot be decoded: a WARNING, not a
traceback).
"""

from __future__ import annotations

import datetime
import logging

from tidelog.handlers.registry import RequestContext, handles
from tidelog.protocol.apis import build, response_module
from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.protocol.records import CorruptRecords
from tidelog.security.acl import AclOperation, ResourceType

logger = logging.getLogger(__name__)

API_KEY = 2
LATEST, EARLIEST, MAX_TIMESTAMP, EARLIEST_LOCAL, LATEST_TIERED = -1, -2, -3, -4, -5


def _lookup(log, timestamp: int, high_watermark: int, lagging: bool = False) -> tuple[ErrorCode, tuple[int, int]]:
    """The error code and (offset, timestamp) answering one partition's query
    (KAFKA_STORAGE_ERROR while the log directory is offline; OFFSET_NOT_AVAILABLE where
    ``lagging``, the leader's high watermark below its epoch's start offset, leaves no answer)."""
    try:
        return ErrorCode.none, _find(log, timestamp, high_watermark, lagging)
    except CorruptRecords as e:
        logger.warning("ListOffsets for timestamp %d on %s-%d: cannot decode the records on disk: %s",
                       timestamp, log.topic, log.partition, e)
        return ErrorCode.kafka_storage_error, (-1, -1)
    except KafkaError as e:
        return e.error_code, (-1, -1)


def _find(log, timestamp: int, high_watermark: int, lagging: bool) -> tuple[int, int]:
    if log.log_dir.offline:
        raise log.log_dir.error()
    if timestamp == LATEST:
        if lagging:
            raise _not_available(log)
        return high_watermark, -1
    if timestamp in (EARLIEST, EARLIEST_LOCAL):
        return log.log_start_offset, -1
    if timestamp == LATEST_TIERED:
        return -1, -1
    found = log.max_timestamp_offset() if timestamp == MAX_TIMESTAMP else log.offset_for_timestamp(timestamp)
    # As Kafka: a record consumers cannot read yet (at or past the high watermark) is not found.
    if found is not None and found[0] < high_watermark:
        return found
    if lagging:
        raise _not_available(log)
    return -1, -1


def _not_available(log) -> KafkaError:
    return KafkaError(ErrorCode.offset_not_available, f"{log.topic}-{log.partition}: the new leader's high watermark "
                      "is below the start offset of its leader epoch")


@handles(API_KEY)
async def handle(ctx: RequestContext, request) -> object:
    module = response_module(API_KEY, ctx.api_version)
    read_committed = getattr(request, "isolation_level", 0) == 1
    client = getattr(request, "replica_id", -1) == -1  # Kafka's isClientRequest: the lagging check applies
    topics = []
    for topic in request.topics:
        partitions = []
        describable = ctx.access.authorize(AclOperation.DESCRIBE, ResourceType.TOPIC, topic.name)
        for p in topic.partitions:
            partition = ctx.replicas.get(topic.name, p.partition_index) if describable else None
            leader_epoch = -1
            if not describable:
                error, (offset, timestamp) = ErrorCode.topic_authorization_failed, (-1, -1)
            elif partition is None:
                error, (offset, timestamp) = ErrorCode.unknown_topic_or_partition, (-1, -1)
            else:
                error = partition.leader_error(getattr(p, "current_leader_epoch", -1))
                if error is not None:
                    offset, timestamp = -1, -1
                else:
                    bound = partition.last_stable_offset if read_committed else partition.high_watermark
                    lagging = client and partition.high_watermark < partition.leader_epoch_start_offset
                    error, (offset, timestamp) = _lookup(partition.log, p.timestamp, bound, lagging)
                leader_epoch = partition.leader_epoch
            partitions.append(
                build(
                    module.ListOffsetsPartitionResponse,
                    partition_index=p.partition_index,
                    error_code=error,
                    timestamp=timestamp,
                    offset=offset,
                    leader_epoch=leader_epoch if error == ErrorCode.none else -1,
                )
            )
        topics.append(build(module.ListOffsetsTopicResponse, name=topic.name, partitions=tuple(partitions)))
    return build(module.ListOffsetsResponse, throttle_time=datetime.timedelta(0), topics=tuple(topics))
