"""Fetch response encoding, by hand: the hot path; and the follower's side (cluster/replica_fetcher.py):
its Fetch v15 request (``encode_fetch_request_v15``) and the decoding of the responses
(``decode_fetch_response_v15``, a ``FetchedPartition`` a partition).

The response is a list of buffers: small encoded header parts, and each partition's records
(bytes, or a FileSlice of a segment file that the connection sends by sendfile), never joined
into one bytes object. Versions 4-17; flexible from
v12; topics are named by id (uuid) from v13. Tested against kio's schema-driven decoder.
A decoded response's records are views of the frame it was read into, not copies (a follower
checks and appends them where they are).
"""

from __future__ import annotations

import struct
import uuid
from typing import NamedTuple

from tidelog.protocol.wire import MalformedFrame, read_uvarint, skip_tagged_fields, uvarint

_I32 = struct.Struct(">i")
_HEAD_V7 = struct.Struct(">ihi")  # throttle_time_ms, error_code, session_id
_PARTITION = struct.Struct(">ihqq")  # index, error_code, high_watermark, last_stable_offset
_I64 = struct.Struct(">q")
_ABORTED = struct.Struct(">qq")  # producer_id, first_offset

FLEXIBLE_FROM = 12
TOPIC_IDS_FROM = 13


class PartitionData(NamedTuple):
    index: int
    error_code: int
    high_watermark: int = -1
    last_stable_offset: int = -1
    log_start_offset: int = -1
    records: bytes | memoryview | None = None
    preferred_read_replica: int = -1
    aborted_transactions: list | None = None  # (producer_id, first_offset) of read_committed reads



def encode_fetch_response(
    version: int,
    topics: list[tuple[str, uuid.UUID, list[PartitionData]]],
    error_code: int = 0,
    session_id: int = 0,
    throttle_time_ms: int = 0,
) -> list[bytes | memoryview]:
    """Encode a Fetch response body. ``topics`` holds (name, topic_id, partitions)."""
    flexible = version >= FLEXIBLE_FROM
    array = (lambda n: uvarint(n + 1)) if flexible else _I32.pack
    parts: list[bytes | memoryview] = []
    head = bytearray(_HEAD_V7.pack(throttle_time_ms, error_code, session_id) if version >= 7 else _I32.pack(throttle_time_ms))
    head += array(len(topics))
    for name, topic_id, partitions in topics:
        if version >= TOPIC_IDS_FROM:
            head += topic_id.bytes
        else:
            encoded = name.encode()
            head += (uvarint(len(encoded) + 1) if flexible else struct.pack(">h", len(encoded))) + encoded
        head += array(len(partitions))
        for p in partitions:
            head += _PARTITION.pack(p.index, p.error_code, p.high_watermark, p.last_stable_offset)
            if version >= 5:
                head += _I64.pack(p.log_start_offset)
            aborted = p.aborted_transactions
            if not aborted:
                head += b"\x01" if flexible else b"\x00\x00\x00\x00"  # aborted_transactions: empty
            else:
                head += array(len(aborted))
                for producer_id, first_offset in aborted:
                    head += _ABORTED.pack(producer_id, first_offset)
                    if flexible:
                        head += b"\x00"
            if version >= 11:
                head += _I32.pack(p.preferred_read_replica)
            records = p.records
            if records is None:
                head += b"\x00" if flexible else b"\xff\xff\xff\xff"
            else:
                head += uvarint(len(records) + 1) if flexible else _I32.pack(len(records))
                if len(records):
                    parts.append(bytes(head))
                    parts.append(records)
                    head = bytearray()
            if flexible:
                head += b"\x00"
        if flexible:
            head += b"\x00"
    if flexible:
        head += b"\x00"
    parts.append(bytes(head))
    return parts


class FetchedPartition(NamedTuple):
    partition_index: int
    error_code: int
    high_watermark: int
    last_stable_offset: int
    log_start_offset: int
    records: memoryview | None


