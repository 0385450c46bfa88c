"""DescribeTransactions (key 65).

Behaviour: the state of each transactional id coordinated here (Kafka's admin
``describeTransactions``, ``kafka-transactions.sh describe``): state, timeout, start time,
producer id and epoch, and the partitions of its transaction.
Versions: 0. Errors (per id): NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS,
COORDINATOR_NOT_AVAILABLE, TRANSACTIONAL_ID_NOT_FOUND, INVALID_REQUEST (an empty id).
"""

from __future__ import annotations

import datetime

from tidelog.handlers.registry import RequestContext, handles
from tidelog.protocol.apis import build, response_module

API_KEY = 65


def _start_time(ms: int) -> datetime.datetime:
    """The timestamp as kio encodes it (-1, no transaction open, is 1 ms before the epoch)."""
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc)


@handles(API_KEY)
async def handle(ctx: RequestContext, request) -> object:
    module = response_module(API_KEY, ctx.api_version)
    states = []
    for transactional_id in request.transactional_ids:
        d = ctx.transactions.coordinator.describe(transactional_id)
        states.append(build(
            module.TransactionState, error_code=d.error, transactional_id=transactional_id,
            transaction_state=d.state, transaction_timeout=datetime.timedelta(milliseconds=d.txn_timeout_ms),
            transaction_start_time=_start_time(d.txn_start_timestamp_ms), producer_id=d.producer_id,
            producer_epoch=d.producer_epoch,
            topics=tuple(build(module.TopicData, topic=topic, partitions=tuple(partitions))
                         for topic, partitions in d.topics.items())))
    return build(module.DescribeTransactionsResponse, throttle_time=datetime.timedelta(0),
                 transaction_states=tuple(states))
