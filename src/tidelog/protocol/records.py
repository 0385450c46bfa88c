"""RecordBatch v2 (magic 2): header parsing, produce-time validation, in-place offset
assignment, and (off the hot path) record iteration and batch building. Pure functions, no I/O.

Layout (big-endian), offsets in bytes::

    0 baseOffset int64 | 8 batchLength int32 | 12 partitionLeaderEpoch int32 | 16 magic int8
    17 crc uint32 (CRC-32C of bytes 21..end) | 21 attributes int16 | 23 lastOffsetDelta int32
    27 baseTimestamp int64 | 35 maxTimestamp int64 | 43 producerId int64 | 51 producerEpoch int16
    53 baseSequence int32 | 57 recordCount int32 | 61 records...

The produce path (validate_batches) checks each batch as Kafka's LogValidator does: header,
CRC-32C, then a walk over its records (record_walk.py; a compressed batch is decompressed into
a bounded buffer) that copies nothing. Offsets are assigned in place (set_base_offset). The
codecs are compression.py's; the errors (InvalidBatch, CorruptRecords) errors.py's.
"""

from __future__ import annotations

import struct
from typing import Iterator, NamedTuple, Sequence

import cramjam
import crc32c

from tidelog.protocol.compression import COMPRESSION_NONE, COMPRESSION_ZSTD, compress, decompress
from tidelog.protocol.errors import CorruptRecords, ErrorCode, InvalidBatch
from tidelog.protocol.record_walk import walk_compressed, walk_records

__all__ = [
    "BATCH_HEADER_SIZE",
    "LOG_OVERHEAD",
    "BatchInfo",
    "CorruptRecords",
    "InvalidBatch",
    "Record",
    "ValidatedBatch",
    "parse_batch_header",
    "batch_crc_ok",
    "validate_batches",
    "set_base_offset",
    "set_partition_leader_epoch",
    "set_log_append_time",
    "apply_create_time",
    "iter_records",
    "build_batch",
]

BATCH_HEADER_SIZE = 61  # bytes through recordCount
LOG_OVERHEAD = 12  # baseOffset + batchLength: the part not counted by batchLength
_MIN_BATCH_LENGTH = BATCH_HEADER_SIZE - LOG_OVERHEAD  # 49
CRC_START = 21  # the CRC covers attributes .. end of batch
_ATTRIBUTES_OFFSET = 21
_MAX_TIMESTAMP_OFFSET = 35

COMPRESSION_MASK = 0x07
_TIMESTAMP_TYPE_BIT = 0x08
_TRANSACTIONAL_BIT = 0x10
_CONTROL_BIT = 0x20

HEADER_STRUCT = struct.Struct(">qiibIhiqqqhii")
_LENGTH = struct.Struct(">i")
_INT64 = struct.Struct(">q")
_UINT32 = struct.Struct(">I")
_INT16 = struct.Struct(">h")
assert HEADER_STRUCT.size == BATCH_HEADER_SIZE


class BatchInfo(NamedTuple):
    """The parsed 61-byte header of one batch."""

    base_offset: int
    batch_length: int  # the int32 field: batch size minus LOG_OVERHEAD
    partition_leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    record_count: int

    @property
    def size(self) -> int:
        return self.batch_length + LOG_OVERHEAD

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def compression(self) -> int:
        return self.attributes & COMPRESSION_MASK

    @property
    def timestamp_type(self) -> int:
        """0 = CreateTime, 1 = LogAppendTime."""
        return 1 if self.attributes & _TIMESTAMP_TYPE_BIT else 0

    @property
    def is_transactional(self) -> bool:
        return bool(self.attributes & _TRANSACTIONAL_BIT)

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & _CONTROL_BIT)


class Record(NamedTuple):
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]


class ValidatedBatch(NamedTuple):
    """A batch validate_batches accepted: its header and the range of its records' timestamps
    (base timestamp plus each record's delta; the header's maxTimestamp is the producer's claim)."""

    info: BatchInfo
    min_timestamp: int
    max_timestamp: int


def parse_batch_header(buf, pos: int = 0) -> BatchInfo:
    """Parse the header at ``pos``; raises struct.error if fewer than 61 bytes remain."""
    return BatchInfo._make(HEADER_STRUCT.unpack_from(buf, pos))


def batch_crc_ok(buf, info: BatchInfo, pos: int = 0) -> bool:
    """True if the CRC-32C stored in the header matches the batch at ``pos`` (whole batch in buf)."""
    return crc32c.crc32c(memoryview(buf)[pos + CRC_START : pos + info.size]) == info.crc


