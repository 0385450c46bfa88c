"""The hand-written Produce/Fetch codecs agree with kio's schema-driven codec, every version."""

from __future__ import annotations

import datetime
import io
import uuid

import pytest
from kio.index import load_request_schema, load_response_schema
from kio.serial import entity_reader, entity_writer

from tidelog.protocol.apis import build
from tidelog.protocol.errors import ErrorCode
from tidelog.protocol.fetch import PartitionData, encode_fetch_response
from tidelog.protocol.produce import PartitionResult, decode_produce_request, encode_produce_response
from tidelog.protocol.records import build_batch


def _module(cls):
    import sys

    return sys.modules[cls.__module__]


@pytest.mark.parametrize("version", range(3, 13))
def test_produce_request_decodes_like_kio(version):
    cls = load_request_schema(0, version)
    m = _module(cls)
    batch = build_batch([(b"k", b"v" * 100, [])])
    request = build(
        cls,
        transactional_id="tx" if version % 2 else None,
        acks=-1,
        timeout=datetime.timedelta(milliseconds=1500),
        topic_data=(
            build(m.TopicProduceData, name="orders", partition_data=(
                build(m.PartitionProduceData, index=0, records=batch),
                build(m.PartitionProduceData, index=3, records=None),
            )),
            build(m.TopicProduceData, name="t2", partition_data=()),
        ),
    )
    out = io.BytesIO()
    entity_writer(cls)(out, request)
    decoded = decode_produce_request(memoryview(bytearray(out.getvalue())), version)
    assert decoded.acks == -1 and decoded.timeout_ms == 1500
    assert decoded.transactional_id == request.transactional_id
    assert [t.name for t in decoded.topics] == ["orders", "t2"]
    (p0, p3) = decoded.topics[0].partitions
    assert (p0.index, bytes(p0.records)) == (0, batch)
    assert (p3.index, p3.records) == (3, None)
    assert not p0.records.readonly  # offsets are assigned in place


@pytest.mark.parametrize("version", range(3, 13))
def test_produce_response_encodes_like_kio(version):
    body = b"".join(encode_produce_response(version, [("orders", [
        PartitionResult(0, ErrorCode.none, 42, 1700000000000, 7),
        PartitionResult(1, ErrorCode.corrupt_message, error_message="bad crc"),
        PartitionResult(2, ErrorCode.invalid_timestamp, error_message="One or more records have been rejected",
                        record_errors=((0, "too old"), (3, None))),
    ])], throttle_time_ms=5))
    cls = load_response_schema(0, version)
    response, end = entity_reader(cls)(memoryview(body).toreadonly(), 0)
    assert end == len(body)
    (topic,) = response.responses
    assert topic.name == "orders"
    p0, p1, p2 = topic.partition_responses
    assert (p0.index, p0.error_code, p0.base_offset) == (0, ErrorCode.none, 42)
    assert p1.error_code == ErrorCode.corrupt_message
    if version >= 5:
        assert p0.log_start_offset == 7
    if version >= 8:
        assert p1.error_message == "bad crc"
        assert [(e.batch_index, e.batch_index_error_message) for e in p2.record_errors] == [(0, "too old"), (3, None)]
        assert p2.error_message == "One or more records have been rejected"
    assert response.throttle_time == datetime.timedelta(milliseconds=5)


@pytest.mark.parametrize("version", range(4, 18))
def test_fetch_response_encodes_like_kio(version):
    topic_id = uuid.uuid4()
    records = build_batch([(None, b"hello", [("h", b"1")])])
    parts = encode_fetch_response(version, [("orders", topic_id, [
        PartitionData(0, ErrorCode.none, 10, 10, 2, records),
        PartitionData(1, ErrorCode.offset_out_of_range, 5, 5, 0, b""),
        PartitionData(2, ErrorCode.unknown_topic_or_partition),
    ])])
    assert any(part is records for part in parts), "records must be passed through, not copied"
    body = b"".join(parts)
    cls = load_response_schema(1, version)
    response, end = entity_reader(cls)(memoryview(body).toreadonly(), 0)
    assert end == len(body)
    (topic,) = response.responses
    if version >= 13:
        assert topic.topic_id == topic_id
    else:
        assert topic.topic == "orders"
    p0, p1, p2 = topic.partitions
    assert (p0.partition_index, p0.error_code, p0.high_watermark, bytes(p0.records)) == (0, 0, 10, records)
    assert p1.error_code == ErrorCode.offset_out_of_range
    assert p2.error_code == ErrorCode.unknown_topic_or_partition and p2.records is None
    if version >= 5:
        assert p0.log_start_offset == 2


def test_frame_pool_reuses_buffers_and_stays_bounded():
    from tidelog.server.request_memory import FramePool

    pool = FramePool(max_bytes=3 << 20)
    first = pool.acquire(1_000_000)
    assert len(first) == 1 << 20  # power-of-two capacity
    pool.release(first)
    assert pool.acquire(700_000) is first  # same capacity class: reused, no fresh zero-filled pages
    buffers = [pool.acquire(1 << 20) for _ in range(5)]
    for buffer in [first, *buffers]:
        pool.release(buffer)
    assert pool.pooled_bytes <= 3 << 20 and pool.in_use_bytes == 0


def test_frame_pool_makes_room_for_another_capacity_within_its_cap():
    """Pooled 2 MiB buffers fill the cap; 1 MiB frames then evict what they need and are reused
    from the next one on, the pool and the buffers in use staying within the cap."""
    from tidelog.server.request_memory import FramePool

    pool = FramePool(max_bytes=4 << 20)
    for buffer in [pool.acquire(2 << 20), pool.acquire(2 << 20)]:
        pool.release(buffer)
    assert pool.pooled_bytes == 4 << 20
    small = pool.acquire(1 << 20)
    assert pool.pooled_bytes + pool.in_use_bytes <= 4 << 20
    pool.release(small)
    assert pool.acquire(1 << 20) is small and (pool.allocated, pool.reused) == (3, 1)


