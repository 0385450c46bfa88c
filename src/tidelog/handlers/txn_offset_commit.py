"""TxnOffsetCommit (key 28).

Behaviour: a transactional producer commits a group's offsets inside its transaction
(``send_offsets_to_transaction``): they are written to ``__consumer_offsets`` as a
transactional batch of the producer and become the group's committed offsets only when the
transaction's COMMIT marker lands there (an ABORT drops them); until then OffsetFetch with
``require_stable`` answers UNSTABLE_OFFSET_COMMIT for those partitions. Validated as Kafka's
transactional commit: a producer without a member id (generation -1) may always commit; a
member's generation and id are checked (v3+, KIP-447), a rebalance in progress does not stop it.
Versions: 0-5. Errors (per partition): TOPIC_AUTHORIZATION_FAILED (no READ on the topic),
UNKNOWN_TOPIC_OR_PARTITION, NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE, ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID,
FENCED_INSTANCE_ID, INVALID_GROUP_ID, OFFSET_METADATA_TOO_LARGE, INVALID_PRODUCER_EPOCH (a
fenced producer: the partition refuses its batch), INVALID_TXN_STATE.
"""

from __future__ import annotations

import datetime
import logging

from tidelog.handlers.offset_commit import requested_offsets
from tidelog.handlers.registry import RequestContext, handles
from tidelog.protocol.apis import build, response_module
from tidelog.protocol.errors import ErrorCode

logger = logging.getLogger(__name__)

API_KEY = 28


@handles(API_KEY)
async def handle(ctx: RequestContext, request) -> object:
    module = response_module(API_KEY, ctx.api_version)
    # WRITE on the transactional id and READ on the group were checked before the handler ran
    errors, offsets = requested_offsets(ctx, request.topics)
    coordinator_error = ctx.group_coordinator_error()
    if coordinator_error is not None:
        errors.update((key, coordinator_error) for key in offsets)
    elif offsets:
        errors.update(await ctx.groups.offsets.commit_txn_offsets(
            request.group_id, request.producer_id, request.producer_epoch, getattr(request, "generation_id", -1),
            getattr(request, "member_id", ""), getattr(request, "group_instance_id", None), offsets))
    failed = {e.name for e in errors.values() if e is not ErrorCode.none}
    if failed:
        logger.info("TxnOffsetCommit of %s for group %s from %s: %s", request.transactional_id, request.group_id,
                    ctx.peer, ", ".join(sorted(failed)))
    topics = tuple(
        build(module.TxnOffsetCommitResponseTopic, name=topic.name, partitions=tuple(
            build(module.TxnOffsetCommitResponsePartition, partition_index=p.partition_index,
                  error_code=errors[(topic.name, p.partition_index)])
            for p in topic.partitions))
        for topic in request.topics)
    return build(module.TxnOffsetCommitResponse, throttle_time=datetime.timedelta(0), topics=topics)
