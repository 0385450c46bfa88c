"""SaslAuthenticate (key 36).

Behaviour: on a SASL listener the connection answers it itself (server/connection.py with the
connection's ``security.sasl.SaslServerSession``): the mechanism's next token, or
SASL_AUTHENTICATION_FAILED with Kafka's message, after which the connection closes; v1+ tell
the client how long its session lasts (``connections.max.reauth.ms``, KIP-368). This handler
answers what reaches it otherwise, as Kafka's KafkaApis does: ILLEGAL_SASL_STATE.
Versions: 0-2. Errors: SASL_AUTHENTICATION_FAILED, ILLEGAL_SASL_STATE.
"""

from __future__ import annotations

import datetime

from tidelog.handlers.registry import RequestContext, handles
from tidelog.protocol.apis import build, response_module
from tidelog.protocol.errors import ErrorCode

API_KEY = 36


def response(version: int, error_code: ErrorCode, error_message: str | None = None, auth_bytes: bytes = b"",
             session_lifetime_ms: int = 0):
    return build(response_module(API_KEY, version).SaslAuthenticateResponse, error_code=error_code,
                 error_message=error_message, auth_bytes=auth_bytes,
                 session_lifetime=datetime.timedelta(milliseconds=session_lifetime_ms))


@handles(API_KEY)
async def handle(ctx: RequestContext, request) -> object:
    return response(ctx.api_version, ErrorCode.illegal_sasl_state,
                    "SaslAuthenticate request received after successful authentication")
