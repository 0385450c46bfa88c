"""AddPartitionsToTxn (key 24).

Behaviour: v0-3 (a producer, before its first record to a partition in a transaction): the
partitions join the transactional id's transaction (txn/coordinator.py ``add_partitions``;
the transaction becomes Ongoing and its timeout starts at the first add). Without WRITE on the
transactional id every partition gets TRANSACTIONAL_ID_AUTHORIZATION_FAILED; partitions of
topics without WRITE get TOPIC_AUTHORIZATION_FAILED, of unknown topics
UNKNOWN_TOPIC_OR_PARTITION, and then every other partition OPERATION_NOT_ATTEMPTED, as Kafka answers; otherwise every partition gets the coordinator's
answer. v4-5 (brokers, KIP-890 part 1): one entry per transaction; ``verify_only`` asks whether
the partitions are in the transaction (``verify_partitions``, nothing changes), otherwise they
are added; they need CLUSTER_ACTION on the cluster (else the top-level
CLUSTER_AUTHORIZATION_FAILED).
Versions: 0-5. Errors (per partition): NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS,
COORDINATOR_NOT_AVAILABLE, CONCURRENT_TRANSACTIONS, INVALID_PRODUCER_ID_MAPPING,
PRODUCER_FENCED (INVALID_PRODUCER_EPOCH below v2), INVALID_TXN_STATE, UNKNOWN_TOPIC_OR_PARTITION,
OPERATION_NOT_ATTEMPTED, TRANSACTION_ABORTABLE (verify_only: not in the transaction),
INVALID_REQUEST (no transactional id).
"""

from __future__ import annotations

import datetime
import logging

from tidelog.handlers.registry import RequestContext, handles
from tidelog.protocol.apis import build, response_module
from tidelog.protocol.errors import ErrorCode
from tidelog.protocol.topics import is_internal
from tidelog.security.acl import AclOperation, ResourceType
from tidelog.txn.coordinator import client_error
from tidelog.txn.state import TopicPartition

logger = logging.getLogger(__name__)

API_KEY = 24
BROKER_VERSIONS_FROM = 4


async def _add(ctx: RequestContext, transactional_id: str, producer_id: int, producer_epoch: int, topics,
               verify_only: bool = False, from_broker: bool = False) -> dict[TopicPartition, ErrorCode]:
    partitions = [TopicPartition(t.name, p) for t in topics for p in t.partitions]
    if not from_broker:  # a client's (v0-3): WRITE on the transactional id, then on each topic (not internal ones)
        if not ctx.access.authorize(AclOperation.WRITE, ResourceType.TRANSACTIONAL_ID, transactional_id):
            return dict.fromkeys(partitions, ErrorCode.transactional_id_authorization_failed)
        writable = ctx.access.authorized(AclOperation.WRITE, ResourceType.TOPIC,
                                         {tp.topic for tp in partitions if not is_internal(tp.topic)})
        refused = {tp: ErrorCode.topic_authorization_failed for tp in partitions if tp.topic not in writable}
    else:
        refused = {}
    refused.update((tp, ErrorCode.unknown_topic_or_partition) for tp in partitions if tp not in refused and (
        (record := ctx.metadata.topics.get(tp.topic)) is None or not 0 <= tp.partition < record.partitions))
    if refused:
        logger.info("AddPartitionsToTxn for %s from %s: %s", transactional_id, ctx.peer,
                    ", ".join(f"{tp.topic}-{tp.partition} {error.name}" for tp, error in sorted(refused.items())))
        return {tp: refused.get(tp, ErrorCode.operation_not_attempted) for tp in partitions}
    coordinator = ctx.transactions.coordinator
    if verify_only:
        return coordinator.verify_partitions(transactional_id, producer_id, producer_epoch, partitions)
    error = await coordinator.add_partitions(transactional_id, producer_id, producer_epoch, partitions)
    error = client_error(error, API_KEY, ctx.api_version)
    if error is not ErrorCode.none and error is not ErrorCode.concurrent_transactions:
        logger.info("AddPartitionsToTxn for %s (producer %d epoch %d) from %s: %s", transactional_id, producer_id,
                    producer_epoch, ctx.peer, error.name)
    return dict.fromkeys(partitions, error)


def _topic_results(module, results: dict[TopicPartition, ErrorCode], topic_cls: str) -> tuple:
    by_topic: dict[str, list] = {}
    for tp, error in results.items():
        by_topic.setdefault(tp.topic, []).append(
            build(module.AddPartitionsToTxnPartitionResult, partition_index=tp.partition, partition_error_code=error))
    return tuple(build(getattr(module, topic_cls), name=name, results_by_partition=tuple(partitions))
                 for name, partitions in by_topic.items())


@handles(API_KEY)
async def handle(ctx: RequestContext, request) -> object:
    module = response_module(API_KEY, ctx.api_version)
    if ctx.api_version < BROKER_VERSIONS_FROM:
        results = await _add(ctx, request.v3_and_below_transactional_id, request.v3_and_below_producer_id,
                             request.v3_and_below_producer_epoch, request.v3_and_below_topics)
        return build(module.AddPartitionsToTxnResponse, throttle_time=datetime.timedelta(0),
                     results_by_topic_v3_and_below=_topic_results(module, results, "AddPartitionsToTxnTopicResult"))
    if not ctx.access.authorize(AclOperation.CLUSTER_ACTION, ResourceType.CLUSTER):  # v4+ come from brokers
        return build(module.AddPartitionsToTxnResponse, throttle_time=datetime.timedelta(0),
                     error_code=ErrorCode.cluster_authorization_failed, results_by_transaction=())
    transactions = []
    for txn in request.transactions:
        results = await _add(ctx, txn.transactional_id, txn.producer_id, txn.producer_epoch, txn.topics, txn.verify_only,
                             from_broker=True)
        transactions.append(build(module.AddPartitionsToTxnResult, transactional_id=txn.transactional_id,
                                  topic_results=_topic_results(module, results, "AddPartitionsToTxnTopicResult")))
    return build(module.AddPartitionsToTxnResponse, throttle_time=datetime.timedelta(0), error_code=ErrorCode.none,
                 results_by_transaction=tuple(transactions))
