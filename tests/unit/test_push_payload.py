"""What push deliveries send and how answers are read (push/payload.py): the acquired records of
log batches, the batch and raw requests, the signature and its verification, per-record results."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest

from tidelog.protocol.records import build_batch
from tidelog.push.payload import (
    ACCEPT,
    DecodedBatches,
    REJECT,
    RELEASE,
    batch_request,
    parse_results,
    raw_request,
    records_of,
    signature,
    verify_signature,
)
from tidelog.queues.log_batches import AcquiredRecords


def _batches(base_offset: int, values: list[bytes | None]) -> memoryview:
    return memoryview(build_batch([(b"k%d" % i, v, [("h", b"\xff")]) for i, v in enumerate(values)], base_offset))


def test_records_of_takes_only_the_acquired_offsets_with_their_delivery_counts():
    data = _batches(10, [b"a", b"b", b"c", b"d"])
    got = records_of("t", 3, [data], [AcquiredRecords(11, 11, 1), AcquiredRecords(13, 13, 4)])
    assert [(r.topic, r.partition, r.offset, r.value, r.delivery_count) for r in got] == \
        [("t", 3, 11, b"b", 1), ("t", 3, 13, b"d", 4)]


def test_decoded_batches_decode_a_batch_once_per_share_partition():
    data = _batches(0, [b"a", b"b", b"c"])
    decoded = DecodedBatches()
    first = records_of("t", 0, [data], [AcquiredRecords(0, 0, 1)], decoded)
    cached = decoded._last[("t", 0)][1]
    second = records_of("t", 0, [data], [AcquiredRecords(1, 2, 1)], decoded)
    assert [r.value for r in first + second] == [b"a", b"b", b"c"] and decoded._last[("t", 0)][1] is cached
    other = _batches(0, [b"x", b"y", b"z"])  # another batch at the same offset (a truncated and rewritten log)
    assert [r.value for r in records_of("t", 0, [other], [AcquiredRecords(0, 0, 1)], decoded)] == [b"x"]


def test_batch_request_body_and_signature():
    records = records_of("t", 0, [_batches(0, [b"hello", b"\x00bin", None])], [AcquiredRecords(0, 2, 1)])
    body, headers = batch_request("sub", "secret", "tok", records, 1_700_000_000_000)
    payload = json.loads(body)
    assert payload["subscription"] == "sub" and headers["Tidelog-Delivery-Id"] == payload["delivery_id"]
    first, binary, null = payload["records"]
    assert (first["value"], first["value_encoding"], first["key"], first["offset"]) == ("hello", "text", "k0", 0)
    assert (binary["value"], binary["value_encoding"]) == (base64.b64encode(b"\x00bin").decode(), "base64")
    assert null["value"] is None
    assert first["headers"] == [{"key": "h", "value": "/w==", "value_encoding": "base64"}]
    assert first["delivery_count"] == 1 and first["subscription"] == "sub" and first["timestamp_type"] == "CreateTime"
    assert headers["Authorization"] == "Bearer tok" and headers["Content-Type"] == "application/json"
    # the documented scheme, computed independently
    expected = hmac.new(b"secret", b"1700000000000." + body, hashlib.sha256).hexdigest()
    assert headers["Tidelog-Signature"] == f"t=1700000000000,v1={expected}"
    assert verify_signature("secret", headers["Tidelog-Signature"], body, 1_700_000_000_000 + 1000)
    assert not verify_signature("other", headers["Tidelog-Signature"], body, 1_700_000_000_000)
    assert not verify_signature("secret", headers["Tidelog-Signature"], body + b" ", 1_700_000_000_000)
    assert not verify_signature("secret", headers["Tidelog-Signature"], body, 1_700_000_000_000 + 600_000)  # replayed
    assert not verify_signature("secret", "garbage", body, 1_700_000_000_000)


def test_raw_request_puts_metadata_in_headers():
    [record] = records_of("t", 2, [_batches(7, [b"\x01\x02"])], [AcquiredRecords(7, 7, 2)])
    body, headers = raw_request("sub", "s", None, record, 5)
    assert body == b"\x01\x02" and "Authorization" not in headers
    assert (headers["Tidelog-Topic"], headers["Tidelog-Partition"], headers["Tidelog-Offset"],
            headers["Tidelog-Delivery-Count"]) == ("t", "2", "7", "2")
    assert base64.b64decode(headers["Tidelog-Key"]) == b"k0"
    assert json.loads(headers["Tidelog-Headers"]) == [{"key": "h", "value": "/w==", "value_encoding": "base64"}]
    assert headers["Tidelog-Signature"] == signature("s", 5, body)


def test_parse_results():
    records = records_of("t", 0, [_batches(0, [b"a", b"b", b"c"])], [AcquiredRecords(0, 2, 1)])
    assert parse_results(b"", records) is None
    assert parse_results(b"ok", records) is None
    assert parse_results(b'{"status": "fine"}', records) is None
    answer = {"results": [{"topic": "t", "partition": 0, "offset": 1, "result": "reject"},
                          {"topic": "t", "partition": 0, "offset": 2, "result": "release"},
                          {"topic": "t", "partition": 0, "offset": 99, "result": "reject"}]}
    assert parse_results(json.dumps(answer).encode(), records) == [ACCEPT, REJECT, RELEASE]
    with pytest.raises(ValueError):
        parse_results(b'{"results": {"a": 1}}', records)
    with pytest.raises(ValueError):
        parse_results(b'{"results": [{"topic": "t", "partition": 0, "offset": 1, "result": "maybe"}]}', records)
