"""RecordBatch v2 (magic 2): header parsing, produce-time validation, in-place offset
assignment, and (off the hot path) record iteration and batch building. Pure functions, no I/O.

Layout (big-endian), offsets in bytes::

    0 baseOffset int64 | 8 batchLength int32 | 12 partitionLeaderEpoch int32 | 16 magic int8
    17 crc uint32 (CRC-32C of bytes 21..end) | 21 attributes int16 | 23 lastOffsetDelta int32
    27 baseTimestamp int64 | 35 maxTimestamp int64 | 43 producerId int64 | 51 producerEpoch int16
    53 baseSequence int32 | 57 recordCount int32 | 61 records...

The produce path (validate_batches) checks each batch as Kafka's LogValidator does: header,
CRC-32C, then a walk over its records (decompressing a compressed batch into a bounded
buffer) that copies nothing. Offsets are assigned in place (set_base_offset).
"""

from __future__ import annotations

import mmap
import struct
from typing import Iterator, NamedTuple, Sequence

import cramjam
import crc32c

from tidelog.protocol.errors import ErrorCode

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
_CRC_START = 21  # the CRC covers attributes .. end of batch
_ATTRIBUTES_OFFSET = 21
_MAX_TIMESTAMP_OFFSET = 35

COMPRESSION_NONE, COMPRESSION_GZIP, COMPRESSION_SNAPPY, COMPRESSION_LZ4, COMPRESSION_ZSTD = range(5)
_COMPRESSION_MASK = 0x07
_TIMESTAMP_TYPE_BIT = 0x08
_TRANSACTIONAL_BIT = 0x10
_CONTROL_BIT = 0x20

_HEADER = struct.Struct(">qiibIhiqqqhii")
_LENGTH = struct.Struct(">i")
_INT64 = struct.Struct(">q")
_UINT32 = struct.Struct(">I")
_INT16 = struct.Struct(">h")
assert _HEADER.size == BATCH_HEADER_SIZE


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
        return self.attributes & _COMPRESSION_MASK

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


class InvalidBatch(Exception):
    """A batch the broker must reject; ``error_code`` is what the Produce response carries."""

    def __init__(self, error_code: ErrorCode, message: str, record_errors: tuple[tuple[int, str], ...] = ()) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.record_errors = record_errors  # (index of the record in its batch, why), as Kafka lists them


