"""JSON <-> record bytes for the HTTP API, and the Java client's key partitioner.

Into the log: a record's ``key`` / ``value`` may be a JSON string (stored as its UTF-8 bytes),
null, or any other JSON value (stored as its compact JSON text); ``key_base64`` /
``value_base64`` carry arbitrary bytes instead. Headers are a list of ``{"key", "value"}`` or
an object ``{name: value}``; header values are strings (UTF-8), null, or ``{"base64": ...}``.
Out of the log: bytes that are valid UTF-8 without control characters (other than tab, CR,
LF) come back as text (``*_encoding: "text"``), others
as base64 (``*_encoding: "base64"``); ``encoding=base64`` asks for base64 always.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from tidelog.protocol.errors import ErrorCode, KafkaError
# bytes_to_json is protocol/json_bytes.py's (push deliveries use it too); importers may keep using this module.
from tidelog.protocol.json_bytes import bytes_to_json  # noqa: F401


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (the Java client's DefaultPartitioner / BuiltInPartitioner), unsigned 32-bit."""
    m = 0x5BD1E995
    length = len(data)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    for i in range(0, length - length % 4, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> 24
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    tail = length & ~3
    extra = length % 4
    if extra >= 3:
        h ^= data[tail + 2] << 16
    if extra >= 2:
        h ^= data[tail + 1] << 8
    if extra >= 1:
        h ^= data[tail]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h


def partition_for_key(key: bytes, partitions: int) -> int:
    """The partition Kafka's Java client (and librdkafka's murmur2_random) picks for a key."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def _bad(message: str) -> KafkaError:
    return KafkaError(ErrorCode.invalid_request, message)


def _b64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise _bad(f"{what} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _bad(f"{what} is not valid base64") from None


def json_to_bytes(record: dict, field: str) -> bytes | None:
    """``record[field]`` (or ``record[field + "_base64"]``) as the bytes to store."""
    b64_field = field + "_base64"
    if b64_field in record:
        if field in record:
            raise _bad(f"give {field} or {b64_field}, not both")
        return None if record[b64_field] is None else _b64(record[b64_field], b64_field)
    value = record.get(field)
    if value is None:
        return None
    if isinstance(value, str):
        return value.encode()
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def json_to_headers(headers: Any) -> list[tuple[str, bytes | None]]:
    if headers is None:
        return []
    if isinstance(headers, dict):
        headers = [{"key": k, "value": v} for k, v in headers.items()]
    if not isinstance(headers, list):
        raise _bad("headers must be a list of {key, value} or an object")
    result = []
    for header in headers:
        if not isinstance(header, dict) or not isinstance(header.get("key"), str):
            raise _bad("each header needs a string key")
        value = header.get("value")
        if value is None:
            result.append((header["key"], None))
        elif isinstance(value, str):
            result.append((header["key"], value.encode()))
        elif isinstance(value, dict) and set(value) == {"base64"}:
            result.append((header["key"], _b64(value["base64"], "header value base64")))
        else:
            raise _bad("a header value must be a string, null or {\"base64\": ...}")
    return result


# RecordBatch attribute bit 3: 0 CreateTime, 1 LogAppendTime (Kafka's TimestampType names).
TIMESTAMP_TYPES = ("CreateTime", "LogAppendTime")


def record_to_json(offset: int, timestamp: int, timestamp_type: str, key: bytes | None, value: bytes | None,
                   headers, force_base64: bool = False) -> dict:
    """A record as the HTTP API and ``tidelog consume --json`` both give it: ``timestamp_type``
    CreateTime or LogAppendTime, key and value with their encodings, headers a list of
    ``{"key", "value", "value_encoding"}`` in order (names may repeat)."""
    key_text, key_encoding = bytes_to_json(key, force_base64)
    value_text, value_encoding = bytes_to_json(value, force_base64)
    out_headers = []
    for header_key, header_value in headers:
        text, encoding = bytes_to_json(header_value, force_base64)
        out_headers.append({"key": header_key, "value": text, "value_encoding": encoding})
    return {
        "offset": offset, "timestamp": timestamp, "timestamp_type": timestamp_type,
        "key": key_text, "key_encoding": key_encoding, "value": value_text, "value_encoding": value_encoding,
        "headers": out_headers,
    }
