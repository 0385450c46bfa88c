"""DescribeUserScramCredentials (key 50).

Behaviour: the SCRAM mechanisms and iteration counts of the named users (every user with a
credential when the list is null), from the metadata store; never a salt or key. Needs DESCRIBE
on the cluster.
Versions: 0. Errors: RESOURCE_NOT_FOUND (a user without credentials), DUPLICATE_RESOURCE (a
user named twice), CLUSTER_AUTHORIZATION_FAILED.
"""

from __future__ import annotations

import datetime

from tidelog.handlers.registry import RequestContext, handles
from tidelog.protocol.apis import build, response_module
from tidelog.protocol.errors import ErrorCode
from tidelog.security.scram_credentials import describe_user_scram_credentials

API_KEY = 50


@handles(API_KEY)
async def handle(ctx: RequestContext, request) -> object:
    module = response_module(API_KEY, ctx.api_version)
    users = None if request.users is None else [u.name for u in request.users]
    results = tuple(
        build(module.DescribeUserScramCredentialsResult, user=r.user, error_code=r.error_code,
              error_message=r.error_message,
              credential_infos=tuple(build(module.CredentialInfo, mechanism=m.value, iterations=i)
                                     for m, i in r.credential_infos))
        for r in describe_user_scram_credentials(ctx.security_records, users)
    )
    return build(module.DescribeUserScramCredentialsResponse, throttle_time=datetime.timedelta(0),
                 error_code=ErrorCode.none, error_message=None, results=results)
