"""InitProducerId (key 22).

Behaviour: an idempotent producer (no transactional id) gets a producer id never used before in
this cluster, epoch 0; a re-initialising producer (v3+, KIP-360) gets a fresh id too, as Kafka
does for non-transactional producers. Ids are reserved in blocks in the metadata store, so a
restart never hands one out twice. A transactional producer is served by the transaction
coordinator (txn/coordinator.py): a new id gets a producer id at epoch 0, a known one the next
epoch, which fences every older producer with that id (an open transaction is aborted first,
answered CONCURRENT_TRANSACTIONS for the client to retry).
ACLs (as Kafka): WRITE on the transactional id (checked before the handler runs); without one,
IDEMPOTENT_WRITE on the cluster or WRITE on some topic, else CLUSTER_AUTHORIZATION_FAILED.
Versions: 0-5. Errors: TRANSACTIONAL_ID_AUTHORIZATION_FAILED, CLUSTER_AUTHORIZATION_FAILED, INVALID_REQUEST, NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS,
COORDINATOR_NOT_AVAILABLE, CONCURRENT_TRANSACTIONS, INVALID_TRANSACTION_TIMEOUT, PRODUCER_FENCED
(INVALID_PRODUCER_EPOCH below v4).
"""

from __future__ import annotations

import datetime
import logging

from tidelog.handlers.registry import RequestContext, handles
from tidelog.protocol.apis import build, response_module
from tidelog.protocol.errors import ErrorCode
from tidelog.security.acl import AclOperation, ResourceType
from tidelog.txn.coordinator import client_error

logger = logging.getLogger(__name__)

API_KEY = 22


@handles(API_KEY)
async def handle(ctx: RequestContext, request) -> object:
    module = response_module(API_KEY, ctx.api_version)
    if request.transactional_id is not None:
        timeout_ms = request.transaction_timeout
        if isinstance(timeout_ms, datetime.timedelta):
            timeout_ms = int(timeout_ms.total_seconds() * 1000)
        result = await ctx.transactions.coordinator.init_producer_id(
            request.transactional_id, timeout_ms, getattr(request, "producer_id", -1), getattr(request, "producer_epoch", -1))
        error = client_error(result.error, API_KEY, ctx.api_version)
        if error not in (ErrorCode.none, ErrorCode.concurrent_transactions, ErrorCode.not_coordinator,
                         ErrorCode.coordinator_load_in_progress):
            logger.info("InitProducerId for transactional id %r from %s: %s", request.transactional_id, ctx.peer,
                        error.name)
        return build(module.InitProducerIdResponse, throttle_time=datetime.timedelta(0), error_code=error,
                     producer_id=result.producer_id, producer_epoch=result.producer_epoch)
    if not (ctx.access.authorize(AclOperation.IDEMPOTENT_WRITE, ResourceType.CLUSTER, log_if_denied=False)
            or ctx.access.authorize_by_resource_type(AclOperation.WRITE, ResourceType.TOPIC)):
        logger.info("InitProducerId from %s (%s): %s has neither IDEMPOTENT_WRITE on the cluster nor WRITE on any topic",
                    ctx.peer, ctx.header.client_id, ctx.access.principal)
        return build(module.InitProducerIdResponse, throttle_time=datetime.timedelta(0),
                     error_code=ErrorCode.cluster_authorization_failed, producer_id=-1, producer_epoch=-1)
    producer_id = await ctx.new_producer_id()
    logger.debug("producer id %d for %s (%s)", producer_id, ctx.peer, ctx.header.client_id)
    return build(module.InitProducerIdResponse, throttle_time=datetime.timedelta(0),
                 error_code=ErrorCode.none, producer_id=producer_id, producer_epoch=0)
