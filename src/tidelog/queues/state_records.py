"""The records of the ``__share_group_state`` topic, encoded as Kafka 4.2's share coordinator writes them.

Kafka's coordinator record framing (CoordinatorRecordSerde): the key is the record type (int16)
followed by the key message at version 0 (not flexible); the value is its version (int16) followed
by the value message (flexible: compact arrays, tagged fields). A null value is a tombstone.

    key      int16 record_type (0 = ShareSnapshot, 1 = ShareUpdate) | string group_id
             | uuid topic_id (16 bytes) | int32 partition
    ShareSnapshotValue v0
             int16 version=0 | int32 snapshot_epoch | int32 state_epoch | int32 leader_epoch
             | int64 start_offset | int64 create_timestamp | int64 write_timestamp
             | compact array state_batches | tagged fields (tag 0: int32 delivery_complete_count, KIP-1226)
    ShareUpdateValue v0
             int16 version=0 | int32 snapshot_epoch | int32 leader_epoch | int64 start_offset (-1: unchanged)
             | compact array state_batches | tagged fields (tag 0: int32 delivery_complete_count)
    state batch
             int64 first_offset | int64 last_offset | int8 delivery_state (0 Available, 2 Acknowledged,
             4 Archived) | int16 delivery_count | tagged fields (Tidelog's tag 0x7464: int64
             available_at_ms, an Available batch's retry back-off deadline, issue 14; Kafka skips it)

A compact array is an unsigned varint of length + 1, then the elements; tagged fields are an
unsigned varint count, then (varint tag, varint size, data) each. A snapshot carries the whole
state of a share-partition; an update carries only the state batches that changed since, and is
merged into the state by the reader (``state_store.combine_state_batches``). Pure functions.
"""

from __future__ import annotations

import struct
import sys
import uuid
from array import array
from bisect import bisect_left
from dataclasses import dataclass, field
from functools import partial
from itertools import cycle, repeat, starmap
from operator import itemgetter
from typing import NamedTuple

from tidelog.protocol.reader import Reader
from tidelog.protocol.wire import uvarint

SNAPSHOT_RECORD_TYPE = 0
UPDATE_RECORD_TYPE = 1
VALUE_VERSION = 0
DELIVERY_COMPLETE_COUNT_TAG = 0
# A state batch's tagged field of Tidelog's own (Kafka defines none there and skips unknown tags):
# records released with a retry back-off stay unavailable until this wall-clock time across a
# restart or a failover. A high tag, clear of any Kafka may add from 0 up.
AVAILABLE_AT_TAG = 0x7464

_I8 = struct.Struct(">b")
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")
_BATCH = struct.Struct(">qqbh")


class StateRecordError(ValueError):
    """A ``__share_group_state`` record this broker cannot read."""


class StateBatch(NamedTuple):
    """A run of offsets with one persisted delivery state (0, 2 or 4) and delivery count."""

    first_offset: int
    last_offset: int
    delivery_state: int
    delivery_count: int
    available_at_ms: int = 0  # Available, but not before this time (retry back-off); 0: at once


