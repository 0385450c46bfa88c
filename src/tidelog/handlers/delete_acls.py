"""DeleteAcls (key 31).

Behaviour: each filter's matching bindings (a binding matched by two filters is reported under
both), all deleted from the metadata store in one write. Without an authorizer:
SECURITY_DISABLED for each filter. Needs ALTER on the cluster (checked before the handler).
Logged at INFO with who asked.
Versions: 1-3. Errors: SECURITY_DISABLED, INVALID_REQUEST (UNKNOWN codes), UNSUPPORTED_VERSION,
CLUSTER_AUTHORIZATION_FAILED.
"""

from __future__ import annotations

import datetime
import logging

from tidelog.handlers.describe_acls import acl_filter
from tidelog.handlers.registry import RequestContext, handles
from tidelog.protocol.apis import build, response_module
from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.security.acl import AclResult, delete_acls, filter_for_version

logger = logging.getLogger(__name__)

API_KEY = 31


@handles(API_KEY)
async def handle(ctx: RequestContext, request) -> object:
    module = response_module(API_KEY, ctx.api_version)
    if ctx.access.authorizer is None:
        results = [AclResult(ErrorCode.security_disabled, "No Authorizer is configured.")] * len(request.filters)
    else:
        results: list[AclResult | None] = []
        filters = []
        for f in request.filters:
            try:
                filters.append(filter_for_version(acl_filter(f), ctx.api_version))
                results.append(None)
            except KafkaError as e:
                results.append(AclResult(e.error_code, e.message))
        deleted = iter(await delete_acls(ctx.security_records, filters))
        results = [r if r is not None else next(deleted) for r in results]
        for result in results:
            for binding in result.bindings:
                logger.info("ACL deleted by %s from %s: %s", ctx.access.principal, ctx.peer, binding)
    filter_results = tuple(
        build(module.DeleteAclsFilterResult, error_code=r.error_code, error_message=r.error_message,
              matching_acls=tuple(
                  build(module.DeleteAclsMatchingAcl, error_code=ErrorCode.none, error_message=None,
                        resource_type=b.pattern.resource_type, resource_name=b.pattern.name,
                        pattern_type=b.pattern.pattern_type, principal=b.entry.principal, host=b.entry.host,
                        operation=b.entry.operation, permission_type=b.entry.permission_type)
                  for b in r.bindings))
        for r in results)
    return build(module.DeleteAclsResponse, throttle_time=datetime.timedelta(0), filter_results=filter_results)
