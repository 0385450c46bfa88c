"""ConsumerGroupHeartbeat (key 68, KIP-848).

Behaviour: the one request of the new consumer group protocol. A member joins with epoch 0
(its subscription by topic names or, v1, by a regex, and an optional ``server_assignor``),
then heartbeats every ``heartbeat_interval`` with its epoch and, when they changed, the
partitions it owns; the broker computes the target assignment with its ``uniform`` or
``range`` assignor and answers each member its next step: first the partitions it keeps
(so it revokes the others), then, once its owned partitions show them released, its new
partitions with a new member epoch. Epoch -1 leaves; -2 leaves temporarily (static member).
Regular expressions are Kafka's RE2/J, matched with Python's ``re`` here (whole topic name).
See groups/consumer_protocol.py and groups/consumer_group.py.
Versions: 0-1 (v1: the client generates the member id, which must not be empty; regex
subscriptions). Errors: INVALID_REQUEST, INVALID_GROUP_ID, UNKNOWN_MEMBER_ID,
FENCED_MEMBER_EPOCH, FENCED_INSTANCE_ID, UNRELEASED_INSTANCE_ID, GROUP_MAX_SIZE_REACHED,
UNSUPPORTED_ASSIGNOR, INVALID_REGULAR_EXPRESSION, GROUP_ID_NOT_FOUND (the id is a classic group
with members), COORDINATOR_NOT_AVAILABLE (still loading, or the group's write to
__consumer_offsets failed or timed out: Kafka's mapping; the client's retry writes it again, but
a leave's retry finds the member gone, UNKNOWN_MEMBER_ID; a failed write is also written again by
the coordinator after a back-off, so a leave's removal is stored with no member heartbeating),
NOT_COORDINATOR (that write found the coordinator moved).
"""

from __future__ import annotations

import datetime

from tidelog.groups.consumer_group import TopicMetadata
from tidelog.handlers.join_group import client_host
from tidelog.handlers.registry import RequestContext, handles
from tidelog.protocol.apis import build, response_module
from tidelog.protocol.errors import ErrorCode

API_KEY = 68


def _ms(value) -> int:
    return int(value.total_seconds() * 1000) if isinstance(value, datetime.timedelta) else int(value)


@handles(API_KEY)
async def handle(ctx: RequestContext, request) -> object:
    module = response_module(API_KEY, ctx.api_version)
    groups = ctx.groups
    error = ctx.group_coordinator_error()
    if error is not None:
        message = "This is not the group coordinator" if error is ErrorCode.not_coordinator else "The coordinator is loading"
        return build(module.ConsumerGroupHeartbeatResponse, throttle_time=datetime.timedelta(0),
                     error_code=error, error_message=message,
                     member_id=None, member_epoch=0, heartbeat_interval=datetime.timedelta(0), assignment=None)
    owned = None
    if request.topic_partitions is not None:
        owned = {}
        for tp in request.topic_partitions:
            owned.setdefault(tp.topic_id, set()).update(tp.partitions)
    topics = {t.name: TopicMetadata(t.topic_id, t.partitions) for t in ctx.metadata.topics.values()}
    names = request.subscribed_topic_names
    result = await groups.consumer.heartbeat(
        request.group_id, request.member_id, request.member_epoch,
        instance_id=request.instance_id, rack_id=request.rack_id,
        rebalance_timeout_ms=_ms(request.rebalance_timeout),
        subscribed_topic_names=list(names) if names is not None else None,
        subscribed_topic_regex=getattr(request, "subscribed_topic_regex", None),
        server_assignor=request.server_assignor, owned=owned,
        client_id=ctx.header.client_id or "", client_host=client_host(ctx), api_version=ctx.api_version,
        topics=topics,
    )
    assignment = None
    if result.assignment is not None:
        assignment = build(module.Assignment, topic_partitions=tuple(
            build(module.TopicPartitions, topic_id=topic_id, partitions=tuple(sorted(partitions)))
            for topic_id, partitions in sorted(result.assignment.items(), key=lambda kv: str(kv[0]))
        ))
    return build(
        module.ConsumerGroupHeartbeatResponse,
        throttle_time=datetime.timedelta(0),
        error_code=result.error,
        error_message=result.message,
        member_id=result.member_id,
        member_epoch=result.member_epoch,
        heartbeat_interval=datetime.timedelta(milliseconds=result.heartbeat_interval_ms),
        assignment=assignment,
    )
