"""The hand-written ShareFetch and ShareAcknowledge request decoders (protocol/share_requests.py)
against what the connection did before them: the request guard, then kio's decoder. Same
fields for every body the two accept, and a refusal (the connection closed) for every body they
refuse: randomized requests written by kio, odd ones written field by field (nulls, unknown
tagged fields, boundary values), and mutations and truncations of both."""

from __future__ import annotations

import dataclasses
import datetime
import io
import random
import sys
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kio.serial import entity_writer

from tests.schema_requests import RequestWriter
from tidelog.protocol import apis
from tidelog.protocol.guard import check_request, strip_unknown_tags
from tidelog.protocol.share_requests import DECODERS, AckBatch, AckBatches
from tidelog.protocol.wire import MalformedFrame, uvarint

_VERSIONS = [(78, 1), (78, 2), (79, 1), (79, 2)]
_REFUSED = object()


def _reference(api_key: int, version: int, body: bytes, offset: int):
    """What kio gave the handler before (the guard first), or _REFUSED."""
    view = memoryview(body)
    try:
        edits = check_request(apis.request_type(api_key, version), view, offset)
        view = view.toreadonly() if not edits else memoryview(strip_unknown_tags(view, edits))
        return apis.request_reader(api_key, version)(view, offset)[0]
    except Exception:  # noqa: BLE001 - the connection closes on any of them
        return _REFUSED


def _decoded(api_key: int, version: int, body: bytes, offset: int):
    try:
        return DECODERS[api_key](memoryview(bytearray(body)), offset, version)
    except (MalformedFrame, UnicodeDecodeError):
        return _REFUSED


def _assert_same(kio_value, value, path="request"):
    """Every field of kio's dataclass equal in the hand-decoded one (arrays as sequences)."""
    if dataclasses.is_dataclass(kio_value):
        for field in dataclasses.fields(kio_value):
            _assert_same(getattr(kio_value, field.name), getattr(value, field.name), f"{path}.{field.name}")
        if hasattr(value, "renew"):  # the partition's RENEW flag, for the handlers
            assert value.renew == any(4 in b.acknowledge_types for b in kio_value.acknowledgement_batches), path
        return
    if isinstance(kio_value, tuple):
        assert len(kio_value) == len(value), path
        for i, (a, b) in enumerate(zip(kio_value, value)):
            _assert_same(a, b, f"{path}[{i}]")
        return
    assert kio_value == value, (path, kio_value, value)
    assert type(kio_value) is type(value) or (type(value) is int and isinstance(kio_value, int)
                                              and not isinstance(kio_value, bool)), (path, kio_value, value)


def _check(api_key: int, version: int, body: bytes, prefix: bytes = b"") -> bool:
    """Assert both decoders agree on ``body``; whether it was accepted."""
    data = prefix + body
    expected = _reference(api_key, version, data, len(prefix))
    got = _decoded(api_key, version, data, len(prefix))
    if expected is _REFUSED or got is _REFUSED:
        assert expected is got, (api_key, version, data.hex(), expected, got)
        return False
    _assert_same(expected, got)
    for topic in got.topics:
        for partition in topic.partitions:
            batches = partition.acknowledgement_batches
            if isinstance(batches, AckBatches):  # read in bulk: its columns say the same
                assert batches.firsts == [b.first_offset for b in batches]
                assert batches.lasts == [b.last_offset for b in batches]
                assert batches.types == bytes(b.acknowledge_types[0] & 0xFF for b in batches)
    return True


# --- requests kio writes -----------------------------------------------------------------------
_I32 = st.integers(-(2**31), 2**31 - 1)
_I64 = st.integers(-(2**63), 2**63 - 1)
_TYPE = st.sampled_from([0, 1, 1, 1, 2, 3, 4]) | st.integers(-128, 127)
_TYPES = st.one_of(st.tuples(_TYPE), st.tuples(_TYPE), st.lists(_TYPE, max_size=6).map(tuple))
_TOPIC_ID = st.uuids() | st.just(None)
_TEXT = st.none() | st.text(max_size=12)


@st.composite
def _batches(draw):
    """Mostly single-type batches (the bulk path), now and then one of another shape among them."""
    return tuple(AckBatch(*draw(st.tuples(_I64, _I64, _TYPES))) for _ in range(draw(st.integers(0, 40))))


def _kio_request(module, api_key: int, version: int, draw):
    batch_cls, partition_cls, topic_cls = (
        (module.AcknowledgementBatch, module.FetchPartition, module.FetchTopic) if api_key == 78 else
        (module.AcknowledgementBatch, module.AcknowledgePartition, module.AcknowledgeTopic))
    topics = tuple(
        topic_cls(topic_id=draw(_TOPIC_ID), partitions=tuple(
            partition_cls(partition_index=draw(_I32), acknowledgement_batches=tuple(
                batch_cls(first_offset=b.first_offset, last_offset=b.last_offset, acknowledge_types=b.acknowledge_types)
                for b in draw(_batches())))
            for _ in range(draw(st.integers(0, 3)))))
        for _ in range(draw(st.integers(0, 3))))
    common = dict(group_id=draw(_TEXT), member_id=draw(_TEXT), share_session_epoch=draw(_I32), topics=topics)
    if version >= 2:
        common["is_renew_ack"] = draw(st.booleans())
    if api_key == 79:
        return module.ShareAcknowledgeRequest(**common)
    if version >= 2:
        common["share_acquire_mode"] = draw(st.integers(-128, 127))
    return module.ShareFetchRequest(
        **common, max_wait=datetime.timedelta(milliseconds=draw(_I32)), min_bytes=draw(_I32), max_bytes=draw(_I32),
        max_records=draw(_I32), batch_size=draw(_I32),
        forgotten_topics_data=tuple(
            module.ForgottenTopic(topic_id=draw(_TOPIC_ID), partitions=tuple(draw(st.lists(_I32, max_size=4))))
            for _ in range(draw(st.integers(0, 2)))))


