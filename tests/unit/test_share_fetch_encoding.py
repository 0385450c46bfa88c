"""The hand-written ShareFetch response encoder (protocol/share_fetch.py) against kio's
schema-driven one, for both versions; and a request-time quota's throttle written into it."""

from __future__ import annotations

import datetime
import types
import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

from tidelog.protocol.apis import build, response_module
from tidelog.protocol.errors import ErrorCode
from tidelog.protocol.share_fetch import NodeEndpoint, SharePartitionData, encode_share_fetch_response
from tidelog.server import throttling
from tidelog.server.connection import encode_response

_I16 = st.integers(-(2**15), 2**15 - 1)
_ERROR = st.sampled_from(list(ErrorCode))
_I32 = st.integers(-(2**31), 2**31 - 1)
_I64 = st.integers(-(2**63), 2**63 - 1)
_TEXT = st.none() | st.text(max_size=20)

_partitions = st.builds(
    SharePartitionData, _I32, _ERROR, _I16, _I32, _I32,
    st.lists(st.binary(max_size=40), max_size=3),
    st.lists(st.tuples(_I64, _I64, _I16), max_size=30), _TEXT, _TEXT)
_topics = st.lists(st.tuples(st.none() | st.uuids(), st.lists(_partitions, max_size=3)), max_size=3)  # None: kio's zero id
_nodes = st.lists(st.builds(NodeEndpoint, _I32, st.text(max_size=10), _I32, _TEXT), max_size=2)


def _kio(version: int, topics, error_code: int, error_message, lock_ms: int, throttle_ms: int, nodes) -> bytes:
    module = response_module(78, version)
    response = build(
        module.ShareFetchResponse, throttle_time=datetime.timedelta(milliseconds=throttle_ms),
        error_code=ErrorCode(error_code),
        error_message=error_message, acquisition_lock_timeout=datetime.timedelta(milliseconds=lock_ms),
        responses=tuple(build(module.ShareFetchableTopicResponse, topic_id=topic_id, partitions=tuple(
            build(module.PartitionData, partition_index=p.partition_index, error_code=ErrorCode(p.error_code),
                  error_message=p.error_message, acknowledge_error_code=p.acknowledge_error_code,
                  acknowledge_error_message=p.acknowledge_error_message,
                  current_leader=build(module.LeaderIdAndEpoch, leader_id=p.leader_id, leader_epoch=p.leader_epoch),
                  records=b"".join(p.records),
                  acquired_records=tuple(module.AcquiredRecords(first_offset=f, last_offset=l, delivery_count=c)
                                         for f, l, c in p.acquired))
            for p in partitions)) for topic_id, partitions in topics),
        node_endpoints=tuple(build(module.NodeEndpoint, node_id=n.node_id, host=n.host, port=n.port, rack=n.rack)
                             for n in nodes))
    return encode_response(response)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from([1, 2]), _topics, _ERROR, _TEXT, st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1), _nodes)
def test_the_hand_encoder_writes_what_kio_writes(version, topics, error_code, error_message, lock_ms, throttle_ms,
                                                  nodes):
    parts = encode_share_fetch_response(topics, error_code=error_code, error_message=error_message,
                                        acquisition_lock_timeout_ms=lock_ms, throttle_time_ms=throttle_ms,
                                        node_endpoints=nodes)
    assert b"".join(parts) == _kio(version, topics, error_code, error_message, lock_ms, throttle_ms, nodes)


def test_the_zero_topic_id_read_as_none_is_written_as_zeros():
    """kio and protocol/share_requests.py read the all-zero topic id as None; a ShareFetch naming it is
    answered UNKNOWN_TOPIC_ID under that id (the fuzz campaign found the encoder failing on it)."""
    topics = [(None, [SharePartitionData(0, ErrorCode.unknown_topic_id)])]
    parts = encode_share_fetch_response(topics)
    assert b"".join(parts) == _kio(1, topics, 0, None, 0, 0, [])
    assert bytes(16) in b"".join(parts)


def test_records_go_out_as_the_read_buffers_not_joined():
    data = memoryview(b"x" * 100)
    parts = encode_share_fetch_response([(uuid.uuid4(), [SharePartitionData(0, records=[data[:60], data[60:]],
                                                                            acquired=[(0, 5, 1)])])])
    assert any(part is not None and part.obj is data.obj for part in parts if isinstance(part, memoryview))


def test_a_request_time_quota_writes_its_throttle_into_the_hand_encoded_response():
    quotas = types.SimpleNamespace(request_time_throttle_ms=lambda *args: 250)
    topics = [(uuid.uuid4(), [SharePartitionData(3, records=[b"abc"], acquired=[(7, 9, 2)])])]
    parts = encode_share_fetch_response(topics, acquisition_lock_timeout_ms=30000)
    response, throttle_ms = throttling.throttle(quotas, 78, 2, True, "u", "c", 100, 5, parts, 0)
    assert throttle_ms == 250
    assert b"".join(response) == _kio(2, topics, 0, None, 30000, 250, [])


@settings(max_examples=100, deadline=None)
@given(st.sampled_from([1, 2]), st.lists(st.tuples(_I64, _I64), max_size=40), st.booleans(), _I16)
def test_acquired_ranges_as_columns_are_written_as_kio_writes_them(version, ranges, single, delivery_count):
    """queues/log_batches.py AcquiredColumns (a filter's ranges, packed by their ``wire``): the bytes
    kio writes for the same ranges; ``single``: every range one record (one column packed for both)."""
    from tidelog.queues.log_batches import AcquiredColumns

    firsts = [first for first, _ in ranges]
    lasts = list(firsts) if single else [last for _, last in ranges]
    columns = AcquiredColumns(firsts, lasts, delivery_count)
    partition = SharePartitionData(3, records=[b"r"], acquired=columns)
    as_list = partition._replace(acquired=[(f, l, delivery_count) for f, l in zip(firsts, lasts)])
    parts = encode_share_fetch_response([(uuid.UUID(int=7), [partition])], acquisition_lock_timeout_ms=5)
    assert b"".join(parts) == _kio(version, [(uuid.UUID(int=7), [as_list])], 0, None, 5, 0, [])
