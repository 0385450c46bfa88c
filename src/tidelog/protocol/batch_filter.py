"""Rewriting a record batch with some of its records: the log cleaner's half of the format.

What Kafka's ``MemoryRecords.filterTo`` does for its LogCleaner, as pure functions, no I/O:

- ``record_spans`` walks a batch's (decompressed) records and gives, per record, where it lies,
  its offset delta, where its key is (or that it has none) and whether it has a value.
- ``rebuild_batch`` writes a batch holding only the records kept. Everything the header says
  about the producer stays: base offset and last offset delta (so the last sequence number
  survives, as Kafka's ``overrideLastOffset``), producer id, epoch and base sequence, the
  transactional and control flags, the partition leader epoch, the timestamp type and the
  codec (the records are compressed again with it). Records keep their offset deltas, so
  their offsets do not change. The kept records are copied byte for byte unless the batch
  gets its delete horizon (KIP-534): then the base timestamp becomes the horizon, the
  attribute bit 0x40 is set and each record's timestamp delta is rewritten against it, so
  every record keeps its timestamp. The max timestamp is recomputed over the records kept
  (CreateTime; a LogAppendTime batch keeps its own).
- ``empty_batch`` is the header alone of a batch whose records all went but which must stay
  (the last batch of a producer, or of a cleaning round): no records, the offsets, producer
  fields and max timestamp of the original, base timestamp -1, no codec, as Kafka's
  ``writeEmptyHeader``.
- ``null_key_indexes`` lists the records without a key (refused on compacted topics).

Stored records are trusted to be well formed (produce validated them); malformed ones raise
CorruptRecords, the one error record decoding raises.
"""

from __future__ import annotations

import struct

import crc32c

from tidelog.protocol.compression import compress, decompress
from tidelog.protocol.errors import CorruptRecords
from tidelog.protocol.records import (
    BATCH_HEADER_SIZE,
    COMPRESSION_MASK,
    CRC_START,
    HEADER_STRUCT,
    LOG_OVERHEAD,
    BatchInfo,
    write_varint,
)

__all__ = ["DELETE_HORIZON_BIT", "delete_horizon_ms", "empty_batch", "null_key_indexes", "rebuild_batch",
           "record_spans", "records_body"]

DELETE_HORIZON_BIT = 0x40  # attributes: the base timestamp is the delete horizon (KIP-534)
_UINT32 = struct.Struct(">I")
_NO_TIMESTAMP = -1

# A span: (start, fields_start, end, offset_delta, key_start, key_end, has_value, timestamp_delta,
# timestamp_end). The record is body[start:end]; its length varint ends at fields_start, where its
# attributes byte is; the timestamp delta follows and ends at timestamp_end. key_start is -1 for a
# record without a key.


def delete_horizon_ms(info: BatchInfo) -> int | None:
    """The batch's delete horizon, if a cleaning set one."""
    return info.base_timestamp if info.attributes & DELETE_HORIZON_BIT else None


def records_body(batch, info: BatchInfo) -> memoryview:
    """The records of the whole batch ``batch`` (decompressed if need be)."""
    body = memoryview(batch)[BATCH_HEADER_SIZE: info.size]
    if info.attributes & COMPRESSION_MASK:
        try:
            return memoryview(decompress(info.attributes & COMPRESSION_MASK, body))
        except Exception as e:  # cramjam's and the framing's errors alike: the batch is unreadable
            raise CorruptRecords(f"cannot decompress the batch at offset {info.base_offset}: {e}") from None
    return body


def _varint(b, pos: int) -> tuple[int, int]:
    raw = shift = 0
    while True:
        byte = b[pos]
        pos += 1
        raw |= (byte & 0x7F) << shift
        if byte < 0x80:
            return (raw >> 1) ^ -(raw & 1), pos
        shift += 7
        if shift > 63:
            raise CorruptRecords("varint longer than 10 bytes")