_FETCH_HEAD_V15 = struct.Struct(">iiibii")  # max wait, min bytes, max bytes, isolation, session id, epoch
# partition, current leader epoch, fetch offset, last fetched epoch (-1: truncation is by
# OffsetForLeaderEpoch), log start, max bytes, no tagged fields
_FETCH_PARTITION_V15 = struct.Struct(">iiqiqib")
_REPLICA_STATE = struct.Struct(">iqb")  # replica id, broker epoch, no tagged fields: the request's tagged field 1
_HEAD_V15 = struct.Struct(">ihi")  # throttle time, error code, session id
_PARTITION_V15 = struct.Struct(">ihqqq")  # index, error code, high watermark, last stable offset, log start
_ABORTED_V15 = 16  # producer id, first offset (then its tagged fields)
_UUID = 16


def encode_fetch_request_v15(replica_id: int, broker_epoch: int, max_wait_ms: int, min_bytes: int, max_bytes: int,
                             session_id: int, session_epoch: int, topics: dict[bytes, list[tuple[int, int, int, int, int]]],
                             forgotten: dict[bytes, list[int]]) -> bytes:
    """A follower's Fetch v15 request body (isolation level 0, no rack): ``topics`` maps a topic
    id (16 bytes) to its (partition, current leader epoch, fetch offset, log start offset,
    partition max bytes); ``forgotten`` a topic id to partition indexes; ReplicaState carries
    ``replica_id`` and ``broker_epoch``. Written by hand: kio's dataclasses and writer cost
    ~100 us a fetch, most of a follower's per-fetch Python."""
    parts = [_FETCH_HEAD_V15.pack(max_wait_ms, min_bytes, max_bytes, 0, session_id, session_epoch),
             uvarint(len(topics) + 1)]
    for topic_id, partitions in topics.items():
        parts += (topic_id, uvarint(len(partitions) + 1))
        parts += [_FETCH_PARTITION_V15.pack(index, leader_epoch, offset, -1, log_start, partition_max, 0)
                  for index, leader_epoch, offset, log_start, partition_max in partitions]
        parts.append(b"\0")
    parts.append(uvarint(len(forgotten) + 1))
    for topic_id, indexes in forgotten.items():
        parts += (topic_id, uvarint(len(indexes) + 1), struct.pack(f">{len(indexes)}i", *indexes), b"\0")
    parts.append(b"\x01")  # rack id: the empty compact string
    parts += (b"\x01\x01", uvarint(_REPLICA_STATE.size), _REPLICA_STATE.pack(replica_id, broker_epoch, 0))  # one tag: 1
    return b"".join(parts)


class FetchResponseV15(NamedTuple):
    error_code: int
    session_id: int
    responses: list[tuple[bytes, list[FetchedPartition]]]  # (topic id, partitions)


def decode_fetch_response_v15(body: memoryview) -> FetchResponseV15:
    """A Fetch v15 response body (after the response header); each partition's records a view of
    ``body``. Aborted transactions, the preferred read replica and tagged fields (diverging
    epoch, current leader, snapshot id) are skipped: a follower reads every batch, and learns of
    leaders from the metadata store. Raises ValueError on a truncated or malformed body."""
    try:
        _, error_code, session_id = _HEAD_V15.unpack_from(body, 0)
        count, pos = read_uvarint(body, _HEAD_V15.size)
        responses = []
        for _ in range(count - 1):
            topic_id = bytes(body[pos:pos + _UUID])
            partition_count, pos = read_uvarint(body, pos + _UUID)
            partitions = []
            for _ in range(partition_count - 1):
                index, error, high_watermark, last_stable, log_start = _PARTITION_V15.unpack_from(body, pos)
                aborted, pos = read_uvarint(body, pos + _PARTITION_V15.size)
                for _ in range(aborted - 1):
                    pos = skip_tagged_fields(body, pos + _ABORTED_V15)
                length, pos = read_uvarint(body, pos + 4)  # after the preferred read replica
                records = None
                if length > 0:
                    if pos + length - 1 > len(body):
                        raise ValueError("records past the end of the response")
                    records = body[pos:pos + length - 1]
                    pos += length - 1
                pos = skip_tagged_fields(body, pos)
                partitions.append(FetchedPartition(index, error, high_watermark, last_stable, log_start, records))
            pos = skip_tagged_fields(body, pos)
            responses.append((topic_id, partitions))
    except (struct.error, MalformedFrame) as e:
        raise ValueError(f"truncated Fetch response: {e}") from None
    return FetchResponseV15(error_code, session_id, responses)
