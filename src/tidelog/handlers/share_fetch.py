"""ShareFetch (key 78, KIP-932).

Behaviour: a share group member's fetch. It runs in a share session (queues/share_session.py):
epoch 0 opens one with the partitions named, later epochs add partitions and forget others, -1
closes it. Acknowledgements of earlier deliveries ride along (per partition; their result is the
partition's ``acknowledge_error_code``) and are applied first, each made durable before the
response. Then records are acquired for the member from the session's partitions this broker
leads: up to ``max_records`` in all (whole log batches in batch_optimized mode, so more to finish
a batch; at most ``max_records`` in v2's record_limit mode), ``max_bytes``, each acquisition durable
in ``__share_group_state`` before the records are returned with their ``acquired_records`` ranges
and delivery counts; the starting partition rotates between requests so none starves. With
nothing to acquire the request waits up to ``max_wait_ms`` for new records in the log or records
made available again (released, lock expired). Epoch -1 acknowledges, fetches nothing, and
releases the member's remaining records (the delivery not counted, as Kafka 4.2). A v2 request
with ``is_renew_ack`` renews locks and fetches nothing. The response carries the group's
acquisition lock duration.
Versions: 1-2 (Kafka 4.2; v2: ShareAcquireMode, RENEW with IsRenewAck). Errors: top level
INVALID_REQUEST (no group or member id, acknowledgements in an opening request, an unknown
ShareAcquireMode, RENEW without IsRenewAck),
SHARE_SESSION_NOT_FOUND, INVALID_SHARE_SESSION_EPOCH, SHARE_SESSION_LIMIT_REACHED,
COORDINATOR_NOT_AVAILABLE (share state not loaded here); per partition UNKNOWN_TOPIC_ID,
UNKNOWN_TOPIC_OR_PARTITION, NOT_LEADER_OR_FOLLOWER (with the leader and its endpoint),
KAFKA_STORAGE_ERROR, COORDINATOR_NOT_AVAILABLE / REQUEST_TIMED_OUT (the state write failed);
acknowledgements INVALID_RECORD_STATE, INVALID_REQUEST.
"""

from __future__ import annotations

import asyncio
import logging
import time

from tidelog.handlers.authorization import unreadable_topic_ids
from tidelog.handlers.registry import RequestContext, handles
from tidelog.handlers.share_partitions import acknowledge, has_renew, leader_hint, node_endpoints
from tidelog.protocol.apis import response_module
from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.protocol.share_fetch import SharePartitionData, encode_share_fetch_response
from tidelog.queues.manager import AcquireResult
from tidelog.queues.acks import AcquireMode
from tidelog.queues.log_batches import acquired_record_count
from tidelog.queues.share_session import ContextKind
from tidelog.queues.state_records import ShareStateKey

API_KEY = 78
logger = logging.getLogger(__name__)


