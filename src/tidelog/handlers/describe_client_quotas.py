"""DescribeClientQuotas (key 48).

Behaviour: the client quotas (user, client-id, both, or their defaults) matching the filter's
components (MATCH_EXACT a name, MATCH_DEFAULT the default, MATCH_SPECIFIED any name), with
their values, from the metadata store; ``strict`` leaves out entities with other parts. A bad
filter is the top-level error. Needs DESCRIBE_CONFIGS on the cluster.
Versions: 0-1. Errors: INVALID_REQUEST, UNSUPPORTED_VERSION (an unknown entity type),
CLUSTER_AUTHORIZATION_FAILED.
"""

from __future__ import annotations

import datetime

from tidelog.handlers.registry import RequestContext, handles
from tidelog.protocol.apis import build, response_module
from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.security.quotas import FilterComponent, describe_client_quotas

API_KEY = 48


@handles(API_KEY)
async def handle(ctx: RequestContext, request) -> object:
    module = response_module(API_KEY, ctx.api_version)
    components = [FilterComponent(c.entity_type, c.match_type, c.match) for c in request.components]
    try:
        found = describe_client_quotas(ctx.security_records, components, request.strict)
    except KafkaError as e:
        return build(module.DescribeClientQuotasResponse, throttle_time=datetime.timedelta(0), error_code=e.error_code,
                     error_message=e.message, entries=None)
    entries = tuple(
        build(module.EntryData,
              entity=tuple(build(module.EntityData, entity_type=t, entity_name=n) for t, n in entity.entries),
              values=tuple(build(module.ValueData, key=k, value=float(v)) for k, v in sorted(values.items())))
        for entity, values in found)
    return build(module.DescribeClientQuotasResponse, throttle_time=datetime.timedelta(0), error_code=ErrorCode.none,
                 error_message=None, entries=entries)
