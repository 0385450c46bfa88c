"""AlterClientQuotas (key 49).

Behaviour: sets or removes quota values (producer_byte_rate, consumer_byte_rate,
request_percentage, controller_mutation_rate) of user, client-id and default entities, the
valid changes in one metadata-store write (``validate_only``: none), after which every broker
throttles by them. Kafka's checks per entry (entity types, positive values, whole byte rates);
IP quotas are refused. Needs ALTER_CONFIGS on the cluster. Logged at INFO with who asked.
Versions: 0-1. Errors: INVALID_REQUEST, CLUSTER_AUTHORIZATION_FAILED.
"""

from __future__ import annotations

import datetime
import logging

from tidelog.handlers.registry import RequestContext, handles
from tidelog.protocol.apis import build, response_module
from tidelog.security.quotas import QuotaAlteration, alter_client_quotas

logger = logging.getLogger(__name__)

API_KEY = 49


@handles(API_KEY)
async def handle(ctx: RequestContext, request) -> object:
    module = response_module(API_KEY, ctx.api_version)
    alterations = [QuotaAlteration(tuple((e.entity_type, e.entity_name) for e in entry.entity),
                                   tuple((op.key, None if op.remove else op.value) for op in entry.ops))
                   for entry in request.entries]
    results = await alter_client_quotas(ctx.security_records, alterations, request.validate_only)
    for alteration, result in zip(alterations, results):
        if not result.error_code and not request.validate_only:
            logger.info("client quotas of %s changed by %s from %s: %s", dict(alteration.entity),
                        ctx.access.principal, ctx.peer, dict(alteration.ops))
    return build(module.AlterClientQuotasResponse, throttle_time=datetime.timedelta(0), entries=tuple(
        build(module.EntryData, error_code=r.error_code, error_message=r.error_message,
              entity=tuple(build(module.EntityData, entity_type=t, entity_name=n) for t, n in r.entity))
        for r in results))
