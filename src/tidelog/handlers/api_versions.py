"""ApiVersions (key 18).

Behaviour: lists every API this broker serves with the version range of Apache Kafka 4.0.
A request for a version newer than we know (v5+) gets a v0-format body with
UNSUPPORTED_VERSION and the full key list, so the client retries with a version we know
(KIP-511). The response header is always v0, even for flexible versions (handled by the
connection).
Versions: 0-4. Errors: UNSUPPORTED_VERSION.
"""

from __future__ import annotations

import datetime
import struct

from tidelog.handlers.registry import REGISTRY, RequestContext, handles
from tidelog.protocol.apis import build, response_module
from tidelog.protocol.errors import ErrorCode

API_KEY = 18


def _fallback_v0_body() -> list[bytes]:
    apis = sorted(REGISTRY.values(), key=lambda api: api.key)
    parts = [struct.pack(">hi", ErrorCode.unsupported_version, len(apis))]
    parts += [struct.pack(">hhh", api.key, api.min_version, api.max_version) for api in apis]
    return [b"".join(parts)]


@handles(API_KEY)
async def handle(ctx: RequestContext, request) -> object:
    if ctx.api_version > REGISTRY[API_KEY].max_version:
        return _fallback_v0_body()
    module = response_module(API_KEY, ctx.api_version)
    keys = tuple(
        build(module.ApiVersion, api_key=api.key, min_version=api.min_version, max_version=api.max_version)
        for api in sorted(REGISTRY.values(), key=lambda api: api.key)
    )
    return build(
        module.ApiVersionsResponse,
        error_code=ErrorCode.none,
        api_keys=keys,
        throttle_time=datetime.timedelta(0),
        supported_features=(),
        finalized_features_epoch=-1,
        finalized_features=(),
        zk_migration_ready=False,
    )
