"""The pre-decode bounds check: rejects what would make kio abort, accepts every real request."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidelog.protocol import apis
from tidelog.protocol.guard import check_request
from tidelog.protocol.wire import MalformedFrame, parse_request_header

GOLDEN = Path(__file__).parent.parent / "golden"


@pytest.mark.parametrize(
    "api_key, version, body",
    [
        (3, 9, "ffffffff0f0261"),  # Metadata v9: compact array of 2**32-2 topics
        (3, 1, "7fffffff000161"),  # Metadata v1: int32 array of 2**31-1 topics
        (37, 3, "e8f882a663174f3fa0abcf2ae79cbf6b71"),  # CreatePartitions v3, found by fuzzing
    ],
)
def test_absurd_counts_are_malformed(api_key, version, body):
    with pytest.raises(MalformedFrame):
        check_request(apis.request_type(api_key, version), memoryview(bytes.fromhex(body)), 0)


def _golden_frames():
    for path in sorted(GOLDEN.glob("*.hex")):
        frame = bytes.fromhex(path.read_text().split()[0] if path.read_text().strip() else "")
        yield path.name, frame


@pytest.mark.parametrize("name, frame", list(_golden_frames()))
def test_real_client_requests_pass(name, frame):
    view = memoryview(frame)
    if len(view) >= 4 and int.from_bytes(view[:4], "big") == len(view) - 4:
        view = view[4:]  # captured with the size prefix
    api_key, version = int.from_bytes(view[0:2], "big", signed=True), int.from_bytes(view[2:4], "big", signed=True)
    if api_key == 0 or version > apis.KAFKA_4_0[api_key][2]:
        pytest.skip("Produce is decoded by hand; versions past Kafka 4.0 are answered before decoding")
    _, offset = parse_request_header(view, apis.is_flexible(api_key, version))
    check_request(apis.request_type(api_key, version), view, offset)
    apis.request_reader(api_key, version)(view.toreadonly(), offset)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([(3, 12), (1, 12), (1, 4), (19, 5), (32, 4), (11, 7)]), st.binary(max_size=64))
def test_guard_then_kio_never_aborts(key_version, body):
    """Whatever passes the guard, kio may reject, but only with an exception."""
    api_key, version = key_version
    try:
        check_request(apis.request_type(api_key, version), memoryview(body), 0)
    except MalformedFrame:
        return
    try:
        apis.request_reader(api_key, version)(memoryview(body).toreadonly(), 0)
    except Exception:
        pass
