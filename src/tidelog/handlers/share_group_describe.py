"""ShareGroupDescribe (key 77, KIP-932).

Behaviour: describes share groups by id: state (Empty, Stable), group epoch, assignment epoch,
the assignor ("simple"), and each member's id, rack, epoch, client id and host, subscribed topic
names and assigned partitions (topic id and name), and the group's authorized operations when
asked for (-2147483648 otherwise). Needs DESCRIBE on each group (GROUP_AUTHORIZATION_FAILED).
Versions: 1 (Kafka 4.2). Errors per group: GROUP_AUTHORIZATION_FAILED, GROUP_ID_NOT_FOUND (no such
share group, or the id is a classic or consumer group), NOT_COORDINATOR / COORDINATOR_LOAD_IN_PROGRESS (not the group
coordinator, or loading).
"""

from __future__ import annotations

import datetime

from tidelog.handlers.registry import RequestContext, handles
from tidelog.protocol.apis import build, response_module
from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.queues.share_group import ASSIGNOR_NAME, DEAD
from tidelog.security.acl import AclOperation, ResourceType

API_KEY = 77
NOT_REQUESTED = -2147483648


@handles(API_KEY)
async def handle(ctx: RequestContext, request) -> object:
    module = response_module(API_KEY, ctx.api_version)
    coordinator_error = ctx.group_coordinator_error()
    groups = []
    for group_id in request.group_ids:
        try:
            if not ctx.access.authorize(AclOperation.DESCRIBE, ResourceType.GROUP, group_id):
                raise KafkaError(ErrorCode.group_authorization_failed, None)
            if coordinator_error is not None:
                raise KafkaError(coordinator_error, "This is not the group coordinator" if coordinator_error is
                                 ErrorCode.not_coordinator else "The coordinator is loading")
            if ctx.groups.registry.known(group_id):
                raise KafkaError(ErrorCode.group_id_not_found, f"Group {group_id} is not a share group.")
            group = ctx.shares.membership.describe(group_id)
        except KafkaError as e:
            groups.append(build(module.DescribedGroup, error_code=e.error_code, error_message=e.message,
                                group_id=group_id, group_state=DEAD, group_epoch=-1, assignment_epoch=-1,
                                assignor_name="", members=(), authorized_operations=NOT_REQUESTED))
            continue
        members = tuple(build(
            module.Member, member_id=m.member_id, rack_id=m.rack_id, member_epoch=m.member_epoch,
            client_id=m.client_id, client_host=m.client_host,
            subscribed_topic_names=tuple(m.subscribed_topic_names),
            assignment=build(module.Assignment, topic_partitions=_topic_partitions(ctx, module, m.assigned)))
            for m in group.members.values())
        groups.append(build(module.DescribedGroup, error_code=ErrorCode.none, error_message=None, group_id=group_id,
                            group_state=group.state, group_epoch=group.group_epoch,
                            assignment_epoch=group.assignment_epoch, assignor_name=ASSIGNOR_NAME, members=members,
                            authorized_operations=ctx.access.authorized_operations(ResourceType.GROUP, group_id)
                            if request.include_authorized_operations else NOT_REQUESTED))
    return build(module.ShareGroupDescribeResponse, throttle_time=datetime.timedelta(0), groups=tuple(groups))


def _topic_partitions(ctx: RequestContext, module, assigned) -> tuple:
    out = []
    for topic_id, partitions in sorted(assigned.items(), key=lambda kv: str(kv[0])):
        record = ctx.topics.topic_by_id(topic_id)
        out.append(build(module.TopicPartitions, topic_id=topic_id, topic_name=record.name if record else "",
                         partitions=tuple(sorted(partitions))))
    return tuple(out)
