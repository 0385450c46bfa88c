"""The records of the ``__consumer_offsets`` topic: keys and values, encoded like Kafka's.

Kafka's own (non-flexible) schemas, so a Kafka tool reading the topic understands them:

    OffsetCommitKey v1      int16 version=1 | string group | string topic | int32 partition
    OffsetCommitValue v3    int16 version=3 | int64 offset | int32 leader_epoch | string metadata
                            | int64 commit_timestamp
    OffsetCommitValue v1    (when the commit carried a retention time, OffsetCommit v2-v4)
                            int16 version=1 | int64 offset | string metadata | int64 commit_timestamp
                            | int64 expire_timestamp
    GroupMetadataKey v2     int16 version=2 | string group
    GroupMetadataValue v3   int16 version=3 | string protocol_type | int32 generation
                            | nullable string protocol | nullable string leader
                            | int64 current_state_timestamp | int32 count, then per member:
                              string member_id | nullable string group_instance_id | string client_id
                              | string client_host | int32 rebalance_timeout | int32 session_timeout
                              | bytes subscription | bytes assignment

Consumer-protocol groups (KIP-848) use Tidelog's own compact record instead of Kafka's seven
record types (ConsumerGroupMetadata, ...TargetAssignmentMember, ...CurrentMemberAssignment...):
one snapshot of the whole group per change, so a group is always loaded consistently:

    ConsumerGroupKey        int16 version=100 | string group      (100: not a Kafka key version)
    ConsumerGroupValue v0   int16 version=0 | UTF-8 JSON of ConsumerGroup.to_json() (the rest of the
                            value): group_epoch, assignment_epoch, assignor, state_timestamp_ms,
                            metadata {topic: [topic id, partitions]}, members [{member_id, instance_id,
                            rack_id, client_id, client_host, rebalance_timeout_ms, topics, regex,
                            server_assignor, epoch, previous_epoch, state, assigned, pending_revocation}],
                            target {member id: {topic id: [partitions]}}

Strings are int16 length + UTF-8 (-1 = null), bytes are int32 length + data. A null value
(tombstone) deletes the key; compaction keeps the last record per key. Pure functions.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from tidelog.protocol.reader import Reader

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")

OFFSET_KEY_VERSION = 1
GROUP_KEY_VERSION = 2
OFFSET_VALUE_VERSION = 3
OFFSET_VALUE_VERSION_WITH_EXPIRY = 1
GROUP_VALUE_VERSION = 3
CONSUMER_GROUP_KEY_VERSION = 100
CONSUMER_GROUP_VALUE_VERSION = 0


@dataclass(frozen=True)
class OffsetKey:
    group_id: str
    topic: str
    partition: int


@dataclass(frozen=True)
class GroupKey:
    group_id: str


@dataclass(frozen=True)
class ConsumerGroupKey:
    group_id: str


@dataclass
class OffsetValue:
    offset: int
    leader_epoch: int  # -1 when unknown
    metadata: str
    commit_timestamp_ms: int
    expire_timestamp_ms: int | None = None  # explicit retention (OffsetCommit v2-v4)


@dataclass
class MemberValue:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    rebalance_timeout_ms: int
    session_timeout_ms: int
    subscription: bytes
    assignment: bytes


@dataclass
class GroupValue:
    protocol_type: str
    generation_id: int
    protocol_name: str | None
    leader_id: str | None
    state_timestamp_ms: int
    members: list[MemberValue] = field(default_factory=list)


class _Writer:
    def __init__(self) -> None:
        self.out = bytearray()

    def i16(self, v: int) -> "_Writer":
        self.out += _I16.pack(v)
        return self

    def i32(self, v: int) -> "_Writer":
        self.out += _I32.pack(v)
        return self

    def i64(self, v: int) -> "_Writer":
        self.out += _I64.pack(v)
        return self

    def string(self, v: str | None) -> "_Writer":
        if v is None:
            return self.i16(-1)
        data = v.encode()
        self.i16(len(data))
        self.out += data
        return self

    def bytes_(self, v: bytes | None) -> "_Writer":
        if v is None:
            return self.i32(-1)
        self.i32(len(v))
        self.out += v
        return self


def encode_offset_key(key: OffsetKey) -> bytes:
    return bytes(_Writer().i16(OFFSET_KEY_VERSION).string(key.group_id).string(key.topic).i32(key.partition).out)


def encode_group_key(key: GroupKey) -> bytes:
    return bytes(_Writer().i16(GROUP_KEY_VERSION).string(key.group_id).out)


def encode_offset_value(value: OffsetValue) -> bytes:
    w = _Writer()
    if value.expire_timestamp_ms is not None:
        w.i16(OFFSET_VALUE_VERSION_WITH_EXPIRY).i64(value.offset).string(value.metadata)
        w.i64(value.commit_timestamp_ms).i64(value.expire_timestamp_ms)
    else:
        w.i16(OFFSET_VALUE_VERSION).i64(value.offset).i32(value.leader_epoch).string(value.metadata)
        w.i64(value.commit_timestamp_ms)
    return bytes(w.out)


def encode_group_value(value: GroupValue) -> bytes:
    w = _Writer().i16(GROUP_VALUE_VERSION).string(value.protocol_type).i32(value.generation_id)
    w.string(value.protocol_name).string(value.leader_id).i64(value.state_timestamp_ms).i32(len(value.members))
    for m in value.members:
        w.string(m.member_id).string(m.group_instance_id).string(m.client_id).string(m.client_host)
        w.i32(m.rebalance_timeout_ms).i32(m.session_timeout_ms).bytes_(m.subscription).bytes_(m.assignment)
    return bytes(w.out)


def encode_consumer_group_key(key: ConsumerGroupKey) -> bytes:
    return bytes(_Writer().i16(CONSUMER_GROUP_KEY_VERSION).string(key.group_id).out)


def encode_consumer_group_value(snapshot: bytes) -> bytes:
    """A ConsumerGroupValue of a group's snapshot (``consumer_group.encode_group_snapshot``)."""
    return _I16.pack(CONSUMER_GROUP_VALUE_VERSION) + snapshot


