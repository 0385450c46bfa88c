"""Framing and headers (tidelog.protocol.wire), and golden round trips against other codecs.

Requests: built with kafka-python's protocol classes (an independent codec generated from the
same Kafka schemas) or read from frames captured from real clients (tests/golden/, made by
tests/golden/capture.py), decoded with our header parser and kio's readers as the connection
does. Responses: encoded on our path (``encode_response`` on kio dataclasses made with
``apis.build``), decoded with kafka-python's response classes.
"""

from __future__ import annotations

import asyncio
import datetime
import struct
import uuid
from pathlib import Path

import pytest
from kafka.protocol.admin import CreateTopicsRequest
from kafka.protocol.metadata import ApiVersionsRequest, ApiVersionsResponse, FindCoordinatorRequest, MetadataRequest, MetadataResponse
from kafka.protocol.producer import ProduceRequest, ProduceResponse
from kio.index import load_request_schema
from kio.serial import entity_writer

from tidelog.handlers import api_versions
from tidelog.handlers.registry import REGISTRY, RequestContext, load_all
from tidelog.protocol import apis
from tidelog.protocol.errors import ErrorCode
from tidelog.protocol.records import build_batch, iter_records, validate_batches
from tidelog.protocol.wire import (
    MalformedFrame,
    RequestHeader,
    parse_request_header,
    peek_api_key_version,
    read_uvarint,
    response_header,
    skip_tagged_fields,
)
from tidelog.server.connection import encode_response

GOLDEN = Path(__file__).parent.parent / "golden"


def uvarint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def header_v1(api_key: int, version: int, correlation_id: int, client_id: bytes | None) -> bytes:
    if client_id is None:
        return struct.pack(">hhih", api_key, version, correlation_id, -1)
    return struct.pack(">hhih", api_key, version, correlation_id, len(client_id)) + client_id


def tagged(fields: list[tuple[int, bytes]]) -> bytes:
    return uvarint(len(fields)) + b"".join(uvarint(tag) + uvarint(len(data)) + data for tag, data in fields)


def decode_request(frame: bytes):
    """Decode a frame (without its size prefix) as the connection does; require every byte used."""
    view = memoryview(frame)
    api_key, api_version, correlation_id = peek_api_key_version(view)
    header, body_offset = parse_request_header(view, apis.is_flexible(api_key, api_version))
    assert header.correlation_id == correlation_id
    request, body_size = apis.request_reader(api_key, api_version)(view.toreadonly(), body_offset)
    assert body_offset + body_size == len(frame), "decoder left bytes unread"
    return header, request


def kafka_python_frame(message, version: int, correlation_id: int = 42, client_id: str | None = "tester") -> bytes:
    message.with_header(correlation_id=correlation_id, client_id=client_id)
    framed = message.encode(version=version, header=True, framed=True)
    (size,) = struct.unpack_from(">i", framed)
    assert size == len(framed) - 4
    return bytes(framed[4:])


# --- varints and tagged fields --------------------------------------------------------------


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 16383, 16384, 2**21, 2**28 - 1, 2**31 - 1, 2**32 - 1])
def test_uvarint_round_trip(value):
    data = b"\xaa" + uvarint(value) + b"\xbb"
    assert read_uvarint(data, 1) == (value, 1 + len(uvarint(value)))


def test_uvarint_known_encodings():
    assert read_uvarint(b"\x00", 0) == (0, 1)
    assert read_uvarint(b"\x96\x01", 0) == (150, 2)
    assert read_uvarint(b"\xff\xff\xff\xff\x0f", 0) == (2**32 - 1, 5)


def test_uvarint_truncated():
    for data in (b"", b"\x80", b"\xff\xff", b"\xff\xff\xff\xff"):
        with pytest.raises(MalformedFrame):
            read_uvarint(data, 0)


def test_uvarint_longer_than_five_bytes():
    with pytest.raises(MalformedFrame):
        read_uvarint(b"\x80\x80\x80\x80\x80\x01", 0)


