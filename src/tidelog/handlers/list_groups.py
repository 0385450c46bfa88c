"""ListGroups (key 16).

Behaviour: lists the groups this coordinator knows (every group, single node), with their
protocol type; v4+ also their state, filtered by ``states_filter`` (case-insensitive);
v5+ their type ("classic", or "consumer" for KIP-848 groups, whose protocol type is
"consumer" and states Empty/Assigning/Reconciling/Stable; "share" for share groups, protocol
type "share", states Empty/Stable), filtered by ``types_filter``.
Versions: 0-5 (v3 flexible). Errors: none beyond NONE here (COORDINATOR_LOAD_IN_PROGRESS in
Kafka while loading; this broker loads before it listens).
"""

from __future__ import annotations

import datetime

from tidelog.handlers.registry import RequestContext, handles
from tidelog.protocol.apis import build, response_module
from tidelog.protocol.errors import ErrorCode
from tidelog.queues.share_group import GROUP_TYPE_SHARE, PROTOCOL_TYPE_SHARE
from tidelog.security.acl import AclOperation, ResourceType

API_KEY = 16


@handles(API_KEY)
async def handle(ctx: RequestContext, request) -> object:
    module = response_module(API_KEY, ctx.api_version)
    states, types = getattr(request, "states_filter", ()), getattr(request, "types_filter", ())
    listed = ctx.groups.admin.list_groups(states, types)
    if ctx.shares is not None and (not types or GROUP_TYPE_SHARE in {t.lower() for t in types}):
        listed += [(g.group_id, PROTOCOL_TYPE_SHARE, g.state, GROUP_TYPE_SHARE) for g in ctx.shares.list_groups(states)]
    if not ctx.access.authorize(AclOperation.DESCRIBE, ResourceType.CLUSTER, log_if_denied=False):
        visible = ctx.access.authorized(AclOperation.DESCRIBE, ResourceType.GROUP, (g[0] for g in listed),
                                        log_if_denied=False)
        listed = [g for g in listed if g[0] in visible]
    groups = tuple(
        build(module.ListedGroup, group_id=group_id, protocol_type=protocol_type, group_state=state, group_type=group_type)
        for group_id, protocol_type, state, group_type in listed
    )
    return build(module.ListGroupsResponse, throttle_time=datetime.timedelta(0), error_code=ErrorCode.none, groups=groups)
