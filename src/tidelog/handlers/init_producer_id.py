"""InitProducerId (key 22).

Behaviour: an idempotent producer (no transactional id) gets a producer id never used before in
this cluster, epoch 0; a re-initialising producer (v3+, KIP-360) gets a fresh id too, as Kafka
does for non-transactional producers. Ids are reserved in blocks in the metadata store, so a
restart never hands one out twice. Transactions are not supported yet: a transactional id is
answered with INVALID_REQUEST and a log line.
Versions: 0-5. Errors: INVALID_REQUEST.
"""

from __future__ import annotations

import datetime
import logging

from tidelog.handlers.registry import RequestContext, handles
from tidelog.protocol.apis import build, response_module
from tidelog.protocol.errors import ErrorCode

logger = logging.getLogger(__name__)

API_KEY = 22


@handles(API_KEY)
async def handle(ctx: RequestContext, request) -> object:
    module = response_module(API_KEY, ctx.api_version)
    if request.transactional_id is not None:
        logger.warning(
            "InitProducerId for transactional id %r from %s refused: transactions are not supported yet",
            request.transactional_id, ctx.peer,
        )
        return build(module.InitProducerIdResponse, throttle_time=datetime.timedelta(0),
                     error_code=ErrorCode.invalid_request, producer_id=-1, producer_epoch=-1)
    producer_id = await ctx.new_producer_id()
    logger.debug("producer id %d for %s (%s)", producer_id, ctx.peer, ctx.header.client_id)
    return build(module.InitProducerIdResponse, throttle_time=datetime.timedelta(0),
                 error_code=ErrorCode.none, producer_id=producer_id, producer_epoch=0)
