"""COMMIT/ABORT control batches: Kafka's byte layout, and what two other readers make of ours."""

from __future__ import annotations

import struct

import crc32c
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidelog.protocol.control_records import (
    MARKER_BATCH_SIZE,
    ControlRecordType,
    EndTxnMarker,
    InvalidControlRecord,
    build_end_txn_marker_batch,
    decode_control_key,
    decode_end_txn_marker,
    encode_control_key,
    encode_end_txn_marker_value,
    read_end_txn_marker,
)
from tidelog.protocol.records import build_batch, parse_batch_header


def kafka_marker_batch(producer_id, producer_epoch, coordinator_epoch, control_type, timestamp_ms, leader_epoch):
    """The batch written out field by field from Kafka's documented layout (not by our builder)."""
    record = bytes([
        0x20,  # record length 16 (zigzag varint)
        0x00,  # record attributes
        0x00,  # timestampDelta 0
        0x00,  # offsetDelta 0
        0x08,  # key length 4
    ]) + struct.pack(">hh", 0, control_type) + bytes([0x0C]) + struct.pack(">hi", 0, coordinator_epoch) + b"\x00"
    after_crc = struct.pack(
        ">hiqqqhii", 0x30, 0, timestamp_ms, timestamp_ms, producer_id, producer_epoch, -1, 1,
    ) + record
    crc = crc32c.crc32c(after_crc)
    return struct.pack(">qiibI", 0, 12 - 12 + 49 + len(record), leader_epoch, 2, crc) + after_crc


@pytest.mark.parametrize("committed", [True, False])
def test_marker_batch_is_kafkas_layout_byte_for_byte(committed):
    ours = build_end_txn_marker_batch(4242, 7, 19, committed, 1_700_000_000_123, partition_leader_epoch=3)
    expected = kafka_marker_batch(4242, 7, 19, 1 if committed else 0, 1_700_000_000_123, 3)
    assert ours == expected
    assert len(ours) == MARKER_BATCH_SIZE == 78
    info = parse_batch_header(ours)
    assert info.is_control and info.is_transactional and info.base_sequence == -1 and info.record_count == 1
    assert read_end_txn_marker(ours, info) == EndTxnMarker(committed, 19)


@pytest.mark.parametrize("committed", [True, False])
def test_kafka_python_reads_our_marker(committed):
    from kafka.record.default_records import DefaultRecordBatch

    batch = DefaultRecordBatch(bytearray(build_end_txn_marker_batch(9, 1, 4, committed, 1000)))
    assert batch.validate_crc()
    assert batch.is_control_batch and batch.is_transactional
    (record,) = list(batch)
    assert record.commit is committed and record.abort is (not committed) and record.version == 0
    assert struct.unpack(">hi", record.value) == (0, 4)


def test_aiokafka_reads_our_marker():
    from aiokafka.record.default_records import DefaultRecordBatch

    batch = DefaultRecordBatch(bytearray(build_end_txn_marker_batch(9, 1, 4, False, 1000)))
    assert batch.validate_crc()
    assert batch.is_control_batch and batch.is_transactional
    (record,) = list(batch)
    assert struct.unpack(">hh", record.key) == (0, 0)


def test_key_and_value_encodings():
    assert encode_control_key(ControlRecordType.COMMIT) == b"\x00\x00\x00\x01"
    assert encode_control_key(ControlRecordType.ABORT) == b"\x00\x00\x00\x00"
    assert encode_end_txn_marker_value(-1) == b"\x00\x00\xff\xff\xff\xff"
    with pytest.raises(ValueError):
        encode_control_key(ControlRecordType.UNKNOWN)


def test_readers_follow_kafkas_tolerance():
    # a later version with extra bytes is read as version 0; an unknown type is UNKNOWN
    assert decode_end_txn_marker(b"\x00\x01\x00\x01\xff", b"\x00\x03\x00\x00\x00\x05\xee") == EndTxnMarker(True, 5)
    assert decode_control_key(b"\x00\x00\x00\x63") is ControlRecordType.UNKNOWN
    assert decode_control_key(b"\x00\x00\x00\x02") is ControlRecordType.LEADER_CHANGE
    for key, value in [(b"\x00\x00\x00", b"\x00\x00\x00\x00\x00\x00"), (b"\xff\xff\x00\x01", b"\x00\x00\x00\x00\x00\x00"),
                       (b"\x00\x00\x00\x01", b"\x00\x00\x00\x00\x00"), (b"\x00\x00\x00\x01", b"\x80\x00\x00\x00\x00\x00"),
                       (b"\x00\x00\x00\x02", b"\x00\x00\x00\x00\x00\x00"), (None, None)]:
        with pytest.raises(InvalidControlRecord):
            decode_end_txn_marker(key, value)


def test_a_control_batch_that_is_no_marker_or_is_empty_reads_as_none():
    leader_change = build_batch([(b"\x00\x00\x00\x02", b"\x00\x00", [])], timestamp_ms=1, is_control=True)
    assert read_end_txn_marker(leader_change, parse_batch_header(leader_change)) is None
    empty = bytearray(build_end_txn_marker_batch(1, 0, 0, True, 1))
    struct.pack_into(">i", empty, 57, 0)  # recordCount 0: compaction emptied it
    assert read_end_txn_marker(empty, parse_batch_header(empty)) is None
    data = build_batch([(b"k", b"v", [])], timestamp_ms=1)
    with pytest.raises(InvalidControlRecord):
        read_end_txn_marker(data, parse_batch_header(data))


@given(st.integers(0, 2**63 - 1), st.integers(0, 2**15 - 1), st.integers(-(2**31), 2**31 - 1), st.booleans(),
       st.integers(0, 2**62))
def test_round_trip(producer_id, producer_epoch, coordinator_epoch, committed, timestamp_ms):
    batch = build_end_txn_marker_batch(producer_id, producer_epoch, coordinator_epoch, committed, timestamp_ms)
    info = parse_batch_header(batch)
    assert (info.producer_id, info.producer_epoch, info.max_timestamp) == (producer_id, producer_epoch, timestamp_ms)
    assert read_end_txn_marker(batch, info) == EndTxnMarker(committed, coordinator_epoch)