def validate_batches(buf, max_message_bytes: int, exactly_one: bool = True) -> list[ValidatedBatch]:
    """Validate a Produce request's ``records`` for one partition; return the batches.

    Follows Kafka (ProduceRequest.validateRecords, UnifiedLog.analyzeAndValidateRecords,
    LogValidator for client appends): framing, size and CRC errors are CORRUPT_MESSAGE; a batch
    over max.message.bytes is MESSAGE_TOO_LARGE; magic 0/1, bad offset/count fields, control
    batches from clients, a producer id without a sequence, a non-zero base offset and (for
    produce v3+, ``exactly_one``) anything but one batch are INVALID_RECORD. An unknown
    compression codec (5..7) is CORRUPT_MESSAGE (Kafka fails it with an unchecked exception).
    The zstd-needs-produce-v7 rule is version-dependent and left to the Produce handler.

    Then the records (see walk_records): a malformed record is INVALID_RECORD, as Kafka's
    DefaultRecord answers; a payload the codec cannot decompress (or that decompresses past
    MAX_DECOMPRESSED_BYTES) is CORRUPT_MESSAGE.
    """
    view = memoryview(buf)
    end = len(view)
    pos = 0
    batches: list[ValidatedBatch] = []
    unpack_from, new_tuple, crc = HEADER_STRUCT.unpack_from, tuple.__new__, crc32c.crc32c
    while pos < end:
        if end - pos < BATCH_HEADER_SIZE:
            raise InvalidBatch(ErrorCode.corrupt_message, f"{end - pos} trailing bytes are not a batch")
        # The checks read the plain unpacked tuple (this runs for every batch produced); the
        # header is made a BatchInfo once, without _make's call.
        fields = unpack_from(view, pos)
        (base_offset, batch_length, _, magic, stored_crc, attributes, last_offset_delta, base_timestamp, _,
         producer_id, _, base_sequence, record_count) = fields
        size = batch_length + LOG_OVERHEAD
        if batch_length < _MIN_BATCH_LENGTH:
            raise InvalidBatch(ErrorCode.corrupt_message, f"batch length {batch_length} is below the minimum")
        if pos + size > end:
            raise InvalidBatch(ErrorCode.corrupt_message, f"batch of {size} bytes is truncated to {end - pos}")
        if magic != 2:
            if magic in (0, 1):
                raise InvalidBatch(ErrorCode.invalid_record, "produce v3+ requires record batches with magic 2")
            raise InvalidBatch(ErrorCode.corrupt_message, f"invalid magic {magic}")
        if base_offset != 0:
            raise InvalidBatch(ErrorCode.invalid_record, f"base offset of a produced batch must be 0, not {base_offset}")
        if size > max_message_bytes:
            raise InvalidBatch(ErrorCode.message_too_large, f"batch of {size} bytes exceeds max.message.bytes {max_message_bytes}")
        if crc(view[pos + CRC_START : pos + size]) != stored_crc:
            raise InvalidBatch(ErrorCode.corrupt_message, "CRC-32C mismatch")
        codec = attributes & COMPRESSION_MASK
        if codec > COMPRESSION_ZSTD:
            raise InvalidBatch(ErrorCode.corrupt_message, f"unknown compression codec {codec}")
        if record_count <= 0 or last_offset_delta != record_count - 1:
            raise InvalidBatch(
                ErrorCode.invalid_record,
                f"record count {record_count} does not match last offset delta {last_offset_delta}",
            )
        if attributes & _CONTROL_BIT:
            raise InvalidBatch(ErrorCode.invalid_record, "clients may not write control batches")
        if producer_id >= 0 and base_sequence < 0:
            raise InvalidBatch(ErrorCode.invalid_record, f"invalid sequence {base_sequence} for producer {producer_id}")
        body = view[pos + BATCH_HEADER_SIZE : pos + size]
        if codec:
            min_delta, max_delta = walk_compressed(codec, body, record_count)
        else:
            min_delta, max_delta = walk_records(body, record_count)
        batches.append(new_tuple(ValidatedBatch, (new_tuple(BatchInfo, fields), base_timestamp + min_delta,
                                                  base_timestamp + max_delta)))
        pos += size
    if exactly_one and len(batches) != 1:
        raise InvalidBatch(ErrorCode.invalid_record, f"produce v3+ requires exactly one batch per partition, got {len(batches)}")
    return batches


def set_base_offset(buf, base_offset: int) -> None:
    """Assign the batch's base offset in place (outside the CRC)."""
    _INT64.pack_into(buf, 0, base_offset)


