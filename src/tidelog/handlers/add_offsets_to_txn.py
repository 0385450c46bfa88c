"""AddOffsetsToTxn (key 25).

Behaviour: before a transactional producer commits a group's offsets (TxnOffsetCommit), the
group's ``__consumer_offsets`` partition joins its transaction, so that partition gets the
COMMIT/ABORT marker that makes the offsets visible or drops them.
Versions: 0-4. Errors: NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE,
CONCURRENT_TRANSACTIONS, INVALID_PRODUCER_ID_MAPPING, PRODUCER_FENCED (INVALID_PRODUCER_EPOCH
below v2), INVALID_TXN_STATE, INVALID_REQUEST.
"""

from __future__ import annotations

import datetime
import logging

from tidelog.handlers.registry import RequestContext, handles
from tidelog.protocol.apis import build, response_module
from tidelog.protocol.errors import ErrorCode
from tidelog.txn.coordinator import client_error

logger = logging.getLogger(__name__)

API_KEY = 25
OFFSETS_PARTITION = 0  # __consumer_offsets has one partition: every group lives in partition 0


@handles(API_KEY)
async def handle(ctx: RequestContext, request) -> object:
    module = response_module(API_KEY, ctx.api_version)
    error = await ctx.transactions.coordinator.add_offsets(request.transactional_id, request.producer_id,
                                                           request.producer_epoch, OFFSETS_PARTITION)
    error = client_error(error, API_KEY, ctx.api_version)
    if error not in (ErrorCode.none, ErrorCode.concurrent_transactions):
        logger.info("AddOffsetsToTxn for %s (group %s) from %s: %s", request.transactional_id, request.group_id,
                    ctx.peer, error.name)
    return build(module.AddOffsetsToTxnResponse, throttle_time=datetime.timedelta(0), error_code=error)