@handles(API_KEY)
async def handle(ctx: RequestContext, request) -> object:
    module = response_module(API_KEY, ctx.api_version)
    group_id, member_id = request.group_id, request.member_id
    if not group_id or not member_id:
        return _top_error(ErrorCode.invalid_request, "GroupId and MemberId must be set.")
    shares = ctx.shares
    try:
        renew = ctx.api_version >= 2 and request.is_renew_ack
        if has_renew(request.topics) and not renew:
            raise KafkaError(ErrorCode.invalid_request, "RENEW acknowledgements need IsRenewAck (ShareFetch v2).")
        mode_id = getattr(request, "share_acquire_mode", 0) if ctx.api_version >= 2 else 0
        if mode_id not in (AcquireMode.BATCH_OPTIMIZED, AcquireMode.RECORD_LIMIT):
            raise KafkaError(ErrorCode.invalid_request, f"Unknown ShareAcquireMode {mode_id}.")
        manager = shares.manager_or_error()
        requested = [(t.topic_id, p.partition_index) for t in request.topics for p in t.partitions]
        forgotten = [(t.topic_id, p) for t in request.forgotten_topics_data for p in t.partitions]
        has_acks = any(p.acknowledgement_batches for t in request.topics for p in t.partitions)
        context = shares.sessions.share_fetch(group_id, member_id, request.share_session_epoch, requested, forgotten,
                                              has_acknowledgements=has_acks, connection_id=ctx.peer)
    except KafkaError as e:
        # a malformed request is the client's bug (WARNING); session errors are ordinary (a restart, a race)
        logger.log(logging.WARNING if e.error_code == ErrorCode.invalid_request else logging.DEBUG,
                   "ShareFetch from %s (group %s, member %s) refused: %s", ctx.peer, group_id, member_id, e)
        return _top_error(e.error_code, e.message)

    # READ on each topic, those of the request and of the session (Kafka answers each fetch so)
    unreadable = unreadable_topic_ids(ctx.access, ctx.topics.topic_by_id,
                                      [t.topic_id for t in request.topics] + [t for t, _ in context.partitions])
    # The acknowledgements and the acquisition run side by side, as Kafka's handler runs them: their
    # state writes go to __share_group_state in one append (one durability wait, not two in turn).
    # Records being acknowledged are pending meanwhile (not acquirable); a release wakes the fetch.
    acknowledging = asyncio.ensure_future(acknowledge(manager, group_id, member_id, request.topics, renew,
                                                      unreadable))
    fetched: dict[tuple, AcquireResult | ErrorCode] = {}
    try:
        if context.kind is ContextKind.FINAL:
            await asyncio.shield(acknowledging)  # then what the member still holds is released
            shares.sessions.remove(group_id, member_id)
            await manager.release_member(group_id, member_id, count_delivery=False,
                                         partitions=list(context.session.partitions))
        elif not renew and context.partitions:
            readable = [p for p in context.partitions if p[0] not in unreadable]
            if readable:
                fetched = await _fetch(ctx, manager, group_id, member_id, context, readable, request,
                                       AcquireMode(mode_id))
            fetched.update((p, ErrorCode.topic_authorization_failed) for p in context.partitions if p[0] in unreadable)
    finally:
        ack_errors = await asyncio.shield(acknowledging)

    responses: dict = {}
    leaders = []
    for (topic_id, partition), outcome in list(fetched.items()) + [(k, None) for k in ack_errors if k not in fetched]:
        error = outcome if isinstance(outcome, ErrorCode) else ErrorCode.none
        result = outcome if isinstance(outcome, AcquireResult) else None
        ack_error = ack_errors.get((topic_id, partition), ErrorCode.none)
        leader_id, leader_epoch = leader_hint(ctx, topic_id, partition, error)
        if leader_id >= 0:
            leaders.append(leader_id)
        responses.setdefault(topic_id, []).append(SharePartitionData(
            partition, error, ack_error, leader_id, leader_epoch,
            result.records if result is not None else (), result.acquired if result is not None else ()))
    # Encoded by hand (protocol/share_fetch.py): a filter or priorities can acquire hundreds of
    # single records a fetch, a range each on the wire.
    return encode_share_fetch_response(list(responses.items()),
                                       acquisition_lock_timeout_ms=manager.acquisition_lock_timeout_ms(group_id),
                                       node_endpoints=node_endpoints(ctx, module, leaders))


async def _fetch(ctx: RequestContext, manager, group_id: str, member_id: str, context, partitions, request,
                 mode: AcquireMode) -> dict[tuple, AcquireResult | ErrorCode]:
    """Acquire from the session's ``partitions``; with nothing acquired, wait for records up to max_wait."""
    if partitions:  # rotate, so that a small max_records does not always go to the first partitions
        start = context.session.epoch % len(partitions)
        partitions = partitions[start:] + partitions[:start]
    deadline = time.monotonic() + max(0, int(request.max_wait.total_seconds() * 1000)) / 1000
    while True:
        fetched = await _acquire(manager, group_id, member_id, partitions, request, mode)
        remaining_s = deadline - time.monotonic()
        if any(isinstance(o, AcquireResult) for o in fetched.values()) or any(
                isinstance(o, ErrorCode) for o in fetched.values()) or remaining_s <= 0:
            return fetched
        await ctx.shares.wait_for_records(group_id, partitions, remaining_s)


async def _acquire(manager, group_id: str, member_id: str, partitions, request, mode: AcquireMode
                   ) -> dict[tuple, AcquireResult | ErrorCode]:
    out: dict[tuple, AcquireResult | ErrorCode] = {}
    records_left = max(0, request.max_records)
    bytes_left = request.max_bytes if request.max_bytes > 0 else 2**31 - 1
    for topic_id, partition in partitions:
        if records_left <= 0 or bytes_left <= 0:
            break
        key = ShareStateKey(group_id, topic_id, partition)
        try:
            result = await manager.acquire(key, member_id, max_records=records_left, max_bytes=bytes_left,
                                           batch_size=request.batch_size if request.batch_size > 0 else None, mode=mode)
        except KafkaError as e:
            if e.error_code not in (ErrorCode.not_leader_or_follower, ErrorCode.unknown_topic_id,
                                    ErrorCode.unknown_topic_or_partition):
                logger.warning("ShareFetch of %s for group %s failed: %s", key, group_id, e)
            out[(topic_id, partition)] = e.error_code
            continue
        if result.acquired:
            out[(topic_id, partition)] = result
            records_left -= acquired_record_count(result.acquired)  # (a filter's hundreds: no Python step each)
            bytes_left -= result.records_bytes
    return out


def _top_error(error: ErrorCode, message: str | None) -> list:
    return encode_share_fetch_response([], error_code=error, error_message=message)
