"""DeleteGroups (key 42).

Behaviour: deletes Empty groups (classic or consumer-protocol) with their committed offsets (tombstones in
``__consumer_offsets``, durable before the answer), and Empty share groups with their share-partition
state (tombstones in ``__share_group_state``).
Versions: 0-2 (v2 flexible). Errors (per group): GROUP_ID_NOT_FOUND, NON_EMPTY_GROUP,
INVALID_GROUP_ID, GROUP_AUTHORIZATION_FAILED (no DELETE on the group).
"""

from __future__ import annotations

import datetime

from tidelog.handlers.registry import RequestContext, handles
from tidelog.protocol.apis import build, response_module
from tidelog.protocol.errors import ErrorCode
from tidelog.security.acl import AclOperation, ResourceType

API_KEY = 42


@handles(API_KEY)
async def handle(ctx: RequestContext, request) -> object:
    module = response_module(API_KEY, ctx.api_version)
    group_ids = list(dict.fromkeys(request.groups_names))
    allowed = ctx.access.authorized(AclOperation.DELETE, ResourceType.GROUP, group_ids)
    denied = {g: ErrorCode.group_authorization_failed for g in group_ids if g not in allowed}
    group_ids = [g for g in group_ids if g in allowed]
    error = ctx.group_coordinator_error()
    if error is not None:
        results = {group_id: error for group_id in group_ids}
    else:
        shared = [g for g in group_ids if ctx.shares.group(g) is not None and not ctx.groups.registry.known(g)]
        results = await ctx.groups.admin.delete_groups([g for g in group_ids if g not in shared])
        for group_id in shared:
            results[group_id] = await ctx.shares.delete_group(group_id)
        results = {g: results[g] for g in group_ids}
    results = {**denied, **results}
    return build(
        module.DeleteGroupsResponse,
        throttle_time=datetime.timedelta(0),
        results=tuple(build(module.DeletableGroupResult, group_id=g, error_code=e) for g, e in results.items()),
    )
