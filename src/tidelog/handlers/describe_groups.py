"""DescribeGroups (key 15).

Behaviour: describes classic groups: state, protocol type, and members (client id, host,
instance id). In a Stable group the selected protocol and each member's metadata and
assignment are included; in other states they are empty, as in Kafka. An unknown group, or
a consumer-protocol (KIP-848) group (described by ConsumerGroupDescribe), is described as Dead with no error before v6, and with GROUP_ID_NOT_FOUND from v6 (KIP-1043).
A share group is described with protocol type "share" and its members (client id and host; no
metadata or assignment: ShareGroupDescribe has those).
Authorized operations are not computed (INT32_MIN).
Versions: 0-6 (v3 authorized operations, v4 group_instance_id, v5 flexible, v6 error
message). Errors: GROUP_ID_NOT_FOUND (v6+), INVALID_GROUP_ID.
"""

from __future__ import annotations

import datetime

from tidelog.handlers.registry import RequestContext, handles
from tidelog.protocol.apis import build, response_module
from tidelog.protocol.errors import ErrorCode
from tidelog.queues.share_group import PROTOCOL_TYPE_SHARE
from tidelog.security.acl import AclOperation, ResourceType

API_KEY = 15
AUTHORIZED_OPERATIONS_OMITTED = -(2**31)


def _dead(module, group_id: str, error: ErrorCode, message: str | None):
    return build(module.DescribedGroup, error_code=error, error_message=message, group_id=group_id, group_state="Dead",
                 protocol_type="", protocol_data="", members=(), authorized_operations=AUTHORIZED_OPERATIONS_OMITTED)


@handles(API_KEY)
async def handle(ctx: RequestContext, request) -> object:
    module = response_module(API_KEY, ctx.api_version)
    described = []
    coordinator_error = ctx.group_coordinator_error()
    for group_id in request.groups:
        if not ctx.access.authorize(AclOperation.DESCRIBE, ResourceType.GROUP, group_id):
            described.append(_dead(module, group_id, ErrorCode.group_authorization_failed, None))
            continue
        if coordinator_error is not None:
            described.append(_dead(module, group_id, coordinator_error, None))
            continue
        description = ctx.groups.admin.describe_group(group_id)
        share_group = ctx.shares.group(group_id) if description is None and ctx.shares is not None else None
        if share_group is not None:  # members without metadata or assignment (ShareGroupDescribe has them)
            members = tuple(build(module.DescribedGroupMember, member_id=m.member_id, group_instance_id=None,
                                  client_id=m.client_id, client_host=m.client_host, member_metadata=b"",
                                  member_assignment=b"") for m in share_group.members.values())
            described.append(build(
                module.DescribedGroup, error_code=ErrorCode.none, error_message=None, group_id=group_id,
                group_state=share_group.state, protocol_type=PROTOCOL_TYPE_SHARE, protocol_data="", members=members,
                authorized_operations=AUTHORIZED_OPERATIONS_OMITTED))
            continue
        if description is None:
            if ctx.api_version >= 6:
                described.append(_dead(module, group_id, ErrorCode.group_id_not_found, f"Group {group_id} not found."))
            else:
                described.append(_dead(module, group_id, ErrorCode.none, None))
            continue
        members = tuple(
            build(module.DescribedGroupMember, member_id=m.member_id, group_instance_id=m.group_instance_id,
                  client_id=m.client_id, client_host=m.client_host, member_metadata=m.metadata,
                  member_assignment=m.assignment)
            for m in description.members
        )
        described.append(build(
            module.DescribedGroup, error_code=ErrorCode.none, error_message=None, group_id=group_id,
            group_state=description.state, protocol_type=description.protocol_type,
            protocol_data=description.protocol_name, members=members,
            authorized_operations=ctx.access.authorized_operations(ResourceType.GROUP, group_id)
            if getattr(request, "include_authorized_operations", False) else AUTHORIZED_OPERATIONS_OMITTED,
        ))
    return build(module.DescribeGroupsResponse, throttle_time=datetime.timedelta(0), groups=tuple(described))