@st.composite
def _written(draw):
    api_key, version = draw(st.sampled_from(_VERSIONS))
    request = _kio_request(sys.modules[apis.request_type(api_key, version).__module__], api_key, version, draw)
    out = io.BytesIO()
    entity_writer(type(request))(out, request)
    return api_key, version, out.getvalue()


@settings(max_examples=300, deadline=None)
@given(_written(), st.binary(max_size=3))
def test_requests_kio_writes_decode_to_what_kio_reads(case, prefix):
    api_key, version, body = case
    assert _check(api_key, version, body, prefix)


@settings(max_examples=300, deadline=None)
@given(_written(), st.data())
def test_mutated_and_truncated_requests_are_refused_or_read_alike(case, data):
    api_key, version, body = case
    if not body:
        return
    mutated = bytearray(body)
    for _ in range(data.draw(st.integers(1, 4))):
        mutated[data.draw(st.integers(0, len(body) - 1))] = data.draw(st.integers(0, 255))
    _check(api_key, version, bytes(mutated))
    _check(api_key, version, body[:data.draw(st.integers(0, len(body) - 1))])
    _check(api_key, version, body + data.draw(st.binary(max_size=4)))  # trailing bytes are ignored by both


@pytest.mark.parametrize("api_key, version", _VERSIONS)
def test_odd_field_values_are_refused_or_read_alike(api_key, version):
    """Nulls where allowed or not, unknown tagged fields, boundary integers, bytes that are not UTF-8."""
    accepted = refused = 0
    for seed in range(400):
        body = RequestWriter(random.Random(seed), wildness=0.3).body(api_key, version)
        if _check(api_key, version, body):
            accepted += 1
        else:
            refused += 1
    assert accepted > 20 and refused > 20  # both kinds were exercised


@pytest.mark.parametrize("api_key, version", _VERSIONS)
def test_a_null_in_any_non_nullable_field_is_refused(api_key, version):
    null_at = 0
    while True:
        writer = RequestWriter(random.Random(null_at), null_at=null_at)
        body = writer.body(api_key, version)
        if writer.nulled_field is None:
            break
        assert _decoded(api_key, version, body, 0) is _REFUSED, writer.nulled_field
        assert _reference(api_key, version, body, 0) is _REFUSED
        null_at += 1
    assert null_at >= 3


def _ack_body(batches: bytes, count: int) -> bytes:
    """A ShareAcknowledge v1 body for one partition of one topic with these encoded batches."""
    return (uvarint(2) + b"g" + uvarint(2) + b"m" + (1).to_bytes(4, "big") + uvarint(2) + uuid.uuid4().bytes
            + uvarint(2) + (0).to_bytes(4, "big") + uvarint(count + 1) + batches + b"\x00" + b"\x00" + b"\x00")


def _batch(first: int, last: int, types: bytes, tags: bytes = b"\x00") -> bytes:
    return first.to_bytes(8, "big", signed=True) + last.to_bytes(8, "big", signed=True) + uvarint(
        len(types) + 1) + types + tags


def test_thousands_of_single_record_batches_and_one_of_another_shape():
    """The bulk path (every batch 19 bytes) and the batch-by-batch one (one batch differs: a
    tagged field, two types, a RENEW) give what kio gives."""
    usual = b"".join(_batch(4 * i, 4 * i, b"\x01") for i in range(3000))
    assert _check(79, 1, _ack_body(usual, 3000))
    request = _decoded(79, 1, _ack_body(usual, 3000), 0)
    assert isinstance(request.topics[0].partitions[0].acknowledgement_batches, AckBatches)  # the bulk path
    assert request.topics[0].partitions[0].acknowledgement_batches[2999] == AckBatch(11996, 11996, (1,))
    assert not request.topics[0].partitions[0].renew
    for odd in (_batch(-1, 5, b"\x01", tags=b"\x01\x05\x01z"), _batch(12000, 12001, b"\x01\x02"),
                _batch(12000, 12000, b"\x04"), _batch(12000, 12000, b"\xff"), _batch(12000, 12000, b"")):
        body = _ack_body(usual + odd, 3001)
        assert _check(79, 1, body)
    assert _decoded(79, 1, _ack_body(usual + _batch(12000, 12000, b"\x04"), 3001), 0).topics[0].partitions[0].renew


def test_a_count_past_the_end_is_refused_before_anything_is_built():
    body = _ack_body(_batch(0, 0, b"\x01"), 2**31)
    assert _decoded(79, 1, body, 0) is _REFUSED
    assert _reference(79, 1, body, 0) is _REFUSED