class TiledBatches:
    """State batches each starting after the one before it, none empty, in two kinds that alternate
    (an acquisition's taken and filtered-out records in turn: the first batch's delivery state and
    count, then the second's, then the first's again...; no retry back-off), held as columns: their
    first and last offsets (``firsts``, ``lasts``, lists never changed once made) and the two kinds
    (``kinds``: (state, count) of the first batch and of the second). No two neighbours join (the
    kinds' states differ). A sequence of StateBatch made on demand (indexing, iterating, comparing
    with a list), so a filter's acquisition makes no object a batch: its transition writes it, the
    state store keeps it as one entry of its state (queues/state_store.py), and a record holding it
    is packed from the columns with no Python step a batch (``_state_batches``)."""

    __slots__ = ("firsts", "lasts", "kinds")

    def __init__(self, firsts: list[int], lasts: list[int], kinds: tuple[tuple[int, int], tuple[int, int]]) -> None:
        self.firsts = firsts
        self.lasts = lasts
        self.kinds = kinds

    @property
    def first_offset(self) -> int:
        return self.firsts[0]

    @property
    def last_offset(self) -> int:
        return self.lasts[-1]

    @property
    def columns(self) -> tuple[list[int], list[int], bytes]:
        """(firsts, lasts, the persisted fields after the offsets of the first batch and of the
        second: delivery state, count, no tagged fields, 4 bytes each)."""
        (state0, count0), (state1, count1) = self.kinds
        return self.firsts, self.lasts, _TILE_FIELDS.pack(state0, count0, state1, count1)

    def __len__(self) -> int:
        return len(self.firsts)

    def __iter__(self):
        (state0, count0), (state1, count1) = self.kinds
        return map(_new_batch, zip(self.firsts, self.lasts, cycle((state0, state1)), cycle((count0, count1)),
                                   repeat(0)))

    def __getitem__(self, index):
        if isinstance(index, slice):
            return list(self)[index]
        first, last = self.firsts[index], self.lasts[index]  # (IndexError as a list's)
        state, count = self.kinds[(index if index >= 0 else index + len(self.firsts)) % 2]
        return StateBatch(first, last, state, count)

    def __eq__(self, other) -> bool:
        if type(other) is TiledBatches or isinstance(other, list):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"TiledBatches({list(self)!r})"

    def after(self, done: int, start: int) -> TiledBatches:
        """The batches from index ``done`` on, the first starting at ``start`` if it began before."""
        firsts = self.firsts[done:]
        if firsts and firsts[0] < start:
            firsts[0] = start
        return TiledBatches(firsts, self.lasts[done:], self.kinds if done % 2 == 0 else self.kinds[::-1])

    def before(self, end: int) -> TiledBatches:
        """The batches before index ``end``."""
        return TiledBatches(self.firsts[:end], self.lasts[:end], self.kinds)

    def from_offset(self, start: int) -> TiledBatches:
        """Without what lies below ``start`` (the batches ending before it gone, the one holding it cut)."""
        return self.after(bisect_left(self.lasts, start), start)


def tiled(firsts: list[int], lasts: list[int], states: tuple[int, int], counts: tuple[int, int]) -> TiledBatches:
    """TiledBatches from ``firsts`` and ``lasts``, their states and delivery counts alternating
    from ``states[0]`` and ``counts[0]`` (no retry back-off)."""
    return TiledBatches(firsts, lasts, ((states[0], counts[0]), (states[1], counts[1])))


_new_batch = partial(tuple.__new__, StateBatch)  # StateBatch(*fields) without its Python __new__
_TILE_FIELDS = struct.Struct(">bhxbhx")  # two batches' state, count and empty tagged fields


@dataclass(frozen=True)
class ShareStateKey:
    """Whose state a record holds: a share group's view of one topic-partition. Its hash is
    computed once (a ShareFetch looks its keys up in a dozen dicts; a dataclass's hash hashed the
    fields' tuple each time, through uuid.UUID's Python __hash__)."""

    group_id: str
    topic_id: uuid.UUID
    partition: int
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash((self.group_id, self.topic_id, self.partition)))

    def __hash__(self) -> int:
        return self._hash

    def __reduce__(self):  # (a str's hash differs between processes: made again where it is loaded)
        return ShareStateKey, (self.group_id, self.topic_id, self.partition)


@dataclass
class ShareSnapshotValue:
    snapshot_epoch: int
    state_epoch: int
    leader_epoch: int
    start_offset: int
    create_timestamp_ms: int
    write_timestamp_ms: int
    state_batches: list[StateBatch] = field(default_factory=list)
    delivery_complete_count: int = -1


@dataclass
class ShareUpdateValue:
    snapshot_epoch: int
    leader_epoch: int
    start_offset: int  # -1: not changed by this update
    state_batches: list[StateBatch] = field(default_factory=list)
    delivery_complete_count: int = -1


