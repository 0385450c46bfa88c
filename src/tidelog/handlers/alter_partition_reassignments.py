"""AlterPartitionReassignments (key 45).

Behaviour: for each partition, start moving its replicas to the given brokers (Kafka's
protocol): the state's ``replicas`` become the target followed by the replicas leaving, the
new ones (``adding``) start following the leader and catch up; once every target replica is in
the ISR the controller moves leadership to a target replica if the leader is leaving and drops
the leaving replicas, whose brokers delete them. Producers and consumers go on throughout (at
most a leader change). Replicas ``null`` cancels the partition's reassignment (back to the
replicas it had). The same target as the current replicas changes nothing. Any broker serves
it: the state is written by compare-and-swap in the metadata store, as the controller's are.
Versions: 0 (flexible; v1, Kafka 4.1, adds allow_replication_factor_change). Errors (per
partition): UNKNOWN_TOPIC_OR_PARTITION, INVALID_REPLICA_ASSIGNMENT (empty, duplicate, or a
broker that is not registered), NO_REASSIGNMENT_IN_PROGRESS (cancel with none),
REQUEST_TIMED_OUT (the state kept changing under us).
"""

from __future__ import annotations

import datetime

from tidelog.cluster.metadata import PartitionState
from tidelog.handlers.registry import RequestContext, handles
from tidelog.protocol.apis import build, response_module
from tidelog.protocol.errors import ErrorCode, KafkaError

API_KEY = 45
CAS_ATTEMPTS = 20


def wanted_state(state: PartitionState, replicas: tuple[int, ...] | None, live: set[int]) -> PartitionState | None:
    """The state that starts (or cancels) the reassignment; None when nothing changes."""
    if replicas is None:
        if not state.reassigning:
            raise KafkaError(ErrorCode.no_reassignment_in_progress, "No reassignment is in progress for this partition.")
        return state.cancelled_reassignment()
    if not replicas:
        raise KafkaError(ErrorCode.invalid_replica_assignment, "The replica list is empty.")
    if len(set(replicas)) != len(replicas):
        raise KafkaError(ErrorCode.invalid_replica_assignment, f"The replica list {list(replicas)} has duplicates.")
    unknown = [r for r in replicas if r not in live]
    if unknown:
        raise KafkaError(ErrorCode.invalid_replica_assignment,
                         f"The manual partition assignment includes broker {unknown[0]}, but no such broker is registered.")
    if tuple(replicas) == state.replicas and not state.reassigning:
        return None
    return state.reassigned(tuple(replicas))


async def reassign(ctx, topic: str, partition: int, replicas: tuple[int, ...] | None) -> None:
    store = ctx.metadata
    for _ in range(CAS_ATTEMPTS):
        record = store.topics.get(topic)
        state = store.partitions.get((topic, partition))
        if record is None or state is None or not 0 <= partition < record.partitions:
            raise KafkaError(ErrorCode.unknown_topic_or_partition, "This server does not host this topic-partition.")
        wanted = wanted_state(state, replicas, set(store.brokers))
        if wanted is None or await store.compare_and_set_partition(topic, partition, wanted) is not None:
            ctx.replicas.refresh(topic)
            return
    raise KafkaError(ErrorCode.request_timed_out, "The partition state kept changing; try again.")


@handles(API_KEY)
async def handle(ctx: RequestContext, request) -> object:
    module = response_module(API_KEY, ctx.api_version)
    topics = []
    for topic in request.topics:
        partitions = []
        for p in topic.partitions:
            try:
                await reassign(ctx, topic.name, p.partition_index,
                               tuple(p.replicas) if p.replicas is not None else None)
                error, message = ErrorCode.none, None
            except KafkaError as e:
                error, message = e.error_code, e.message
            partitions.append(build(module.ReassignablePartitionResponse, partition_index=p.partition_index,
                                    error_code=error, error_message=message))
        topics.append(build(module.ReassignableTopicResponse, name=topic.name, partitions=tuple(partitions)))
    return build(module.AlterPartitionReassignmentsResponse, throttle_time=datetime.timedelta(0),
                 error_code=ErrorCode.none, error_message=None, allow_replication_factor_change=True,
                 responses=tuple(topics))
