"""WriteTxnMarkers (key 27): sent by transaction coordinators to partition leaders.

Behaviour: for each marker (producer id and epoch, commit or abort, coordinator epoch) and each
of its partitions this broker leads, the COMMIT/ABORT control batch is appended as leader and
awaited acks=all (txn/marker_writer.py); a ``__consumer_offsets`` marker also makes the
producer's transactional offset commits visible (commit) or drops them (abort). One answer per
producer id and partition.
Versions: 1 (Kafka 4 removed v0). Errors (per partition): NOT_LEADER_OR_FOLLOWER,
UNKNOWN_TOPIC_OR_PARTITION, INVALID_PRODUCER_EPOCH (a newer producer epoch is in the log),
TRANSACTION_COORDINATOR_FENCED (a marker from an older coordinator epoch),
NOT_ENOUGH_REPLICAS(_AFTER_APPEND), REQUEST_TIMED_OUT, KAFKA_STORAGE_ERROR.
"""

from __future__ import annotations

from tidelog.handlers.registry import RequestContext, handles
from tidelog.protocol.apis import build, response_module
from tidelog.protocol.errors import ErrorCode
from tidelog.txn.markers import MarkerEntry
from tidelog.txn.state import TopicPartition

API_KEY = 27


@handles(API_KEY)
async def handle(ctx: RequestContext, request) -> object:
    module = response_module(API_KEY, ctx.api_version)
    entries = [MarkerEntry(m.producer_id, m.producer_epoch, m.coordinator_epoch, m.transaction_result,
                           tuple(TopicPartition(t.name, p) for t in m.topics for p in t.partition_indexes))
               for m in request.markers]
    results = await ctx.transactions.write_markers(entries)
    markers = tuple(
        build(module.WritableTxnMarkerResult, producer_id=m.producer_id, topics=tuple(
            build(module.WritableTxnMarkerTopicResult, name=t.name, partitions=tuple(
                build(module.WritableTxnMarkerPartitionResult, partition_index=p,
                      error_code=results.get((m.producer_id, TopicPartition(t.name, p)), ErrorCode.unknown_server_error))
                for p in t.partition_indexes))
            for t in m.topics))
        for m in request.markers)
    return build(module.WriteTxnMarkersResponse, markers=markers)
