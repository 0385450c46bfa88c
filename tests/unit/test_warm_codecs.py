"""The codecs a broker makes during its start (protocol/apis.py warm_codecs): every pair is one
this broker serves, so making them cannot fail a start, and afterwards their kio modules are loaded."""

from __future__ import annotations

import sys

from tidelog.handlers.registry import load_all
from tidelog.protocol.apis import FIRST_REQUESTS, warm_codecs


def test_first_requests_are_versions_the_broker_serves():
    registry = load_all()
    for api_key, version in FIRST_REQUESTS:
        api = registry[api_key]
        assert api.min_version <= version <= api.max_version or api_key == 18, (api.name, version)
    assert len(set(FIRST_REQUESTS)) == len(FIRST_REQUESTS)


def test_warm_codecs_loads_the_request_and_response_modules():
    warm_codecs()
    loaded = {name for name in sys.modules if name.startswith("kio.schema.")}
    assert {"kio.schema.metadata.v13.request", "kio.schema.metadata.v13.response", "kio.schema.produce.v10.response",
            "kio.schema.consumer_group_heartbeat.v1.request", "kio.schema.api_versions.v0.response"} <= loaded
