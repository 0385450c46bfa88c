"""Fetch (key 1).

Behaviour: for each requested partition, returns whole record batches from ``fetch_offset`` (the
batch containing it first) up to the high watermark, within ``partition_max_bytes`` and the
response's ``max_bytes``; the first batch of the response is returned even when larger than
those limits (KIP-74), so a consumer never gets stuck. The high watermark never passes what
is durable under the topic's durability profile (on a single node the log's durable end; in a
cluster the ISR's, bounded by the leader's own durable end). When fewer than ``min_bytes`` are
available, the request waits up to ``max_wait_ms`` and is woken by the next append to one of
its partitions or the flush that makes records readable. Records are read from the segment files as byte ranges and written to the
socket as separate buffers. ``isolation_level`` 1 (read_committed) reads only below the last
stable offset (the first offset of the oldest undecided transaction) and lists the aborted
transactions of the range, whose records the consumer drops; every response carries the LSO.
Fetch sessions (KIP-227) are not kept: every response has session
id 0, which clients treat as sessionless, and every request is a full fetch.
Versions: 4-17; topics named by id from v13. Errors: OFFSET_OUT_OF_RANGE,
UNKNOWN_TOPIC_OR_PARTITION, UNKNOWN_TOPIC_ID, UNKNOWN_LEADER_EPOCH, KAFKA_STORAGE_ERROR (the
log directory is offline after an I/O error), CORRUPT_MESSAGE (a batch on disk cannot be read),
TOPIC_AUTHORIZATION_FAILED (a consumer without READ on the topic, a follower without
CLUSTER_ACTION on the cluster).
"""

from __future__ import annotations

import logging
import time
import uuid

from tidelog.cluster.partition import wait_for_data
from tidelog.handlers.registry import RequestContext, handles
from tidelog.protocol.errors import ErrorCode
from tidelog.protocol.fetch import TOPIC_IDS_FROM, PartitionData, encode_fetch_response
from tidelog.security.acl import AclOperation, ResourceType

logger = logging.getLogger(__name__)

API_KEY = 1
ZERO_UUID = uuid.UUID(int=0)


@handles(API_KEY)
async def handle(ctx: RequestContext, request) -> list:
    version = ctx.api_version
    max_wait_s = request.max_wait.total_seconds()
    deadline = time.monotonic() + max_wait_s
    wanted = _resolve(ctx, request)
    replicas = ctx.replicas
    watched = [partition for name, _, partitions, _, _ in wanted if name for p in partitions
               if (partition := replicas.get(name, p.partition)) is not None]
    while True:
        topics, total_bytes, any_error = _read(ctx, request, wanted)
        remaining_s = deadline - time.monotonic()
        if total_bytes >= request.min_bytes or any_error or remaining_s <= 0 or not watched:
            break
        await wait_for_data(watched, remaining_s)
    return encode_fetch_response(version, topics)


def _resolve(ctx: RequestContext, request) -> list:
    """(name or None, topic_id, partitions, name as asked, denial or None) per topic; a None name
    marks an unknown or denied topic."""
    resolved = []
    access = ctx.access
    replica_state = getattr(request, "replica_state", None)
    replica_id = replica_state.replica_id if replica_state is not None else getattr(request, "replica_id", -1)
    if replica_id >= 0:  # a follower: CLUSTER_ACTION allows every topic
        follower_allowed = access.authorize(AclOperation.CLUSTER_ACTION, ResourceType.CLUSTER)
    for topic in request.topics:
        if ctx.api_version >= TOPIC_IDS_FROM:
            topic_id = topic.topic_id or ZERO_UUID  # kio reads the zero uuid as None; no topic has it
            record = ctx.topics.topic_by_id(topic_id)
            entry = (record.name if record else None, topic_id, topic.partitions, record.name if record else "")
        else:
            record = ctx.metadata.topics.get(topic.topic)
            entry = (topic.topic if record else None, record.topic_id if record else None, topic.partitions, topic.topic)
        allowed = follower_allowed if replica_id >= 0 else access.authorize(
            AclOperation.READ, ResourceType.TOPIC, entry[0] or entry[3])
        resolved.append((*entry, None) if allowed else (None, *entry[1:], ErrorCode.topic_authorization_failed))
    return resolved


def _read(ctx: RequestContext, request, wanted: list) -> tuple[list, int, bool]:
    replicas = ctx.replicas
    version = ctx.api_version
    budget = request.max_bytes if version >= 3 else 2**31 - 1
    replica_state = getattr(request, "replica_state", None)
    replica_id = replica_state.replica_id if replica_state is not None else getattr(request, "replica_id", -1)
    total_bytes = 0
    any_error = False
    topics = []
    for name, topic_id, partitions, label, denied in wanted:
        results = []
        for p in partitions:
            partition = replicas.get(name, p.partition) if name is not None else None
            if partition is None:
                unknown = ErrorCode.unknown_topic_id if version >= TOPIC_IDS_FROM else ErrorCode.unknown_topic_or_partition
                results.append(PartitionData(p.partition, denied or unknown))
                any_error = True
                continue
            read = partition.read(p.fetch_offset, max(0, min(p.partition_max_bytes, budget - total_bytes)),
                                  min_one_batch=total_bytes == 0, replica_id=replica_id,
                                  current_leader_epoch=getattr(p, "current_leader_epoch", -1),
                                  isolation_level=request.isolation_level)
            if read.error != ErrorCode.none:
                any_error = True
            records = read.records
            total_bytes += len(records)
            if records:
                ctx.metrics.count_fetched(name, records)
            aborted = read.aborted_transactions
            results.append(PartitionData(p.partition, read.error, read.high_watermark, read.last_stable_offset,
                                         read.log_start_offset, records, aborted_transactions=[
                                             (a.producer_id, a.first_offset) for a in aborted] if aborted else None))
        topics.append((label, topic_id, results))
    return topics, total_bytes, any_error