# The rewriting functions below return the batch's new header: whoever appends the batch must
# hand the log that one (the segment's max timestamp and time index come from it), not the
# header it parsed before the rewrite.


def set_partition_leader_epoch(buf, info: BatchInfo, epoch: int) -> BatchInfo:
    """Stamp the leader epoch in place (outside the CRC); return the new header."""
    _LENGTH.pack_into(buf, 12, epoch)
    return tuple.__new__(BatchInfo, (info[0], info[1], epoch, *info[3:]))  # _replace without its calls: a batch produced


def set_log_append_time(buf, info: BatchInfo, timestamp_ms: int) -> BatchInfo:
    """Mark the batch LogAppendTime with ``timestamp_ms`` as its maxTimestamp, recompute the CRC;
    return the new header."""
    return _set_max_timestamp(buf, info, info.attributes | _TIMESTAMP_TYPE_BIT, timestamp_ms)


def _set_max_timestamp(buf, info: BatchInfo, attributes: int, timestamp_ms: int) -> BatchInfo:
    view = memoryview(buf)
    _INT16.pack_into(view, _ATTRIBUTES_OFFSET, attributes)
    _INT64.pack_into(view, _MAX_TIMESTAMP_OFFSET, timestamp_ms)
    crc = crc32c.crc32c(view[CRC_START : info.size])
    _UINT32.pack_into(view, 17, crc)
    return info._replace(attributes=attributes, max_timestamp=timestamp_ms, crc=crc)


NO_TIMESTAMP = -1


def apply_create_time(buf, batch: ValidatedBatch, now_ms: int, before_max_ms: int, after_max_ms: int) -> BatchInfo:
    """Kafka's LogValidator for a CreateTime topic; return the header to append with.

    Every record's timestamp must lie in [now - before_max_ms, now + after_max_ms]
    (message.timestamp.before/after.max.ms), else INVALID_TIMESTAMP listing each record out of
    range, with Kafka's messages. Records without a timestamp (-1) are not checked. A header
    whose maxTimestamp is not its records' largest is corrected (CRC recomputed), as Kafka
    does, so that retention and the time index go by the records.
    """
    info = batch.info
    if info.timestamp_type == 1:  # a client's LogAppendTime batch: each record reads as the header's time
        low = high = info.max_timestamp
    else:
        low, high = batch.min_timestamp, batch.max_timestamp
    earliest, latest = now_ms - before_max_ms, now_ms + after_max_ms
    if not earliest <= low <= high <= latest:  # rare: look at each record
        errors = tuple(
            (index, f"Timestamp {record.timestamp} of message with offset {record.offset} is out of range. "
                    f"The timestamp should be within [{earliest}, {latest}]")
            for index, record in enumerate(iter_records(memoryview(buf)[: info.size]))
            if record.timestamp != NO_TIMESTAMP and not earliest <= record.timestamp <= latest
        )
        if errors:
            raise InvalidBatch(ErrorCode.invalid_timestamp,
                               "One or more records have been rejected due to invalid timestamp", errors)
    if info.timestamp_type == 0 and info.max_timestamp != high:
        return _set_max_timestamp(buf, info, info.attributes, high)
    return info


# ---- records: off the hot path -------------------------------------------------------------

def read_varint(buf, pos: int) -> tuple[int, int]:
    """Zigzag varint (varlong too) at ``pos``; returns (value, next position)."""
    result = 0
    shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def write_varint(out: bytearray, value: int) -> None:
    value = (value << 1) ^ (value >> 63)
    while value & ~0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _read_bytes(buf, pos: int) -> tuple[bytes | None, int]:
    length, pos = read_varint(buf, pos)
    if length < 0:
        return None, pos
    if pos + length > len(buf):
        raise ValueError("record field runs past the batch")
    return bytes(buf[pos : pos + length]), pos + length


def iter_records(buf) -> Iterator[Record]:
    """Decode every record of every batch in ``buf`` (decompressing as needed).

    For features and tests, not the hot path. Raises CorruptRecords (a ValueError) on
    malformed records, whatever is wrong with them: data on disk written before produce
    validated records, or damaged since, must not take a read path down with another error.
    """
    try:
        yield from _iter_records(buf)
    except (ValueError, IndexError, struct.error, cramjam.DecompressionError) as e:
        if isinstance(e, CorruptRecords):
            raise
        raise CorruptRecords(f"malformed records: {e}") from None


