"""LeaveGroup (key 13).

Behaviour: removes members from a classic group, which starts a rebalance for the others.
v0-2 name one member (``member_id``); v3+ batch ``members`` (member id and/or
group_instance_id: a static member may leave by instance id alone) with an error each.
Versions: 0-5 (v3 batched, v4 flexible, v5 reason). Errors: UNKNOWN_MEMBER_ID (per member, or
the group's in v0-2), FENCED_INSTANCE_ID, COORDINATOR_NOT_AVAILABLE.
"""

from __future__ import annotations

import datetime

from tidelog.handlers.registry import RequestContext, handles
from tidelog.protocol.apis import build, response_module
from tidelog.protocol.errors import ErrorCode

API_KEY = 13


@handles(API_KEY)
async def handle(ctx: RequestContext, request) -> object:
    module = response_module(API_KEY, ctx.api_version)
    if ctx.api_version < 3:
        members = [(request.member_id, None)]
    else:
        members = [(m.member_id, m.group_instance_id) for m in request.members]
    error = ctx.group_coordinator_error()
    if error is not None:
        if ctx.api_version < 3:
            return build(module.LeaveGroupResponse, throttle_time=datetime.timedelta(0), error_code=error)
        return build(module.LeaveGroupResponse, throttle_time=datetime.timedelta(0), error_code=error, members=())
    error, member_errors = ctx.groups.classic.leave_group(request.group_id, members)
    if ctx.api_version < 3:
        if error is ErrorCode.none:
            error = member_errors[0]
        return build(module.LeaveGroupResponse, throttle_time=datetime.timedelta(0), error_code=error)
    return build(
        module.LeaveGroupResponse,
        throttle_time=datetime.timedelta(0),
        error_code=error,
        members=tuple(
            build(module.MemberResponse, member_id=member_id, group_instance_id=instance_id, error_code=member_error)
            for (member_id, instance_id), member_error in zip(members, member_errors)
        ),
    )
