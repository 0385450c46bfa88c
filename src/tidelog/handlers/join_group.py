"""JoinGroup (key 11).

Behaviour: joins a member to a classic group and waits (the request is parked) until the join
phase of the rebalance completes; the leader gets every member's metadata for the selected
protocol, followers an empty list. v4+ members without an id get MEMBER_ID_REQUIRED and a new
id first (KIP-394); static members (v5+ ``group_instance_id``, KIP-345) keep their place across
restarts. See groups/classic_group.py for the state machine and groups/classic_protocol.py.
Versions: 2-9 (v5 group_instance_id, v6 flexible, v7 protocol_type/name in the response,
v8 reason, v9 skip_assignment for a rejoining static leader). Errors: INVALID_GROUP_ID,
INVALID_SESSION_TIMEOUT, INCONSISTENT_GROUP_PROTOCOL, MEMBER_ID_REQUIRED, UNKNOWN_MEMBER_ID,
FENCED_INSTANCE_ID, COORDINATOR_NOT_AVAILABLE, REBALANCE_IN_PROGRESS.
"""

from __future__ import annotations

import datetime

from tidelog.handlers.registry import RequestContext, handles
from tidelog.protocol.apis import build, response_module
from tidelog.protocol.errors import ErrorCode

API_KEY = 11


def _ms(value) -> int:
    return int(value.total_seconds() * 1000) if isinstance(value, datetime.timedelta) else int(value)


def client_host(ctx: RequestContext) -> str:
    return "/" + ctx.peer.rsplit(":", 1)[0]


@handles(API_KEY)
async def handle(ctx: RequestContext, request) -> object:
    version = ctx.api_version
    module = response_module(API_KEY, version)
    rebalance_timeout_ms = _ms(request.rebalance_timeout)
    session_timeout_ms = _ms(request.session_timeout)
    if rebalance_timeout_ms < 0:  # v0 had no rebalance timeout: Kafka uses the session timeout
        rebalance_timeout_ms = session_timeout_ms
    error = ctx.group_coordinator_error()
    if error is not None:
        return build(module.JoinGroupResponse, throttle_time=datetime.timedelta(0), error_code=error, generation_id=-1,
                     protocol_type=None, protocol_name=None if version >= 7 else "", leader="", skip_assignment=False,
                     member_id=request.member_id, members=())
    result = await ctx.groups.classic.join_group(
        request.group_id,
        request.member_id,
        getattr(request, "group_instance_id", None),
        ctx.header.client_id or "",
        client_host(ctx),
        session_timeout_ms,
        rebalance_timeout_ms,
        request.protocol_type,
        [(p.name, p.metadata) for p in request.protocols],
        require_known_member_id=version >= 4,
    )
    members = tuple(
        build(module.JoinGroupResponseMember, member_id=member_id, group_instance_id=instance_id, metadata=metadata)
        for member_id, instance_id, metadata in result.members
    )
    ok = result.error is ErrorCode.none
    protocol_name = result.protocol_name if ok else None
    if version < 7 and protocol_name is None:
        protocol_name = ""
    return build(
        module.JoinGroupResponse,
        throttle_time=datetime.timedelta(0),
        error_code=result.error,
        generation_id=result.generation_id,
        protocol_type=result.protocol_type if ok else None,
        protocol_name=protocol_name,
        leader=result.leader_id,
        skip_assignment=result.skip_assignment and version >= 9,
        member_id=result.member_id,
        members=members,
    )
