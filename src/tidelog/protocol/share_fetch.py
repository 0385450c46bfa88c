"""ShareFetch response encoding (key 78, versions 1-2: the same layout), by hand: the hot path of
share groups.

A filter or priorities make an acquisition return many ranges of acquired records (one a
matching record, in the worst case); kio's schema-driven writer made a dataclass and four writes
for each, most of a filtered fetch's encoding. Here the ranges are packed in one call each, and
the records go out as the buffers the log read gave (``KafkaConnection`` writes a list of
buffers without joining them). Both versions are flexible. Tested against kio's encoder.
"""

from __future__ import annotations

import struct
import uuid
from itertools import starmap
from typing import NamedTuple, Sequence

from tidelog.protocol.wire import uvarint

__all__ = ["NodeEndpoint", "SharePartitionData", "encode_share_fetch_response"]

_HEAD = struct.Struct(">ih")  # throttle_time_ms, error_code
_I32 = struct.Struct(">i")
_PARTITION = struct.Struct(">ih")  # partition_index, error_code
_I16 = struct.Struct(">h")
_LEADER = struct.Struct(">iix")  # leader_id, leader_epoch, no tagged fields
_ACQUIRED = struct.Struct(">qqhx")  # first_offset, last_offset, delivery_count, no tagged fields
_NODE = struct.Struct(">i")


class SharePartitionData(NamedTuple):
    partition_index: int
    error_code: int = 0
    acknowledge_error_code: int = 0
    leader_id: int = -1
    leader_epoch: int = -1
    records: Sequence[bytes | memoryview] = ()  # buffers, sent one after the other
    # (first offset, last offset, delivery count); a sequence with a wire() method gives its packed
    # ranges itself (queues/log_batches.py AcquiredColumns: no object a range)
    acquired: Sequence[tuple[int, int, int]] = ()
    error_message: str | None = None
    acknowledge_error_message: str | None = None

_ZERO_ID = bytes(16)


class NodeEndpoint(NamedTuple):
    node_id: int
    host: str
    port: int
    rack: str | None = None


def _string(value: str | None) -> bytes:
    if value is None:
        return b"\x00"
    encoded = value.encode()
    return uvarint(len(encoded) + 1) + encoded


def encode_share_fetch_response(topics: Sequence[tuple[uuid.UUID | None, Sequence[SharePartitionData]]], *,
                                error_code: int = 0, error_message: str | None = None,
                                acquisition_lock_timeout_ms: int = 0, throttle_time_ms: int = 0,
                                node_endpoints: Sequence[NodeEndpoint] = ()) -> list[bytes | memoryview]:
    """The response body as a list of buffers; the first begins with throttle_time_ms (4 bytes)."""
    parts: list[bytes | memoryview] = []
    head = bytearray(_HEAD.pack(throttle_time_ms, error_code))
    head += _string(error_message)
    head += _I32.pack(acquisition_lock_timeout_ms)
    head += uvarint(len(topics) + 1)
    for topic_id, partitions in topics:
        head += topic_id.bytes if topic_id is not None else _ZERO_ID  # kio reads the zero id as None
        head += uvarint(len(partitions) + 1)
        for p in partitions:
            head += _PARTITION.pack(p.partition_index, p.error_code)
            head += _string(p.error_message)
            head += _I16.pack(p.acknowledge_error_code)
            head += _string(p.acknowledge_error_message)
            head += _LEADER.pack(p.leader_id, p.leader_epoch)
            size = sum(len(buffer) for buffer in p.records)
            head += uvarint(size + 1)
            if size:
                parts.append(bytes(head))
                parts.extend(buffer for buffer in p.records if len(buffer))
                head = bytearray()
            head += uvarint(len(p.acquired) + 1)
            wire = getattr(p.acquired, "wire", None)  # (a filter's ranges as columns pack themselves)
            head += wire() if wire is not None else b"".join(starmap(_ACQUIRED.pack, p.acquired))
            head += b"\x00"
        head += b"\x00"
    head += uvarint(len(node_endpoints) + 1)
    for node in node_endpoints:
        head += _NODE.pack(node.node_id) + _string(node.host) + _I32.pack(node.port) + _string(node.rack) + b"\x00"
    head += b"\x00"
    parts.append(bytes(head))
    return parts
