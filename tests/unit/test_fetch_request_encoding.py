"""The replica fetcher's hand-written Fetch v15 request against kio's writer (the same bytes for
any topics, partitions, forgotten partitions and ReplicaState), and its hand-written v15
response decoder against kio's writer (records left as views of the frame)."""

from __future__ import annotations

import datetime
import io
import random
import uuid

import pytest
from kio.schema.fetch.v15 import request as schema
from kio.schema.fetch.v15 import response as responses
from kio.serial import entity_writer

from tidelog.protocol.fetch import decode_fetch_response_v15, encode_fetch_request_v15
from tidelog.protocol.apis import load_request_schema, load_response_schema
from tidelog.protocol.errors import ErrorCode
from tidelog.protocol.records import build_batch

_WRITE = entity_writer(load_request_schema(1, 15))


def _kio(replica_id, broker_epoch, max_wait_ms, min_bytes, max_bytes, session_id, session_epoch, topics,
         forgotten) -> bytes:
    request = schema.FetchRequest(
        replica_state=schema.ReplicaState(replica_id=replica_id, replica_epoch=broker_epoch),
        max_wait=datetime.timedelta(milliseconds=max_wait_ms), min_bytes=min_bytes,
        max_bytes=max_bytes, isolation_level=0, session_id=session_id, session_epoch=session_epoch,
        topics=tuple(schema.FetchTopic(topic_id=uuid.UUID(bytes=topic_id), partitions=tuple(
            schema.FetchPartition(partition=p, current_leader_epoch=e, fetch_offset=o, last_fetched_epoch=-1,
                                  log_start_offset=s, partition_max_bytes=m) for p, e, o, s, m in partitions))
            for topic_id, partitions in topics.items()),
        forgotten_topics_data=tuple(schema.ForgottenTopic(topic_id=uuid.UUID(bytes=topic_id), partitions=tuple(indexes))
                                    for topic_id, indexes in forgotten.items()),
        rack_id="")
    out = io.BytesIO()
    _WRITE(out, request)
    return out.getvalue()


def test_the_hand_written_fetch_request_is_kios_byte_for_byte():
    rng = random.Random(19_3)
    for _ in range(500):
        topics = {rng.randbytes(16): [(rng.randint(0, 2**31 - 1), rng.randint(-1, 2**31 - 1), rng.randint(-1, 2**63 - 1),
                                       rng.randint(-1, 2**63 - 1), rng.randint(0, 2**31 - 1))
                                      for _ in range(rng.randint(0, 130))] for _ in range(rng.randint(0, 4))}
        forgotten = {rng.randbytes(16): [rng.randint(0, 2**31 - 1) for _ in range(rng.randint(0, 130))]
                     for _ in range(rng.randint(0, 3))}
        args = (rng.randint(0, 2**31 - 1), rng.randint(-1, 2**62), rng.randint(0, 2**31 - 1), rng.randint(0, 2**31 - 1),
                rng.randint(0, 2**31 - 1), rng.randint(0, 2**31 - 1), rng.randint(-1, 2**31 - 1))
        assert encode_fetch_request_v15(*args, topics, forgotten) == _kio(*args, topics, forgotten)


def test_a_follower_decodes_fetch_v15_responses_as_kio_encodes_them_with_records_as_views():
    first, second = build_batch([(None, b"hello", [])]), build_batch([(b"k", b"v" * 300, [])])
    orders, other = uuid.uuid4(), uuid.uuid4()
    response = responses.FetchResponse(
        throttle_time=datetime.timedelta(0), error_code=ErrorCode.none, session_id=77, responses=(
            responses.FetchableTopicResponse(topic_id=orders, partitions=(
                responses.PartitionData(
                    partition_index=0, error_code=ErrorCode.none, high_watermark=10, last_stable_offset=9,
                    log_start_offset=2, aborted_transactions=(responses.AbortedTransaction(producer_id=5, first_offset=3),
                                                              responses.AbortedTransaction(producer_id=6, first_offset=4)),
                    preferred_read_replica=-1, records=first + second,
                    diverging_epoch=responses.EpochEndOffset(epoch=3, end_offset=7),  # a tagged field, skipped
                    current_leader=responses.LeaderIdAndEpoch(leader_id=2, leader_epoch=4)),
                responses.PartitionData(
                    partition_index=4, error_code=ErrorCode.not_leader_or_follower, high_watermark=-1,
                    last_stable_offset=-1, log_start_offset=-1, aborted_transactions=None, preferred_read_replica=-1,
                    records=None),
            )),
            responses.FetchableTopicResponse(topic_id=other, partitions=()),
        ))
    out = io.BytesIO()
    entity_writer(load_response_schema(1, 15))(out, response)
    body = memoryview(bytearray(out.getvalue()))
    decoded = decode_fetch_response_v15(body)
    assert (decoded.error_code, decoded.session_id) == (0, 77)
    (topic_id, (p0, p4)), (other_id, no_partitions) = decoded.responses
    assert (topic_id, other_id, no_partitions) == (orders.bytes, other.bytes, [])
    assert (p0.partition_index, p0.error_code, p0.high_watermark, p0.last_stable_offset, p0.log_start_offset) == (0, 0, 10, 9, 2)
    assert bytes(p0.records) == first + second and not p0.records.readonly  # a view of the frame, appended in place
    assert p0.records.obj is body.obj
    assert (p4.partition_index, p4.error_code, p4.records) == (4, ErrorCode.not_leader_or_follower, None)
    for cut in (3, 12, 40, len(body) - 300, len(body) - 2):
        with pytest.raises(ValueError):
            decode_fetch_response_v15(body[:cut])
