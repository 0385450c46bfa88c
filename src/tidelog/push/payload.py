"""What a push delivery sends and how the endpoint answers (docs/push.md, "The request").

Batch format: one POST, ``Content-Type: application/json``, body
``{"subscription", "delivery_id", "records": [{"subscription", "topic", "partition", "offset",
"timestamp", "timestamp_type", "key", "key_encoding", "value", "value_encoding", "headers":
[{"key", "value", "value_encoding"}], "delivery_count"}]}`` (bytes as UTF-8 text when printable,
else base64, the ``*_encoding`` saying which: protocol/json_bytes.py, as the HTTP API).

Raw format: one POST per record, the value as the body (``application/octet-stream``), the rest in
headers: ``Tidelog-Topic``, ``Tidelog-Partition``, ``Tidelog-Offset``, ``Tidelog-Timestamp``,
``Tidelog-Delivery-Count``, ``Tidelog-Key`` (base64; absent for a null key), ``Tidelog-Headers``
(JSON as the batch format's ``headers``; absent when none), ``Tidelog-Null-Value: true`` for a null
value.

Every request carries ``Tidelog-Subscription``, ``Tidelog-Delivery-Id`` (new for every attempt:
receivers deduplicate on topic/partition/offset),
``Tidelog-Signature: t=<unix ms>,v1=<hex HMAC-SHA256 of "<t>." + body, keyed with the
subscription's secret as UTF-8>``, and with a bearer token ``Authorization: Bearer <token>``.

The answer: any 2xx acknowledges every record, unless its body is JSON with ``results``: a list
of ``{"topic", "partition", "offset", "result": "accept" | "release" | "reject"}``; records it does
not name are accepted. Anything else releases every record of the request.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from dataclasses import dataclass
from typing import Iterable, Sequence

from tidelog.protocol.json_bytes import bytes_to_json
from tidelog.protocol.records import BATCH_HEADER_SIZE, iter_records, parse_batch_header
from tidelog.queues.log_batches import AcquiredRecords

__all__ = ["PushRecord", "DecodedBatches", "records_of", "batch_request", "raw_request", "signature", "verify_signature",
           "parse_results", "ACCEPT", "RELEASE", "REJECT", "SIGNATURE_HEADER"]

ACCEPT, RELEASE, REJECT = "accept", "release", "reject"
RESULTS = (ACCEPT, RELEASE, REJECT)
SIGNATURE_HEADER = "Tidelog-Signature"
TIMESTAMP_TYPES = ("CreateTime", "LogAppendTime")


@dataclass(slots=True)
class PushRecord:
    topic: str
    partition: int
    offset: int
    timestamp: int
    timestamp_type: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]
    delivery_count: int

    @property
    def size_bytes(self) -> int:
        return (len(self.key) if self.key else 0) + (len(self.value) if self.value else 0) + 64


class DecodedBatches:
    """The records of the log batch last decoded per share-partition: acquisitions of a few records
    at a time (raw, small batch sizes) take them from one large producer batch, which is then
    decoded once, not once per acquisition. One batch per share-partition (bounded)."""

    def __init__(self) -> None:
        self._last: dict[tuple[str, int], tuple[tuple[int, int], list]] = {}

    def records(self, topic: str, partition: int, info, data) -> list:
        """The records of the batch ``data`` (header ``info``): known by its base offset and CRC, so a
        batch that replaced another at that offset (a truncated log) is decoded afresh."""
        identity = (info.base_offset, info.crc)
        cached = self._last.get((topic, partition))
        if cached is not None and cached[0] == identity:
            return cached[1]
        decoded = list(iter_records(data))
        self._last[(topic, partition)] = (identity, decoded)
        return decoded

    def forget(self, topic: str, partition: int) -> None:
        self._last.pop((topic, partition), None)


def records_of(topic: str, partition: int, batches: Iterable[memoryview], acquired: Sequence[AcquiredRecords],
               decoded: DecodedBatches | None = None) -> list[PushRecord]:
    """The acquired records of a share-partition acquisition (whole log batches), in offset order."""
    out: list[PushRecord] = []
    ranges = sorted(acquired)
    if not ranges:
        return out
    first_wanted, last_wanted = ranges[0].first_offset, ranges[-1].last_offset
    for data in batches:
        pos = 0
        while pos + BATCH_HEADER_SIZE <= len(data):
            info = parse_batch_header(data, pos)
            end = pos + info.size
            if end > len(data):
                break
            last_offset = info.base_offset + info.last_offset_delta
            if not info.is_control and last_offset >= first_wanted and info.base_offset <= last_wanted:
                batch = data[pos:end]
                records = decoded.records(topic, partition, info, batch) if decoded is not None \
                    else iter_records(batch)
                i = 0
                for r in records:
                    while i < len(ranges) and ranges[i].last_offset < r.offset:
                        i += 1
                    if i == len(ranges):
                        break
                    if ranges[i].first_offset <= r.offset:
                        out.append(PushRecord(topic, partition, r.offset, r.timestamp, info.timestamp_type, r.key,
                                              r.value, r.headers, ranges[i].delivery_count))
            pos = end
    return out


def _headers_json(headers: list[tuple[str, bytes | None]]) -> list[dict]:
    out = []
    for key, value in headers:
        text, encoding = bytes_to_json(value)
        out.append({"key": key, "value": text, "value_encoding": encoding})
    return out


def _record_json(subscription: str, r: PushRecord) -> dict:
    key, key_encoding = bytes_to_json(r.key)
    value, value_encoding = bytes_to_json(r.value)
    return {"subscription": subscription, "topic": r.topic, "partition": r.partition, "offset": r.offset,
            "timestamp": r.timestamp, "timestamp_type": TIMESTAMP_TYPES[r.timestamp_type],
            "key": key, "key_encoding": key_encoding, "value": value, "value_encoding": value_encoding,
            "headers": _headers_json(r.headers), "delivery_count": r.delivery_count}


def signature(secret: str, timestamp_ms: int, body: bytes) -> str:
    """The ``Tidelog-Signature`` header's value for ``body`` sent at ``timestamp_ms``."""
    digest = hmac.new(secret.encode(), f"{timestamp_ms}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp_ms},v1={digest}"


def verify_signature(secret: str, header: str, body: bytes, now_ms: int, tolerance_ms: int = 300_000) -> bool:
    """What a receiver checks (docs/push.md has the same in a few lines): the HMAC matches and the
    timestamp is within ``tolerance_ms`` of now (a replayed request is refused)."""
    parts = dict(item.split("=", 1) for item in header.split(",") if "=" in item)
    try:
        timestamp_ms = int(parts["t"])
    except (KeyError, ValueError):
        return False
    expected = signature(secret, timestamp_ms, body).split("v1=", 1)[1]
    return abs(now_ms - timestamp_ms) <= tolerance_ms and hmac.compare_digest(expected, parts.get("v1", ""))


def _common_headers(subscription: str, secret: str, bearer_token: str | None, body: bytes, now_ms: int,
                    content_type: str) -> dict[str, str]:
    headers = {"Content-Type": content_type, "Tidelog-Subscription": subscription,
               "Tidelog-Delivery-Id": uuid.uuid4().hex, SIGNATURE_HEADER: signature(secret, now_ms, body),
               "User-Agent": "tidelog-push"}
    if bearer_token:
        headers["Authorization"] = f"Bearer {bearer_token}"
    return headers


def batch_request(subscription: str, secret: str, bearer_token: str | None, records: Sequence[PushRecord],
                  now_ms: int) -> tuple[bytes, dict[str, str]]:
    """(body, headers) of one batch-format POST."""
    delivery_id = uuid.uuid4().hex
    body = json.dumps({"subscription": subscription, "delivery_id": delivery_id,
                       "records": [_record_json(subscription, r) for r in records]},
                      separators=(",", ":"), ensure_ascii=False).encode()
    headers = _common_headers(subscription, secret, bearer_token, body, now_ms, "application/json")
    headers["Tidelog-Delivery-Id"] = delivery_id
    return body, headers


def raw_request(subscription: str, secret: str, bearer_token: str | None, r: PushRecord,
                now_ms: int) -> tuple[bytes, dict[str, str]]:
    """(body, headers) of one raw-format POST (one record)."""
    body = bytes(r.value) if r.value is not None else b""
    headers = _common_headers(subscription, secret, bearer_token, body, now_ms, "application/octet-stream")
    headers.update({"Tidelog-Topic": r.topic, "Tidelog-Partition": str(r.partition), "Tidelog-Offset": str(r.offset),
                    "Tidelog-Timestamp": str(r.timestamp), "Tidelog-Delivery-Count": str(r.delivery_count)})
    if r.key is not None:
        headers["Tidelog-Key"] = base64.b64encode(r.key).decode("ascii")
    if r.headers:
        headers["Tidelog-Headers"] = json.dumps(_headers_json(r.headers), separators=(",", ":"))
    if r.value is None:
        headers["Tidelog-Null-Value"] = "true"
    return body, headers


def parse_results(body: bytes, records: Sequence[PushRecord]) -> list[str] | None:
    """Each record's result from a 2xx answer's JSON ``results`` (records not named: accept); None
    when the answer lists none (every record accepted). ValueError for a ``results`` that is not one."""
    if not body or body[:1] not in (b"{", b" ", b"\n", b"\r", b"\t"):
        return None
    try:
        answer = json.loads(body)
    except ValueError:
        return None
    if not isinstance(answer, dict) or "results" not in answer:
        return None
    results = answer["results"]
    if not isinstance(results, list):
        raise ValueError("results must be a list of {topic, partition, offset, result}")
    index = {(r.topic, r.partition, r.offset): i for i, r in enumerate(records)}
    out = [ACCEPT] * len(records)
    for item in results:
        if not isinstance(item, dict) or item.get("result") not in RESULTS:
            raise ValueError(f"a result is {{topic, partition, offset, result: accept|release|reject}}, got {item!r}"[:200])
        i = index.get((item.get("topic"), item.get("partition"), item.get("offset")))
        if i is not None:
            out[i] = item["result"]
    return out
