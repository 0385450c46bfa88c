"""ConsumerGroupDescribe (key 69, KIP-848).

Behaviour: describes consumer-protocol groups: state (Empty, Assigning, Reconciling, Stable),
group epoch, assignment epoch, the assignor of the last target assignment, and each member
with its subscription, epoch, current assignment and target assignment (topic ids and names).
A classic group or an unknown id gets GROUP_ID_NOT_FOUND, which tells admin clients to use
DescribeGroups instead (KIP-1043). Authorized operations are not computed (INT32_MIN).
Versions: 0-1 (v1 adds member_type: 1 for consumer-protocol members).
Errors: GROUP_ID_NOT_FOUND, INVALID_GROUP_ID.
"""

from __future__ import annotations

import datetime

from tidelog.handlers.registry import RequestContext, handles
from tidelog.protocol.apis import build, response_module
from tidelog.protocol.errors import ErrorCode

API_KEY = 69
AUTHORIZED_OPERATIONS_OMITTED = -(2**31)
MEMBER_TYPE_CONSUMER = 1


def _not_found(module, group_id: str, error: ErrorCode, message: str):
    return build(module.DescribedGroup, error_code=error, error_message=message, group_id=group_id,
                 group_state="Dead", group_epoch=-1, assignment_epoch=-1, assignor_name="", members=(),
                 authorized_operations=AUTHORIZED_OPERATIONS_OMITTED)


@handles(API_KEY)
async def handle(ctx: RequestContext, request) -> object:
    module = response_module(API_KEY, ctx.api_version)
    coordinator = ctx.groups
    names = {t.topic_id: t.name for t in ctx.metadata.topics.values()}

    def assignment(partitions):
        return build(module.Assignment, topic_partitions=tuple(
            build(module.TopicPartitions, topic_id=topic_id, topic_name=names.get(topic_id, ""),
                  partitions=tuple(sorted(ps)))
            for topic_id, ps in sorted(partitions.items(), key=lambda kv: (names.get(kv[0], ""), str(kv[0])))
            if ps
        ))

    described = []
    coordinator_error = ctx.group_coordinator_error()
    for group_id in request.group_ids:
        if coordinator_error is not None:
            described.append(_not_found(module, group_id, coordinator_error, None))
            continue
        if not group_id:
            described.append(_not_found(module, group_id, ErrorCode.invalid_group_id, "GroupId can't be empty."))
            continue
        group = coordinator.registry.consumer_groups.get(group_id)
        if group is None:
            message = (f"Group {group_id} is not a consumer group." if group_id in coordinator.registry.groups
                       else f"Group {group_id} not found.")
            described.append(_not_found(module, group_id, ErrorCode.group_id_not_found, message))
            continue
        members = tuple(
            build(module.Member, member_id=m.member_id, instance_id=m.instance_id, rack_id=m.rack_id,
                  member_epoch=m.member_epoch, client_id=m.client_id, client_host=m.client_host,
                  subscribed_topic_names=tuple(m.subscribed_topic_names), subscribed_topic_regex=m.subscribed_topic_regex,
                  assignment=assignment(m.assigned), target_assignment=assignment(group.target.get(m.member_id, {})),
                  member_type=MEMBER_TYPE_CONSUMER)
            for m in group.members.values()
        )
        described.append(build(
            module.DescribedGroup, error_code=ErrorCode.none, error_message=None, group_id=group_id,
            group_state=group.state, group_epoch=group.group_epoch, assignment_epoch=group.assignment_epoch,
            assignor_name=group.assignor_name or coordinator.settings.consumer_assignors[0], members=members,
            authorized_operations=AUTHORIZED_OPERATIONS_OMITTED,
        ))
    return build(module.ConsumerGroupDescribeResponse, throttle_time=datetime.timedelta(0), groups=tuple(described))
