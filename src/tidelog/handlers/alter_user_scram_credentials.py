"""AlterUserScramCredentials (key 51).

Behaviour: deletes and upserts SCRAM credentials (the client sends the salt and the salted
password; the broker keeps the stored and server keys, never the password) in the metadata
store, one write for the whole request; every broker sees the change. Kafka's checks: one
change per user per request, 4096 to 16384 iterations, a known mechanism. Needs ALTER on the
cluster.
Versions: 0. Errors: UNACCEPTABLE_CREDENTIAL, RESOURCE_NOT_FOUND (deleting what is not there),
DUPLICATE_RESOURCE, UNSUPPORTED_SASL_MECHANISM, CLUSTER_AUTHORIZATION_FAILED.
"""

from __future__ import annotations

import datetime
import logging

from tidelog.handlers.registry import RequestContext, handles
from tidelog.protocol.apis import build, response_module
from tidelog.security.scram_credentials import ScramDeletion, ScramUpsertion, alter_user_scram_credentials

logger = logging.getLogger(__name__)

API_KEY = 51


@handles(API_KEY)
async def handle(ctx: RequestContext, request) -> object:
    module = response_module(API_KEY, ctx.api_version)
    results = await alter_user_scram_credentials(
        ctx.security_records,
        [ScramDeletion(d.name, d.mechanism) for d in request.deletions],
        [ScramUpsertion(u.name, u.mechanism, u.iterations, u.salt, u.salted_password) for u in request.upsertions])
    for r in results:
        if not r.error_code:
            logger.info("SCRAM credentials of user %r changed by %s from %s", r.user, ctx.access.principal, ctx.peer)
    return build(module.AlterUserScramCredentialsResponse, throttle_time=datetime.timedelta(0),
                 results=tuple(build(module.AlterUserScramCredentialsResult, user=r.user, error_code=r.error_code,
                                     error_message=r.error_message) for r in results))
