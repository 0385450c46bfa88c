"""FindCoordinator (key 10).

Behaviour: a group (key_type 0) is coordinated by the leader of ``__consumer_offsets``
partition 0; a transactional id (key_type 1) by the leader of its ``__transaction_state``
partition (``abs(javaHashCode(id)) % transaction.state.log.num.partitions``; the topic is
created on the first such lookup, as Kafka does); key_type 2 (share, Kafka 4.2's
"group:topicId:partition" keys of share-partition state) by the leader of
``__share_group_state``-0, where the share coordinator lives. v4+ batches the keys in
``coordinator_keys`` and answers one Coordinator entry per key; v0-3 answer one key.
Versions: 0-6 (v3+ flexible; v4 batched; v5/v6 only add error codes). Errors: INVALID_REQUEST
for an unknown key_type or an empty transactional id, COORDINATOR_NOT_AVAILABLE while the group
coordinator has not loaded ``__consumer_offsets`` yet, or ``__transaction_state`` is being
created or has no leader.
"""

from __future__ import annotations

import datetime

from tidelog.handlers.registry import RequestContext, handles
from tidelog.protocol.apis import build, response_module
from tidelog.protocol.errors import ErrorCode
from tidelog.protocol.topics import CONSUMER_OFFSETS, SHARE_GROUP_STATE
from tidelog.security.acl import AclOperation, ResourceType

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
    address = leader.endpoint(ctx.listener) if leader is not None else None  # the client's listener's
    if address is None:
        return -1, "", -1
    return leader.node_id, *address


def _lookup(ctx: RequestContext, key_type: int, key: str) -> tuple[ErrorCode, str | None, tuple[int, str, int]]:
    """(error, message, (node id, host, port)) for one key."""
    none = (-1, "", -1)
    if key_type == KEY_TYPE_GROUP and not ctx.access.authorize(AclOperation.DESCRIBE, ResourceType.GROUP, key):
        return ErrorCode.group_authorization_failed, None, none
    if key_type == KEY_TYPE_TRANSACTION:
        if not key:
            return ErrorCode.invalid_request, "Empty transactional id", none
        if not ctx.access.authorize(AclOperation.DESCRIBE, ResourceType.TRANSACTIONAL_ID, key):
            return ErrorCode.transactional_id_authorization_failed, None, none
        error, broker = ctx.transactions.coordinator_for(key)
        address = broker.endpoint(ctx.listener) if error is ErrorCode.none else None
        if address is None:
            return error or ErrorCode.coordinator_not_available, "The coordinator is not available", none
        return ErrorCode.none, None, (broker.node_id, *address)
    if key_type not in (KEY_TYPE_GROUP, KEY_TYPE_SHARE):
        return ErrorCode.invalid_request, f"Unknown key type {key_type}", none
    node = _coordinator(ctx, key_type)
    loaded = ctx.shares.loaded if key_type == KEY_TYPE_SHARE else ctx.groups.loaded
    if node[0] == -1 or (node[0] == ctx.node_id and not loaded):
        return ErrorCode.coordinator_not_available, "The coordinator is not available", none
    return ErrorCode.none, None, node


@handles(API_KEY)
async def handle(ctx: RequestContext, request) -> object:
    module = response_module(API_KEY, ctx.api_version)
    key_type = getattr(request, "key_type", KEY_TYPE_GROUP)
    if ctx.api_version >= 4:
        coordinators = []
        for key in request.coordinator_keys:
            error, message, (node_id, host, port) = _lookup(ctx, key_type, key)
            coordinators.append(build(module.Coordinator, key=key, node_id=node_id, host=host, port=port,
                                      error_code=error, error_message=message))
        return build(module.FindCoordinatorResponse, throttle_time=datetime.timedelta(0), coordinators=tuple(coordinators))
    error, message, (node_id, host, port) = _lookup(ctx, key_type, request.key)
    return build(module.FindCoordinatorResponse, throttle_time=datetime.timedelta(0), error_code=error,
                 error_message=message, node_id=node_id, host=host, port=port)
