"""DescribeTopicPartitions (key 75, KIP-966).

Behaviour: the requested topics (an empty list means every topic), by name in sorted order
and each at most once, starting at the cursor's topic (topics sorting before it are skipped)
and, within that topic, at the cursor's partition. Each partition gives its leader (-1 when
the leader is not a live broker, with no partition error, as Kafka does here), leader epoch,
replicas, ISR, eligible leader replicas and last known ELR (always empty: there is no ELR),
and offline replicas (replicas whose broker is not live). A single node leads every
partition itself at epoch 0 (as Metadata reports); in cluster mode the partition states
come from the metadata store. At most ``response_partition_limit`` partitions are returned
(capped at 2000, Kafka's ``max.request.partition.size.limit`` default, and at least 1): when
a topic is cut short, ``next_cursor`` names it and the first partition left out; when the
limit is reached exactly at the end of a topic and more topics follow, it names the next
topic at partition 0. Topic authorized operations are always filled in (the request has no
flag for them): every TOPIC operation, as Kafka reports them without an authorizer. A named
topic that does not exist is UNKNOWN_TOPIC_OR_PARTITION (INVALID_TOPIC_EXCEPTION for an
illegal name) with the zero topic id; when listing every topic, none is reported missing. A
cursor naming a topic not in the requested list, or with a negative partition, is
INVALID_REQUEST for every requested topic.
Versions: 0 (flexible). Errors: UNKNOWN_TOPIC_OR_PARTITION, INVALID_TOPIC_EXCEPTION,
INVALID_REQUEST.
"""

from __future__ import annotations

import datetime
import uuid

from tidelog.cluster.topics import validate_topic_name
from tidelog.handlers.registry import RequestContext, handles
from tidelog.protocol.apis import build, response_module
from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.protocol.topics import INTERNAL_TOPICS

API_KEY = 75
ZERO_UUID = uuid.UUID(int=0)
# Kafka's max.request.partition.size.limit default: the most partitions one response holds.
MAX_PARTITIONS_PER_RESPONSE = 2000
# AclOperation codes valid on a TOPIC: READ 3, WRITE 4, CREATE 5, DELETE 6, ALTER 7, DESCRIBE 8,
# DESCRIBE_CONFIGS 10, ALTER_CONFIGS 11 (all granted: there is no authorizer).
TOPIC_OPERATIONS = sum(1 << code for code in (3, 4, 5, 6, 7, 8, 10, 11))


def _partition(module, ctx: RequestContext, topic: str, index: int):
    state = ctx.metadata.partitions.get((topic, index))
    if state is None:
        return build(module.DescribeTopicPartitionsResponsePartition, error_code=ErrorCode.none, partition_index=index,
                     leader_id=-1, leader_epoch=-1, replica_nodes=(), isr_nodes=(),
                     eligible_leader_replicas=(), last_known_elr=(), offline_replicas=())
    live = ctx.metadata.brokers
    return build(
        module.DescribeTopicPartitionsResponsePartition,
        error_code=ErrorCode.none,
        partition_index=index,
        leader_id=state.leader if state.leader in live else -1,
        leader_epoch=state.leader_epoch,
        replica_nodes=state.replicas,
        isr_nodes=state.isr,
        eligible_leader_replicas=(),
        last_known_elr=(),
        offline_replicas=tuple(r for r in state.replicas if r not in live),
    )


def _topic(module, error_code: ErrorCode, name: str, topic_id: uuid.UUID = ZERO_UUID, partitions=()):
    return build(module.DescribeTopicPartitionsResponseTopic, error_code=error_code, name=name, topic_id=topic_id,
                 is_internal=name in INTERNAL_TOPICS, partitions=tuple(partitions),
                 topic_authorized_operations=TOPIC_OPERATIONS)


def _missing_topic_error(name: str) -> ErrorCode:
    try:
        validate_topic_name(name)
    except KafkaError as e:
        return e.error_code
    return ErrorCode.unknown_topic_or_partition


@handles(API_KEY)
async def handle(ctx: RequestContext, request) -> object:
    module = response_module(API_KEY, ctx.api_version)
    store = ctx.metadata
    cursor = request.cursor
    cursor_topic = cursor.topic_name if cursor is not None else ""
    fetch_all = not request.topics

    def response(topics, next_cursor=None):
        return build(module.DescribeTopicPartitionsResponse, throttle_time=datetime.timedelta(0),
                     topics=tuple(topics), next_cursor=next_cursor)

    if fetch_all:
        names = sorted(name for name in list(store.topics) if name >= cursor_topic)
    else:
        names = sorted({t.name for t in request.topics if t.name >= cursor_topic})
        if cursor is not None and cursor.topic_name not in names:
            return response(_topic(module, ErrorCode.invalid_request, t.name) for t in request.topics)
    if cursor is not None and cursor.partition_index < 0:
        return response(_topic(module, ErrorCode.invalid_request, t.name) for t in request.topics)

    remaining = max(min(MAX_PARTITIONS_PER_RESPONSE, request.response_partition_limit), 1)
    topics = []
    next_cursor = None
    for name in names:
        if remaining == 0:
            # The limit fell exactly at the end of the previous topic: resume at this one.
            next_cursor = build(module.Cursor, topic_name=name, partition_index=0)
            break
        record = store.topics.get(name)
        if record is None:
            if not fetch_all:
                topics.append(_topic(module, _missing_topic_error(name), name))
            continue
        start = cursor.partition_index if cursor is not None and name == cursor_topic else 0
        end = min(record.partitions, start + remaining)
        partitions = [_partition(module, ctx, name, i) for i in range(start, end)]
        topics.append(_topic(module, ErrorCode.none, name, record.topic_id, partitions))
        if end < record.partitions:
            next_cursor = build(module.Cursor, topic_name=name, partition_index=end)
            break
        remaining -= len(partitions)
    return response(topics, next_cursor)
