"""The records of the ``__transaction_state`` topic, as Kafka's transaction coordinator writes them.

One record per state change of a transactional id, keyed by the id, so compaction keeps each
id's latest state; a null value (tombstone) is an expired id. Kafka's layouts
(TransactionLogKey.json, TransactionLogValue.json, written version-prefixed by TransactionLog)::

    key v0      int16 version=0 | string transactional_id
    value v0    int16 version=0 | int64 producer_id | int16 producer_epoch | int32 timeout_ms
                | int8 state | partitions | int64 last_update_timestamp_ms | int64 start_timestamp_ms
                partitions: int32 count (-1 = null, what an Empty state writes), then per topic:
                string topic | int32 count | int32 partition...
    value v1    the same fields, flexible: compact nullable array of (compact string topic,
                compact array of int32, tagged fields), then tagged fields: 0 previous_producer_id
                (int64, default -1), 1 next_producer_id (int64, default -1), 2
                client_transaction_version (int16, default 0); a default is not written

A string is int16 length + UTF-8, a compact one an unsigned varint length + 1; a compact array is
an unsigned varint count + 1 (0 = null); tagged fields are an unsigned varint count, then (tag,
size, data) each, ascending by tag, and unknown tags are skipped. Kafka writes v0 until
``transaction.version`` 1 is finalized, then v1; the readers take both. The state ids are
TransactionState's (0 Empty .. 7 PrepareEpochFence).

``partition_for`` is Kafka's: abs(Java String.hashCode) modulo the partition count. Pure functions.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from tidelog.protocol.topics import TRANSACTION_STATE
from tidelog.protocol.reader import Reader
from tidelog.protocol.wire import uvarint
from tidelog.txn.state import TopicPartition, TransactionState

__all__ = [
    "TOPIC",
    "TransactionLogError",
    "TransactionLogValue",
    "decode_key",
    "decode_value",
    "encode_key",
    "encode_value",
    "java_string_hash",
    "partition_for",
    "topic_configs",
]

TOPIC = TRANSACTION_STATE
KEY_VERSION = 0
VALUE_VERSIONS = (0, 1)
_PREVIOUS_PRODUCER_ID_TAG, _NEXT_PRODUCER_ID_TAG, _CLIENT_TRANSACTION_VERSION_TAG = 0, 1, 2

_I8 = struct.Struct(">b")
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")
_HEAD = struct.Struct(">qhib")  # producer id, epoch, timeout, state
_TAIL = struct.Struct(">qq")  # last update, start


class TransactionLogError(ValueError):
    """A ``__transaction_state`` record this broker cannot read."""


@dataclass
class TransactionLogValue:
    producer_id: int
    producer_epoch: int
    txn_timeout_ms: int
    state: TransactionState
    partitions: frozenset[TopicPartition] = field(default_factory=frozenset)
    txn_last_update_timestamp_ms: int = -1
    txn_start_timestamp_ms: int = -1
    previous_producer_id: int = -1  # v1 only
    next_producer_id: int = -1  # v1 only
    client_transaction_version: int = 0  # v1 only


def topic_configs(min_insync_replicas: int, segment_bytes: int) -> dict[str, str]:
    """The configs Kafka forces on ``__transaction_state`` (TransactionStateManager.transactionTopicConfigs)."""
    return {
        "cleanup.policy": "compact",
        "compression.type": "uncompressed",
        "unclean.leader.election.enable": "false",
        "min.insync.replicas": str(min_insync_replicas),
        "segment.bytes": str(segment_bytes),
    }


def java_string_hash(text: str) -> int:
    """Java's String.hashCode: over UTF-16 code units, in int32 arithmetic."""
    units = text.encode("utf-16-be")
    h = 0
    for i in range(0, len(units), 2):
        h = (31 * h + (units[i] << 8 | units[i + 1])) & 0xFFFFFFFF
    return h - (1 << 32) if h & 0x80000000 else h


def partition_for(transactional_id: str, partition_count: int) -> int:
    """The ``__transaction_state`` partition (hence the coordinator) of a transactional id."""
    return (java_string_hash(transactional_id) & 0x7FFFFFFF) % partition_count


# ---- writing -------------------------------------------------------------------------------

def _string(text: str) -> bytes:
    data = text.encode()
    if len(data) > 0x7FFF:
        raise TransactionLogError(f"string of {len(data)} bytes is too long")
    return _I16.pack(len(data)) + data


def _by_topic(partitions: frozenset[TopicPartition]) -> list[tuple[str, list[int]]]:
    topics: dict[str, list[int]] = {}
    for tp in sorted(partitions):
        topics.setdefault(tp.topic, []).append(tp.partition)
    return list(topics.items())


def encode_key(transactional_id: str) -> bytes:
    return _I16.pack(KEY_VERSION) + _string(transactional_id)