def _iter_records(buf) -> Iterator[Record]:
    view = memoryview(buf)
    pos = 0
    while len(view) - pos >= BATCH_HEADER_SIZE:
        info = parse_batch_header(view, pos)
        size = info.size
        if pos + size > len(view):
            return
        body = view[pos + BATCH_HEADER_SIZE : pos + size]
        if info.compression:
            body = memoryview(decompress(info.compression, body))
        log_append_time = info.max_timestamp if info.timestamp_type == 1 else None
        rpos = 0
        for _ in range(info.record_count):
            length, rpos = read_varint(body, rpos)
            record_end = rpos + length
            rpos += 1  # record attributes, unused
            timestamp_delta, rpos = read_varint(body, rpos)
            offset_delta, rpos = read_varint(body, rpos)
            key, rpos = _read_bytes(body, rpos)
            value, rpos = _read_bytes(body, rpos)
            header_count, rpos = read_varint(body, rpos)
            headers = []
            for _ in range(header_count):
                header_key, rpos = _read_bytes(body, rpos)
                header_value, rpos = _read_bytes(body, rpos)
                headers.append(((header_key or b"").decode("utf-8", "replace"), header_value))
            if rpos != record_end:
                raise ValueError("record length does not match its fields")
            timestamp = log_append_time if log_append_time is not None else info.base_timestamp + timestamp_delta
            yield Record(info.base_offset + offset_delta, timestamp, key, value, headers)
        pos += size


def _encode_bytes(out: bytearray, data: bytes | str | None) -> None:
    if data is None:
        write_varint(out, -1)
        return
    if isinstance(data, str):
        data = data.encode()
    write_varint(out, len(data))
    out += data


def build_batch(
    records: Sequence[tuple],
    base_offset: int = 0,
    timestamp_ms: int | None = None,
    compression: int = COMPRESSION_NONE,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    partition_leader_epoch: int = -1,
    *,
    is_transactional: bool = False,
    is_control: bool = False,
) -> bytes:
    """Build one valid v2 batch from ``(key, value, headers)`` or ``(key, value, headers, timestamp_ms)``.

    ``headers`` is a list of ``(str, bytes | None)``. Records without their own timestamp get
    ``timestamp_ms`` (default: now).
    """
    if not records:
        raise ValueError("a batch needs at least one record")
    if timestamp_ms is None:
        import time

        timestamp_ms = int(time.time() * 1000)
    timestamps = [r[3] if len(r) > 3 and r[3] is not None else timestamp_ms for r in records]
    base_timestamp = min(timestamps)
    body = bytearray()
    for offset_delta, (record, timestamp) in enumerate(zip(records, timestamps)):
        key, value, headers = record[0], record[1], record[2] or []
        rec = bytearray(b"\x00")  # attributes
        write_varint(rec, timestamp - base_timestamp)
        write_varint(rec, offset_delta)
        _encode_bytes(rec, key)
        _encode_bytes(rec, value)
        write_varint(rec, len(headers))
        for header_key, header_value in headers:
            _encode_bytes(rec, header_key)
            _encode_bytes(rec, header_value)
        write_varint(body, len(rec))
        body += rec
    payload = compress(compression, bytes(body)) if compression else bytes(body)
    attributes = compression | (_TRANSACTIONAL_BIT if is_transactional else 0) | (_CONTROL_BIT if is_control else 0)
    batch = bytearray(BATCH_HEADER_SIZE + len(payload))
    HEADER_STRUCT.pack_into(
        batch, 0, base_offset, BATCH_HEADER_SIZE - LOG_OVERHEAD + len(payload), partition_leader_epoch, 2, 0,
        attributes, len(records) - 1, base_timestamp, max(timestamps), producer_id, producer_epoch,
        base_sequence, len(records),
    )  # fmt: skip
    batch[BATCH_HEADER_SIZE:] = payload
    _UINT32.pack_into(batch, 17, crc32c.crc32c(memoryview(batch)[CRC_START:]))
    return bytes(batch)


def recompress_batch(buf, info: BatchInfo, compression: int) -> bytearray:
    """The same records in a new batch compressed with ``compression`` (a topic's compression.type).

    Keeps keys, values, headers, timestamps and the producer id, epoch and sequence, so
    idempotence still holds. Decodes every record: not for the default (``producer``) path.
    """
    records = [(r.key, r.value, r.headers, r.timestamp) for r in iter_records(buf)]
    return bytearray(
        build_batch(
            records,
            compression=compression,
            producer_id=info.producer_id,
            producer_epoch=info.producer_epoch,
            base_sequence=info.base_sequence,
            partition_leader_epoch=info.partition_leader_epoch,
        )
    )