def test_skip_tagged_fields():
    section = tagged([(0, b"abc"), (7, b""), (1000, b"x" * 200)])
    assert skip_tagged_fields(section + b"rest", 0) == len(section)
    assert skip_tagged_fields(b"\x00", 0) == 1


def test_tagged_field_past_the_end():
    with pytest.raises(MalformedFrame):
        skip_tagged_fields(b"\x01\x05\x10abc", 0)
    with pytest.raises(MalformedFrame):
        skip_tagged_fields(b"\x02\x05\x00", 0)  # says two fields, has one


# --- request headers ------------------------------------------------------------------------


def test_header_v1():
    frame = header_v1(3, 1, 12345, b"my-client") + b"BODY"
    header, offset = parse_request_header(memoryview(frame), flexible=False)
    assert header == RequestHeader(3, 1, 12345, "my-client")
    assert frame[offset:] == b"BODY"


def test_header_v1_null_and_empty_client_id():
    header, offset = parse_request_header(memoryview(header_v1(18, 0, 1, None)), flexible=False)
    assert header.client_id is None and offset == 10
    header, offset = parse_request_header(memoryview(header_v1(18, 0, 1, b"")), flexible=False)
    assert header.client_id == "" and offset == 10


def test_header_v1_negative_correlation_id_and_invalid_utf8_client_id():
    header, _ = parse_request_header(memoryview(header_v1(18, 0, -7, b"\xff\xfe")), flexible=False)
    assert header.correlation_id == -7
    assert isinstance(header.client_id, str)


def test_header_v2_skips_tagged_fields_including_unknown_tags():
    frame = header_v1(3, 12, 9, b"c") + tagged([(0, b"\x01\x02"), (99, b"unknown"), (2**20, b"")]) + b"BODY"
    header, offset = parse_request_header(memoryview(frame), flexible=True)
    assert header == RequestHeader(3, 12, 9, "c")
    assert frame[offset:] == b"BODY"


def test_header_v2_empty_tagged_section():
    frame = header_v1(3, 12, 9, None) + b"\x00"
    header, offset = parse_request_header(memoryview(frame), flexible=True)
    assert header.client_id is None and offset == len(frame)


@pytest.mark.parametrize(
    "frame, flexible",
    [
        (b"", False),
        (b"\x00\x03\x00\x01\x00\x00\x00", False),  # shorter than a header
        (struct.pack(">hhih", 3, 1, 1, 10) + b"short", False),  # client_id past the end
        (struct.pack(">hhih", 3, 1, 1, -2), False),  # negative length other than -1
        (header_v1(3, 12, 1, b"c"), True),  # flexible header without its tagged section
        (header_v1(3, 12, 1, b"c") + b"\x01\x00\x09ab", True),  # tagged field past the end
        (header_v1(3, 12, 1, b"c") + b"\xff\xff\xff\xff\xff\x01", True),  # varint too long
    ],
)
def test_malformed_headers(frame, flexible):
    with pytest.raises(MalformedFrame):
        parse_request_header(memoryview(frame), flexible)


def test_peek():
    assert peek_api_key_version(memoryview(header_v1(0, 9, 77, b"x"))) == (0, 9, 77)
    with pytest.raises(MalformedFrame):
        peek_api_key_version(memoryview(b"\x00\x00\x00\x09\x00"))


def test_response_headers():
    assert response_header(5, flexible=False) == b"\x00\x00\x00\x05"
    assert response_header(5, flexible=True) == b"\x00\x00\x00\x05\x00"
    assert response_header(-1, flexible=False) == b"\xff\xff\xff\xff"


def test_flexible_versions_match_kafka_python():
    """Our header choice (from kio) agrees with kafka-python's schema copy for the APIs used here."""
    for api_key, cls in ((18, ApiVersionsRequest), (3, MetadataRequest), (0, ProduceRequest), (10, FindCoordinatorRequest)):
        name, low, high = apis.KAFKA_4_0[api_key]
        for version in range(low, high + 1):
            assert apis.is_flexible(api_key, version) == cls.flexible_version_q(version), (name, version)


