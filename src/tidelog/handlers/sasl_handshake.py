"""SaslHandshake (key 17).

Behaviour: on a SASL listener the connection answers it itself, before and during
authentication and to start a re-authentication (server/connection.py with the connection's
``security.sasl.SaslServerSession``): the mechanism chosen or UNSUPPORTED_SASL_MECHANISM with the
enabled ones, then the connection closes. This handler answers what reaches it otherwise, as
Kafka's KafkaApis does: a handshake on a listener without SASL, or on an authenticated
connection without re-authentication, is ILLEGAL_SASL_STATE.
Versions: 0-1 (v0: raw SASL tokens follow; v1: SaslAuthenticate). Errors: ILLEGAL_SASL_STATE,
UNSUPPORTED_SASL_MECHANISM.
"""

from __future__ import annotations

from tidelog.handlers.registry import RequestContext, handles
from tidelog.protocol.apis import build, response_module
from tidelog.protocol.errors import ErrorCode

API_KEY = 17


def response(version: int, error_code: ErrorCode, mechanisms: tuple[str, ...] = ()):
    return build(response_module(API_KEY, version).SaslHandshakeResponse, error_code=error_code,
                 mechanisms=tuple(mechanisms))


@handles(API_KEY)
async def handle(ctx: RequestContext, request) -> object:
    return response(ctx.api_version, ErrorCode.illegal_sasl_state)
