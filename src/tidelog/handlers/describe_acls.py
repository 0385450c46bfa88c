"""DescribeAcls (key 29).

Behaviour: the ACL bindings the filter matches (security/acl.py's AclBindingFilter: ANY,
MATCH, LITERAL, PREFIXED), grouped by resource pattern, from the authorizer's copy of the
metadata store's ACLs. Without an authorizer (``authorizer.class.name`` empty) the answer is
SECURITY_DISABLED, as Kafka's. Needs DESCRIBE on the cluster (checked before the handler).
Versions: 1-3. Errors: SECURITY_DISABLED, INVALID_REQUEST (UNKNOWN codes in the filter),
CLUSTER_AUTHORIZATION_FAILED.
"""

from __future__ import annotations

import datetime

from tidelog.handlers.registry import RequestContext, handles
from tidelog.protocol.apis import build, response_module
from tidelog.protocol.errors import ErrorCode, KafkaError
from tidelog.security.acl import (AclBindingFilter, AclOperation, AclPermissionType, PatternType, ResourceType,
                                  filter_for_version, group_by_resource)

API_KEY = 29


def acl_filter(f) -> AclBindingFilter:
    """A DescribeAcls request or a DeleteAcls filter (the same fields) as an AclBindingFilter."""
    return AclBindingFilter(ResourceType.from_code(f.resource_type_filter), f.resource_name_filter,
                            PatternType.from_code(f.pattern_type_filter), f.principal_filter, f.host_filter,
                            AclOperation.from_code(f.operation), AclPermissionType.from_code(f.permission_type))


@handles(API_KEY)
async def handle(ctx: RequestContext, request) -> object:
    module = response_module(API_KEY, ctx.api_version)

    def response(error_code=ErrorCode.none, message=None, resources=()):
        return build(module.DescribeAclsResponse, throttle_time=datetime.timedelta(0), error_code=error_code,
                     error_message=message, resources=tuple(resources))

    authorizer = ctx.access.authorizer
    if authorizer is None:
        return response(ErrorCode.security_disabled, "No Authorizer is configured.")
    try:
        wanted = filter_for_version(acl_filter(request), ctx.api_version)
    except KafkaError as e:
        return response(e.error_code, e.message)
    resources = (
        build(module.DescribeAclsResource, resource_type=pattern.resource_type, resource_name=pattern.name,
              pattern_type=pattern.pattern_type,
              acls=tuple(build(module.AclDescription, principal=e.principal, host=e.host, operation=e.operation,
                               permission_type=e.permission_type) for e in entries))
        for pattern, entries in group_by_resource(authorizer.acls(wanted)).items()
    )
    return response(resources=resources)