# --- requests: kafka-python encodes, we decode ----------------------------------------------


@pytest.mark.parametrize("version", range(0, 5))
def test_api_versions_request_from_kafka_python(version):
    message = ApiVersionsRequest[version](client_software_name="kpy", client_software_version="3.0")
    header, request = decode_request(kafka_python_frame(message, version))
    assert header == RequestHeader(18, version, 42, "tester")
    if version >= 3:
        assert (request.client_software_name, request.client_software_version) == ("kpy", "3.0")


def test_null_client_id_from_kafka_python():
    header, _ = decode_request(kafka_python_frame(ApiVersionsRequest[0](), 0, client_id=None))
    assert header.client_id is None


@pytest.mark.parametrize("version", [0, 1, 4, 8, 9, 10, 12, 13])
def test_metadata_request_from_kafka_python(version):
    topic_cls = MetadataRequest.MetadataRequestTopic
    topics = [topic_cls(name="orders", topic_id=uuid.UUID(int=0)), topic_cls(name="é-unicode", topic_id=uuid.UUID(int=0))]
    message = MetadataRequest[version](
        topics=topics, allow_auto_topic_creation=False, include_cluster_authorized_operations=False,
        include_topic_authorized_operations=True,
    )  # fmt: skip
    header, request = decode_request(kafka_python_frame(message, version, correlation_id=2**31 - 1))
    assert header == RequestHeader(3, version, 2**31 - 1, "tester")
    assert [t.name for t in request.topics] == ["orders", "é-unicode"]
    if version >= 4:
        assert request.allow_auto_topic_creation is False
    if version >= 8:
        assert request.include_topic_authorized_operations is True


@pytest.mark.parametrize("version", [1, 9, 12])
def test_metadata_request_all_topics(version):
    header, request = decode_request(kafka_python_frame(MetadataRequest[version](topics=None), version))
    assert request.topics is None


@pytest.mark.parametrize("version", [3, 5, 7, 8, 9, 10, 11, 12])
def test_produce_request_from_kafka_python(version):
    batch = build_batch([(b"k", b"v" * 100, [("h", b"1")]), (None, b"second", [])], timestamp_ms=1_700_000_000_000)
    partitions = ProduceRequest.TopicProduceData.PartitionProduceData
    message = ProduceRequest[version](
        transactional_id=None, acks=-1, timeout_ms=1500,
        topic_data=[ProduceRequest.TopicProduceData(name="t", partition_data=[partitions(index=0, records=batch), partitions(index=3, records=None)])],
    )  # fmt: skip
    header, request = decode_request(kafka_python_frame(message, version))
    assert header.api_key == 0 and header.api_version == version
    assert request.acks == -1 and request.timeout == datetime.timedelta(milliseconds=1500)
    (topic,) = request.topic_data
    assert topic.name == "t"
    first, second = topic.partition_data
    assert (first.index, bytes(first.records)) == (0, batch)
    assert (second.index, second.records) == (3, None)
    assert len(validate_batches(first.records, 1 << 20)) == 1


def test_transactional_produce_request():
    message = ProduceRequest[9](transactional_id="tx-1", acks=1, timeout_ms=10, topic_data=[])
    _, request = decode_request(kafka_python_frame(message, 9))
    assert request.transactional_id == "tx-1" and request.topic_data == ()


@pytest.mark.parametrize("version", [0, 1, 3, 4, 6])
def test_find_coordinator_request_from_kafka_python(version):
    message = FindCoordinatorRequest[version](key="group-a", key_type=0, coordinator_keys=["group-a", "group-b"])
    _, request = decode_request(kafka_python_frame(message, version))
    if version >= 4:
        assert request.coordinator_keys == ("group-a", "group-b")
    else:
        assert request.key == "group-a"


