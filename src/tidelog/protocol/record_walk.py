"""The record walk of produce validation: every record of a batch checked in place, nothing copied.

``walk_records`` checks what Kafka's DefaultRecord.readFrom checks (each record's length and
fields, the record count, no trailing bytes) and returns the range of the records' timestamp
deltas; ``walk_compressed`` first decompresses into a bounded scratch buffer
(``MAX_DECOMPRESSED_BYTES``). The C extension (_recordwalk.c) does the walk ~50x faster; the
Python one here runs where it was not built (``RECORD_WALK`` says which, for the start-up log).
Errors are InvalidBatch: INVALID_RECORD for a malformed record, CORRUPT_MESSAGE for a payload
its codec cannot decompress. Not thread-safe (one scratch buffer); the event loop calls it.
"""

from __future__ import annotations

import mmap
import struct

import cramjam

from tidelog.protocol.compression import decompress_into
from tidelog.protocol.errors import ErrorCode, InvalidBatch

__all__ = ["MAX_DECOMPRESSED_BYTES", "RECORD_WALK", "walk_compressed", "walk_records"]

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


def walk_compressed(codec: int, payload, count: int) -> tuple[int, int]:
    """Decompress into a bounded scratch buffer and walk the records there."""
    global _scratch
    if _scratch is None:
        _scratch = mmap.mmap(-1, MAX_DECOMPRESSED_BYTES)
    try:
        size = decompress_into(codec, payload, _scratch)
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
