"""ListPartitionReassignments (key 46).

Behaviour: the partitions with a reassignment in progress (all of them, or those of the
requested topics and partitions): their replicas (target first, then those leaving), the
replicas being added and those being removed. Partitions without one are left out, unknown
ones too (as Kafka does).
Versions: 0 (flexible). Errors: none of its own.
"""

from __future__ import annotations

import datetime

from tidelog.handlers.registry import RequestContext, handles
from tidelog.protocol.apis import build, response_module
from tidelog.protocol.errors import ErrorCode

API_KEY = 46


@handles(API_KEY)
async def handle(ctx: RequestContext, request) -> object:
    module = response_module(API_KEY, ctx.api_version)
    store = ctx.metadata
    if request.topics is None:
        wanted = sorted(key for key, state in list(store.partitions.items()) if state.reassigning)
    else:
        wanted = [(t.name, p) for t in request.topics for p in t.partition_indexes]
    by_topic: dict[str, list] = {}
    for topic, partition in wanted:
        state = store.partitions.get((topic, partition))
        if state is None or not state.reassigning:
            continue
        by_topic.setdefault(topic, []).append(build(
            module.OngoingPartitionReassignment, partition_index=partition, replicas=state.replicas,
            adding_replicas=state.adding, removing_replicas=state.removing))
    return build(module.ListPartitionReassignmentsResponse, throttle_time=datetime.timedelta(0),
                 error_code=ErrorCode.none, error_message=None,
                 topics=tuple(build(module.OngoingTopicReassignment, name=t, partitions=tuple(ps)) for t, ps in by_topic.items()))