@pytest.mark.parametrize("version", [2, 4, 5, 7])
def test_create_topics_request_from_kafka_python(version):
    topic_cls = CreateTopicsRequest.CreatableTopic
    config_cls = topic_cls.CreatableTopicConfig
    topic = topic_cls(name="new", num_partitions=3, replication_factor=1, assignments=[], configs=[config_cls(name="retention.ms", value="1000")])
    message = CreateTopicsRequest[version](topics=[topic], timeout_ms=5000, validate_only=True)
    _, request = decode_request(kafka_python_frame(message, version))
    (decoded,) = request.topics
    assert (decoded.name, decoded.num_partitions, decoded.replication_factor) == ("new", 3, 1)
    assert [(c.name, c.value) for c in decoded.configs] == [("retention.ms", "1000")]
    assert request.validate_only is True


# --- captured frames from real clients ------------------------------------------------------

GOLDEN_FRAMES = sorted(GOLDEN.glob("*.hex"))


def test_golden_frames_present():
    clients = {path.name.split("-")[0] for path in GOLDEN_FRAMES}
    assert {"rdkafka", "kafka", "aiokafka"} <= clients
    assert len(GOLDEN_FRAMES) >= 9


@pytest.mark.parametrize("path", GOLDEN_FRAMES, ids=lambda p: p.stem)
def test_golden_frame_decodes_and_reencodes_byte_exact(path):
    frame = bytes.fromhex(path.read_text().strip())
    header, request = decode_request(frame)
    client, api, version = path.stem.rsplit("-", 2)
    assert header.api_version == int(version[1:])
    assert header.client_id == f"golden-{client}"
    parts: list[bytes] = []
    sink = type("Sink", (), {"write": lambda self, data: parts.append(data)})()
    entity_writer(load_request_schema(header.api_key, header.api_version))(sink, request)
    _, body_offset = parse_request_header(memoryview(frame), apis.is_flexible(header.api_key, header.api_version))
    assert b"".join(parts) == frame[body_offset:]
    if api == "produce":
        (topic,) = request.topic_data
        (partition,) = topic.partition_data
        assert (topic.name, partition.index) == ("golden", 0)
        assert len(validate_batches(partition.records, 1 << 20)) == 1
        (record,) = iter_records(partition.records)
        assert (record.key, record.value, record.timestamp) == (b"key-1", b"value-1", 1_700_000_000_000)
        assert [(k, bytes(v)) for k, v in record.headers] == [("h", b"v")]
    elif api == "metadata":
        assert request.allow_auto_topic_creation is True


# --- responses: we encode, kafka-python decodes ---------------------------------------------


@pytest.fixture(scope="module")
def registry():
    load_all()
    return REGISTRY


def run_handler(handler, api_key: int, version: int, request=None):
    flexible = apis.is_flexible(api_key, version)
    ctx = RequestContext(header=RequestHeader(api_key, version, 1, "t"), peer="test", flexible=flexible)
    return asyncio.run(handler(ctx, request))


@pytest.mark.parametrize("version", range(0, 5))
def test_api_versions_response_decodes_in_kafka_python(registry, version):
    response = run_handler(api_versions.handle, 18, version)
    data = response_header(31, flexible=False) + encode_response(response)  # ApiVersions: header v0 always
    decoded = ApiVersionsResponse.decode(data, version=version, header=True)
    assert decoded.header.correlation_id == 31
    assert decoded.error_code == 0
    got = {k.api_key: (k.min_version, k.max_version) for k in decoded.api_keys}
    assert got == {api.key: (api.min_version, api.max_version) for api in registry.values()}


def test_api_versions_fallback_for_unknown_version(registry):
    body = b"".join(run_handler(api_versions.handle, 18, 99))
    decoded = ApiVersionsResponse.decode(response_header(8, False) + body, version=3, header=True)
    assert decoded.error_code == ErrorCode.unsupported_version == 35
    assert decoded.version == 0
    assert {k.api_key for k in decoded.api_keys} == set(registry)


