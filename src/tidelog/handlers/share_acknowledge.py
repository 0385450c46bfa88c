"""ShareAcknowledge (key 79, KIP-932).

Behaviour: acknowledges records a member acquired through ShareFetch, without fetching more:
per partition, ranges with one type each or one type per offset (0 gap, 1 accept, 2 release,
3 reject, 4 renew from v2 with ``is_renew_ack``). Each partition's acknowledgements are all or
nothing and durable in ``__share_group_state`` before the answer (a REJECT, or a RELEASE at the
delivery limit, dead-letters the record first where the group has a dead-letter topic). It uses
the member's share session: the epoch must match (it cannot open one, epoch 0); -1 closes the
session after acknowledging and releases the member's remaining records (the delivery not
counted). See queues/manager.py and queues/share_partition.py.
Versions: 1-2 (Kafka 4.2; v2: RENEW with IsRenewAck). Errors: top level INVALID_REQUEST (no group
or member id, RENEW without IsRenewAck), SHARE_SESSION_NOT_FOUND, INVALID_SHARE_SESSION_EPOCH,
COORDINATOR_NOT_AVAILABLE (share state not loaded here); per partition INVALID_RECORD_STATE
(a record not acquired by this member), INVALID_REQUEST (malformed batches), UNKNOWN_TOPIC_ID,
NOT_LEADER_OR_FOLLOWER (with the leader and its endpoint), COORDINATOR_NOT_AVAILABLE /
REQUEST_TIMED_OUT (the state or dead-letter write failed).
"""

from __future__ import annotations

import datetime
import logging

from tidelog.handlers.authorization import unreadable_topic_ids
from tidelog.handlers.registry import RequestContext, handles
from tidelog.handlers.share_partitions import acknowledge, current_leader, has_renew, node_endpoints
from tidelog.protocol.apis import build, response_module
from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.queues.share_session import FINAL_EPOCH

API_KEY = 79
logger = logging.getLogger(__name__)


@handles(API_KEY)
async def handle(ctx: RequestContext, request) -> object:
    module = response_module(API_KEY, ctx.api_version)
    group_id, member_id = request.group_id, request.member_id
    if not group_id or not member_id:
        return _top_error(module, ErrorCode.invalid_request, "GroupId and MemberId must be set.")
    shares = ctx.shares
    try:
        renew = ctx.api_version >= 2 and request.is_renew_ack
        if has_renew(request.topics) and not renew:
            raise KafkaError(ErrorCode.invalid_request, "RENEW acknowledgements need IsRenewAck (ShareAcknowledge v2).")
        manager = shares.manager_or_error()
        session = shares.sessions.share_acknowledge(group_id, member_id, request.share_session_epoch)
    except KafkaError as e:
        # a malformed request is the client's bug (WARNING); session errors are ordinary (a restart, a race)
        logger.log(logging.WARNING if e.error_code == ErrorCode.invalid_request else logging.DEBUG,
                   "ShareAcknowledge from %s (group %s, member %s) refused: %s", ctx.peer, group_id, member_id, e)
        return _top_error(module, e.error_code, e.message)
    unreadable = unreadable_topic_ids(ctx.access, ctx.topics.topic_by_id, (t.topic_id for t in request.topics))
    errors = await acknowledge(manager, group_id, member_id, request.topics, renew, unreadable)
    if request.share_session_epoch == FINAL_EPOCH:
        shares.sessions.remove(group_id, member_id)
        await manager.release_member(group_id, member_id, count_delivery=False, partitions=list(session.partitions))
    responses: dict = {}
    leaders = []
    for (topic_id, partition), error in errors.items():
        leader = current_leader(ctx, module, topic_id, partition, error)
        if leader.leader_id >= 0:
            leaders.append(leader.leader_id)
        responses.setdefault(topic_id, []).append(build(
            module.PartitionData, partition_index=partition, error_code=error, error_message=None, current_leader=leader))
    return build(
        module.ShareAcknowledgeResponse, throttle_time=datetime.timedelta(0), error_code=ErrorCode.none,
        error_message=None,
        acquisition_lock_timeout=datetime.timedelta(milliseconds=manager.acquisition_lock_timeout_ms(group_id)),
        responses=tuple(build(module.ShareAcknowledgeTopicResponse, topic_id=topic_id, partitions=tuple(partitions))
                        for topic_id, partitions in responses.items()),
        node_endpoints=node_endpoints(ctx, module, leaders))


def _top_error(module, error: ErrorCode, message: str | None) -> object:
    return build(module.ShareAcknowledgeResponse, throttle_time=datetime.timedelta(0), error_code=error,
                 error_message=message, acquisition_lock_timeout=datetime.timedelta(0), responses=(), node_endpoints=())
