"""SyncGroup (key 14).

Behaviour: after a join phase, the leader sends the assignment; every member's SyncGroup
waits for it and returns the member's own assignment. The group becomes Stable once the
assignment (with the group metadata) is durable in ``__consumer_offsets``. In a Stable group
it returns the current assignment at once. See groups/classic_protocol.py.
Versions: 0-5 (v3 group_instance_id, v4 flexible, v5 protocol_type/name checked against the
group's). Errors: UNKNOWN_MEMBER_ID, ILLEGAL_GENERATION, REBALANCE_IN_PROGRESS,
FENCED_INSTANCE_ID, INCONSISTENT_GROUP_PROTOCOL, COORDINATOR_NOT_AVAILABLE.
"""

from __future__ import annotations

import datetime

from tidelog.handlers.registry import RequestContext, handles
from tidelog.protocol.apis import build, response_module

API_KEY = 14


@handles(API_KEY)
async def handle(ctx: RequestContext, request) -> object:
    error = ctx.group_coordinator_error()
    if error is not None:
        return build(response_module(API_KEY, ctx.api_version).SyncGroupResponse, throttle_time=datetime.timedelta(0),
                     error_code=error, protocol_type=None, protocol_name=None, assignment=b"")
    result = await ctx.groups.classic.sync_group(
        request.group_id,
        request.generation_id,
        request.member_id,
        getattr(request, "group_instance_id", None),
        getattr(request, "protocol_type", None),
        getattr(request, "protocol_name", None),
        {a.member_id: a.assignment for a in request.assignments},
    )
    module = response_module(API_KEY, ctx.api_version)
    return build(
        module.SyncGroupResponse,
        throttle_time=datetime.timedelta(0),
        error_code=result.error,
        protocol_type=result.protocol_type,
        protocol_name=result.protocol_name,
        assignment=result.assignment,
    )