def _random_partition_results(rng, count: int) -> list[PartitionResult]:
    results = []
    for index in range(count):
        kind = rng.randrange(4)
        if kind == 0:
            results.append(PartitionResult(index, ErrorCode.none, rng.randrange(1 << 40), rng.choice((-1, 1700000000000)),
                                           rng.randrange(1 << 30)))
        elif kind == 1:
            results.append(PartitionResult(index, ErrorCode.corrupt_message, error_message=rng.choice(("bad crc", "é" * 200))))
        elif kind == 2:
            results.append(PartitionResult(index, ErrorCode.not_leader_or_follower))
        else:
            errors = tuple((rng.randrange(1000), rng.choice((None, "too old", "x" * 300))) for _ in range(rng.randrange(1, 140)))
            results.append(PartitionResult(index, ErrorCode.invalid_timestamp, error_message="rejected", record_errors=errors))
    return results


@pytest.mark.parametrize("version", range(3, 13))
def test_produce_response_is_byte_for_byte_what_kio_writes(version):
    """Random responses (every error shape, counts past a one-byte varint) decoded by kio and
    written again by kio come out as the same bytes."""
    import random

    rng = random.Random(version)
    cls = load_response_schema(0, version)
    for round in range(30):
        few = round % 10  # one round in ten: 130 topics
        topics = [(rng.choice((f"topic-{t}", "n" * rng.choice((126, 127, 200)), "é" * 70)),
                   _random_partition_results(rng, rng.choice((1, 2, 130)) if few else 1)) for t in range(1 if few else 130)]
        body = b"".join(encode_produce_response(version, topics, throttle_time_ms=rng.randrange(1000)))
        response, end = entity_reader(cls)(memoryview(body).toreadonly(), 0)
        assert end == len(body)
        again = io.BytesIO()
        entity_writer(cls)(again, response)
        assert again.getvalue() == body


@pytest.mark.parametrize("version", range(3, 13))
def test_random_produce_requests_decode_like_kio(version):
    """Random requests kio writes (no transactional id or a long one, names and counts past a
    one-byte varint, null and empty records, topics without partitions) decode to what kio reads."""
    import random

    rng = random.Random(1000 + version)
    cls = load_request_schema(0, version)
    m = _module(cls)
    batches = [build_batch([(b"k", b"v" * n, [])]) for n in (0, 100, 300)]
    for _ in range(12):
        many = rng.random() < 0.25  # 130 topics of at most a partition, or a few topics of up to 128
        names = [rng.choice(("t", "orders", "n" * rng.choice((126, 127, 300)), "é" * 70))
                 for _ in range(130 if many else rng.choice((0, 1, 2)))]
        request = build(
            cls,
            transactional_id=rng.choice((None, "tx", "x" * 200)),
            acks=rng.choice((-1, 0, 1)),
            timeout=datetime.timedelta(milliseconds=rng.randrange(1 << 20)),
            topic_data=tuple(build(m.TopicProduceData, name=name, partition_data=tuple(
                build(m.PartitionProduceData, index=rng.randrange(1 << 31), records=rng.choice((None, *batches)))
                for _ in range(rng.choice((0, 1) if many else (0, 1, 3, 128))))) for name in names),
        )
        out = io.BytesIO()
        entity_writer(cls)(out, request)
        decoded = decode_produce_request(memoryview(bytearray(out.getvalue())), version)
        assert (decoded.transactional_id, decoded.acks, decoded.timeout_ms) == (
            request.transactional_id, request.acks, request.timeout // datetime.timedelta(milliseconds=1))
        assert [(t.name, [(p.index, None if p.records is None else bytes(p.records)) for p in t.partitions])
                for t in decoded.topics] == [(t.name, [(p.index, p.records) for p in t.partition_data])
                                             for t in request.topic_data]


def test_produce_response_topic_names_are_kept_bounded():
    """The encoded names a response reuses stay at most _NAMES_KEPT, and a name met again after
    they were emptied encodes the same."""
    from tidelog.protocol import produce

    first = encode_produce_response(9, [("kept", [PartitionResult(0, ErrorCode.none, 1, -1, 0)])])
    for n in range(produce._NAMES_KEPT + 10):
        encode_produce_response(9, [(f"t{n}", [PartitionResult(0, ErrorCode.none, 1, -1, 0)])])
        assert len(produce._NAMES[True]) <= produce._NAMES_KEPT
    assert encode_produce_response(9, [("kept", [PartitionResult(0, ErrorCode.none, 1, -1, 0)])]) == first


@pytest.mark.parametrize("version", range(3, 13))
def test_a_one_partition_answer_without_errors_encodes_like_kio(version):
    """What nearly every Produce gets (one topic, one partition, no error): v9+ take a shortcut."""
    cls = load_response_schema(0, version)
    for name, throttle in (("orders", 0), ("n" * 200, 7)):
        body = b"".join(encode_produce_response(version, [(name, [PartitionResult(3, ErrorCode.none, 42, -1, 7)])],
                                                throttle_time_ms=throttle))
        response, end = entity_reader(cls)(memoryview(body).toreadonly(), 0)
        assert end == len(body)
        again = io.BytesIO()
        entity_writer(cls)(again, response)
        assert again.getvalue() == body
        (topic,) = response.responses
        (p,) = topic.partition_responses
        assert (topic.name, p.index, p.error_code, p.base_offset) == (name, 3, ErrorCode.none, 42)
        if version >= 5:
            assert p.log_start_offset == 7
        assert response.throttle_time == datetime.timedelta(milliseconds=throttle)
