"""ElectLeaders (key 43).

Behaviour: as Kafka 4.0's controller. Election type 0 (preferred, the only one in v0) moves
leadership to a partition's preferred (first) replica: ELECTION_NOT_NEEDED when it already
leads; otherwise it becomes leader (leader epoch + 1) if it is live, in the ISR and not in
controlled shutdown (the controller's ``preferred`` rule), else PREFERRED_LEADER_NOT_AVAILABLE.
Type 1 (unclean) elects a leader only for a partition without a live one: ELECTION_NOT_NEEDED
when it has one; otherwise the first live in-sync replica, or, with none, the first live
replica (ISR = that replica; the controller's ``elect`` with unclean election allowed), else
ELIGIBLE_LEADERS_NOT_AVAILABLE. On a single node every partition is led by its only (so
preferred) replica: ELECTION_NOT_NEEDED for both types. In cluster mode any broker serves it
(Kafka forwards it to the controller): the new state is written by compare-and-swap in the
metadata store, as the controller's and reassignments' writes are, and the answer comes once
it is stored. Null ``topic_partitions`` means every partition of every topic; then each topic
is listed but partitions whose answer would be ELECTION_NOT_NEEDED are left out (as Kafka
does); an empty list elects nothing. An unknown topic or partition is
UNKNOWN_TOPIC_OR_PARTITION; an unknown election type is INVALID_REQUEST for the request and
every partition named.
Versions: 0-2. Errors: per partition ELECTION_NOT_NEEDED, PREFERRED_LEADER_NOT_AVAILABLE,
ELIGIBLE_LEADERS_NOT_AVAILABLE, UNKNOWN_TOPIC_OR_PARTITION, REQUEST_TIMED_OUT (the state kept
changing under us); top level (v1+) INVALID_REQUEST.
"""

from __future__ import annotations

import datetime

from tidelog.cluster.controller import elect, preferred
from tidelog.cluster.metadata import PartitionState
from tidelog.handlers.registry import RequestContext, handles
from tidelog.protocol.apis import build, response_module
from tidelog.protocol.errors import ErrorCode, KafkaError

API_KEY = 43
PREFERRED, UNCLEAN = 0, 1
CAS_ATTEMPTS = 20
MESSAGES = {
    ErrorCode.election_not_needed: "Leader election not needed for topic partition.",
    ErrorCode.preferred_leader_not_available: "The preferred leader was not available.",
    ErrorCode.eligible_leaders_not_available: "Eligible topic partition leaders are not available.",
}


def wanted_state(state: PartitionState, election_type: int, live: set[int], shutting_down) -> PartitionState:
    """The state after the election; raises KafkaError when there is nothing to elect."""
    if election_type == PREFERRED:
        first = state.replicas[0] if state.replicas else -1
        if state.leader == first:
            raise KafkaError(ErrorCode.election_not_needed, MESSAGES[ErrorCode.election_not_needed])
        if state.leader == -1:  # offline: the controller's rule leaves these to elect(); here it may lead now
            eligible = first in state.isr and first in live and first not in shutting_down
            wanted = state.changed(leader=first, leader_epoch=state.leader_epoch + 1) if eligible else None
        else:
            wanted = preferred(state, live, shutting_down)
        if wanted is None:
            raise KafkaError(ErrorCode.preferred_leader_not_available, MESSAGES[ErrorCode.preferred_leader_not_available])
        return wanted
    if state.leader in live:
        raise KafkaError(ErrorCode.election_not_needed, MESSAGES[ErrorCode.election_not_needed])
    wanted = elect(state, live, True, shutting_down)
    if wanted is None or wanted.leader == -1:
        raise KafkaError(ErrorCode.eligible_leaders_not_available, MESSAGES[ErrorCode.eligible_leaders_not_available])
    return wanted


async def elect_leader(ctx, topic: str, partition: int, election_type: int) -> None:
    store = ctx.metadata
    record = store.topics.get(topic)
    if record is None:
        raise KafkaError(ErrorCode.unknown_topic_or_partition, f"No such topic as {topic}")
    if not 0 <= partition < record.partitions:
        raise KafkaError(ErrorCode.unknown_topic_or_partition, f"No such partition as {topic}-{partition}")
    for _ in range(CAS_ATTEMPTS):
        state = store.partitions.get((topic, partition))
        if state is None:
            raise KafkaError(ErrorCode.unknown_topic_or_partition, f"No such partition as {topic}-{partition}")
        wanted = wanted_state(state, election_type, set(store.brokers), store.shutting_down)
        if await store.compare_and_set_partition(topic, partition, wanted) is not None:
            ctx.replicas.refresh(topic)
            return
    raise KafkaError(ErrorCode.request_timed_out, "The partition state kept changing; try again.")


@handles(API_KEY)
async def handle(ctx: RequestContext, request) -> object:
    module = response_module(API_KEY, ctx.api_version)
    election_type = getattr(request, "election_type", PREFERRED)

    def partition_result(partition: int, error: ErrorCode, message: str | None):
        return build(module.PartitionResult, partition_id=partition, error_code=error, error_message=message)

    def response(results, error=ErrorCode.none):
        return build(module.ElectLeadersResponse, throttle_time=datetime.timedelta(0), error_code=error,
                     replica_election_results=tuple(results))

    if election_type not in (PREFERRED, UNCLEAN):
        message = f"Unknown election type {election_type}"
        return response((build(module.ReplicaElectionResult, topic=t.topic,
                               partition_result=tuple(partition_result(p, ErrorCode.invalid_request, message)
                                                      for p in t.partitions))
                         for t in request.topic_partitions or ()), ErrorCode.invalid_request)

    async def run(topic: str, partition: int) -> tuple[ErrorCode, str | None]:
        try:
            await elect_leader(ctx, topic, partition, election_type)
        except KafkaError as e:
            return e.error_code, e.message
        return ErrorCode.none, None

    results = []
    if request.topic_partitions is None:
        for name, record in list(ctx.metadata.topics.items()):
            partitions = []
            for p in range(record.partitions):
                error, message = await run(name, p)
                if error != ErrorCode.election_not_needed:
                    partitions.append(partition_result(p, error, message))
            results.append(build(module.ReplicaElectionResult, topic=name, partition_result=tuple(partitions)))
    else:
        for t in request.topic_partitions:
            partitions = []
            for p in t.partitions:
                partitions.append(partition_result(p, *await run(t.topic, p)))
            results.append(build(module.ReplicaElectionResult, topic=t.topic, partition_result=tuple(partitions)))
    return response(results)
