"""Request bodies of any API and version, written field by field from kio's schema classes.

Used by the guard's unit tests (every API's well-formed request must pass it; a null in each
field the schema does not let be null must not) and by the fuzz campaign (tests/integration/
fuzzer.py), which asks for odd values now and then. The bytes are written directly from each
field's Kafka type, so a body can hold what no typed encoder would write (nulls where the schema
forbids them, unknown tagged fields, boundary integers, strings that are not UTF-8).
"""

from __future__ import annotations

import dataclasses
import random
import struct
import uuid

from kio.serial._introspect import EntityField, EntityTupleField, PrimitiveTupleField, classify_field, get_field_tag, is_optional

from tidelog.protocol import apis
from tidelog.protocol.records import build_batch
from tidelog.protocol.wire import uvarint

_FIXED = {"bool": 1, "int8": 1, "int16": 2, "uint16": 2, "int32": 4, "timedelta_i32": 4, "int64": 8,
          "timedelta_i64": 8, "float64": 8, "uuid": 16}
_PACK = {1: ">b", 2: ">h", 4: ">i", 8: ">q"}
INTERESTING = {1: [-1, 0, 1, 127, -128], 2: [-1, 0, 1, 32767, -32768],
               4: [-1, 0, 1, 2**31 - 1, -(2**31), 65536], 8: [-1, 0, 1, 2**63 - 1, -(2**63)]}
PACK = _PACK
TOPICS = ["fuzz-a", "fuzz-b", "fuzz-c"]
ODD_NAMES = ["", ".", "..", "bad/name", "x" * 250, "__consumer_offsets", "fuzz.a", "fuzz_a", "\u00e9t\u00e9"]


def _int_value(rng: random.Random, name: str, size: int) -> int:
    if name in ("num_partitions", "count", "partition_count"):
        return rng.choice([1, 2, 3, -1])
    if name == "replication_factor":
        return rng.choice([1, -1])
    if "partition" in name or name == "index":
        return rng.choice([0, 0, 1, 2])
    if "timeout" in name or "max_wait" in name:
        return rng.choice([0, 10, 100, 1000])
    if name in ("replica_id", "broker_id", "leader_id") or "epoch" in name or "producer_id" in name:
        return rng.choice([-1, 0, 1])
    if "offset" in name:
        return rng.choice([-2, -1, 0, 1, 5])
    if "max_bytes" in name or "min_bytes" in name:
        return rng.choice([1, 1024, 1 << 20])
    if name == "acks":
        return rng.choice([-1, 0, 1])
    return rng.choice([0, 1, 2])


def _string_value(rng: random.Random, name: str) -> str:
    if "topic" in name or name in ("name", "resource_name"):
        return rng.choice(TOPICS)
    if "group" in name:
        return rng.choice(["fuzz-group", "fuzz-group-2"])
    if name == "member_id":
        return rng.choice(["", "m-1"])
    if name == "protocol_type":
        return "consumer"
    if "config" in name or name == "key":
        return rng.choice(["retention.ms", "cleanup.policy", "max.message.bytes", "no.such.config"])
    if "value" in name:
        return rng.choice(["1000", "delete", "-1", "x"])
    return rng.choice(["fuzz", "range", "1", ""])


