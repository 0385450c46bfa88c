"""Request and response framing: size prefix, request headers v1/v2, response headers v0/v1.

A request frame is ``int32 size`` followed by the header and the body. Header v1 is
``api_key int16, api_version int16, correlation_id int32, client_id nullable string``; header v2
(flexible APIs) adds tagged fields, which are skipped whatever their tags. Response header v0 is
the correlation id; v1 adds an empty tagged-field section (never for ApiVersions).
"""

from __future__ import annotations

import struct
from typing import NamedTuple

_HEADER = struct.Struct(">hhih")
_INT32 = struct.Struct(">i")
_PEEK = struct.Struct(">hhi")


class MalformedFrame(Exception):
    """The bytes cannot be a Kafka request: the connection is closed."""


class RequestHeader(NamedTuple):
    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None


def read_uvarint(buf: memoryview | bytes, pos: int) -> tuple[int, int]:
    """Decode an unsigned varint at ``pos``; return (value, next position)."""
    result = 0
    shift = 0
    while True:
        if pos >= len(buf):
            raise MalformedFrame("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 28:
            raise MalformedFrame("varint longer than 5 bytes")


def uvarint(value: int) -> bytes:
    """Encode an unsigned varint (compact lengths and counts are uvarint(n + 1))."""
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def skip_tagged_fields(buf: memoryview | bytes, pos: int) -> int:
    """Skip a tagged-field section (count, then tag + size + bytes each); return the next position."""
    count, pos = read_uvarint(buf, pos)
    for _ in range(count):
        _tag, pos = read_uvarint(buf, pos)
        size, pos = read_uvarint(buf, pos)
        pos += size
        if pos > len(buf):
            raise MalformedFrame("tagged field runs past the end of the frame")
    return pos


def parse_request_header(frame: memoryview, flexible: bool) -> tuple[RequestHeader, int]:
    """Parse the header of a request frame (without its size prefix); return it and the body offset."""
    if len(frame) < _HEADER.size:
        raise MalformedFrame(f"request of {len(frame)} bytes is shorter than a header")
    api_key, api_version, correlation_id, client_id_length = _HEADER.unpack_from(frame, 0)
    pos = _HEADER.size
    client_id = None
    if client_id_length >= 0:
        end = pos + client_id_length
        if end > len(frame):
            raise MalformedFrame("client_id runs past the end of the frame")
        client_id = bytes(frame[pos:end]).decode("utf-8", "replace")
        pos = end
    elif client_id_length != -1:
        raise MalformedFrame(f"negative client_id length {client_id_length}")
    if flexible:
        pos = skip_tagged_fields(frame, pos)
    return RequestHeader(api_key, api_version, correlation_id, client_id), pos


def peek_api_key_version(frame: memoryview) -> tuple[int, int, int]:
    """Return (api_key, api_version, correlation_id) without parsing the rest of the header."""
    if len(frame) < 8:
        raise MalformedFrame(f"request of {len(frame)} bytes is shorter than a header")
    return _PEEK.unpack_from(frame, 0)


def response_header(correlation_id: int, flexible: bool) -> bytes:
    """The response header: v1 (with an empty tagged-field section) for flexible responses, else v0."""
    if flexible:
        return _INT32.pack(correlation_id) + b"\x00"
    return _INT32.pack(correlation_id)