def _read_state_batches(r: Reader) -> list[StateBatch]:
    count = r.uvarint() - 1
    if count < 0:
        return []
    batches = []
    for _ in range(count):
        fields = r.take(_BATCH)
        available_at = r.tagged_fields().get(AVAILABLE_AT_TAG)
        if available_at is not None and len(available_at) == 8 and fields[2] == 0:
            batches.append(StateBatch(*fields, _I64.unpack(available_at)[0]))
        else:
            batches.append(StateBatch(*fields))
    return batches


_AVAILABLE_AT_FIELD = uvarint(1) + uvarint(AVAILABLE_AT_TAG) + uvarint(8)


_BATCH_UNTAGGED = struct.Struct(">qqbhx")  # a state batch and its empty tagged fields (one 0 byte)
_OFFSETS_STATE_COUNT = itemgetter(0, 1, 2, 3)
_AVAILABLE_AT = itemgetter(4)


def _state_batches(batches) -> bytes:
    """The compact array of ``batches``: a list of StateBatch, TiledBatches, or a list holding both
    (the state store's state: TiledBatches standing for their batches, packed from their columns)."""
    if type(batches) is TiledBatches:
        return uvarint(len(batches) + 1) + _tiled_batches(*batches.columns)
    if TiledBatches in set(map(type, batches)):
        count, parts, plain = 0, [], []
        for item in batches:
            if type(item) is TiledBatches:
                if plain:
                    parts.append(_plain_batches(plain))
                    plain = []
                parts.append(_tiled_batches(*item.columns))
                count += len(item)
            else:
                plain.append(item)
                count += 1
        if plain:
            parts.append(_plain_batches(plain))
        return uvarint(count + 1) + b"".join(parts)
    return uvarint(len(batches) + 1) + _plain_batches(batches)


def _plain_batches(batches: list[StateBatch]) -> bytes:
    """The state batches of a compact array, without its length."""
    if not any(map(_AVAILABLE_AT, batches)):  # no retry back-off among them: packed with no Python step a batch
        return b"".join(starmap(_BATCH_UNTAGGED.pack, map(_OFFSETS_STATE_COUNT, batches)))
    parts = []
    for b in batches:
        parts.append(_BATCH.pack(b.first_offset, b.last_offset, b.delivery_state, b.delivery_count))
        if b.available_at_ms > 0 and b.delivery_state == 0:
            parts.append(_AVAILABLE_AT_FIELD + _I64.pack(b.available_at_ms))
        else:
            parts.append(b"\x00")
    return b"".join(parts)


def _tiled_batches(firsts: list[int], lasts: list[int], fields: bytes) -> bytes:
    """The state batches of TiledBatches' columns (without the array's length): in C where the
    extension is built (protocol/_recordwalk.c ``pack_tiled``), else ``_tiled_batches_python``."""
    if _pack_tiled_in_c is not None and type(firsts) is list and type(lasts) is list:
        return _pack_tiled_in_c(firsts, lasts, fields)
    return _tiled_batches_python(firsts, lasts, fields)


