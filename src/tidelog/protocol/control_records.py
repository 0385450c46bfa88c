"""Control records: the COMMIT and ABORT markers that end a transaction in a partition's log.

A marker is a RecordBatch v2 of its own, written by the partition leader when the transaction
coordinator says so (WriteTxnMarkers), never by a client. Kafka's layout
(MemoryRecords.withEndTransactionMarker, ControlRecordType, EndTransactionMarker)::

    batch    attributes = transactional (0x10) | control (0x20), CreateTime, no compression;
             producerId / producerEpoch of the transaction, baseSequence -1, one record,
             baseTimestamp = maxTimestamp = the time the marker was written
    record   attributes 0, timestampDelta 0, offsetDelta 0, no headers
    key      int16 version (0) | int16 type (0 ABORT, 1 COMMIT)            4 bytes
    value    int16 version (0) | int32 coordinatorEpoch                    6 bytes

The whole batch is 78 bytes. Readers accept any non-negative key or value version and read
the fields above from its first bytes, as Kafka does (later versions may only append fields).
Pure functions, no I/O.
"""

from __future__ import annotations

import enum
import struct
from typing import NamedTuple

from tidelog.protocol.records import BATCH_HEADER_SIZE, BatchInfo, build_batch, iter_records

__all__ = [
    "ControlRecordType",
    "EndTxnMarker",
    "InvalidControlRecord",
    "MARKER_BATCH_SIZE",
    "build_end_txn_marker_batch",
    "decode_control_key",
    "decode_end_txn_marker",
    "encode_control_key",
    "encode_end_txn_marker_value",
    "read_end_txn_marker",
]

_KEY = struct.Struct(">hh")  # version, type
_VALUE = struct.Struct(">hi")  # version, coordinator epoch
CONTROL_KEY_VERSION = 0
END_TXN_MARKER_VALUE_VERSION = 0
MARKER_BATCH_SIZE = BATCH_HEADER_SIZE + 17  # one record: 1 length byte + 16 bytes of fields


class ControlRecordType(enum.IntEnum):
    """Kafka's control record types; only ABORT and COMMIT end transactions (2-6 are KRaft's)."""

    UNKNOWN = -1
    ABORT = 0
    COMMIT = 1
    LEADER_CHANGE = 2
    SNAPSHOT_HEADER = 3
    SNAPSHOT_FOOTER = 4
    KRAFT_VERSION = 5
    KRAFT_VOTERS = 6


class EndTxnMarker(NamedTuple):
    committed: bool
    coordinator_epoch: int

    @property
    def control_type(self) -> ControlRecordType:
        return ControlRecordType.COMMIT if self.committed else ControlRecordType.ABORT


class InvalidControlRecord(ValueError):
    """A control record too short or with a negative version (Kafka's InvalidRecordException)."""


def encode_control_key(control_type: ControlRecordType) -> bytes:
    if control_type is ControlRecordType.UNKNOWN:
        raise ValueError("cannot encode the UNKNOWN control record type")
    return _KEY.pack(CONTROL_KEY_VERSION, control_type)


def encode_end_txn_marker_value(coordinator_epoch: int) -> bytes:
    return _VALUE.pack(END_TXN_MARKER_VALUE_VERSION, coordinator_epoch)


def decode_control_key(key: bytes | None) -> ControlRecordType:
    """The type a control record's key names; UNKNOWN for a type this broker does not know."""
    if key is None or len(key) < _KEY.size:
        raise InvalidControlRecord(f"control record key of {0 if key is None else len(key)} bytes, need {_KEY.size}")
    version, type_id = _KEY.unpack_from(key)
    if version < 0:
        raise InvalidControlRecord(f"invalid control record key version {version}")
    try:
        return ControlRecordType(type_id)
    except ValueError:
        return ControlRecordType.UNKNOWN


def decode_end_txn_marker(key: bytes | None, value: bytes | None) -> EndTxnMarker:
    """The marker a COMMIT/ABORT control record carries; InvalidControlRecord for anything else."""
    control_type = decode_control_key(key)
    if control_type not in (ControlRecordType.ABORT, ControlRecordType.COMMIT):
        raise InvalidControlRecord(f"control record of type {control_type.name} is not a transaction marker")
    if value is None or len(value) < _VALUE.size:
        raise InvalidControlRecord(f"end transaction marker value of {0 if value is None else len(value)} bytes, need {_VALUE.size}")
    version, coordinator_epoch = _VALUE.unpack_from(value)
    if version < 0:
        raise InvalidControlRecord(f"invalid end transaction marker version {version}")
    return EndTxnMarker(control_type is ControlRecordType.COMMIT, coordinator_epoch)


def build_end_txn_marker_batch(
    producer_id: int,
    producer_epoch: int,
    coordinator_epoch: int,
    committed: bool,
    timestamp_ms: int,
    partition_leader_epoch: int = -1,
) -> bytes:
    """The 78-byte marker batch (base offset 0: the log assigns the real one on append)."""
    control_type = ControlRecordType.COMMIT if committed else ControlRecordType.ABORT
    return build_batch(
        [(encode_control_key(control_type), encode_end_txn_marker_value(coordinator_epoch), [])],
        timestamp_ms=timestamp_ms,
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        base_sequence=-1,
        partition_leader_epoch=partition_leader_epoch,
        is_transactional=True,
        is_control=True,
    )


def read_end_txn_marker(batch, info: BatchInfo) -> EndTxnMarker | None:
    """The marker in a control batch (``batch`` holds the whole batch ``info`` describes).

    None for a control batch that is not a transaction marker or holds no record (compaction
    may empty one, Kafka's "the whole transaction was cleaned"). Raises InvalidControlRecord
    for a malformed one.
    """
    if not info.is_control:
        raise InvalidControlRecord("not a control batch")
    for record in iter_records(memoryview(batch)[: info.size]):
        control_type = decode_control_key(record.key)
        if control_type not in (ControlRecordType.ABORT, ControlRecordType.COMMIT):
            return None
        return decode_end_txn_marker(record.key, record.value)
    return None
