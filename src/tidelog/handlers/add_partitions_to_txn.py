"""AddPartitionsToTxn (key 24).

Behaviour: v0-3 (a producer, before its first record to a partition in a transaction): the
partitions join the transactional id's transaction (txn/coordinator.py ``add_partitions``;
the transaction becomes Ongoing and its timeout starts at the first add). Partitions of
unknown topics get UNKNOWN_TOPIC_OR_PARTITION and then every other partition
OPERATION_NOT_ATTEMPTED, as Kafka answers; otherwise every partition gets the coordinator's
answer. v4-5 (brokers, KIP-890 part 1): one entry per transaction; ``verify_only`` asks whether
the partitions are in the transaction (``verify_partitions``, nothing changes), otherwise they
are added.
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
from tidelog.txn.coordinator import client_error
from tidelog.txn.state import TopicPartition

logger = logging.getLogger(__name__)

API_KEY = 24
BROKER_VERSIONS_FROM = 4


async def _add(ctx: RequestContext, transactional_id: str, producer_id: int, producer_epoch: int, topics,
               verify_only: bool = False) -> dict[TopicPartition, ErrorCode]:
    partitions = [TopicPartition(t.name, p) for t in topics for p in t.partitions]
    unknown = {tp for tp in partitions
               if (record := ctx.metadata.topics.get(tp.topic)) is None or not 0 <= tp.partition < record.partitions}
    if unknown:
        logger.info("AddPartitionsToTxn for %s from %s: unknown partitions %s", transactional_id, ctx.peer,
                    sorted(unknown))
        return {tp: ErrorCode.unknown_topic_or_partition if tp in unknown else ErrorCode.operation_not_attempted
                for tp in partitions}
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
    transactions = []
    for txn in request.transactions:
        results = await _add(ctx, txn.transactional_id, txn.producer_id, txn.producer_epoch, txn.topics, txn.verify_only)
        transactions.append(build(module.AddPartitionsToTxnResult, transactional_id=txn.transactional_id,
                                  topic_results=_topic_results(module, results, "AddPartitionsToTxnTopicResult")))
    return build(module.AddPartitionsToTxnResponse, throttle_time=datetime.timedelta(0), error_code=ErrorCode.none,
                 results_by_transaction=tuple(transactions))