def decode_consumer_group_value(data: bytes) -> bytes:
    """The group snapshot a ConsumerGroupValue holds (``consumer_group.decode_group_snapshot`` reads it)."""
    version = Reader(data).i16()
    if version != CONSUMER_GROUP_VALUE_VERSION:
        raise ValueError(f"unknown ConsumerGroupValue version {version}")
    return bytes(data[2:])


def decode_key(data: bytes) -> OffsetKey | GroupKey | ConsumerGroupKey | None:
    """The key of a ``__consumer_offsets`` record; None for kinds this broker does not know."""
    r = Reader(data)
    version = r.i16()
    if version in (0, 1):
        return OffsetKey(r.nullable_string() or "", r.nullable_string() or "", r.i32())
    if version == 2:
        return GroupKey(r.nullable_string() or "")
    if version == CONSUMER_GROUP_KEY_VERSION:
        return ConsumerGroupKey(r.nullable_string() or "")
    return None


def decode_offset_value(data: bytes) -> OffsetValue:
    r = Reader(data)
    version = r.i16()
    if version in (0, 1):
        offset, metadata, commit = r.i64(), r.nullable_string() or "", r.i64()
        expire = r.i64() if version == 1 else None
        return OffsetValue(offset, -1, metadata, commit, expire if expire is not None and expire >= 0 else None)
    if version == 2:
        return OffsetValue(r.i64(), -1, r.nullable_string() or "", r.i64())
    return OffsetValue(r.i64(), r.i32(), r.nullable_string() or "", r.i64())


def decode_group_value(data: bytes) -> GroupValue:
    r = Reader(data)
    version = r.i16()
    value = GroupValue(r.nullable_string() or "", r.i32(), r.nullable_string(), r.nullable_string(), r.i64() if version >= 2 else -1)
    for _ in range(r.i32()):
        member_id = r.nullable_string() or ""
        instance_id = r.nullable_string() if version >= 3 else None
        client_id, client_host = r.nullable_string() or "", r.nullable_string() or ""
        rebalance_timeout = r.i32() if version >= 1 else 0
        session_timeout = r.i32()
        value.members.append(
            MemberValue(member_id, instance_id, client_id, client_host, rebalance_timeout, session_timeout,
                        r.nullable_bytes() or b"", r.nullable_bytes() or b"")
        )
    return value
