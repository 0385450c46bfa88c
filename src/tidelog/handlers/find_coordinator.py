"""FindCoordinator (key 10).

Behaviour: this single node coordinates every group and every transactional id, so each key
(key_type 0 = group, 1 = transaction) is answered with this ctx; key_type 2 (share, Kafka 4.2's
"group:topicId:partition" keys of share-partition state) with the leader of
``__share_group_state``-0, where the share coordinator lives. v4+ batches the keys in
``coordinator_keys`` and answers one Coordinator entry per key; v0-3 answer one key.
Versions: 0-6 (v3+ flexible; v4 batched; v5/v6 only add error codes). Errors: INVALID_REQUEST
for an unknown key_type (or a key type other than group in v0), COORDINATOR_NOT_AVAILABLE
while the group coordinator has not loaded ``__consumer_offsets`` yet.
"""

from __future__ import annotations

import datetime

from tidelog.handlers.registry import RequestContext, handles
from tidelog.protocol.apis import build, response_module
from tidelog.protocol.errors import ErrorCode
from tidelog.protocol.topics import CONSUMER_OFFSETS, SHARE_GROUP_STATE

API_KEY = 10
KEY_TYPE_GROUP = 0
KEY_TYPE_TRANSACTION = 1
KEY_TYPE_SHARE = 2


def _coordinator(ctx: RequestContext, key_type: int = KEY_TYPE_GROUP) -> tuple[int, str, int]:
    """(node id, host, port) of the coordinator: this broker, or in a cluster the leader of
    ``__consumer_offsets`` partition 0 (where the group coordinator lives), or for share keys of
    ``__share_group_state`` partition 0."""
    topic = SHARE_GROUP_STATE if key_type == KEY_TYPE_SHARE else CONSUMER_OFFSETS
    state = ctx.metadata.partitions.get((topic, 0))
    leader = ctx.metadata.brokers.get(state.leader) if state is not None else None
    if leader is None:
        return -1, "", -1
    return leader.node_id, leader.host, leader.port


def _lookup(ctx: RequestContext, key_type: int) -> tuple[ErrorCode, str | None]:
    if key_type not in (KEY_TYPE_GROUP, KEY_TYPE_TRANSACTION, KEY_TYPE_SHARE):
        return ErrorCode.invalid_request, f"Unknown key type {key_type}"
    node_id = _coordinator(ctx, key_type)[0]
    loaded = ctx.shares.loaded if key_type == KEY_TYPE_SHARE else ctx.groups.loaded
    if node_id == -1 or (node_id == ctx.node_id and not loaded):
        return ErrorCode.coordinator_not_available, "The coordinator is not available"
    return ErrorCode.none, None


@handles(API_KEY)
async def handle(ctx: RequestContext, request) -> object:
    module = response_module(API_KEY, ctx.api_version)
    key_type = getattr(request, "key_type", KEY_TYPE_GROUP)
    node_id, host, port = _coordinator(ctx, key_type)
    if ctx.api_version >= 4:
        error, message = _lookup(ctx, key_type)
        coordinators = tuple(
            build(
                module.Coordinator,
                key=key,
                node_id=node_id if error is ErrorCode.none else -1,
                host=host if error is ErrorCode.none else "",
                port=port if error is ErrorCode.none else -1,
                error_code=error,
                error_message=message,
            )
            for key in request.coordinator_keys
        )
        return build(module.FindCoordinatorResponse, throttle_time=datetime.timedelta(0), coordinators=coordinators)
    error, message = _lookup(ctx, key_type)
    ok = error is ErrorCode.none
    return build(
        module.FindCoordinatorResponse,
        throttle_time=datetime.timedelta(0),
        error_code=error,
        error_message=message,
        node_id=node_id if ok else -1,
        host=host if ok else "",
        port=port if ok else -1,
    )
