"""Heartbeat (key 12).

Behaviour: keeps a classic group member alive (resets its session timer) and tells it whether
a rebalance started (REBALANCE_IN_PROGRESS: rejoin). See groups/classic_protocol.py.
Versions: 0-4 (v3 adds group_instance_id, v4 flexible). Errors: UNKNOWN_MEMBER_ID,
ILLEGAL_GENERATION, REBALANCE_IN_PROGRESS, FENCED_INSTANCE_ID, COORDINATOR_NOT_AVAILABLE.
"""

from __future__ import annotations

import datetime

from tidelog.handlers.registry import RequestContext, handles
from tidelog.protocol.apis import build, response_module

API_KEY = 12


@handles(API_KEY)
async def handle(ctx: RequestContext, request) -> object:
    error = ctx.group_coordinator_error() or ctx.groups.classic.heartbeat(
        request.group_id, request.generation_id, request.member_id, getattr(request, "group_instance_id", None)
    )
    module = response_module(API_KEY, ctx.api_version)
    return build(module.HeartbeatResponse, throttle_time=datetime.timedelta(0), error_code=error)
