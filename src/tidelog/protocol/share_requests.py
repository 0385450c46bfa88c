"""ShareFetch (78) and ShareAcknowledge (79) request decoding, versions 1-2, by hand: the hot path
of share groups' acknowledgements.

A share consumer acknowledges each range it was given as a batch of its own; with a filter or
priorities that is one batch per record, thousands a request. kio made a dataclass of each (after
the request guard had walked each), and the handler a tuple again. Here a partition's batches are
read in bulk when they have the usual shape (one acknowledge type and no tagged fields: 19 bytes
each, checked for all at once) and become ``AckBatch`` tuples in one pass; any other shape is read
batch by batch. The result has kio's field names (``AckBatch`` for AcknowledgementBatch, lists and
tuples for arrays), so handlers and the authorizer read it as they read kio's.

What kio and the guard refuse is refused here (``MalformedFrame``, or the UnicodeDecodeError of a
string that is not UTF-8): a count or length past the end of the body, a null where the schema has
none, a boolean other than 0 or 1. Tagged fields are skipped: the schemas declare none, and the
guard removes unknown ones before kio reads. A zero topic id is None, as kio reads it. Trailing
bytes after the body are ignored, as kio ignores them. Tested against kio's decoder
(tests/unit/test_share_request_decoding.py).
"""

from __future__ import annotations

import array
import datetime
import struct
import sys
import uuid
from dataclasses import dataclass
from functools import partial
from typing import Iterator, NamedTuple, Sequence

from tidelog.protocol.wire import MalformedFrame, read_uvarint

__all__ = ["AckBatch", "AckBatches", "AckPartition", "AckTopic", "ForgottenTopic", "ShareAcknowledgeRequest",
           "ShareFetchRequest", "ack_batches", "decode_share_acknowledge_request", "decode_share_fetch_request"]


class AckBatch(NamedTuple):
    """One AcknowledgementBatch of ShareFetch/ShareAcknowledge: one type for the range, or one per offset."""

    first_offset: int
    last_offset: int
    acknowledge_types: tuple[int, ...]


class AckBatches(Sequence[AckBatch]):
    """A partition's acknowledgement batches read in bulk (each one type, no tagged fields) as
    columns: ``firsts``, ``lasts`` (lists of offsets) and ``types`` (bytes, a type a batch,
    unsigned), checked over all of them at once (queues/acks.py). The AckBatch tuples are made
    only when asked for (an index, or all of them when iterated): the usual acknowledgement, one
    ACCEPT batch per acquired range, is checked and applied from the columns (hundreds of
    single-record ranges with a filter: no tuple each)."""

    __slots__ = ("firsts", "lasts", "types", "_all")

    def __init__(self, firsts: list[int], lasts: list[int], types: bytes) -> None:
        self.firsts, self.lasts, self.types = firsts, lasts, types
        self._all: tuple[AckBatch, ...] | None = None

    def batches(self) -> tuple[AckBatch, ...]:
        """Every batch as an AckBatch (made once)."""
        if self._all is None:
            self._all = tuple(map(_new_batch, zip(self.firsts, self.lasts, map(_ONE_TYPE.__getitem__, self.types))))
        return self._all

    def __len__(self) -> int:
        return len(self.types)

    def __getitem__(self, index):
        if self._all is None and type(index) is int:
            return _new_batch((self.firsts[index], self.lasts[index], _ONE_TYPE[self.types[index]]))
        return self.batches()[index]

    def __iter__(self) -> Iterator[AckBatch]:
        return iter(self.batches())

    def __eq__(self, other: object) -> bool:
        if type(other) is AckBatches:
            return (self.firsts, self.lasts, self.types) == (other.firsts, other.lasts, other.types)
        return self.batches() == other

    def __hash__(self) -> int:
        return hash(self.batches())

    def __repr__(self) -> str:
        return f"AckBatches({list(self.batches())!r})"


def ack_batches(firsts: list[int], lasts: list[int], types: bytes) -> AckBatches:
    """AckBatches of one type each from their columns."""
    return AckBatches(firsts, lasts, types)


class AckPartition(NamedTuple):
    """FetchPartition (ShareFetch) or AcknowledgePartition (ShareAcknowledge)."""

    partition_index: int
    acknowledgement_batches: Sequence[AckBatch]  # AckBatches when read in bulk
    renew: bool = False  # a RENEW (type 4) among the batches' types


class AckTopic(NamedTuple):
    """FetchTopic or AcknowledgeTopic."""

    topic_id: uuid.UUID | None
    partitions: tuple[AckPartition, ...]