@pytest.mark.parametrize("version", [0, 1, 4, 7, 9, 10, 12, 13])
def test_metadata_response_decodes_in_kafka_python(version):
    module = apis.response_module(3, version)
    topic_id = uuid.uuid4()
    partitions = tuple(
        apis.build(
            module.MetadataResponsePartition, error_code=ErrorCode.none, partition_index=i, leader_id=1, leader_epoch=4,
            replica_nodes=(1,), isr_nodes=(1,), offline_replicas=(),
        )  # fmt: skip
        for i in range(3)
    )
    topics = (
        apis.build(module.MetadataResponseTopic, error_code=ErrorCode.none, name="orders", topic_id=topic_id,
                   is_internal=False, partitions=partitions, topic_authorized_operations=-(2**31)),
        apis.build(module.MetadataResponseTopic, error_code=ErrorCode.unknown_topic_or_partition, name="missing",
                   topic_id=uuid.UUID(int=0), is_internal=False, partitions=(), topic_authorized_operations=-(2**31)),
    )  # fmt: skip
    broker = apis.build(module.MetadataResponseBroker, node_id=1, host="127.0.0.1", port=19092, rack=None)
    response = apis.build(
        module.MetadataResponse, throttle_time=datetime.timedelta(milliseconds=3), brokers=(broker,), cluster_id="c-1",
        controller_id=1, topics=topics, cluster_authorized_operations=-(2**31), error_code=ErrorCode.none,
    )  # fmt: skip
    flexible = apis.is_flexible(3, version)
    decoded = MetadataResponse.decode(response_header(77, flexible) + encode_response(response), version=version, header=True)
    assert decoded.header.correlation_id == 77
    assert [(b.node_id, b.host, b.port) for b in decoded.brokers] == [(1, "127.0.0.1", 19092)]
    orders, missing = decoded.topics
    assert (orders.name, orders.error_code) == ("orders", 0)
    assert (missing.name, missing.error_code) == ("missing", 3)
    assert [(p.partition_index, p.leader_id, p.replica_nodes) for p in orders.partitions] == [(i, 1, [1]) for i in range(3)]
    if version >= 1:
        assert decoded.controller_id == 1
    if version >= 2:
        assert decoded.cluster_id == "c-1"
    if version >= 3:
        assert decoded.throttle_time_ms == 3
    if version >= 7:
        assert orders.partitions[0].leader_epoch == 4
    if version >= 10:
        assert orders.topic_id == topic_id


@pytest.mark.parametrize("version", [3, 5, 7, 8, 9, 10, 12])
def test_produce_response_decodes_in_kafka_python(version):
    module = apis.response_module(0, version)
    ok = apis.build(
        module.PartitionProduceResponse, index=0, error_code=ErrorCode.none, base_offset=1234, log_append_time=None,
        log_start_offset=7, record_errors=(), error_message=None,
    )  # fmt: skip
    corrupt = apis.build(
        module.PartitionProduceResponse, index=1, error_code=ErrorCode.corrupt_message, base_offset=-1, log_append_time=None,
        log_start_offset=-1, record_errors=(), error_message="CRC-32C mismatch",
    )  # fmt: skip
    topic = apis.build(module.TopicProduceResponse, name="t", partition_responses=(ok, corrupt))
    response = apis.build(module.ProduceResponse, responses=(topic,), throttle_time=datetime.timedelta(0))
    flexible = apis.is_flexible(0, version)
    decoded = ProduceResponse.decode(response_header(5, flexible) + encode_response(response), version=version, header=True)
    (topic_out,) = decoded.responses
    first, second = topic_out.partition_responses
    assert (first.index, first.error_code, first.base_offset) == (0, 0, 1234)
    assert (second.index, second.error_code, second.base_offset) == (1, 2, -1)
    if version >= 2:
        assert first.log_append_time_ms == -1
    if version >= 5:
        assert first.log_start_offset == 7
    if version >= 8:
        assert second.error_message == "CRC-32C mismatch"
