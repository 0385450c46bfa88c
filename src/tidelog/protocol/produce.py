"""Produce request decoding and response encoding, by hand: the hot path.

The request decoder returns each partition's records as a memoryview into the request frame
(no copy; the frame is a bytearray, so the view is writable and the broker assigns offsets in
place). Versions 0-12; flexible (compact types, tagged fields) from v9. Tested byte for byte
against kio's schema-driven codec.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from tidelog.protocol.wire import MalformedFrame, read_uvarint, skip_tagged_fields
from tidelog.protocol.wire import uvarint as _uvarint

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_I32_I32 = struct.Struct(">ii")
_I16_I32 = struct.Struct(">hi")  # acks, timeout_ms
_PARTITION_V0 = struct.Struct(">ihq")  # index, error_code, base_offset

FLEXIBLE_FROM = 9


class ProducePartition(NamedTuple):
    index: int
    records: memoryview | None


class ProduceTopic(NamedTuple):
    name: str
    partitions: list[ProducePartition]


class ProduceRequest(NamedTuple):
    transactional_id: str | None
    acks: int
    timeout_ms: int
    topics: list[ProduceTopic]


class PartitionResult(NamedTuple):
    index: int
    error_code: int
    base_offset: int = -1
    log_append_time_ms: int = -1
    log_start_offset: int = -1
    error_message: str | None = None
    record_errors: tuple[tuple[int, str | None], ...] = ()  # (batch index, message), v8+


def _string_at(buf: memoryview, pos: int) -> tuple[str | None, int]:
    """A nullable string (v3-8) at ``pos``: (text or None, next position)."""
    size = _I16.unpack_from(buf, pos)[0]
    pos += 2
    if size < 0:
        return None, pos
    end = pos + size
    if end > len(buf):
        raise MalformedFrame("produce request truncated")
    try:
        return str(buf[pos:end], "utf-8"), end
    except UnicodeDecodeError:
        raise MalformedFrame("produce request string is not UTF-8") from None


def _read_partitions(buf: memoryview, pos: int, count: int, flexible: bool) -> tuple[list[ProducePartition], int]:
    """The partition entries of one topic: the per-partition loop, kept flat (no method calls)."""
    size_of_buf = len(buf)
    partitions: list[ProducePartition] = []
    append = partitions.append
    for _ in range(count):
        if flexible:
            if pos + 5 > size_of_buf:
                raise MalformedFrame("produce request truncated")
            index = _I32.unpack_from(buf, pos)[0]
            pos += 4
            size = buf[pos]
            if size < 0x80:
                pos += 1
            else:
                size, pos = read_uvarint(buf, pos)
            size -= 1
        else:
            if pos + 8 > size_of_buf:
                raise MalformedFrame("produce request truncated")
            index, size = _I32_I32.unpack_from(buf, pos)
            pos += 8
        if size < 0:
            records = None
        else:
            end = pos + size
            if end > size_of_buf:
                raise MalformedFrame("produce request truncated")
            records = buf[pos:end]
            pos = end
        if flexible:
            if pos < size_of_buf and buf[pos] == 0:  # no tagged fields: the usual case
                pos += 1
            else:
                pos = skip_tagged_fields(buf, pos)
        append(ProducePartition(index, records))
    return partitions, pos


def decode_produce_request(body: memoryview, version: int) -> ProduceRequest:
    """Decode a Produce request body (after the header). Raises MalformedFrame.

    One flat pass (a few calls per request, not one per field: it runs for every Produce).
    Reads past the end raise IndexError or struct.error inside, turned into MalformedFrame."""
    try:
        return _decode(body, version)
    except (IndexError, struct.error):
        raise MalformedFrame("produce request truncated") from None


def _compact_string_at(buf: memoryview, pos: int, size_of_buf: int) -> tuple[str | None, int]:
    """_string_at for a flexible request, the one-byte length inline (every producer's names)."""
    size = buf[pos]
    if size < 0x80:
        pos += 1
    else:
        size, pos = read_uvarint(buf, pos)
    if size == 0:
        return None, pos
    end = pos + size - 1
    if end > size_of_buf:
        raise MalformedFrame("produce request truncated")
    try:
        return str(buf[pos:end], "utf-8"), end
    except UnicodeDecodeError:
        raise MalformedFrame("produce request string is not UTF-8") from None


def _decode_flexible(buf: memoryview) -> ProduceRequest:
    """_decode for v9+ (every current client): the same checks, one-byte varints inline and the
    usual one-partition topic read without a call a field."""
    size_of_buf = len(buf)
    transactional_id, pos = _compact_string_at(buf, 0, size_of_buf)
    acks, timeout_ms = _I16_I32.unpack_from(buf, pos)
    pos += 6
    topic_count = buf[pos]
    if topic_count < 0x80:
        pos += 1
    else:
        topic_count, pos = read_uvarint(buf, pos)
    topic_count -= 1
    if topic_count > size_of_buf:
        raise MalformedFrame(f"produce topic count {topic_count} exceeds the frame")
    topics = []
    for _ in range(max(topic_count, 0)):
        name, pos = _compact_string_at(buf, pos, size_of_buf)
        if name is None:
            raise MalformedFrame("null topic name in produce request")
        partition_count = buf[pos]
        if partition_count < 0x80:
            pos += 1
        else:
            partition_count, pos = read_uvarint(buf, pos)
        partition_count -= 1
        if partition_count > size_of_buf:
            raise MalformedFrame(f"produce partition count {partition_count} exceeds the frame")
        partitions, pos = _read_partitions(buf, pos, max(partition_count, 0), True)
        pos = pos + 1 if buf[pos] == 0 else skip_tagged_fields(buf, pos)
        topics.append(ProduceTopic(name, partitions))
    pos = pos + 1 if buf[pos] == 0 else skip_tagged_fields(buf, pos)
    if pos != size_of_buf:
        raise MalformedFrame(f"{size_of_buf - pos} bytes after the end of the produce request")
    return ProduceRequest(transactional_id, acks, timeout_ms, topics)


def _decode(buf: memoryview, version: int) -> ProduceRequest:
    if version >= FLEXIBLE_FROM:
        return _decode_flexible(buf)
    size_of_buf = len(buf)
    transactional_id, pos = _string_at(buf, 0) if version >= 3 else (None, 0)
    acks, timeout_ms = _I16_I32.unpack_from(buf, pos)
    pos += 6
    topic_count = _I32.unpack_from(buf, pos)[0]
    pos += 4
    if topic_count > size_of_buf:
        raise MalformedFrame(f"produce topic count {topic_count} exceeds the frame")
    topics = []
    for _ in range(max(topic_count, 0)):
        name, pos = _string_at(buf, pos)
        if name is None:
            raise MalformedFrame("null topic name in produce request")
        partition_count = _I32.unpack_from(buf, pos)[0]
        pos += 4
        if partition_count > size_of_buf:
            raise MalformedFrame(f"produce partition count {partition_count} exceeds the frame")
        partitions, pos = _read_partitions(buf, pos, max(partition_count, 0), False)
        topics.append(ProduceTopic(name, partitions))
    if pos != size_of_buf:
        raise MalformedFrame(f"{size_of_buf - pos} bytes after the end of the produce request")
    return ProduceRequest(transactional_id, acks, timeout_ms, topics)


def _string(text: str | None, flexible: bool) -> bytes:
    if text is None:
        return b"\x00" if flexible else b"\xff\xff"
    data = text.encode()
    return (_uvarint(len(data) + 1) if flexible else _I16.pack(len(data))) + data


# A partition's fixed fields by version: index, error_code, base_offset, then log_append_time
# (v2+) and log_start_offset (v5+).
_PARTITION_V2 = struct.Struct(">ihqq")
_PARTITION_V5 = struct.Struct(">ihqqq")
# What ends a partition without record errors or message (v8+): an empty array and a null
# string, then (flexible) the partition's empty tagged fields.
_NO_ERRORS = {False: b"\x00\x00\x00\x00\xff\xff", True: b"\x01\x00\x00"}
_COMPACT_COUNTS = [bytes((n + 1,)) for n in range(127)]  # uvarint(n + 1), one byte
# A flexible response's one partition without errors: its empty record errors, null message and
# tags, then its topic's tags (before the throttle time).
_ONE_PARTITION_TAIL = _NO_ERRORS[True] + b"\x00"


def _count(n: int, flexible: bool) -> bytes:
    if flexible:
        return _COMPACT_COUNTS[n] if n < 127 else _uvarint(n + 1)
    return _I32.pack(n)


# Topic names as a response carries them, by flexibility: encoded once (a Produce response names
# its topics every time). Bounded: emptied when it holds _NAMES_KEPT names.
_NAMES: dict[bool, dict[str, bytes]] = {False: {}, True: {}}
_NAMES_KEPT = 4096


def _name(name: str, flexible: bool) -> bytes:
    names = _NAMES[flexible]
    if len(names) >= _NAMES_KEPT:
        names.clear()
    data = names[name] = _string(name, flexible)
    return data


def encode_produce_response(version: int, topics: list[tuple[str, list[PartitionResult]]], throttle_time_ms: int = 0) -> list[bytes]:
    """Encode a Produce response body for ``version`` (0-12) as a list of buffers.

    Runs for every Produce: one struct call per partition, the usual no-error tail a constant."""
    flexible = version >= FLEXIBLE_FROM
    if flexible and len(topics) == 1:  # what a producer's request gets: one partition of one topic, no error
        name, partitions = topics[0]
        if len(partitions) == 1:
            p = partitions[0]
            if not p.record_errors and p.error_message is None:
                return [b"".join((b"\x02", _NAMES[True].get(name) or _name(name, True), b"\x02",
                                  _PARTITION_V5.pack(p.index, p.error_code, p.base_offset, p.log_append_time_ms,
                                                     p.log_start_offset),
                                  _ONE_PARTITION_TAIL, _I32.pack(throttle_time_ms), b"\x00"))]
    fixed = _PARTITION_V5 if version >= 5 else _PARTITION_V2 if version >= 2 else _PARTITION_V0
    no_errors = _NO_ERRORS[flexible]
    names = _NAMES[flexible]
    out = [_COMPACT_COUNTS[len(topics)] if flexible and len(topics) < 127 else _count(len(topics), flexible)]
    append = out.append
    for name, partitions in topics:
        append(names.get(name) or _name(name, flexible))
        append(_COMPACT_COUNTS[len(partitions)] if flexible and len(partitions) < 127 else _count(len(partitions), flexible))
        for p in partitions:
            if version >= 5:
                append(fixed.pack(p.index, p.error_code, p.base_offset, p.log_append_time_ms, p.log_start_offset))
            elif version >= 2:
                append(fixed.pack(p.index, p.error_code, p.base_offset, p.log_append_time_ms))
            else:
                append(fixed.pack(p.index, p.error_code, p.base_offset))
            if version >= 8:
                if not p.record_errors and p.error_message is None:
                    append(no_errors)
                    continue
                append(_count(len(p.record_errors), flexible))
                for batch_index, message in p.record_errors:
                    append(_I32.pack(batch_index))
                    append(_string(message, flexible))
                    if flexible:
                        append(b"\x00")
                append(_string(p.error_message, flexible))
            if flexible:
                append(b"\x00")
        if flexible:
            append(b"\x00")
    if version >= 1:
        append(_I32.pack(throttle_time_ms))
    if flexible:
        append(b"\x00")
    return [b"".join(out)]