class CorruptRecords(InvalidBatch, ValueError):
    """Records that cannot be decoded (iter_records): bad framing, a bad varint, a payload the
    batch's codec cannot decompress. The only exception record decoding raises."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.corrupt_message, message)


class ValidatedBatch(NamedTuple):
    """A batch validate_batches accepted: its header and the range of its records' timestamps
    (base timestamp plus each record's delta; the header's maxTimestamp is the producer's claim)."""

    info: BatchInfo
    min_timestamp: int
    max_timestamp: int


def parse_batch_header(buf, pos: int = 0) -> BatchInfo:
    """Parse the header at ``pos``; raises struct.error if fewer than 61 bytes remain."""
    return BatchInfo._make(_HEADER.unpack_from(buf, pos))


def batch_crc_ok(buf, info: BatchInfo, pos: int = 0) -> bool:
    """True if the CRC-32C stored in the header matches the batch at ``pos`` (whole batch in buf)."""
    return crc32c.crc32c(memoryview(buf)[pos + _CRC_START : pos + info.size]) == info.crc


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
    while pos < end:
        if end - pos < BATCH_HEADER_SIZE:
            raise InvalidBatch(ErrorCode.corrupt_message, f"{end - pos} trailing bytes are not a batch")
        info = BatchInfo._make(_HEADER.unpack_from(view, pos))
        size = info.batch_length + LOG_OVERHEAD
        if info.batch_length < _MIN_BATCH_LENGTH:
            raise InvalidBatch(ErrorCode.corrupt_message, f"batch length {info.batch_length} is below the minimum")
        if pos + size > end:
            raise InvalidBatch(ErrorCode.corrupt_message, f"batch of {size} bytes is truncated to {end - pos}")
        if info.magic != 2:
            if info.magic in (0, 1):
                raise InvalidBatch(ErrorCode.invalid_record, "produce v3+ requires record batches with magic 2")
            raise InvalidBatch(ErrorCode.corrupt_message, f"invalid magic {info.magic}")
        if info.base_offset != 0:
            raise InvalidBatch(ErrorCode.invalid_record, f"base offset of a produced batch must be 0, not {info.base_offset}")
        if size > max_message_bytes:
            raise InvalidBatch(ErrorCode.message_too_large, f"batch of {size} bytes exceeds max.message.bytes {max_message_bytes}")
        if crc32c.crc32c(view[pos + _CRC_START : pos + size]) != info.crc:
            raise InvalidBatch(ErrorCode.corrupt_message, "CRC-32C mismatch")
        attributes = info.attributes
        if attributes & _COMPRESSION_MASK > COMPRESSION_ZSTD:
            raise InvalidBatch(ErrorCode.corrupt_message, f"unknown compression codec {attributes & _COMPRESSION_MASK}")
        if info.record_count <= 0 or info.last_offset_delta != info.record_count - 1:
            raise InvalidBatch(
                ErrorCode.invalid_record,
                f"record count {info.record_count} does not match last offset delta {info.last_offset_delta}",
            )
        if attributes & _CONTROL_BIT:
            raise InvalidBatch(ErrorCode.invalid_record, "clients may not write control batches")
        if info.producer_id >= 0 and info.base_sequence < 0:
            raise InvalidBatch(ErrorCode.invalid_record, f"invalid sequence {info.base_sequence} for producer {info.producer_id}")
        body = view[pos + BATCH_HEADER_SIZE : pos + size]
        if attributes & _COMPRESSION_MASK:
            min_delta, max_delta = _walk_compressed(attributes & _COMPRESSION_MASK, body, info.record_count)
        else:
            min_delta, max_delta = walk_records(body, info.record_count)
        batches.append(ValidatedBatch(info, info.base_timestamp + min_delta, info.base_timestamp + max_delta))
        pos += size
    if exactly_one and len(batches) != 1:
        raise InvalidBatch(ErrorCode.invalid_record, f"produce v3+ requires exactly one batch per partition, got {len(batches)}")
    return batches


# ---- the record walk: produce validation, no copies ---------------------------------------

try:
    from tidelog.protocol._recordwalk import walk as _walk_in_c
except ImportError:  # built without a C compiler: the Python walk below
    _walk_in_c = None

RECORD_WALK = "Python" if _walk_in_c is None else "C"  # which walk validates records, for the start-up log

MAX_DECOMPRESSED_BYTES = 64 << 20  # a compressed batch may expand to this much, no more
_RELEASE_SCRATCH_BYTES = 4 << 20  # give pages of the scratch buffer back above this


def _invalid(message: str) -> InvalidBatch:
    return InvalidBatch(ErrorCode.invalid_record, message)


def _long_varint(buf, pos: int, max_bytes: int) -> tuple[int, int]:
    """Zigzag varint at ``pos`` of at most ``max_bytes`` bytes (5 varint, 10 varlong), decoded
    into 64 bits as Kafka's ByteUtils (and _recordwalk.c) do."""
    raw = shift = 0
    for pos in range(pos, pos + max_bytes):
        byte = buf[pos]
        raw |= (byte & 0x7F) << shift
        if byte < 0x80:
            raw &= 0xFFFFFFFFFFFFFFFF
            return (raw >> 1) ^ -(raw & 1), pos + 1
        shift += 7
    raise OverflowError(f"varint longer than {max_bytes} bytes")


def walk_records(body, count: int) -> tuple[int, int]:
    """Walk ``count`` records filling ``body`` exactly; return (min, max) timestamp delta.

    Checks what Kafka's DefaultRecord.readFrom checks, raising INVALID_RECORD: each record's
    length varint, that its fields (attributes, timestamp delta, offset delta, key, value,
    header count, header keys and values) fill exactly that length, non-negative lengths (-1
    is null, not for header keys), the record count, and no bytes after the last record.
    Stricter than Kafka: each offset delta must be the record's index (Kafka rewrites a
    compressed batch whose deltas are not, and does not look at an uncompressed one's).
    Reads varints in place, copies nothing. The C extension (_recordwalk.c) does the same
    walk ~50x faster; this Python one runs where it was not built.
    """
    if _walk_in_c is None:
        return _walk_records_python(body, count)
    try:
        return _walk_in_c(body, count)
    except ValueError as e:
        raise _invalid(str(e)) from None


def _walk_records_python(body, count: int) -> tuple[int, int]:
    """walk_records without the C extension. The one- and two-byte varints (almost all of them)
    are decoded inline: this loop runs for every record produced."""
    b = body
    end = len(b)
    pos = 0
    min_delta, max_delta = 1 << 63, -(1 << 63)
    try:
        for index in range(count):
            x = b[pos]  # record length
            if x < 0x80:
                length = (x >> 1) ^ -(x & 1)
                pos += 1
            elif b[pos + 1] < 0x80:
                raw = (x & 0x7F) | (b[pos + 1] << 7)
                length = (raw >> 1) ^ -(raw & 1)
                pos += 2
            else:
                length, pos = _long_varint(b, pos, 5)
            record_end = pos + length
            if length < 0 or record_end > end:
                raise _invalid(f"record {index} has length {length}, {end - pos} bytes are left")
            x = b[pos + 1]  # after the attributes byte: the timestamp delta (varlong)
            if x < 0x80:
                timestamp_delta = (x >> 1) ^ -(x & 1)
                pos += 2
            else:
                timestamp_delta, pos = _long_varint(b, pos + 1, 10)
            if timestamp_delta < min_delta:
                min_delta = timestamp_delta
            if timestamp_delta > max_delta:
                max_delta = timestamp_delta
            x = b[pos]  # offset delta
            if x < 0x80:
                offset_delta = (x >> 1) ^ -(x & 1)
                pos += 1
            elif b[pos + 1] < 0x80:
                raw = (x & 0x7F) | (b[pos + 1] << 7)
                offset_delta = (raw >> 1) ^ -(raw & 1)
                pos += 2
            else:
                offset_delta, pos = _long_varint(b, pos, 5)
            if offset_delta != index:
                raise _invalid(f"record {index} has offset delta {offset_delta}")
            for _ in (0, 1):  # key, then value
                x = b[pos]
                if x < 0x80:
                    size = (x >> 1) ^ -(x & 1)
                    pos += 1
                elif b[pos + 1] < 0x80:
                    raw = (x & 0x7F) | (b[pos + 1] << 7)
                    size = (raw >> 1) ^ -(raw & 1)
                    pos += 2
                else:
                    size, pos = _long_varint(b, pos, 5)
                if size > 0:
                    pos += size
                elif size < -1:
                    raise _invalid(f"record {index} has a key or value of length {size}")
            x = b[pos]  # header count
            if x:
                pos = _walk_headers(b, pos, record_end, index)
            else:
                pos += 1
            if pos != record_end:
                raise _invalid(f"record {index} has length {length} but its fields take {length + pos - record_end}")
    except IndexError:
        raise _invalid(f"record {index} runs past the end of the batch") from None
    except OverflowError as e:
        raise _invalid(f"record {index} has a {e}") from None
    if pos != end:
        raise _invalid(f"{end - pos} bytes after the last of {count} records")
    return (min_delta, max_delta) if count > 0 else (0, 0)


def _walk_headers(b, pos: int, record_end: int, index: int) -> int:
    count, pos = _long_varint(b, pos, 5)
    if count < 0 or count > record_end - pos:
        raise _invalid(f"record {index} has {count} headers")
    for _ in range(count):
        size, pos = _long_varint(b, pos, 5)
        if size < 0:
            raise _invalid(f"record {index} has a header key of length {size}")
        size, pos = _long_varint(b, pos + size, 5)
        if size > 0:
            pos += size
        elif size < -1:
            raise _invalid(f"record {index} has a header value of length {size}")
        if pos > record_end:
            break  # the caller reports the length mismatch
    return pos


_scratch: mmap.mmap | None = None  # decompression output; pages are touched only as written


def _walk_compressed(codec: int, payload, count: int) -> tuple[int, int]:
    """Decompress into a bounded scratch buffer and walk the records there."""
    global _scratch
    if _scratch is None:
        _scratch = mmap.mmap(-1, MAX_DECOMPRESSED_BYTES)
    try:
        size = _decompress_into(codec, payload, _scratch)
    except (cramjam.DecompressionError, ValueError, struct.error) as e:
        raise InvalidBatch(ErrorCode.corrupt_message, f"cannot decompress the batch ({e}), "
                           f"or it decompresses to more than {MAX_DECOMPRESSED_BYTES} bytes") from None
    view = memoryview(_scratch)[:size]
    try:
        return walk_records(view, count)
    finally:
        view.release()
        if size > _RELEASE_SCRATCH_BYTES:
            _scratch.madvise(mmap.MADV_DONTNEED, 0, size)


def set_base_offset(buf, base_offset: int) -> None:
    """Assign the batch's base offset in place (outside the CRC)."""
    _INT64.pack_into(buf, 0, base_offset)


# The rewriting functions below return the batch's new header: whoever appends the batch must
# hand the log that one (the segment's max timestamp and time index come from it), not the
# header it parsed before the rewrite.


def set_partition_leader_epoch(buf, info: BatchInfo, epoch: int) -> BatchInfo:
    """Stamp the leader epoch in place (outside the CRC); return the new header."""
    _LENGTH.pack_into(buf, 12, epoch)
    return info._replace(partition_leader_epoch=epoch)


def set_log_append_time(buf, info: BatchInfo, timestamp_ms: int) -> BatchInfo:
    """Mark the batch LogAppendTime with ``timestamp_ms`` as its maxTimestamp, recompute the CRC;
    return the new header."""
    return _set_max_timestamp(buf, info, info.attributes | _TIMESTAMP_TYPE_BIT, timestamp_ms)


def _set_max_timestamp(buf, info: BatchInfo, attributes: int, timestamp_ms: int) -> BatchInfo:
    view = memoryview(buf)
    _INT16.pack_into(view, _ATTRIBUTES_OFFSET, attributes)
    _INT64.pack_into(view, _MAX_TIMESTAMP_OFFSET, timestamp_ms)
    crc = crc32c.crc32c(view[_CRC_START : info.size])
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

_XERIAL_MAGIC = b"\x82SNAPPY\x00"
_XERIAL_HEADER = _XERIAL_MAGIC + struct.pack(">ii", 1, 1)


def _decompress_into(codec: int, data, out) -> int:
    """Decompress ``data`` into ``out``; return the size. Raises if ``out`` is too small."""
    if codec == COMPRESSION_SNAPPY:
        if bytes(data[:8]) != _XERIAL_MAGIC:
            return cramjam.snappy.decompress_raw_into(data, out)
        size, pos, out_view = 0, 16, memoryview(out)
        try:
            while pos < len(data):
                (block_size,) = _LENGTH.unpack_from(data, pos)
                if block_size < 0 or pos + 4 + block_size > len(data):
                    raise ValueError(f"snappy block of {block_size} bytes runs past the payload")
                size += cramjam.snappy.decompress_raw_into(data[pos + 4 : pos + 4 + block_size], out_view[size:])
                pos += 4 + block_size
        finally:
            out_view.release()
        return size
    into = {COMPRESSION_GZIP: cramjam.gzip.decompress_into, COMPRESSION_LZ4: cramjam.lz4.decompress_into,
            COMPRESSION_ZSTD: cramjam.zstd.decompress_into}[codec]
    return into(data, out)


def _decompress(codec: int, data) -> bytes:
    if codec == COMPRESSION_GZIP:
        return bytes(cramjam.gzip.decompress(data))
    if codec == COMPRESSION_SNAPPY:
        if bytes(data[:8]) == _XERIAL_MAGIC:  # Java's xerial framing: header, then int32-sized blocks
            out = bytearray()
            pos = 16
            while pos < len(data):
                (block_size,) = _LENGTH.unpack_from(data, pos)
                out += cramjam.snappy.decompress_raw(bytes(data[pos + 4 : pos + 4 + block_size]))
                pos += 4 + block_size
            return bytes(out)
        return bytes(cramjam.snappy.decompress_raw(bytes(data)))
    if codec == COMPRESSION_LZ4:
        return bytes(cramjam.lz4.decompress(bytes(data)))
    if codec == COMPRESSION_ZSTD:
        return bytes(cramjam.zstd.decompress(bytes(data)))
    raise ValueError(f"unknown compression codec {codec}")


def _compress(codec: int, data: bytes) -> bytes:
    if codec == COMPRESSION_GZIP:
        return bytes(cramjam.gzip.compress(data))
    if codec == COMPRESSION_SNAPPY:  # xerial framing, one block: what the Java producer writes
        block = bytes(cramjam.snappy.compress_raw(data))
        return _XERIAL_HEADER + _LENGTH.pack(len(block)) + block
    if codec == COMPRESSION_LZ4:
        return bytes(cramjam.lz4.compress(data))
    if codec == COMPRESSION_ZSTD:
        return bytes(cramjam.zstd.compress(data))
    raise ValueError(f"unknown compression codec {codec}")


def _read_varint(buf, pos: int) -> tuple[int, int]:
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


def _write_varint(out: bytearray, value: int) -> None:
    value = (value << 1) ^ (value >> 63)
    while value & ~0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _read_bytes(buf, pos: int) -> tuple[bytes | None, int]:
    length, pos = _read_varint(buf, pos)
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
            body = memoryview(_decompress(info.compression, body))
        log_append_time = info.max_timestamp if info.timestamp_type == 1 else None
        rpos = 0
        for _ in range(info.record_count):
            length, rpos = _read_varint(body, rpos)
            record_end = rpos + length
            rpos += 1  # record attributes, unused
            timestamp_delta, rpos = _read_varint(body, rpos)
            offset_delta, rpos = _read_varint(body, rpos)
            key, rpos = _read_bytes(body, rpos)
            value, rpos = _read_bytes(body, rpos)
            header_count, rpos = _read_varint(body, rpos)
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
        _write_varint(out, -1)
        return
    if isinstance(data, str):
        data = data.encode()
    _write_varint(out, len(data))
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
        _write_varint(rec, timestamp - base_timestamp)
        _write_varint(rec, offset_delta)
        _encode_bytes(rec, key)
        _encode_bytes(rec, value)
        _write_varint(rec, len(headers))
        for header_key, header_value in headers:
            _encode_bytes(rec, header_key)
            _encode_bytes(rec, header_value)
        _write_varint(body, len(rec))
        body += rec
    payload = _compress(compression, bytes(body)) if compression else bytes(body)
    attributes = compression | (_TRANSACTIONAL_BIT if is_transactional else 0) | (_CONTROL_BIT if is_control else 0)
    batch = bytearray(BATCH_HEADER_SIZE + len(payload))
    _HEADER.pack_into(
        batch, 0, base_offset, BATCH_HEADER_SIZE - LOG_OVERHEAD + len(payload), partition_leader_epoch, 2, 0,
        attributes, len(records) - 1, base_timestamp, max(timestamps), producer_id, producer_epoch,
        base_sequence, len(records),
    )  # fmt: skip
    batch[BATCH_HEADER_SIZE:] = payload
    _UINT32.pack_into(batch, 17, crc32c.crc32c(memoryview(batch)[_CRC_START:]))
    return bytes(batch)


COMPRESSION_CODECS = {"uncompressed": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}


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
