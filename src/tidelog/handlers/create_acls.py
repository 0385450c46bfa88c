"""CreateAcls (key 30).

Behaviour: each binding checked as Kafka does (the cluster resource is ``kafka-cluster``, no
empty name, no ANY/MATCH/UNKNOWN, a parseable principal, a host); the valid new ones stored
in the metadata store in one write, after which every broker's authorizer has them. Without
an authorizer: SECURITY_DISABLED for each. Needs ALTER on the cluster (checked before the
handler). Logged at INFO with who asked.
Versions: 1-3. Errors: SECURITY_DISABLED, INVALID_REQUEST, CLUSTER_AUTHORIZATION_FAILED.
"""

from __future__ import annotations

import datetime
import logging

from tidelog.handlers.registry import RequestContext, handles
from tidelog.protocol.apis import build, response_module
from tidelog.protocol.errors import ErrorCode
from tidelog.security.acl import (AccessControlEntry, AclBinding, AclOperation, AclPermissionType, AclResult,
                                  PatternType, ResourcePattern, ResourceType, create_acls)

logger = logging.getLogger(__name__)

API_KEY = 30


@handles(API_KEY)
async def handle(ctx: RequestContext, request) -> object:
    module = response_module(API_KEY, ctx.api_version)
    if ctx.access.authorizer is None:
        results = [AclResult(ErrorCode.security_disabled, "No Authorizer is configured.")] * len(request.creations)
    else:
        bindings = [AclBinding(ResourcePattern(ResourceType.from_code(c.resource_type), c.resource_name,
                                               PatternType.from_code(c.resource_pattern_type)),
                               AccessControlEntry(c.principal, c.host, AclOperation.from_code(c.operation),
                                                  AclPermissionType.from_code(c.permission_type)))
                    for c in request.creations]
        results = await create_acls(ctx.security_records, bindings)
        for binding, result in zip(bindings, results):
            if not result.error_code:
                logger.info("ACL created by %s from %s: %s", ctx.access.principal, ctx.peer, binding)
    return build(module.CreateAclsResponse, throttle_time=datetime.timedelta(0),
                 results=tuple(build(module.AclCreationResult, error_code=r.error_code, error_message=r.error_message)
                               for r in results))