class ForgottenTopic(NamedTuple):
    topic_id: uuid.UUID | None
    partitions: tuple[int, ...]


@dataclass(slots=True)
class ShareFetchRequest:
    group_id: str | None
    member_id: str | None
    share_session_epoch: int
    max_wait: datetime.timedelta
    min_bytes: int
    max_bytes: int
    max_records: int
    batch_size: int
    share_acquire_mode: int  # v2; 0 in v1
    is_renew_ack: bool  # v2; False in v1
    topics: tuple[AckTopic, ...]
    forgotten_topics_data: tuple[ForgottenTopic, ...]


@dataclass(slots=True)
class ShareAcknowledgeRequest:
    group_id: str | None
    member_id: str | None
    share_session_epoch: int
    is_renew_ack: bool  # v2; False in v1
    topics: tuple[AckTopic, ...]


_I8 = struct.Struct(">b")
_I32 = struct.Struct(">i")
_FETCH_FIELDS = struct.Struct(">iiiiii")  # epoch, max_wait_ms, min_bytes, max_bytes, max_records, batch_size
_BATCH_HEAD = struct.Struct(">qq")
_PARTITION_INDEX = _I32
_BATCH_BYTES = 19  # first_offset, last_offset, types (count 1 + 1 = 2, one type), no tagged fields
_ONE_TYPE = tuple(((b - 256 if b > 127 else b),) for b in range(256))  # a type byte -> (signed type,)
_new_batch = partial(tuple.__new__, AckBatch)  # AckBatch(*t) without the generated __new__'s Python frame
_BIG_ENDIAN = sys.byteorder == "big"
_RENEW = 4


def decode_share_fetch_request(body: memoryview | bytes, pos: int, version: int) -> ShareFetchRequest:
    """The ShareFetch v1/v2 request at ``body[pos:]``; raises MalformedFrame (or UnicodeDecodeError)."""
    end = len(body)
    group_id, pos = _string(body, pos, end)
    member_id, pos = _string(body, pos, end)
    _need(pos + 24, end)
    epoch, max_wait_ms, min_bytes, max_bytes, max_records, batch_size = _FETCH_FIELDS.unpack_from(body, pos)
    pos += 24
    mode, renew = 0, False
    if version >= 2:
        _need(pos + 2, end)
        mode = _I8.unpack_from(body, pos)[0]
        renew = _bool(body[pos + 1])
        pos += 2
    topics, pos = _topics(body, pos, end)
    count, pos = _count(body, pos, end, "forgotten_topics_data")
    forgotten = []
    for _ in range(count):
        topic_id, pos = _uuid(body, pos, end)
        partitions, pos = _count(body, pos, end, "partitions")
        _need(pos + 4 * partitions, end)
        indexes = struct.unpack_from(f">{partitions}i", body, pos)
        pos = _skip_tags(body, pos + 4 * partitions, end)
        forgotten.append(ForgottenTopic(topic_id, indexes))
    _skip_tags(body, pos, end)
    return ShareFetchRequest(group_id, member_id, epoch, datetime.timedelta(milliseconds=max_wait_ms), min_bytes,
                             max_bytes, max_records, batch_size, mode, renew, topics, tuple(forgotten))


def decode_share_acknowledge_request(body: memoryview | bytes, pos: int, version: int) -> ShareAcknowledgeRequest:
    """The ShareAcknowledge v1/v2 request at ``body[pos:]``; raises MalformedFrame (or UnicodeDecodeError)."""
    end = len(body)
    group_id, pos = _string(body, pos, end)
    member_id, pos = _string(body, pos, end)
    _need(pos + 4, end)
    epoch = _I32.unpack_from(body, pos)[0]
    pos += 4
    renew = False
    if version >= 2:
        _need(pos + 1, end)
        renew = _bool(body[pos])
        pos += 1
    topics, pos = _topics(body, pos, end)
    _skip_tags(body, pos, end)
    return ShareAcknowledgeRequest(group_id, member_id, epoch, renew, topics)


def _topics(body, pos: int, end: int) -> tuple[tuple[AckTopic, ...], int]:
    count, pos = _count(body, pos, end, "topics")
    topics = []
    for _ in range(count):
        topic_id, pos = _uuid(body, pos, end)
        partition_count, pos = _count(body, pos, end, "partitions")
        partitions = []
        for _ in range(partition_count):
            _need(pos + 4, end)
            index = _PARTITION_INDEX.unpack_from(body, pos)[0]
            batches, renew, pos = _batches(body, pos + 4, end)
            pos = _skip_tags(body, pos, end)
            partitions.append(AckPartition(index, batches, renew))
        pos = _skip_tags(body, pos, end)
        topics.append(AckTopic(topic_id, tuple(partitions)))
    return tuple(topics), pos


