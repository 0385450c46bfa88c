"""EndTxn (key 26).

Behaviour: commit or abort the transactional id's transaction: PrepareCommit / PrepareAbort is
written to ``__transaction_state`` and answered; the coordinator then has every partition's
leader write the COMMIT/ABORT marker (retried until each did) and writes CompleteCommit /
CompleteAbort. A retry of an EndTxn that already went through is answered NONE. v5 belongs to
transaction version 2 (KIP-890 part 2), which is not offered (no ``transaction.version``
feature is finalized), so no client sends it; it is answered as v4 (producer id and epoch -1).
Versions: 0-5. Errors: NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE,
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

API_KEY = 26


@handles(API_KEY)
async def handle(ctx: RequestContext, request) -> object:
    module = response_module(API_KEY, ctx.api_version)
    error = await ctx.transactions.coordinator.end_txn(request.transactional_id, request.producer_id,
                                                       request.producer_epoch, request.committed)
    error = client_error(error, API_KEY, ctx.api_version)
    if error not in (ErrorCode.none, ErrorCode.concurrent_transactions):
        logger.info("EndTxn(%s) for %s (producer %d epoch %d) from %s: %s",
                    "commit" if request.committed else "abort", request.transactional_id, request.producer_id,
                    request.producer_epoch, ctx.peer, error.name)
    return build(module.EndTxnResponse, throttle_time=datetime.timedelta(0), error_code=error, producer_id=-1,
                 producer_epoch=-1)