class RequestWriter:
    """Writes one request body of ``(api_key, version)``.

    - ``wildness``: the chance that a field gets an odd value (null whether or not the schema
      allows it, a boundary integer, an illegal name, an unknown tagged field). 0 writes a
      well-formed request with values a handler gets past decoding with.
    - ``null_at``: write the ``null_at``-th field (in writing order) that the schema does not
      let be null as null, and everything else well-formed; ``nulled_field`` names it (None:
      there was no such field) and ``nulled_array`` says whether it is an array. With ``null_at`` every array holds exactly one element, so nested
      fields are reached.
    """

    def __init__(self, rng: random.Random | None = None, wildness: float = 0.0, null_at: int | None = None) -> None:
        self.rng = rng or random.Random(0)
        self.wildness = wildness
        self.null_at = null_at
        self._non_nullable_seen = 0
        self.nulled_field: str | None = None
        self.nulled_array = False

    def body(self, api_key: int, version: int) -> bytes:
        cls = apis.request_type(api_key, version)
        out = bytearray()
        self._non_nullable_seen = 0
        self.nulled_field = None
        self.nulled_array = False
        self._entity(out, cls, cls.__flexible__, depth=0)
        return bytes(out)

    def _wild(self) -> bool:
        return self.wildness > 0 and self.rng.random() < self.wildness

    def _take_null(self, field: dataclasses.Field, nullable: bool) -> bool:
        """Whether this non-nullable field is the one ``null_at`` picks."""
        if self.null_at is None or nullable:
            return False
        index = self._non_nullable_seen
        self._non_nullable_seen += 1
        if index == self.null_at:
            self.nulled_field = field.name
            self.nulled_array = classify_field(field).is_array
            return True
        return False

    def _entity(self, out: bytearray, cls: type, flexible: bool, depth: int) -> None:
        tagged = []
        for f in dataclasses.fields(cls):
            if get_field_tag(f) is not None:
                tagged.append(f)
            else:
                self._field(out, f, flexible, depth)
        if not flexible:
            return
        fields: list[bytes] = []
        for f in tagged:
            if self.wildness > 0 and self.rng.random() < 0.3:
                value = bytearray()
                self._field(value, f, flexible, depth)
                fields.append(uvarint(get_field_tag(f)) + uvarint(len(value)) + value)
        if self._wild():
            fields.append(uvarint(self.rng.choice([90, 1000])) + uvarint(2) + b"ab")  # a tag nobody knows
        out += uvarint(len(fields)) + b"".join(fields)

    @staticmethod
    def _length(out: bytearray, length: int, flexible: bool, wide: bool) -> None:
        if flexible:
            out += uvarint(length + 1)
        else:
            out += struct.pack(">i" if wide else ">h", length)

    def _field(self, out: bytearray, f: dataclasses.Field, flexible: bool, depth: int) -> None:
        rng = self.rng
        kind = classify_field(f)
        nullable = is_optional(f)
        if isinstance(kind, (EntityTupleField, PrimitiveTupleField)):
            if self._take_null(f, nullable) or self._wild() or (nullable and self.null_at is None and rng.random() < 0.2):
                self._length(out, -1, flexible, wide=True)
                return
            if self.null_at is not None:
                count = 1 if depth < 4 else 0
            else:
                count = rng.choice([0, 1, 1, 1, 2]) if depth < 3 else 0
            self._length(out, count, flexible, wide=True)
            for _ in range(count):
                if isinstance(kind, EntityTupleField):
                    self._entity(out, kind.type_, flexible, depth + 1)
                else:
                    self._primitive(out, f, f.metadata["kafka_type"], False, flexible)
            return
        if isinstance(kind, EntityField):
            if nullable:
                if self.null_at is None and rng.random() < 0.3:
                    out += b"\xff"
                    return
                out += b"\x01"
            self._entity(out, kind.type_, flexible, depth + 1)
            return
        self._primitive(out, f, f.metadata["kafka_type"], nullable, flexible)

    def _primitive(self, out: bytearray, f: dataclasses.Field, kafka_type: str, nullable: bool, flexible: bool) -> None:
        rng = self.rng
        name = f.name
        if kafka_type in _FIXED:
            wild = self._wild()
            size = _FIXED[kafka_type]
            if kafka_type == "bool":
                out.append(rng.choice([0, 1, 2]) if wild else rng.choice([0, 1]))
            elif kafka_type == "uuid":
                out += bytes(16) if wild and rng.random() < 0.5 else uuid.UUID(int=rng.getrandbits(128)).bytes
            elif kafka_type == "float64":
                out += struct.pack(">d", rng.choice([0.0, 1.0, float("nan")]))
            else:
                value = rng.choice(INTERESTING[size]) if wild else _int_value(rng, name, size)
                out += struct.pack(_PACK[size], value)
            return
        wide = kafka_type != "string"
        if self._take_null(f, nullable):
            self._length(out, -1, flexible, wide)
            return
        wild = self._wild()
        if (wild and rng.random() < 0.5) or (nullable and self.null_at is None and rng.random() < 0.2):
            self._length(out, -1, flexible, wide)
            return
        if kafka_type == "string":
            data = (rng.choice(ODD_NAMES) if wild else _string_value(rng, name)).encode()
            if wild and rng.random() < 0.2:
                data = b"\xff\xfe"  # not UTF-8
        elif kafka_type == "records":
            data = build_batch([(b"k", b"v" * rng.choice([1, 10, 100]), [])], compression=rng.choice([0, 0, 1, 2, 3, 4]))
            if wild:
                corrupt = bytearray(data)
                corrupt[rng.randrange(len(corrupt))] ^= 1 << rng.randrange(8)
                data = bytes(corrupt)
        else:
            data = bytes(rng.getrandbits(8) for _ in range(rng.choice([0, 4, 16])))
        self._length(out, len(data), flexible, wide)
        out += data


def schema_versions() -> list[tuple[int, int]]:
    """Every (api_key, version) of Kafka 4.0's table that kio has a request schema for."""
    pairs = []
    for api_key, (_name, low, high) in sorted(apis.KAFKA_4_0.items()):
        for version in range(low, high + 1):
            try:
                apis.request_type(api_key, version)
            except Exception:  # Produce v0-2: refused before decoding, kio has no schema
                continue
            pairs.append((api_key, version))
    return pairs