def _batches(body, pos: int, end: int) -> tuple[Sequence[AckBatch], bool, int]:
    """A partition's acknowledgement batches, whether one has a RENEW, and the position after them."""
    count, pos = _count(body, pos, end, "acknowledgement_batches")
    if not count:
        return (), False, pos
    size = count * _BATCH_BYTES
    if pos + size <= end:
        data = bytes(body[pos:pos + size])
        # Batch i has the usual shape if its byte 16 says one type and its byte 18 no tagged
        # fields; then batch i + 1 starts 19 bytes later. Checked for every batch at once.
        if data[16::19] == b"\x02" * count and data[18::19] == b"\x00" * count:
            types = data[17::19]
            pairs = bytearray(data)
            del pairs[16::19], pairs[16::18], pairs[16::17]  # the three type bytes of each: 16 left
            offsets = array.array("q", pairs)
            if not _BIG_ENDIAN:
                offsets.byteswap()
            return ack_batches(offsets[0::2].tolist(), offsets[1::2].tolist(), types), _RENEW in types, pos + size
    batches = []
    renew = False
    for _ in range(count):
        _need(pos + 16, end)
        first, last = _BATCH_HEAD.unpack_from(body, pos)
        types_count, pos = _count(body, pos + 16, end, "acknowledge_types")
        _need(pos + types_count, end)
        types = struct.unpack_from(f">{types_count}b", body, pos)
        renew = renew or _RENEW in types
        pos = _skip_tags(body, pos + types_count, end)
        batches.append(AckBatch(first, last, types))
    return batches, renew, pos


def _need(pos: int, end: int) -> None:
    if pos > end:
        raise MalformedFrame("request body truncated")


def _count(body, pos: int, end: int, name: str) -> tuple[int, int]:
    """A compact array's element count; its elements take at least a byte each."""
    value, pos = read_uvarint(body, pos)
    if value == 0:
        raise MalformedFrame(f"non-nullable field {name} was serialized as null")
    if value - 1 > end - pos:
        raise MalformedFrame(f"array of {value - 1} elements in {end - pos} bytes left")
    return value - 1, pos


def _string(body, pos: int, end: int) -> tuple[str | None, int]:
    """A compact nullable string (group_id, member_id)."""
    value, pos = read_uvarint(body, pos)
    if value == 0:
        return None, pos
    size = value - 1
    if size > end - pos:
        raise MalformedFrame(f"string of {size} bytes in {end - pos} bytes left")
    return str(body[pos:pos + size], "utf-8"), pos + size


def _uuid(body, pos: int, end: int) -> tuple[uuid.UUID | None, int]:
    _need(pos + 16, end)
    raw = bytes(body[pos:pos + 16])
    known = _TOPIC_IDS.get(raw)
    if known is None:
        if not any(raw):
            return None, pos + 16
        if len(_TOPIC_IDS) >= _MAX_TOPIC_IDS:
            _TOPIC_IDS.clear()
        known = _TOPIC_IDS[raw] = uuid.UUID(bytes=raw)
    return known, pos + 16


# The topic ids requests name, one UUID object each: a fetch's every dict lookup by one of them then
# finds the key it holds by identity, not through uuid.UUID's Python __eq__ (nor its __init__ a
# request). Bounded: emptied when full.
_TOPIC_IDS: dict[bytes, uuid.UUID] = {}
_MAX_TOPIC_IDS = 4096


def _bool(byte: int) -> bool:
    if byte > 1:
        raise MalformedFrame(f"invalid boolean value {byte}")
    return byte == 1


def _skip_tags(body, pos: int, end: int) -> int:
    """Skip a tagged-field section (no field is known to these requests)."""
    count, pos = read_uvarint(body, pos)
    if count > end - pos:
        raise MalformedFrame(f"{count} tagged fields in {end - pos} bytes")
    for _ in range(count):
        _tag, pos = read_uvarint(body, pos)
        size, pos = read_uvarint(body, pos)
        pos += size
        if pos > end:
            raise MalformedFrame("tagged field runs past the end of the request")
    return pos


# api key -> decoder(body, offset, version), used by the connection instead of the guard and kio.
DECODERS = {78: decode_share_fetch_request, 79: decode_share_acknowledge_request}
