"""ShareGroupHeartbeat (key 76, KIP-932).

Behaviour: the one membership request of share groups. A member joins with epoch 0 (its member
id made by the client) and the topics it subscribes to by name, heartbeats with its epoch every
``heartbeat_interval``, and leaves with -1 (its acquired records become available, the delivery
not counted). The coordinator assigns partitions with Kafka's SimpleAssignor (several members may
share a partition) and answers the member's assignment when it changed; there is no revocation
step. The first heartbeat of any share group creates ``__share_group_state`` (as Kafka does).
Before a partition is first assigned to a group its share-partition state is initialised
(``share.auto.offset.reset``), so records produced after the subscription are never skipped.
A member without a heartbeat for ``share.session.timeout.ms`` is removed (its records are
released, the delivery counted). See queues/share_group.py.
Versions: 1 (Kafka 4.2; v0 was 4.0's early access). Errors: INVALID_REQUEST (empty member id or
group id, no topics at epoch 0, epoch below -1), GROUP_ID_NOT_FOUND (the id is a classic or
consumer group, or an unknown group with epoch > 0), UNKNOWN_MEMBER_ID (also for a group known only
by its durable state, after a restart: the member rejoins), FENCED_MEMBER_EPOCH,
GROUP_MAX_SIZE_REACHED (``group.share.max.size``), NOT_COORDINATOR / COORDINATOR_LOAD_IN_PROGRESS
(this broker is not the group coordinator, or is loading), COORDINATOR_NOT_AVAILABLE (the share
state is not loaded, or writing it failed; the client retries). A share state that cannot be
loaded or read is logged: a WARNING naming why, then DEBUG while the same cause repeats.
"""

from __future__ import annotations

import datetime
import logging

from tidelog.handlers.join_group import client_host
from tidelog.handlers.registry import RequestContext, handles
from tidelog.protocol.apis import build, response_module
from tidelog.protocol.errors import ErrorCode, KafkaError

API_KEY = 76

logger = logging.getLogger(__name__)

# The error of the share state's last failed load or read, until one succeeds: a failure with
# another error is logged at WARNING, its repeats (every member's every heartbeat) at DEBUG.
_failing: ErrorCode | None = None


@handles(API_KEY)
async def handle(ctx: RequestContext, request) -> object:
    global _failing
    module = response_module(API_KEY, ctx.api_version)
    error = ctx.group_coordinator_error()
    if error is not None:
        message = "This is not the group coordinator" if error is ErrorCode.not_coordinator else "The coordinator is loading"
        return _error(module, error, message)
    try:
        await ctx.shares.ensure_loaded()
        if request.group_id not in ctx.shares.membership.groups:
            # a coordinator that just took over knows the group only by its state: read it first, so
            # the member gets UNKNOWN_MEMBER_ID (it rejoins), not GROUP_ID_NOT_FOUND (fatal to clients)
            await ctx.shares.catch_up()
    except KafkaError as e:
        _state_failed(request.group_id, e)
        return _error(module, e.error_code, e.message)
    _failing = None
    topics = ctx.shares.topics_info()
    names = request.subscribed_topic_names
    result = await ctx.shares.membership.heartbeat(
        request.group_id, request.member_id, request.member_epoch, rack_id=request.rack_id,
        subscribed_topic_names=list(names) if names is not None else None,
        client_id=ctx.header.client_id or "", client_host=client_host(ctx), topics=topics)
    if result.error != ErrorCode.none:
        return _error(module, result.error, result.message)
    assignment = None
    if result.assignment is not None:
        assignment = build(module.Assignment, topic_partitions=tuple(
            build(module.TopicPartitions, topic_id=topic_id, partitions=tuple(sorted(partitions)))
            for topic_id, partitions in sorted(result.assignment.items(), key=lambda kv: str(kv[0]))))
    return build(module.ShareGroupHeartbeatResponse, throttle_time=datetime.timedelta(0), error_code=ErrorCode.none,
                 error_message=None, member_id=result.member_id, member_epoch=result.member_epoch,
                 heartbeat_interval=datetime.timedelta(milliseconds=result.heartbeat_interval_ms),
                 assignment=assignment)


def _state_failed(group_id: str, error: KafkaError) -> None:
    global _failing
    level = logging.DEBUG if error.error_code == _failing else logging.WARNING
    _failing = error.error_code
    logger.log(level, "ShareGroupHeartbeat of share group %s answered %s: the share state cannot be read here: %s",
               group_id, error.error_code.name, error.message)


def _error(module, error: ErrorCode, message: str | None) -> object:
    return build(module.ShareGroupHeartbeatResponse, throttle_time=datetime.timedelta(0), error_code=error,
                 error_message=message, member_id=None, member_epoch=0, heartbeat_interval=datetime.timedelta(0),
                 assignment=None)