def record_spans(body, count: int) -> list[tuple]:
    """The span of each of ``count`` records in ``body`` (see the comment above for its fields).

    The one- and two-byte varints (almost all) are decoded inline: this runs for every record
    the cleaner reads.
    """
    b = body
    end = len(b)
    pos = 0
    spans = []
    append = spans.append
    try:
        for _ in range(count):
            start = pos
            x = b[pos]  # record length
            if x < 0x80:
                length = (x >> 1) ^ -(x & 1)
                pos += 1
            elif b[pos + 1] < 0x80:
                raw = (x & 0x7F) | (b[pos + 1] << 7)
                length = (raw >> 1) ^ -(raw & 1)
                pos += 2
            else:
                length, pos = _varint(b, pos)
            start_of_fields = pos
            record_end = pos + length
            if length < 0 or record_end > end:
                raise CorruptRecords(f"record of length {length} runs past the batch")
            x = b[pos + 1]  # the timestamp delta, after the attributes byte
            if x < 0x80:
                timestamp_delta = (x >> 1) ^ -(x & 1)
                pos += 2
            else:
                timestamp_delta, pos = _varint(b, pos + 1)
            timestamp_end = pos
            x = b[pos]  # offset delta
            if x < 0x80:
                offset_delta = (x >> 1) ^ -(x & 1)
                pos += 1
            elif b[pos + 1] < 0x80:
                raw = (x & 0x7F) | (b[pos + 1] << 7)
                offset_delta = (raw >> 1) ^ -(raw & 1)
                pos += 2
            else:
                offset_delta, pos = _varint(b, pos)
            x = b[pos]  # key length
            if x < 0x80:
                key_length = (x >> 1) ^ -(x & 1)
                pos += 1
            elif b[pos + 1] < 0x80:
                raw = (x & 0x7F) | (b[pos + 1] << 7)
                key_length = (raw >> 1) ^ -(raw & 1)
                pos += 2
            else:
                key_length, pos = _varint(b, pos)
            if key_length >= 0:
                key_start = pos
                pos += key_length
            else:
                key_start = -1
            x = b[pos]  # value length: -1 (0x01) is a tombstone
            append((start, start_of_fields, record_end, offset_delta, key_start, pos, x != 1, timestamp_delta, timestamp_end))
            pos = record_end
    except IndexError:
        raise CorruptRecords("a record runs past the end of its batch") from None
    if pos != end:
        raise CorruptRecords(f"{end - pos} bytes after the last of {count} records")
    return spans


def null_key_indexes(body, count: int) -> list[int]:
    """The index in its batch of each record that has no key."""
    return [i for i, span in enumerate(record_spans(body, count)) if span[4] < 0]


def rebuild_batch(batch, info: BatchInfo, body, kept: list[tuple], new_delete_horizon_ms: int | None = None) -> bytes:
    """The batch ``batch`` (``info`` its header, ``body`` its records) with only the ``kept`` spans.

    ``new_delete_horizon_ms`` sets the batch's delete horizon (it must not have one yet).
    """
    log_append_time = bool(info.attributes & 0x08)
    attributes = info.attributes
    base_timestamp = info.base_timestamp
    out = bytearray()
    if new_delete_horizon_ms is None:
        for span in kept:
            out += body[span[0]:span[2]]
        timestamps = (base_timestamp + span[7] for span in kept)
    else:
        attributes |= DELETE_HORIZON_BIT
        base_timestamp = new_delete_horizon_ms
        fields = bytearray()
        for _, fields_start, end, _, _, _, _, timestamp_delta, timestamp_end in kept:
            fields.clear()
            fields.append(body[fields_start])  # the record's attributes
            write_varint(fields, info.base_timestamp + timestamp_delta - new_delete_horizon_ms)
            fields += body[timestamp_end:end]
            write_varint(out, len(fields))
            out += fields
        timestamps = (info.base_timestamp + span[7] for span in kept)
    max_timestamp = info.max_timestamp if log_append_time else max(timestamps, default=_NO_TIMESTAMP)
    codec = info.attributes & COMPRESSION_MASK
    payload = compress(codec, bytes(out)) if codec else out
    return _pack(info, attributes, base_timestamp, max_timestamp, len(kept), payload)


def empty_batch(info: BatchInfo) -> bytes:
    """The header of ``info`` with no records (see the module docstring)."""
    attributes = info.attributes & ~(COMPRESSION_MASK | DELETE_HORIZON_BIT)
    return _pack(info, attributes, _NO_TIMESTAMP, info.max_timestamp, 0, b"")


def _pack(info: BatchInfo, attributes: int, base_timestamp: int, max_timestamp: int, count: int, payload) -> bytes:
    batch = bytearray(BATCH_HEADER_SIZE + len(payload))
    HEADER_STRUCT.pack_into(
        batch, 0, info.base_offset, BATCH_HEADER_SIZE - LOG_OVERHEAD + len(payload), info.partition_leader_epoch, 2, 0,
        attributes, info.last_offset_delta, base_timestamp, max_timestamp, info.producer_id, info.producer_epoch,
        info.base_sequence, count,
    )  # fmt: skip
    batch[BATCH_HEADER_SIZE:] = payload
    _UINT32.pack_into(batch, 17, crc32c.crc32c(memoryview(batch)[CRC_START:]))
    return bytes(batch)
