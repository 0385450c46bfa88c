"""DescribeProducers (key 61).

Behaviour: for each partition asked, the idempotent and transactional producers its leader's
producer state holds (Kafka's admin ``describeProducers``, ``kafka-transactions.sh
describe-producers``): producer id and epoch, the last sequence and the time of its last batch,
and, with a transaction open here, its coordinator epoch and first offset (else -1). A delay
topic's mover (queues/delay_mover.py) asks the target partition's leader for its own producer
id to find where it stopped.
Versions: 0. Errors (per partition): TOPIC_AUTHORIZATION_FAILED (READ on the topic, as Kafka),
UNKNOWN_TOPIC_OR_PARTITION, NOT_LEADER_OR_FOLLOWER, KAFKA_STORAGE_ERROR.
"""

from __future__ import annotations

import datetime

from tidelog.handlers.registry import RequestContext, handles
from tidelog.protocol.apis import build, response_module
from tidelog.protocol.errors import ErrorCode
from tidelog.security.acl import AclOperation, ResourceType

API_KEY = 61


def _producers(module, partition) -> tuple:
    transactions = partition.transactions
    found = []
    for producer_id, entry in list(partition.producer_state.producers.items()):
        txn = transactions.state.producers.get(producer_id)
        open_offset = transactions.open_transaction(producer_id)
        found.append(build(
            module.ProducerState, producer_id=producer_id, producer_epoch=entry.epoch,
            last_sequence=entry.batches[-1][1] if entry.batches else -1, last_timestamp=entry.last_timestamp_ms,
            coordinator_epoch=txn.coordinator_epoch if txn is not None else -1,
            current_txn_start_offset=open_offset if open_offset is not None else -1))
    return tuple(found)


@handles(API_KEY)
async def handle(ctx: RequestContext, request) -> object:
    module = response_module(API_KEY, ctx.api_version)
    topics = []
    for topic in request.topics:
        readable = ctx.access.authorize(AclOperation.READ, ResourceType.TOPIC, topic.name)
        partitions = []
        for index in topic.partition_indexes:
            partition = ctx.replicas.get(topic.name, index) if readable else None
            producers: tuple = ()
            if not readable:
                error = ErrorCode.topic_authorization_failed
            elif partition is None:
                error = ErrorCode.unknown_topic_or_partition
            else:
                error = partition.leader_error() or ErrorCode.none
                if error == ErrorCode.none:
                    producers = _producers(module, partition)
            partitions.append(build(module.PartitionResponse, partition_index=index, error_code=error,
                                    error_message=None, active_producers=producers))
        topics.append(build(module.TopicResponse, name=topic.name, partitions=tuple(partitions)))
    return build(module.DescribeProducersResponse, throttle_time=datetime.timedelta(0), topics=tuple(topics))