def encode_value(value: TransactionLogValue, version: int = 0) -> bytes:
    """The value record of a state; ``version`` 0 (what Kafka writes before transaction.version 1) or 1."""
    if value.state is TransactionState.EMPTY and value.partitions:
        raise TransactionLogError(f"an Empty transaction has no partitions, not {sorted(value.partitions)}")
    topics = None if value.state is TransactionState.EMPTY else _by_topic(value.partitions)
    out = bytearray(_I16.pack(version))
    out += _HEAD.pack(value.producer_id, value.producer_epoch, value.txn_timeout_ms, value.state)
    if version == 0:
        if topics is None:
            out += _I32.pack(-1)
        else:
            out += _I32.pack(len(topics))
            for topic, partition_ids in topics:
                out += _string(topic) + _I32.pack(len(partition_ids))
                out += struct.pack(f">{len(partition_ids)}i", *partition_ids)
        out += _TAIL.pack(value.txn_last_update_timestamp_ms, value.txn_start_timestamp_ms)
        return bytes(out)
    if version != 1:
        raise TransactionLogError(f"unknown __transaction_state value version {version}")
    if topics is None:
        out += uvarint(0)
    else:
        out += uvarint(len(topics) + 1)
        for topic, partition_ids in topics:
            data = topic.encode()
            out += uvarint(len(data) + 1) + data + uvarint(len(partition_ids) + 1)
            out += struct.pack(f">{len(partition_ids)}i", *partition_ids)
            out += uvarint(0)  # no tagged fields
    out += _TAIL.pack(value.txn_last_update_timestamp_ms, value.txn_start_timestamp_ms)
    tags = []
    if value.previous_producer_id != -1:
        tags.append((_PREVIOUS_PRODUCER_ID_TAG, _I64.pack(value.previous_producer_id)))
    if value.next_producer_id != -1:
        tags.append((_NEXT_PRODUCER_ID_TAG, _I64.pack(value.next_producer_id)))
    if value.client_transaction_version != 0:
        tags.append((_CLIENT_TRANSACTION_VERSION_TAG, _I16.pack(value.client_transaction_version)))
    out += uvarint(len(tags))
    for tag, data in tags:
        out += uvarint(tag) + uvarint(len(data)) + data
    return bytes(out)


# ---- reading -------------------------------------------------------------------------------

def decode_key(data: bytes) -> str | None:
    """The transactional id of a key; None for a key version this broker does not know (Kafka
    skips those: left over from an aborted upgrade). Raises TransactionLogError if malformed."""
    reader = Reader(data, TransactionLogError)
    (version,) = reader.take(_I16)
    if version != KEY_VERSION:
        return None
    try:
        return reader.string()
    except UnicodeDecodeError as e:
        raise TransactionLogError(f"transactional id is not UTF-8: {e}") from None


def decode_value(data: bytes) -> TransactionLogValue:
    """A value record (v0 or v1). Raises TransactionLogError for an unknown version or a malformed one."""
    reader = Reader(data, TransactionLogError)
    (version,) = reader.take(_I16)
    if version not in VALUE_VERSIONS:
        raise TransactionLogError(f"unknown __transaction_state value version {version}")
    producer_id, producer_epoch, timeout_ms, state_id = reader.take(_HEAD)
    try:
        state = TransactionState(state_id)
    except ValueError:
        raise TransactionLogError(f"unknown transaction state {state_id}") from None
    partitions: set[TopicPartition] = set()
    try:
        if version == 0:
            (count,) = reader.take(_I32)
            for _ in range(max(count, 0)):
                topic = reader.string()
                (n,) = reader.take(_I32)
                partitions.update(TopicPartition(topic, p) for p in reader.int32s(max(n, 0)))
        else:
            count = reader.uvarint() - 1
            for _ in range(max(count, 0)):
                topic = reader.compact_string()
                n = reader.uvarint() - 1
                partitions.update(TopicPartition(topic, p) for p in reader.int32s(max(n, 0)))
                reader.tagged_fields()
    except UnicodeDecodeError as e:
        raise TransactionLogError(f"topic name is not UTF-8: {e}") from None
    last_update_ms, start_ms = reader.take(_TAIL)
    value = TransactionLogValue(producer_id, producer_epoch, timeout_ms, state,
                                frozenset() if state is TransactionState.EMPTY else frozenset(partitions),
                                last_update_ms, start_ms)
    if version == 1:
        tags = reader.tagged_fields()
        if _PREVIOUS_PRODUCER_ID_TAG in tags:
            (value.previous_producer_id,) = _tag_value(tags[_PREVIOUS_PRODUCER_ID_TAG], _I64)
        if _NEXT_PRODUCER_ID_TAG in tags:
            (value.next_producer_id,) = _tag_value(tags[_NEXT_PRODUCER_ID_TAG], _I64)
        if _CLIENT_TRANSACTION_VERSION_TAG in tags:
            (value.client_transaction_version,) = _tag_value(tags[_CLIENT_TRANSACTION_VERSION_TAG], _I16)
    return value


def _tag_value(data: bytes, s: struct.Struct) -> tuple:
    if len(data) != s.size:
        raise TransactionLogError(f"tagged field of {len(data)} bytes, expected {s.size}")
    return s.unpack(data)