def _tiled_batches_python(firsts: list[int], lasts: list[int], fields: bytes) -> bytes:
    """``_tiled_batches`` in Python: each column packed at once (array), its bytes laid into every
    batch's place by slice assignment (a step a byte of a batch, not a batch)."""
    n = len(firsts)
    out = bytearray(_BATCH_UNTAGGED.size * n)
    for column, at in ((firsts, 0), (lasts, 8)):
        packed = array("q", column)
        if _LITTLE_ENDIAN:
            packed.byteswap()
        raw = packed.tobytes()
        for k in range(8):
            out[at + k::_BATCH_UNTAGGED.size] = raw[k::8]
    tail = (fields * (n // 2 + 1))[:4 * n]  # state, count, tagged fields: 4 bytes a batch, alternating
    for k in range(4):
        out[16 + k::_BATCH_UNTAGGED.size] = tail[k::4]
    return bytes(out)


_LITTLE_ENDIAN = sys.byteorder == "little"
try:
    from tidelog.protocol._recordwalk import pack_tiled as _pack_tiled_in_c
except ImportError:  # built without a C compiler, or before pack_tiled
    _pack_tiled_in_c = None


def _tagged_delivery_complete_count(count: int) -> bytes:
    if count == -1:
        return b"\x00"
    return uvarint(1) + uvarint(DELIVERY_COMPLETE_COUNT_TAG) + uvarint(4) + _I32.pack(count)


def encode_key(record_type: int, key: ShareStateKey) -> bytes:
    group = key.group_id.encode()
    return _I16.pack(record_type) + _I16.pack(len(group)) + group + key.topic_id.bytes + _I32.pack(key.partition)


def encode_snapshot_value(value: ShareSnapshotValue) -> bytes:
    return b"".join((
        _I16.pack(VALUE_VERSION),
        _I32.pack(value.snapshot_epoch), _I32.pack(value.state_epoch), _I32.pack(value.leader_epoch),
        _I64.pack(value.start_offset), _I64.pack(value.create_timestamp_ms), _I64.pack(value.write_timestamp_ms),
        _state_batches(value.state_batches),
        _tagged_delivery_complete_count(value.delivery_complete_count),
    ))


def encode_update_value(value: ShareUpdateValue) -> bytes:
    return b"".join((
        _I16.pack(VALUE_VERSION),
        _I32.pack(value.snapshot_epoch), _I32.pack(value.leader_epoch), _I64.pack(value.start_offset),
        _state_batches(value.state_batches),
        _tagged_delivery_complete_count(value.delivery_complete_count),
    ))


def decode_key(data: bytes | memoryview) -> tuple[int, ShareStateKey]:
    """(record type, key). Raises StateRecordError for a record type this broker does not know."""
    r = Reader(data, StateRecordError)
    record_type = r.i16()
    if record_type not in (SNAPSHOT_RECORD_TYPE, UPDATE_RECORD_TYPE):
        raise StateRecordError(f"unknown __share_group_state record type {record_type}")
    group_id = r.string()
    topic_id = uuid.UUID(bytes=r.raw(16))
    (partition,) = r.take(_I32)
    return record_type, ShareStateKey(group_id, topic_id, partition)


def _delivery_complete_count(tagged: dict[int, bytes]) -> int:
    data = tagged.get(DELIVERY_COMPLETE_COUNT_TAG)
    if data is None or len(data) != 4:
        return -1
    return _I32.unpack(data)[0]


def decode_snapshot_value(data: bytes | memoryview) -> ShareSnapshotValue:
    r = Reader(data, StateRecordError)
    version = r.i16()
    if version != VALUE_VERSION:
        raise StateRecordError(f"unknown ShareSnapshotValue version {version}")
    snapshot_epoch, state_epoch, leader_epoch = r.i32(), r.i32(), r.i32()
    start_offset, create_ts, write_ts = r.i64(), r.i64(), r.i64()
    batches = _read_state_batches(r)
    count = _delivery_complete_count(r.tagged_fields())
    return ShareSnapshotValue(snapshot_epoch, state_epoch, leader_epoch, start_offset, create_ts, write_ts, batches, count)


def decode_update_value(data: bytes | memoryview) -> ShareUpdateValue:
    r = Reader(data, StateRecordError)
    version = r.i16()
    if version != VALUE_VERSION:
        raise StateRecordError(f"unknown ShareUpdateValue version {version}")
    snapshot_epoch, leader_epoch, start_offset = r.i32(), r.i32(), r.i64()
    batches = _read_state_batches(r)
    count = _delivery_complete_count(r.tagged_fields())
    return ShareUpdateValue(snapshot_epoch, leader_epoch, start_offset, batches, count)
