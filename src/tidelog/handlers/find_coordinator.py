"""FindCoordinator (key 10).

Behaviour: this single node coordinates every group and every transactional id, so each key
(key_type 0 = group, 1 = transaction) is answered with this broker. v4+ batches the keys in
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

API_KEY = 10
KEY_TYPE_GROUP = 0
KEY_TYPE_TRANSACTION = 1


def _lookup(ctx: RequestContext, key_type: int) -> tuple[ErrorCode, str | None]:
    if key_type not in (KEY_TYPE_GROUP, KEY_TYPE_TRANSACTION):
        return ErrorCode.invalid_request, f"Unknown key type {key_type}"
    if key_type == KEY_TYPE_GROUP and not ctx.broker.groups.loaded:
        return ErrorCode.coordinator_not_available, "The coordinator is loading"
    return ErrorCode.none, None


@handles(API_KEY)
async def handle(ctx: RequestContext, request) -> object:
    broker = ctx.broker
    module = response_module(API_KEY, ctx.api_version)
    key_type = getattr(request, "key_type", KEY_TYPE_GROUP)
    if ctx.api_version >= 4:
        error, message = _lookup(ctx, key_type)
        coordinators = tuple(
            build(
                module.Coordinator,
                key=key,
                node_id=broker.node_id if error is ErrorCode.none else -1,
                host=broker.advertised_host if error is ErrorCode.none else "",
                port=broker.advertised_port if error is ErrorCode.none else -1,
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
        node_id=broker.node_id if ok else -1,
        host=broker.advertised_host if ok else "",
        port=broker.advertised_port if ok else -1,
    )
