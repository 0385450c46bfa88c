"""Fetch response encoding, by hand: the hot path; and ``FetchedPartition``, a partition of a
response as the follower's decoder (cluster/replica_fetcher.py, Fetch v15) gives it.

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

from tidelog.protocol.wire import uvarint as _uvarint

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
    array = (lambda n: _uvarint(n + 1)) if flexible else _I32.pack
    parts: list[bytes | memoryview] = []
    head = bytearray(_HEAD_V7.pack(throttle_time_ms, error_code, session_id) if version >= 7 else _I32.pack(throttle_time_ms))
    head += array(len(topics))
    for name, topic_id, partitions in topics:
        if version >= TOPIC_IDS_FROM:
            head += topic_id.bytes
        else:
            encoded = name.encode()
            head += (_uvarint(len(encoded) + 1) if flexible else struct.pack(">h", len(encoded))) + encoded
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
                head += _uvarint(len(records) + 1) if flexible else _I32.pack(len(records))
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
