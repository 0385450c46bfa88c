"""The pre-decode bounds check: rejects what would make kio abort, accepts every real request."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.schema_requests import RequestWriter, schema_versions
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


def test_unknown_tagged_fields_are_stripped_at_every_level():
    """Kafka skips tagged fields it does not know; kio raises, so they are removed before kio."""
    import io
    import uuid

    from kio.serial import entity_writer

    from tidelog.protocol.guard import strip_unknown_tags

    cls = apis.request_type(3, 12)
    import sys

    module = sys.modules[cls.__module__]
    request = apis.build(cls, topics=(apis.build(module.MetadataRequestTopic, topic_id=uuid.UUID(int=0), name="orders"),),
                         allow_auto_topic_creation=True, include_topic_authorized_operations=False)
    out = io.BytesIO()
    entity_writer(cls)(out, request)
    body = bytearray(out.getvalue())
    # body: topics compact array (1 entry: uuid, name, tags=0), auto-create bool, include-ops bool, tags=0
    # Give the topic entry an unknown tag 7 ("xy") and the request an unknown tag 99 ("abc").
    topic_tags_at = 1 + 16 + 1 + len("orders")
    body[topic_tags_at : topic_tags_at + 1] = b"\x01\x07\x02xy"
    assert body[-1] == 0
    body[-1:] = b"\x01\x63\x03abc"
    view = memoryview(bytes(body))
    with pytest.raises(KeyError):
        apis.request_reader(3, 12)(view, 0)
    edits = check_request(cls, view, 0)
    assert len(edits) == 2
    decoded, end = apis.request_reader(3, 12)(memoryview(strip_unknown_tags(view, edits)), 0)
    assert [t.name for t in decoded.topics] == ["orders"]  # kio reads the zero uuid back as None
    assert decoded.allow_auto_topic_creation is True and decoded.include_topic_authorized_operations is False


# --- requests written from the schema: every API and version ----------------------------------

SCHEMA_VERSIONS = schema_versions()


@pytest.mark.parametrize("api_key, version", SCHEMA_VERSIONS)
def test_well_formed_request_of_every_api_passes(api_key, version):
    for seed in range(3):
        body = memoryview(RequestWriter(random.Random(seed)).body(api_key, version))
        assert check_request(apis.request_type(api_key, version), body, 0) == []
        apis.request_reader(api_key, version)(body.toreadonly(), 0)


@pytest.mark.parametrize("api_key, version", SCHEMA_VERSIONS)
def test_null_where_the_schema_forbids_it_is_malformed(api_key, version):
    """Kafka's generated readers throw on a null non-nullable array, string or bytes ("non-nullable
    field X was serialized as null"); the request fails to parse and Kafka closes the
    connection. kio let null arrays through, and handlers then iterated over None."""
    cls = apis.request_type(api_key, version)
    null_at = 0
    while True:
        writer = RequestWriter(null_at=null_at)
        body = writer.body(api_key, version)
        if writer.nulled_field is None:
            break
        with pytest.raises(MalformedFrame, match=f"non-nullable field {writer.nulled_field} "):
            check_request(cls, memoryview(body), 0)
        null_at += 1


def test_null_in_a_nullable_array_passes():
    """Metadata v1's topics is nullable (null means every topic)."""
    assert check_request(apis.request_type(3, 1), memoryview(b"\xff\xff\xff\xff"), 0) == []
